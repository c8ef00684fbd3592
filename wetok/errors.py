"""The errors wetok raises for problems a user can fix: one hierarchy, one base class to catch.

Every :class:`WetokError` carries a one-line message naming the file, model or option at fault; the command
line prints it as ``Error: ...`` without a traceback. Anything else escaping wetok is a bug. Each subclass
also derives from the builtin a caller would expect (``ValueError``, ``LookupError``), so code written
against those keeps working.

This module imports nothing from wetok, so every other module can import it.
"""

from __future__ import annotations


class WetokError(Exception):
    """Base class: a problem with an input, a model or an option, described in one line."""


class WtkFormatError(WetokError, ValueError):
    """A ``.wtk`` file is truncated, corrupted, foreign or inconsistent."""


class ModelNotFoundError(WetokError, LookupError):
    """No installed model has that name, path or model id (the message lists what exists)."""


class ModelMismatchError(WetokError, ValueError):
    """A ``.wtk`` file was made with another model than the one asked to decode it.

    Carries both model ids. The codec does not know the registry, so ``expected_name`` is filled in (when
    that model is installed) by the caller that does, e.g. with :func:`wetok.zoo.name_mismatch`.
    """

    def __init__(
        self, expected: bytes, actual: bytes, actual_name: str = "", expected_name: str | None = None
    ) -> None:
        super().__init__(expected, actual)
        self.expected, self.actual = expected, actual
        self.actual_name, self.expected_name = actual_name, expected_name

    def __str__(self) -> str:
        wanted = f"model {self.expected.hex()}" + (f" ({self.expected_name})" if self.expected_name else "")
        loaded = f"{self.actual_name} ({self.actual.hex()})" if self.actual_name else self.actual.hex()
        return f"this file needs {wanted}, but the loaded model is {loaded}"


class PriorError(WetokError, ValueError):
    """A prior table (``prior.json``) is malformed or does not fit the model."""


class CheckpointError(WetokError, ValueError):
    """A checkpoint, config, image or directory that ``wetok import`` / ``fit-prior`` cannot use."""


class ConfigError(WetokError, ValueError):
    """A training or model configuration that cannot work (unknown key, bad value)."""


class ImageTooLargeError(WetokError, ValueError):
    """An image (a file, an array or a ``.wtk`` header) has more pixels than the limit, or would need more
    memory than the machine has; the message says how to raise the limit."""


class OutputError(WetokError, ValueError):
    """An output that must not be written: it exists (and no ``--force``), it is the input itself, or it is
    neither a regular file nor something written into (a device, a FIFO)."""


class ShardError(WetokError, ValueError):
    """A token shard or index (``wetok tokenize`` output) is missing, damaged or from another run."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ImageTooLargeError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "OutputError",
    "PriorError",
    "ShardError",
    "WetokError",
    "WtkFormatError",
]
