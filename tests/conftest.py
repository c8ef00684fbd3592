"""Shared test factory: tiny models (seconds on CPU), never the files under ../shared."""

from __future__ import annotations

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
