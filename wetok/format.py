"""The ``.wtk`` token file: one image's tokens in a small, versioned, checksummed container.

Layout of format versions 1, 2 and 3 (``docs/format.md`` has the long form); version 2 is version 1 plus
the decoder setting the encoder chose (its meaning is :mod:`wetok.setting`'s), and is written only for
files that carry one; version 3 is written only for a resampled image (coded at another size than its own,
:mod:`wetok.rate`): a fields byte says which optional fields follow, the coded size among them. Fixed-width
integers are big-endian; ``varint`` is unsigned LEB128 (7 bits per byte, least-significant group first,
high bit set on every byte but the last, at most 3 bytes, no redundant trailing ``0x80`` groups).

======  =====  =================================================================================
offset  bytes  field
======  =====  =================================================================================
0       2      magic ``89 57`` (``"\\x89W"``)
2       1      format version, ``01``, ``02`` or ``03``
3       6      model id: :attr:`wetok.codec.Codec.model_id` (SHA-256 prefix of weights + prior)
9       1      bits 7-6 coding mode (0 raw, 1 static, 2 context), bits 5-3 ``log2 f``, bits 2-0 zero
10      1-2    varint ``(g - 1) * 32 + (d' - 1)``
.       1-3    varint ``H - 1``  (original image height in pixels)
.       1-3    varint ``W - 1``  (original image width)
.       1      version 2 only: realism in hundredths, 0..100 (0: the faithful decoder, 100: the generative)
.       1-3    version 2 only: varint noise seed of the generative decoder (0 .. 2^21 - 1)
.       1      version 3 only: fields byte, bit 0 decoder setting, bit 1 coded size, bits 7-2 zero
.       1+1-3  version 3, bit 0: the decoder setting as in version 2
.       2-6    version 3, bit 1 (always set): varints ``Hc - 1``, ``Wc - 1``: the size that was coded
.       n      payload
end-4   4      CRC-32 (zlib/IEEE) of every byte before it
======  =====  =================================================================================

The token grid ``h = ceil(Hc / f)``, ``w = ceil(Wc / f)`` (``Hc, Wc = H, W`` without a coded size) and the
symbol count ``h * w * g`` are derived from the header, not stored, so they can never disagree with it. A
coded size differs from ``H x W``, has one scale on both axes (each side rounds ``s * H``, ``s * W``, at least
1) within ``1/16 .. 16``, and lies within the same side and pixel limits as the image size; decoding paints
``Hc x Wc`` and resizes it to ``H x W`` with Pillow's Lanczos (:func:`wetok.rate.resample`). Fixed overhead
is 14 bytes; a 256×256 or 768×512 file at ``g <= 4`` has a 19-byte header + checksum (a coded size: 3-5
more). Payloads (:mod:`wetok.entropy`):

* raw: the ``h*w*g`` symbols in token order (row-major grid, group fastest), ``d'`` bits each, most
  significant bit first, packed into bytes most significant bit first; zero bits pad the last byte.
  Its length is exactly ``ceil(h*w*g*d' / 8)``.
* static: range-coded with the model's integer prior (group-major symbol order); always shorter than
  the raw payload (the encoder falls back to raw otherwise).
* context: the 4-byte id of the model's context model, then the token bits range-coded with probabilities
  from that causal context model, in wavefront order; always shorter than raw (and than static: the
  encoder falls back otherwise), and longer than the id.

Every field is validated before anything is sized from it; any failure raises :class:`WtkFormatError`
(a :class:`ValueError`) with a one-line message. Single-bit errors anywhere are caught by the CRC, which
is checked before the fields are trusted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO

from wetok.errors import WtkFormatError

MAGIC = b"\x89W"
VERSION = 1  # files without a decoder setting: byte for byte what wetok has always written
DECODER_VERSION = 2  # files with one (realism, seed)
RESAMPLED_VERSION = 3  # files whose image was coded at another size (and maybe a decoder setting)
VERSIONS = (VERSION, DECODER_VERSION, RESAMPLED_VERSION)
HAS_SETTING, HAS_CODED_SIZE = 1, 2  # bits of the version-3 fields byte
MAX_SCALE = 16  # a coded side lies within 1/16 .. 16 times the image's
MAX_SEED = (1 << 21) - 1  # a 3-byte varint
MODEL_ID_BYTES = 6
MODES = ("raw", "static", "context")
CONTEXT_ID_BYTES = 4  # a context payload starts with the id of the context model that coded it
MAX_SIDE = 65535
MAX_PIXELS = 1 << 28  # 16384×16384
MAX_GROUPS = 1024
MAX_GROUP_BITS = 24
MAX_LOG2_F = 7
MAX_FILE_BYTES = 1 << 30
_FIXED = len(MAGIC) + 1 + MODEL_ID_BYTES + 1
MIN_FILE_BYTES = _FIXED + 3 + 4


@dataclass(frozen=True)
class Header:
    """The fields of a ``.wtk`` header; ``mode`` is one of :data:`MODES`."""

    model_id: bytes
    mode: str
    height: int
    width: int
    downsample: int
    groups: int
    group_bits: int
    realism: float | None = None  # the decoder setting (version 2): realism in [0, 1], hundredths
    seed: int | None = None  # its noise seed
    version: int = VERSION
    coded_height: int | None = None  # the size that was coded (version 3), when it differs from the image's
    coded_width: int | None = None

    def __post_init__(self) -> None:
        if self.coded_height is not None and self.version in (VERSION, DECODER_VERSION):
            object.__setattr__(self, "version", RESAMPLED_VERSION)  # a coded size needs version 3
        if self.realism is not None and self.version == VERSION:
            object.__setattr__(self, "version", DECODER_VERSION)  # a decoder setting needs version 2

    @property
    def has_decoder_setting(self) -> bool:
        return self.realism is not None

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()

    @property
    def resampled(self) -> bool:
        """Whether the image was coded at another size than its own (:attr:`coded_size`)."""
        return self.coded_height is not None

    @property
    def coded_size(self) -> tuple[int, int]:
        """``(Hc, Wc)``: the size the tokens paint; the image's own size unless resampled."""
        if self.coded_height is None or self.coded_width is None:
            return self.height, self.width
        return self.coded_height, self.coded_width

    @property
    def scale(self) -> float:
        """Coded over original size (the geometric mean of both axes; 1.0 when not resampled)."""
        hc, wc = self.coded_size
        return (hc * wc / (self.height * self.width)) ** 0.5

    @property
    def token_height(self) -> int:
        return -(-self.coded_size[0] // self.downsample)

    @property
    def token_width(self) -> int:
        return -(-self.coded_size[1] // self.downsample)

    @property
    def num_tokens(self) -> int:
        return self.token_height * self.token_width

    @property
    def num_symbols(self) -> int:
        return self.num_tokens * self.groups

    @property
    def raw_payload_bytes(self) -> int:
        return -(-self.num_symbols * self.group_bits // 8)

    def validate(self) -> Header:
        """Raise :class:`WtkFormatError` unless every field lies within the format's limits."""
        _check(len(self.model_id) == MODEL_ID_BYTES, f"model id must be {MODEL_ID_BYTES} bytes")
        _check(self.mode in MODES, f"unknown coding mode {self.mode!r}")
        _check(self.version in VERSIONS, f"unsupported .wtk format version {self.version}")
        _check(
            (self.realism is None) == (self.seed is None)
            and (self.version == RESAMPLED_VERSION or (self.realism is None) == (self.version == VERSION)),
            "a .wtk decoder setting needs both realism and seed (and format version 2 or 3)",
        )
        if self.realism is not None:
            _check(
                isinstance(self.realism, (int, float))
                and 0 <= self.realism <= 1
                and abs(self.realism * 100 - round(self.realism * 100)) < 1e-6,
                f"realism {self.realism!r} is not a multiple of 0.01 in [0, 1]",
            )
            _check(
                type(self.seed) is int and 0 <= self.seed <= MAX_SEED,
                f"noise seed {self.seed!r} outside 0..{MAX_SEED}",
            )
        _check(
            1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE,
            f"image size {self.width}x{self.height} outside 1..{MAX_SIDE} per side",
        )
        _check(
            self.height * self.width <= MAX_PIXELS,
            f"image size {self.width}x{self.height} exceeds {MAX_PIXELS} pixels",
        )
        if self.version == RESAMPLED_VERSION or self.coded_height is not None or self.coded_width is not None:
            self._validate_coded_size()
        f = self.downsample
        _check(
            f >= 1 and f & (f - 1) == 0 and f.bit_length() - 1 <= MAX_LOG2_F,
            f"downsampling factor {f} is not a power of two up to {1 << MAX_LOG2_F}",
        )
        _check(
            1 <= self.groups <= MAX_GROUPS and 1 <= self.group_bits <= MAX_GROUP_BITS,
            f"g={self.groups}, d'={self.group_bits} outside 1..{MAX_GROUPS}, 1..{MAX_GROUP_BITS}",
        )
        return self

    def _validate_coded_size(self) -> None:
        hc, wc = self.coded_height, self.coded_width
        _check(
            self.version == RESAMPLED_VERSION and type(hc) is int and type(wc) is int,
            "a .wtk coded size needs both sides (and format version 3)",
        )
        assert hc is not None and wc is not None
        _check(
            1 <= hc <= MAX_SIDE and 1 <= wc <= MAX_SIDE and hc * wc <= MAX_PIXELS,
            f"coded size {wc}x{hc} outside 1..{MAX_SIDE} per side and {MAX_PIXELS} pixels",
        )
        _check((hc, wc) != (self.height, self.width), "coded size equals the image size (leave it out)")
        _check(
            all(
                side / MAX_SCALE <= c <= side * MAX_SCALE for c, side in ((hc, self.height), (wc, self.width))
            ),
            f"coded size {wc}x{hc} is more than {MAX_SCALE}x from the image size {self.width}x{self.height}",
        )
        # Each coded side is max(1, round(s * side)) for one scale s: the intervals of s they admit overlap.
        low = max(0.0 if c == 1 else (c - 0.5) / side for c, side in ((hc, self.height), (wc, self.width)))
        high = min((c + 0.5) / side for c, side in ((hc, self.height), (wc, self.width)))
        _check(
            low <= high,
            f"coded size {wc}x{hc} does not keep the shape of the image {self.width}x{self.height}",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WtkFormatError(message)


# -- varints ----------------------------------------------------------------------------------------------
def write_varint(value: int) -> bytes:
    """Unsigned LEB128 of ``0 <= value < 2**21`` (at most 3 bytes)."""
    if not 0 <= value < 1 << 21:
        raise WtkFormatError(f"varint value {value} out of range")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a varint at ``data[pos]`` not reaching ``end``; returns ``(value, next position)``."""
    value = 0
    for i in range(3):
        _check(pos + i < end, "truncated .wtk file (header ends early)")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            _check(byte != 0 or i == 0, "malformed .wtk header (non-minimal varint)")
            return value, pos + i + 1
    raise WtkFormatError("malformed .wtk header (varint longer than 3 bytes)")


# -- container --------------------------------------------------------------------------------------------
def pack(header: Header, payload: bytes) -> bytes:
    """Serialise ``header`` + ``payload`` and append the CRC-32."""
    header.validate()
    flags = MODES.index(header.mode) << 6 | (header.downsample.bit_length() - 1) << 3
    body = b"".join(
        [
            MAGIC,
            bytes([header.version]),
            header.model_id,
            bytes([flags]),
            write_varint((header.groups - 1) * 32 + header.group_bits - 1),
            write_varint(header.height - 1),
            write_varint(header.width - 1),
            _optional_fields(header),
            payload,
        ]
    )
    return body + zlib.crc32(body).to_bytes(4, "big")


def _decoder_setting(header: Header) -> bytes:
    if header.realism is None:
        return b""
    return bytes([round(header.realism * 100)]) + write_varint(header.seed)  # type: ignore[arg-type]


def _optional_fields(header: Header) -> bytes:
    """Version 1: nothing; version 2: the decoder setting; version 3: fields byte, setting, coded size."""
    if header.version != RESAMPLED_VERSION:
        return _decoder_setting(header)
    hc, wc = header.coded_size
    fields = HAS_CODED_SIZE | (HAS_SETTING if header.realism is not None else 0)
    return bytes([fields]) + _decoder_setting(header) + write_varint(hc - 1) + write_varint(wc - 1)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Check magic, version and CRC, then parse and validate the header; returns ``(header, payload)``."""
    _check(isinstance(data, (bytes, bytearray, memoryview)), "a .wtk file must be given as bytes")
    data = bytes(data)
    _check_magic_and_version(data)
    _check(len(data) >= MIN_FILE_BYTES, f"truncated .wtk file ({len(data)} bytes)")
    _check(
        zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big"),
        "corrupted or truncated .wtk file (CRC-32 mismatch)",
    )
    header, pos = _parse_fields(data, len(data) - 4)
    payload = data[pos:-4]
    _check_payload_length(header, len(payload))
    return header, payload


def _check_magic_and_version(data: bytes) -> None:
    _check(len(data) >= len(MAGIC) + 1, f"truncated .wtk file ({len(data)} bytes)")
    _check(data[: len(MAGIC)] == MAGIC, "not a .wtk file (bad magic bytes)")
    _check(
        data[len(MAGIC)] in VERSIONS,
        f"unsupported .wtk format version {data[len(MAGIC)]} (this wetok reads versions "
        f"{', '.join(map(str, VERSIONS))})",
    )


def _parse_fields(data: bytes, end: int) -> tuple[Header, int]:
    model_id = data[3 : 3 + MODEL_ID_BYTES]
    flags = data[_FIXED - 1]
    _check(flags >> 6 < len(MODES), f"unknown coding mode {flags >> 6}")
    _check(flags & 0b111 == 0, "malformed .wtk header (reserved bits set)")
    shape, pos = read_varint(data, _FIXED, end)
    height, pos = read_varint(data, pos, end)
    width, pos = read_varint(data, pos, end)
    realism = seed = coded_height = coded_width = None
    version = data[len(MAGIC)]
    fields = HAS_SETTING if version == DECODER_VERSION else 0
    if version == RESAMPLED_VERSION:
        _check(pos < end, "truncated .wtk file (header ends early)")
        fields, pos = data[pos], pos + 1
        _check(
            fields == HAS_CODED_SIZE | (fields & HAS_SETTING), f"malformed .wtk header (fields byte {fields})"
        )
    if fields & HAS_SETTING:
        _check(pos < end, "truncated .wtk file (header ends early)")
        _check(data[pos] <= 100, f"malformed .wtk header (realism {data[pos]} above 100 hundredths)")
        realism = data[pos] / 100
        seed, pos = read_varint(data, pos + 1, end)
    if fields & HAS_CODED_SIZE:
        coded_height, pos = read_varint(data, pos, end)
        coded_width, pos = read_varint(data, pos, end)
        coded_height, coded_width = coded_height + 1, coded_width + 1
    header = Header(
        model_id=model_id,
        mode=MODES[flags >> 6],
        height=height + 1,
        width=width + 1,
        downsample=1 << ((flags >> 3) & 0b111),
        groups=shape // 32 + 1,
        group_bits=shape % 32 + 1,
        realism=realism,
        seed=seed,
        version=version,
        coded_height=coded_height,
        coded_width=coded_width,
    )
    return header.validate(), pos


def _check_payload_length(header: Header, length: int) -> None:
    raw = header.raw_payload_bytes
    if header.mode == "raw":
        _check(length == raw, f"truncated or malformed .wtk payload ({length} bytes, raw needs {raw})")
    else:
        _check(
            length < raw, f"malformed .wtk payload ({length} bytes of {header.mode} code, raw would be {raw})"
        )
    if header.mode == "context":
        _check(length > CONTEXT_ID_BYTES, f"truncated .wtk payload ({length} bytes of context code)")


MAX_HEADER_BYTES_V2 = (
    _FIXED + 2 + 3 + 3 + 1 + 3
)  # fixed fields + varints and decoder setting at their longest
MAX_HEADER_BYTES = MAX_HEADER_BYTES_V2 + 1 + 3 + 3  # version 3: + fields byte and coded size


def read_stream(fileobj: BinaryIO, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read one ``.wtk`` file from a binary file object, reading no more than its header allows.

    The header comes first: magic, version and fields are checked before anything else is read. Then at most
    the longest payload the header admits (the raw size) plus the CRC is read, and never more than
    ``max_bytes``; a longer stream is refused. ``/dev/zero`` or a 3 GB file thus costs a few bytes."""
    head = _read_up_to(fileobj, len(MAGIC) + 1)
    _check_magic_and_version(head)
    # a version-1 or 2 file reads no further than before version 3 existed (a tiny file: its own length)
    longest = MAX_HEADER_BYTES if head[len(MAGIC)] == RESAMPLED_VERSION else MAX_HEADER_BYTES_V2
    head += _read_up_to(fileobj, longest - len(head))
    header, pos = _parse_fields(head, len(head))
    limit = min(max_bytes, pos + header.raw_payload_bytes + 4)
    data = head + _read_up_to(fileobj, max(0, limit - len(head) + 1))
    _check(len(data) <= limit, f"file is longer than its header allows ({limit} bytes); not a .wtk file")
    return data


def _read_up_to(fileobj: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream (pipes return short reads)."""
    parts: list[bytes] = []
    while n > 0:
        part = fileobj.read(min(n, 1 << 24))
        _check(isinstance(part, bytes), "a .wtk file must be read from a binary file object")
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def header_bytes(header: Header) -> int:
    """Bytes of header + checksum of a file with ``header`` (its fixed cost)."""
    return len(pack(header, b""))
