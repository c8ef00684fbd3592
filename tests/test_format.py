"""The ``.wtk`` container: layout, validation, golden files pinning the bytes.

Golden files are built from fixed token arrays and a fixed integer prior (never from an image: float encoding
is not bit-reproducible across machines). Regenerate deliberately with ``WETOK_REGEN_GOLDEN=1``, which is a
format change and must come with a new format version.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from wetok import format as fmt
from wetok.entropy import RangeCoder, decode_payload, encode_payload
from wetok.format import Header, WtkFormatError
from wetok.prior import PRIOR_TOTAL, Prior

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("WETOK_REGEN_GOLDEN") == "1"


# -- fixed inputs, integer arithmetic only ----------------------------------------------------------------
def golden_prior(groups: int = 4, bits: int = 8) -> Prior:
    """A skewed prior from an integer formula: weight ``2^(16 - i // (j + 2))``, scaled exactly."""
    n = 1 << bits
    rows = []
    for j in range(groups):
        w = [1 << max(0, 16 - i // (j + 2)) for i in range(n)]
        free, total = PRIOR_TOTAL - n, sum(w)
        f = [1 + wi * free // total for wi in w]
        for k in range(PRIOR_TOTAL - sum(f)):
            f[k % n] += 1
        rows.append(f)
    return Prior(np.array(rows, dtype=np.uint32))


def lcg_tokens(prior: Prior, count: int, seed: int = 12345) -> np.ndarray:
    """``[count, g]`` tokens drawn from ``prior`` with a 64-bit LCG and an exact integer inverse CDF."""
    state, out = seed, np.empty((count, prior.groups), dtype=np.int64)
    cdfs = [np.cumsum(row.astype(np.int64)) for row in prior.frequencies]
    for i in range(count):
        for j in range(prior.groups):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            out[i, j] = int(np.searchsorted(cdfs[j], state >> 40, side="right"))
    return out


def golden_cases() -> dict[str, tuple[Header, np.ndarray, Prior | None]]:
    prior = golden_prior()
    static = Header(b"golden", "static", height=100, width=75, downsample=16, groups=4, group_bits=8)
    raw = Header(b"\x00\x01\x02\x03\x04\x05", "raw", height=7, width=5, downsample=2, groups=2, group_bits=4)
    lfq = Header(b"\xff" * 6, "raw", height=33, width=17, downsample=16, groups=1, group_bits=18)
    # version 3: an image coded at 1.41x its size (wetok.rate), with a decoder setting
    resampled = Header(b"golden", "static", 100, 75, 16, 4, 8, 0.25, 9, coded_height=141, coded_width=106)
    return {
        "static_g4d8": (static, lcg_tokens(prior, static.num_tokens), prior),
        "raw_g2d4": (raw, np.arange(raw.num_symbols).reshape(-1, 2) * 5 % 16, None),
        "raw_g1d18": (lfq, (np.arange(6) * 47303 + 11).reshape(-1, 1) % (1 << 18), None),
        "resampled_g4d8": (resampled, lcg_tokens(prior, resampled.num_tokens), prior),
    }


def build(header: Header, tokens: np.ndarray, prior: Prior | None) -> bytes:
    coder = RangeCoder(prior) if prior is not None else None
    mode, payload = encode_payload(tokens, header.group_bits, header.mode, coder)
    assert mode == header.mode
    return fmt.pack(header, payload)


def parse(data: bytes, prior: Prior | None) -> tuple[Header, np.ndarray]:
    header, payload = fmt.unpack(data)
    coder = RangeCoder(prior) if prior is not None else None
    tokens = decode_payload(payload, header.mode, header.num_tokens, header.groups, header.group_bits, coder)
    return header, tokens


@pytest.fixture(scope="module", autouse=True)
def regenerate() -> None:
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        for name, case in golden_cases().items():
            (GOLDEN / f"{name}.wtk").write_bytes(build(*case))
        golden_prior().save(GOLDEN)


# -- golden files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(golden_cases()))
def test_golden_bytes(name: str) -> None:
    header, tokens, prior = golden_cases()[name]
    golden = (GOLDEN / f"{name}.wtk").read_bytes()
    assert build(header, tokens, prior) == golden, "the .wtk bytes changed: bump fmt.VERSION deliberately"
    parsed, decoded = parse(golden, prior)
    assert parsed == header
    np.testing.assert_array_equal(decoded, tokens)


def test_golden_prior_bytes(tmp_path: Path) -> None:
    golden_prior().save(tmp_path)
    assert (tmp_path / "prior.json").read_bytes() == (GOLDEN / "prior.json").read_bytes()
    np.testing.assert_array_equal(Prior.load(GOLDEN).frequencies, golden_prior().frequencies)


def test_hand_worked_header() -> None:
    """docs/format.md walks through these bytes."""
    data = (GOLDEN / "raw_g2d4.wtk").read_bytes()
    assert data[:3] == b"\x89W\x01"
    assert data[3:9] == bytes(range(6))
    assert data[9] == 0b00_001_000  # raw, log2 f = 1
    assert data[10:13] == bytes([(2 - 1) * 32 + 4 - 1, 7 - 1, 5 - 1])
    assert data[13:25] == bytes([0x05, 0xAF, 0x49, 0xE3, 0x8D, 0x27, 0xC1, 0x6B, 0x05, 0xAF, 0x49, 0xE3])
    assert data[25:] == zlib.crc32(data[:25]).to_bytes(4, "big")


# -- layout -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16383, 16384, 65534, (1 << 21) - 1])
def test_varint_round_trip(value: int) -> None:
    data = fmt.write_varint(value)
    assert len(data) == 1 + (value >= 128) + (value >= 16384)
    assert fmt.read_varint(data, 0, len(data)) == (value, len(data))


def test_varint_refuses_non_minimal_and_long() -> None:
    with pytest.raises(WtkFormatError, match="non-minimal"):
        fmt.read_varint(b"\x81\x00", 0, 2)
    with pytest.raises(WtkFormatError, match="longer than 3"):
        fmt.read_varint(b"\xff\xff\xff\x01", 0, 4)


def test_overhead_of_typical_files() -> None:
    for h, w in [(256, 256), (512, 768), (4096, 4096)]:
        header = Header(b"abcdef", "static", h, w, downsample=16, groups=4, group_bits=8)
        assert fmt.header_bytes(header) == 19
    assert fmt.header_bytes(Header(b"abcdef", "raw", 100, 120, 16, 4, 8)) == 17


@pytest.mark.parametrize("mode", fmt.MODES)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1, 1), (65535, 4096, 16, 4, 8), (37, 29, 2, 2, 4), (300, 200, 128, 1024, 1), (5, 5, 1, 1, 24)],
)
def test_header_round_trip(mode: str, shape: tuple[int, ...]) -> None:
    header = Header(b"\x01" * 6, mode, *shape)
    payload = b"\x00" * (header.raw_payload_bytes - (mode != "raw"))
    if mode == "context" and len(payload) <= fmt.CONTEXT_ID_BYTES:  # not even room for the context model id
        with pytest.raises(WtkFormatError, match="context code"):
            fmt.unpack(fmt.pack(header, payload))
        return
    assert fmt.unpack(fmt.pack(header, payload)) == (header, payload)


def test_derived_grid() -> None:
    header = Header(b"abcdef", "raw", height=37, width=29, downsample=16, groups=4, group_bits=8)
    assert (header.token_height, header.token_width, header.num_symbols) == (3, 2, 24)
    assert header.raw_payload_bytes == 24


# -- refusals ---------------------------------------------------------------------------------------------
def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


VALID_BODY = b"\x89W\x01" + b"abcdef" + bytes([0b00_100_000, 0x67, 0x00, 0x00])  # 1x1 px, g4 d'8, f16


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"\x89", "truncated"),
        (b"GIF89a" + b"\0" * 30, "not a .wtk file"),
        (b"\x89W\x04" + b"\0" * 30, "version 4"),
        (b"\x89W\x01abc", "truncated"),
        (with_crc(VALID_BODY + b"\0" * 4)[:-1], "CRC-32"),
        (with_crc(VALID_BODY + b"\0" * 3), "raw needs 4"),
        (with_crc(VALID_BODY + b"\0" * 5), "raw needs 4"),
        (with_crc(VALID_BODY[:9] + b"\xc0" + VALID_BODY[10:] + b"\0" * 4), "unknown coding mode"),
        (with_crc(VALID_BODY[:9] + b"\x21" + VALID_BODY[10:] + b"\0" * 4), "reserved bits"),
        (with_crc(VALID_BODY[:11] + b"\xff\xff\x7f\x00" + b"\0" * 4), "outside 1..65535"),
        (with_crc(VALID_BODY[:11] + b"\xfe\xff\x03\xfe\xff\x03" + b"\0"), "exceeds"),
        (with_crc(VALID_BODY[:10] + b"\xff\xff\x7f\x00\x00" + b"\0"), "outside 1..1024"),
        (with_crc(VALID_BODY[:10] + b"\x78\x00\x00" + b"\0"), "outside 1..1024, 1..24"),
        (with_crc(VALID_BODY[:11] + b"\x80\x80"), "header ends early"),
        (with_crc(VALID_BODY[:9] + b"\x60" + VALID_BODY[10:] + b"\0" * 4), "static code"),
    ],
)
def test_refusals_are_one_line(data: bytes, message: str) -> None:
    with pytest.raises(WtkFormatError, match=message) as err:
        fmt.unpack(data)
    assert "\n" not in str(err.value)


