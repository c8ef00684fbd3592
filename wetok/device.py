"""Where models run: the one reading of ``--device`` / ``device = "auto"``."""

from __future__ import annotations

import os

import torch

from wetok.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda`` is this process's GPU (``LOCAL_RANK`` under
    ``torchrun``, else the first). Asking for CUDA without a GPU is a :class:`ConfigError`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA device is available (use cpu)")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r} ({e})") from None
