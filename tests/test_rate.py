"""The rate knob by resampling: the coded-size header field (format version 3), the search over the scale,
the codec and the command line (``-q``, ``--bpp``, ``--size``)."""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_model
from tests.test_cli import assert_one_error, env, make_image, model_root, wetok  # noqa: F401 (fixtures)
from wetok import format as fmt
from wetok import rate
from wetok.codec import Codec
from wetok.errors import ImageTooLargeError, WtkFormatError
from wetok.format import Header
from wetok.info import read_info
from wetok.limits import set_max_pixels

ID = b"abcdef"


def coded(h: int = 100, w: int = 75, hc: int | None = 50, wc: int | None = 38, **kw: object) -> Header:
    return Header(ID, "raw", h, w, 16, 4, 8, coded_height=hc, coded_width=wc, **kw)  # type: ignore[arg-type]


def packed(header: Header) -> bytes:
    return fmt.pack(header, bytes(header.raw_payload_bytes))


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


# -- the header field ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", [{}, {"realism": 0.3, "seed": 7}])
def test_coded_size_round_trip(setting: dict) -> None:
    header = coded(**setting)
    data = packed(header)
    assert data[2] == fmt.RESAMPLED_VERSION
    back, _ = fmt.unpack(data)
    assert back == header and back.coded_size == (50, 38) and back.resampled
    assert (back.token_height, back.token_width) == (4, 3)  # the grid of the coded size, not of 100x75
    assert fmt.unpack(fmt.read_stream(io.BytesIO(data)))[0] == header


def test_hand_worked_version_3_header() -> None:
    data = packed(coded())
    # magic, version 3, id, flags (raw, f=16), shape varint, H-1=99, W-1=74, fields byte (coded size only),
    # Hc-1=49, Wc-1=37, then the 4*3*4 raw bytes of the coded grid
    assert data[:16] == b"\x89W\x03abcdef\x20\x67\x63\x4a\x02\x31\x25"
    assert len(data) == 16 + 48 + 4


def test_without_a_coded_size_nothing_changes() -> None:
    plain = Header(ID, "raw", 100, 75, 16, 4, 8)
    assert plain.version == fmt.VERSION and not plain.resampled and plain.scale == 1
    assert packed(plain)[2] == fmt.VERSION and len(packed(plain)) == 13 + plain.raw_payload_bytes + 4
    assert Header(ID, "raw", 100, 75, 16, 4, 8, 0.5, 1).version == fmt.DECODER_VERSION


@pytest.mark.parametrize(
    "hc, wc, message",
    [
        (0, 38, "outside 1..65535"),
        (50, 0, "outside 1..65535"),
        (70000, 52500, "outside 1..65535"),
        (50, None, "needs both sides"),
        (100, 75, "equals the image size"),
        (50, 50, "does not keep the shape"),
        (2000, 1500, "more than 16x"),
        (5, 4, "more than 16x"),
    ],
)
def test_hostile_coded_sizes_are_refused(hc: int, wc: int | None, message: str) -> None:
    with pytest.raises(WtkFormatError, match=message):
        packed(coded(hc=hc, wc=wc))


def _v3_body(fields: int, coded_varints: bytes, h: int = 99, w: int = 74) -> bytes:
    return (
        b"\x89W\x03"
        + ID
        + b"\x20\x67"
        + fmt.write_varint(h)
        + fmt.write_varint(w)
        + bytes([fields])
        + coded_varints
    )


@pytest.mark.parametrize(
    "body, message",
    [
        (_v3_body(0, b""), "fields byte 0"),  # version 3 without a coded size
        (_v3_body(1, b"\x00\x00"), "fields byte 1"),
        (_v3_body(6, b"\x31\x25"), "fields byte 6"),  # a reserved bit
        (_v3_body(2, b"\xfe\xff\x03\xfe\xff\x03"), "outside 1..65535 per side and 268435456 pixels"),  # huge
        (_v3_body(2, b"\x63\x4a"), "equals the image size"),
        (_v3_body(2, b"\x31\x31"), "does not keep the shape"),
        (_v3_body(2, b"\x31")[:-1], "header ends early"),  # (no payload either)
    ],
)
def test_hostile_files_refused_in_one_line(body: bytes, message: str) -> None:
    with pytest.raises(WtkFormatError, match=message) as err:
        fmt.unpack(with_crc(body + bytes(64 if "ends early" not in message else 0)))
    assert "\n" not in str(err.value)


def test_payload_inconsistent_with_the_coded_grid() -> None:
    """A raw payload sized for the image's own grid (7*5 tokens) is not that of the coded grid (4*3)."""
    body = _v3_body(2, b"\x31\x25") + bytes(Header(ID, "raw", 100, 75, 16, 4, 8).raw_payload_bytes)
    with pytest.raises(WtkFormatError, match="raw needs 48"):
        fmt.unpack(with_crc(body))