def test_giant_claim_refused_before_allocation() -> None:
    """10^9 x 10^9 pixels does not fit the varints; 65535 x 65535 exceeds MAX_PIXELS; both fail at once."""
    with pytest.raises(WtkFormatError):
        fmt.pack(Header(b"abcdef", "raw", 10**9, 10**9, 16, 4, 8), b"")
    body = VALID_BODY[:11] + fmt.write_varint(65534) + fmt.write_varint(65534)
    with pytest.raises(WtkFormatError, match="exceeds"):
        fmt.unpack(with_crc(body))


def test_read_stream_is_bounded() -> None:
    data = fmt.pack(Header(bytes(6), "raw", 8, 8, 4, 2, 4), bytes(4))
    assert fmt.read_stream(io.BytesIO(data)) == data
    with pytest.raises(WtkFormatError, match="longer than its header allows"):
        fmt.read_stream(io.BytesIO(data + b"x"))
    with pytest.raises(WtkFormatError, match="longer than"):
        fmt.read_stream(io.BytesIO(data), max_bytes=len(data) - 1)
    with pytest.raises(WtkFormatError, match="bad magic"):
        fmt.read_stream(io.BytesIO(b"abc"))
    with pytest.raises(WtkFormatError, match="binary"):
        fmt.read_stream(io.StringIO("text"))


@pytest.mark.parametrize("name", sorted(golden_cases()))
def test_every_single_bit_flip_is_detected(name: str) -> None:
    header, tokens, prior = golden_cases()[name]
    data = bytearray((GOLDEN / f"{name}.wtk").read_bytes())
    for bit in range(8 * len(data)):
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WtkFormatError):
            parse(bytes(data), prior)
        data[bit // 8] ^= 1 << (bit % 8)
