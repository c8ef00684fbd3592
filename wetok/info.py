"""What a ``.wtk`` file holds, parsed once: :class:`WtkFile` (header and payload) and :class:`WtkInfo` (its
header fields with its sizes, and how close it comes to the ideal code length of its model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wetok import format as fmt
from wetok.format import Header


@dataclass(frozen=True)
class WtkFile:
    """A ``.wtk`` file checked and parsed (:func:`wetok.format.unpack`): its bytes, header and payload."""

    data: bytes
    header: Header
    payload: bytes

    @classmethod
    def parse(cls, data: bytes | WtkFile) -> WtkFile:
        """The parsed file (one that is parsed already, as is); raises :class:`WtkFormatError`."""
        if isinstance(data, WtkFile):
            return data
        header, payload = fmt.unpack(data)
        return cls(bytes(data), header, payload)


@dataclass(frozen=True)
class WtkInfo(Header):
    """Header fields plus sizes: ``bytes`` (whole file), ``payload_bytes``, ``bits_per_token`` (payload
    bits per token), ``bpp`` (file bits per pixel), and — when the model is known — ``ideal_bytes``: header
    + checksum + the Shannon code length of the tokens under the model used by the file's mode (the context
    model, with its id, for ``context``; the prior otherwise)."""

    bytes: int = 0
    payload_bytes: int = 0
    bits_per_token: float = 0.0
    bpp: float = 0.0
    ideal_bytes: float | None = None

    @property
    def overhead(self) -> float | None:
        """Coded size over the ideal size, minus one (``0.001`` = 0.1 %)."""
        return None if self.ideal_bytes is None else self.bytes / self.ideal_bytes - 1


def read_info(data: bytes | BinaryIO | WtkFile, codec: Any = None) -> WtkInfo:
    """Parse and check a ``.wtk`` file (bytes, a binary file object, or a :class:`WtkFile`);
    ``ideal_bytes`` is filled in when ``codec`` (a :class:`wetok.codec.Codec`, which imports this module)
    made the file."""
    file = WtkFile.parse(data if isinstance(data, (bytes, bytearray, memoryview, WtkFile)) else read(data))
    header = file.header
    ideal = None
    if codec is not None and header.model_id == codec.model_id:
        tokens, _ = codec.unpack_tokens(file)
        if header.mode == "context" and codec.context is not None:
            bits = codec.context.ideal_bits(tokens[0].numpy()) + 8 * fmt.CONTEXT_ID_BYTES
        else:
            bits = codec.prior.ideal_bits(tokens.numpy())
        ideal = fmt.header_bytes(header) + bits / 8
    return WtkInfo(
        **asdict(header),
        bytes=len(file.data),
        payload_bytes=len(file.payload),
        bits_per_token=8 * len(file.payload) / header.num_tokens,
        bpp=8 * len(file.data) / (header.height * header.width),
        ideal_bytes=ideal,
    )


def read(fin: str | Path | BinaryIO) -> bytes:
    """The bytes of one ``.wtk`` file from a path or binary file object, reading no more than its header
    allows (:func:`wetok.format.read_stream`)."""
    if isinstance(fin, (str, Path)):
        with open(fin, "rb") as f:
            return fmt.read_stream(f)
    return fmt.read_stream(fin)