def test_huge_coded_size_stops_read_stream_at_the_header() -> None:
    stream = io.BytesIO(_v3_body(2, b"\x63\xff\x7f") + bytes(1 << 20))
    with pytest.raises(WtkFormatError, match="more than 16x"):
        fmt.read_stream(stream)
    assert stream.tell() <= fmt.MAX_HEADER_BYTES


# -- the search -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FakeFile:
    data: bytes


class FakeCoder:
    """``code(scale)`` returning ``bytes_per_px * coded pixels`` bytes; records the scales tried."""

    def __init__(self, height: int = 400, width: int = 600, bytes_per_px: float = 0.006) -> None:
        self.height, self.width, self.rate, self.tried = height, width, bytes_per_px, []

    def __call__(self, scale: float | None) -> FakeFile:
        self.tried.append(scale)
        hc, wc = rate.coded_size(self.height, self.width, 1.0 if scale is None else scale)
        return FakeFile(bytes(max(20, int(self.rate * hc * wc))))


@pytest.mark.parametrize("target", [100, 300, 1440, 2000, 5000, 20000])
def test_search_stops_when_the_next_rung_would_exceed(target: int) -> None:
    fake = FakeCoder()
    choice = rate.search(fake.height, fake.width, fake, target)
    assert choice.reached and len(choice.data) <= target
    k = round(8 * np.log2(choice.scale))
    assert (
        k == rate.MAX_RUNG or len(fake(rate.rung_scale(k + 1)).data) > target
    )  # one more rung would not fit
    assert choice.tries == len(set(fake.tried[:-1])) <= 5  # a good first guess: few encodes


def test_search_says_when_the_target_cannot_be_reached() -> None:
    fake = FakeCoder()
    choice = rate.search(fake.height, fake.width, fake, 50)
    assert not choice.reached and choice.scale == rate.MIN_SCALE
    assert len(choice.data) > 50 and "smallest scale" in choice.notes[0]


def test_search_keeps_the_best_scoring_fitting_candidate() -> None:
    fake = FakeCoder()
    scores = {}

    def score(file: FakeFile) -> float:
        scores[len(file.data)] = -len(file.data)  # prefer the smaller file, for the test
        return -len(file.data)

    choice = rate.search(fake.height, fake.width, fake, 5000, score)
    assert choice.scored == 2 and len(scores) == 2 and len(choice.data) == min(scores)


def test_search_is_capped_by_the_pixel_limit() -> None:
    set_max_pixels(600 * 400 * 2)
    try:
        fake = FakeCoder()
        choice = rate.search(fake.height, fake.width, fake, 10**9)
        assert choice.reached and choice.scale <= 2**0.5 and "pixel limit" in choice.notes[0]
        assert all(s is None or rate.fits(400, 600, s) for s in fake.tried)
    finally:
        set_max_pixels(None)


def test_quality_ladder_and_knob_checks() -> None:
    assert [rate.quality_scale(q) for q in (0, 25, 50, 75, 100)] == [0.25, 0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="0..100"):
        rate.quality_scale(101)
    with pytest.raises(ValueError, match="one rate knob"):
        rate.choose(10, 10, FakeCoder(), quality=50, bpp=0.1)
    with pytest.raises(ValueError, match="positive"):
        rate.target_bytes(10, 10, bpp=-1)
    assert rate.target_bytes(100, 80, bpp=0.1) == 100


def test_quality_scale_is_capped_with_a_note_never_a_crash() -> None:
    set_max_pixels(1000)
    try:
        scale, note = rate.cap_scale(20, 30, 4.0)
        assert rate.fits(20, 30, scale) and scale < 4 and note and "limit of 1,000 pixels" in note
    finally:
        set_max_pixels(None)


# -- the codec ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(tiny_model())


