"""Seeded fuzzing of ``.wtk`` parsing and decoding: truncations, bit flips, byte edits and random headers
with valid checksums. Only :class:`WtkFormatError` or :class:`ModelMismatchError` may come out, every
single-bit flip must be caught, and nothing may allocate beyond what the file can hold."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
import torch

from wetok import Tokenizer, TokenizerConfig
from wetok import format as fmt
from wetok.codec import Codec
from wetok.context_fit import fit_context_model
from wetok.errors import ImageTooLargeError, ModelMismatchError, WtkFormatError
from wetok.prior import Prior, fit_prior

EXPECTED = (WtkFormatError, ModelMismatchError, ImageTooLargeError)
MAX_DECODE_TOKENS = 64  # decode pixels only for small claims, to keep the run short


@pytest.fixture(scope="module")
def codec() -> Codec:
    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig.preset("tiny")).eval()
    tokens = model.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    smooth = model.encode(torch.from_numpy(smooth_image()).permute(2, 0, 1)[None].float() / 127.5 - 1)
    return Codec(
        model,
        fit_prior([tokens], 2, 4, alpha=0.05),
        context=fit_context_model([smooth], 2, 4, epochs=3, batch_size=64),
    )


def smooth_image() -> np.ndarray:
    """A 40x48 picture of gentle ramps: its tokens are predictable enough for context coding to win."""
    y, x = np.mgrid[0:40, 0:48]
    return np.stack([x * 5, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def files(codec: Codec) -> dict[str, bytes]:
    image = np.random.default_rng(0).integers(0, 256, (13, 11, 3), dtype=np.uint8)
    out = {mode: codec.compress(image, mode=mode) for mode in ("raw", "static")}
    out["context"] = codec.compress(smooth_image())
    assert fmt.unpack(out["static"])[0].mode == "static"
    assert fmt.unpack(out["context"])[0].mode == "context", "the default mode of a model with a context model"
    return out


def outcome(codec: Codec, data: bytes) -> str:
    """Parse and decode; returns 'ok' or 'refused', re-raising anything unexpected."""
    try:
        tokens, (h, w) = codec.unpack_tokens(data)
    except EXPECTED as e:
        assert "\n" not in str(e)
        return "refused"
    assert tokens.dtype == torch.int64 and int(tokens.max()) < 16
    if tokens.shape[1] * tokens.shape[2] <= MAX_DECODE_TOKENS:
        assert codec.decode_tokens(tokens, (h, w)).size == (w, h)
    return "ok"


@pytest.mark.parametrize("mode", ["raw", "static", "context"])
def test_every_truncation_refused(codec: Codec, files: dict[str, bytes], mode: str) -> None:
    data = files[mode]
    assert outcome(codec, data) == "ok"
    for n in range(len(data)):
        assert outcome(codec, data[:n]) == "refused"


@pytest.mark.parametrize("mode", ["raw", "static", "context"])
def test_every_single_bit_flip_detected(codec: Codec, files: dict[str, bytes], mode: str) -> None:
    data = bytearray(files[mode])
    for bit in range(8 * len(data)):
        data[bit // 8] ^= 1 << (bit % 8)
        assert outcome(codec, bytes(data)) == "refused", f"flip of bit {bit} went unnoticed"
        data[bit // 8] ^= 1 << (bit % 8)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(5)
    pos = int(rng.integers(len(b)))
    if kind == 0:  # several bit flips
        for p in rng.integers(0, 8 * len(b), size=int(rng.integers(2, 9))):
            b[p // 8] ^= 1 << (p % 8)
    elif kind == 1:  # overwrite a run of bytes
        n = int(rng.integers(1, 9))
        b[pos : pos + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    elif kind == 2:  # insert bytes
        b[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == 3:  # delete bytes
        del b[pos : pos + int(rng.integers(1, 9))]
    else:  # append garbage
        b += rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return bytes(b)


def test_random_mutations(codec: Codec, files: dict[str, bytes]) -> None:
    rng = np.random.default_rng(1234)
    for i in range(3000):
        data = files[("raw", "static", "context")[i % 3]]
        mutated = mutate(data, rng)
        assert mutated == data or outcome(codec, mutated) == "refused"


def random_header(codec: Codec, rng: np.random.Generator) -> bytes:
    """Random fields and payload, but a valid CRC: exercises validation behind the checksum."""
    fp = codec.model_id if rng.random() < 0.8 else rng.bytes(6)
    flags = int(rng.choice([0x08, 0x48, 0x88, 0x08, 0x48, 0x88, int(rng.integers(256))]))
    shape = 35 if rng.random() < 0.8 else int(rng.integers(1 << 15))
    sides = [int(rng.integers(1 << int(rng.integers(1, 21)))) for _ in range(2)]
    fields = [fmt.write_varint(v) for v in (shape, *sides)]
    payload = rng.bytes(int(rng.integers(0, 200)))
    if flags == 0x88 and rng.random() < 0.7:  # mostly the right context model id, so decoding is fuzzed
        payload = codec.context.model_id + payload
    body = fmt.MAGIC + bytes([fmt.VERSION]) + fp + bytes([flags]) + b"".join(fields) + payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_random_headers_with_valid_crc(codec: Codec) -> None:
    rng = np.random.default_rng(99)
    results = [outcome(codec, random_header(codec, rng)) for _ in range(3000)]
    assert results.count("ok") > 10, "some random files should parse, so decoding is fuzzed too"


def test_random_bytes_and_foreign_files(codec: Codec) -> None:
    rng = np.random.default_rng(7)
    for n in rng.integers(0, 300, size=1000):
        assert outcome(codec, rng.bytes(int(n))) == "refused"
    for magic in (b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"RIFF", b"\x89W", b"\x89W\x01"):
        assert outcome(codec, magic + rng.bytes(40)) == "refused"


def test_context_claims_are_bounded_by_the_payload(codec: Codec, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16384x16384 claim with a 10-byte context payload is refused before any decoding (even with the
    pixel limit raised to the format's own)."""
    monkeypatch.setenv("WETOK_MAX_PIXELS", str(fmt.MAX_PIXELS))
    header = fmt.Header(codec.model_id, "context", 16384, 16384, *codec._shape())
    start = time.perf_counter()
    with pytest.raises(WtkFormatError, match="too short"):
        codec.unpack_tokens(fmt.pack(header, codec.context.model_id + b"\x00" * 6))
    assert time.perf_counter() - start < 0.5


