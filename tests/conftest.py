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