def photo(h: int = 40, w: int = 56) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1) % 256
    return (rgb + np.random.default_rng(0).integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


def test_no_knob_writes_todays_file(codec: Codec) -> None:
    x = photo()
    tokens, size = codec.encode_tokens(x)
    assert codec.compress(x) == codec.pack_tokens(tokens, size)
    assert codec.compress(x, quality=50) == codec.compress(x)  # scale 1: nothing resampled


@pytest.mark.parametrize("quality", [0, 30, 70, 100])
def test_every_quality_decodes_to_the_original_size(codec: Codec, quality: int) -> None:
    data = codec.compress(photo(), quality=quality)
    info = read_info(data)
    assert info.version == fmt.RESAMPLED_VERSION and (info.height, info.width) == (40, 56)
    assert info.coded_size == rate.coded_size(40, 56, rate.quality_scale(quality))
    assert codec.decompress(data).image.size == (56, 40)


def test_bigger_scale_bigger_file(codec: Codec) -> None:
    sizes = [len(codec.compress(photo(), quality=q)) for q in (0, 25, 50, 75)]
    assert sizes == sorted(sizes) and sizes[-1] > 8 * sizes[0]


@pytest.mark.parametrize("target", [150, 400, 1500])
def test_size_target_gives_the_largest_fitting_file(codec: Codec, target: int) -> None:
    choice = codec.compress_choice(photo(), size=target)
    assert choice.reached and len(choice.data) <= target
    up = rate.rung_scale(round(8 * np.log2(choice.scale)) + 1)
    assert len(codec.encode_file(photo(), scale=up).data) > target or choice.scored
    assert codec.decompress(choice.data).image.size == (56, 40)


def test_generative_decoder_at_every_scale() -> None:
    model = tiny_model()
    model.attach_generative_decoder(model.to_generative(level_noise=True).decoder, default_realism=0.8)
    gen = Codec(model)
    for quality in (10, 90):
        data = gen.compress(photo(), quality=quality, realism=1.0, seed=3)
        info = read_info(data)
        assert info.resampled and info.realism == 1.0 and info.seed == 3
        assert gen.decompress(data).image.size == (56, 40)


def test_quality_over_the_pixel_limit_is_capped_in_the_codec(codec: Codec) -> None:
    set_max_pixels(100 * 80)
    try:
        choice = codec.compress_choice(photo(), quality=100)  # scale 4 would code 224x160
        hc, wc = read_info(choice.data).coded_size
        assert hc * wc <= 100 * 80 and choice.scale < 4 and "limit of 8,000 pixels" in choice.notes[0]
        assert codec.decompress(choice.data).image.size == (56, 40)
    finally:
        set_max_pixels(None)


def test_unreachable_target_warns_in_the_api(codec: Codec) -> None:
    with pytest.warns(UserWarning, match="even the smallest scale"):
        data = codec.compress(photo(), size=10)
    assert read_info(data).coded_size == rate.coded_size(40, 56, rate.MIN_SCALE)


def test_coded_size_over_the_pixel_limit_refused_at_decode(codec: Codec) -> None:
    data = codec.compress(photo(), quality=75)  # coded 112x80
    set_max_pixels(56 * 40)
    try:
        with pytest.raises(ImageTooLargeError, match="coded image is 112x80"):
            codec.decompress(data)
    finally:
        set_max_pixels(None)


# -- the command line ------------------------------------------------------------------------------------
def test_cli_bpp_size_and_quality(env: Path) -> None:  # noqa: F811
    make_image(env / "big.png", size=(64, 48))
    out = wetok("compress", "big.png", "-m", "tiny", "--bpp", "2", "--json")
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["bytes"] * 8 / (64 * 48) <= 2 and record["target_reached"]
    assert wetok("compress", "big.png", "-m", "tiny", "--size", "300", "-f").exit_code == 0
    assert (env / "big.wtk").stat().st_size <= 300
    result = wetok("compress", "big.png", "-m", "tiny", "-q", "80", "-f")
    assert result.exit_code == 0 and "scale 2.29" in result.stderr, result.output
    info = wetok("info", "big.wtk")
    assert "147x110 (2.29)" in info.stdout and "64x48" in info.stdout, info.output
    assert wetok("decompress", "big.wtk", "-o", "back.png").exit_code == 0
    assert Image.open(env / "back.png").size == (64, 48)


def test_cli_unreachable_target_is_said(env: Path) -> None:  # noqa: F811
    result = wetok("compress", "a.png", "-m", "tiny", "--size", "10")
    assert result.exit_code == 0, result.output
    assert (
        "Warning: a.png: even the smallest scale" in result.stderr and "[above the target]" in result.stderr
    )


@pytest.mark.parametrize(
    "args, names",
    [
        (["-q", "50", "--bpp", "0.1"], ("-q/--quality", "--bpp")),
        (["--size", "100", "--bpp", "0.1"], ("--bpp", "--size")),
        (["-q", "101"], ("-q",)),
        (["--bpp", "0"], ("--bpp",)),
        (["--size", "0"], ("--size",)),
    ],
)
def test_cli_knob_usage_errors_exit_2(env: Path, args: list[str], names: tuple[str, ...]) -> None:  # noqa: F811
    result = wetok("compress", "a.png", "-m", "tiny", *args)
    assert result.exit_code == 2, result.output
    assert all(n in result.stderr for n in names) and "Traceback" not in result.output
    assert not (env / "a.wtk").exists()