def test_context_file_of_another_context_model_is_refused(codec: Codec, files: dict[str, bytes]) -> None:
    other = Codec(
        codec.model, codec.prior, context=fit_context_model([np.zeros((3, 3, 2), np.int64)], 2, 4, epochs=1)
    )
    assert other.model_id == codec.model_id  # the model id does not cover the context model ...
    with pytest.raises(ModelMismatchError, match="context model"):  # ... the payload's context id does
        other.unpack_tokens(files["context"])
    with pytest.raises(ModelMismatchError, match="no context model"):
        Codec(codec.model, codec.prior).unpack_tokens(files["context"])


def test_static_claims_are_bounded_by_the_payload(codec: Codec, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16384x16384 claim with a 10-byte static payload is refused before anything is sized from it
    (even with the pixel limit raised to the format's own)."""
    monkeypatch.setenv("WETOK_MAX_PIXELS", str(fmt.MAX_PIXELS))
    uniform = Codec(codec.model, Prior.uniform(2, 4))
    header = fmt.Header(uniform.model_id, "static", 16384, 16384, 2, 2, 4)
    start = time.perf_counter()
    with pytest.raises(WtkFormatError, match="too short"):
        uniform.unpack_tokens(fmt.pack(header, b"\x00" * 10))
    assert time.perf_counter() - start < 0.5
