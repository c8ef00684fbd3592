"""Shared test factory: tiny models (seconds on CPU), never the files under ../shared."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from wetok import Tokenizer, TokenizerConfig


def tiny_config(**changes: object) -> TokenizerConfig:
    """The one tiny configuration tests build on: f = 4, 2 groups of 4 bits."""
    return TokenizerConfig.preset("tiny").replace(**changes)


def tiny_model(seed: int = 0, **changes: object) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(tiny_config(**changes)).eval()


def with_generative_decoder(seed: int = 0, strength: float = 0.5) -> Tokenizer:
    """A tiny model with a generative decoder attached (default realism 0.8) whose noise weights are
    non-zero (as if trained)."""
    model = tiny_model(seed)
    generative = model.to_generative(level_noise=True).decoder
    with torch.no_grad():
        for name, p in generative.named_parameters():
            if ".noise." in name:
                p.fill_(strength)
            elif name == "conv_in.weight":
                p[:, model.config.latent_dim :].normal_(0, 0.1)
    model.attach_generative_decoder(generative, default_realism=0.8)
    return model


@pytest.fixture
def model() -> Tokenizer:
    return tiny_model()


@pytest.fixture
def generative_model() -> Tokenizer:
    return tiny_model(generative=True)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches (remembered model ids, FID features) go to a temporary folder, never the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@contextmanager
def no_hang(seconds: float = 20) -> Iterator[None]:
    """Fail (``TimeoutError``) instead of hanging when the block takes longer than ``seconds``: a blocked
    ``open`` of a FIFO is interrupted by the alarm (Python installs its handlers without ``SA_RESTART``)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: it would hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
