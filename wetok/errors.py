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


class ContextMismatchError(ModelMismatchError):
    """A context-coded ``.wtk`` file was coded with another context model than the loaded model's, or the
    loaded model has none. ``expected``/``actual`` are 4-byte context model ids (``actual`` empty: none).

    The model id in the header does not cover the context model (adding one keeps a model's id), so the
    context payload carries its own id and this error is raised before anything is decoded."""

    def __init__(self, expected: bytes, actual: bytes, actual_name: str = "") -> None:
        super().__init__(expected, actual, actual_name, expected_name="")  # "": no registry name to look up

    def __str__(self) -> str:
        model = f"model {self.actual_name}" if self.actual_name else "the loaded model"
        if not self.actual:
            return (
                f"this file is context-coded (context model {self.expected.hex()}), but {model} has no "
                "context model"
            )
        return (
            f"this file was coded with context model {self.expected.hex()}, but {model} has context model "
            f"{self.actual.hex()} (refitted since?)"
        )


class ContextModelError(WetokError, ValueError):
    """A context model file (``context.json``) is missing fields, malformed, or does not fit the model."""


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


class DecoderSettingError(WetokError, ValueError):
    """A decoder setting (:mod:`wetok.setting`) that cannot be used: a seed a file cannot hold, a seed
    search where the decoder takes no noise, a negative noise scale."""


class RealismError(DecoderSettingError):
    """A realism the model cannot decode: above 0 for a model without a generative decoder, or outside
    0..1."""


class SmallFileError(WetokError, ValueError):
    """A file wetok reads whole (a JSON side file, a shard) is not a regular file (a FIFO, a device, a
    folder), is larger than such a file can be, or holds JSON nested too deeply to parse."""


class ScratchSpaceError(WetokError, OSError):
    """The temporary folder (``TMPDIR``) has no room for the scratch file of a large image's buffers."""


class ShardError(WetokError, ValueError):
    """A token shard or index (``wetok tokenize`` output) is missing, damaged or from another run."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContextMismatchError",
    "ContextModelError",
    "DecoderSettingError",
    "ImageTooLargeError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "OutputError",
    "PriorError",
    "RealismError",
    "ShardError",
    "SmallFileError",
    "WetokError",
    "WtkFormatError",
]
