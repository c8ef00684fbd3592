"""Context-model coding: integer model validation and files, wavefront round trips, golden bytes, fitting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wetok import format as fmt
from wetok.context import CONTEXT_NAME, PROB_TOTAL, ContextModel, token_bits, wavefronts
from wetok.context_fit import LEFT_UP, WIDE, WIDER, bits_report, fit_context_model, quantise
from wetok.entropy import ContextCoder, RangeCoder, decode_payload, encode_payload
from wetok.errors import ContextModelError, ModelMismatchError, WtkFormatError
from wetok.prior import Prior

FIXTURES = Path(__file__).parent / "fixtures" / "context"
REGEN = os.environ.get("WETOK_REGEN_GOLDEN") == "1"


# -- fixed inputs from integer formulas only (the golden file must not depend on float fitting) -----------
def golden_model(groups: int = 2, bits: int = 4, offsets: tuple = LEFT_UP) -> ContextModel:
    """A hand-made integer model: every bit copies the same bit of its left and up neighbours, with a pull
    towards the bit above it in the token. Table: 2^24 · sigmoid from an integer formula."""
    d, k = groups * bits, len(offsets)
    neighbour = np.zeros((k, d, d), dtype=np.int32)
    for i in range(d):
        neighbour[0, i, i] = 600 + 10 * i  # left
        neighbour[2, i, i] = 500 - 7 * i  # up
        neighbour[1, i, (i + 1) % d] = -120  # up-left, a little cross-talk
        neighbour[3, i, i] = 90  # up-right
    present = np.tile(np.arange(-300, -300 + 40 * d, 40, dtype=np.int32)[:d], (k, 1))
    own = np.triu(np.fromfunction(lambda a, b: (a * 37 + b * 11) % 200 - 100, (d, d), dtype=np.int64), 1)
    half = 160
    table = [
        PROB_TOTAL * (z + half + 1) // (2 * half + 2) for z in range(-half, half + 1)
    ]  # a ramp, monotone
    return ContextModel(
        groups=groups,
        group_bits=bits,
        offsets=offsets,
        weight_bits=8,
        table_shift=3,
        bias=np.arange(d, dtype=np.int32) * 25 - 100,
        present=present,
        neighbour=neighbour,
        own=own.astype(np.int32),
        table=np.array(table, dtype=np.int32),
    )


def smooth_tokens(h: int, w: int, groups: int = 2, bits: int = 4, seed: int = 3) -> np.ndarray:
    """Blocky tokens (so neighbours predict each other) with a little noise, from a 64-bit LCG."""
    state, out = seed, np.empty((h, w, groups), dtype=np.int64)
    for r in range(h):
        for c in range(w):
            for g in range(groups):
                state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
                base = ((r // 3) * 5 + (c // 4) * 3 + g) % (1 << bits)
                out[r, c, g] = base if (state >> 59) else (state >> 40) % (1 << bits)
    return out


@pytest.fixture(scope="module", autouse=True)
def regenerate() -> None:
    if REGEN:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        golden_model().save(FIXTURES)
        tokens = smooth_tokens(9, 13)
        np.save(FIXTURES / "tokens.npy", tokens)
        header = fmt.Header(b"ctxgld", "context", 9 * 4 - 1, 13 * 4 - 2, 4, 2, 4)
        (FIXTURES / "tokens.wtk").write_bytes(fmt.pack(header, ContextCoder(golden_model()).encode(tokens)))


# -- golden file ------------------------------------------------------------------------------------------
def test_golden_context_file_decodes_byte_for_byte() -> None:
    """A context-coded file made once and committed: any change to the integer probabilities, the bit order
    or the wavefront order changes these bytes (or fails to decode them)."""
    data = (FIXTURES / "tokens.wtk").read_bytes()
    expected = np.load(FIXTURES / "tokens.npy")
    model = ContextModel.load(FIXTURES)
    assert model.to_dict() == golden_model().to_dict()
    header, payload = fmt.unpack(data)
    assert header.mode == "context" and (header.token_height, header.token_width) == (9, 13)
    coder = ContextCoder(model)
    tokens = decode_payload(payload, "context", header.num_tokens, 2, 4, None, coder, (9, 13))
    np.testing.assert_array_equal(tokens.reshape(9, 13, 2), expected)
    assert coder.encode(expected) == payload, "context payload bytes changed: a format change"
    assert payload[: fmt.CONTEXT_ID_BYTES] == model.model_id


def test_golden_model_file_bytes(tmp_path: Path) -> None:
    golden_model().save(tmp_path)
    assert (tmp_path / CONTEXT_NAME).read_bytes() == (FIXTURES / CONTEXT_NAME).read_bytes()


def test_every_single_bit_flip_of_the_golden_file_is_refused() -> None:
    data = bytearray((FIXTURES / "tokens.wtk").read_bytes())
    coder = ContextCoder(golden_model())
    for bit in range(8 * len(data)):
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((WtkFormatError, ModelMismatchError)):
            header, payload = fmt.unpack(bytes(data))
            decode_payload(
                payload,
                header.mode,
                header.num_tokens,
                2,
                4,
                None,
                coder,
                (header.token_height, header.token_width),
            )
        data[bit // 8] ^= 1 << (bit % 8)


# -- round trips ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (7, 1), (2, 2), (5, 9), (9, 5), (16, 16), (3, 40)])
def test_round_trip_shapes(h: int, w: int) -> None:
    coder = ContextCoder(golden_model())
    tokens = smooth_tokens(h, w, seed=h * 100 + w)
    np.testing.assert_array_equal(coder.decode(coder.encode(tokens), h, w).reshape(h, w, 2), tokens)


@pytest.mark.parametrize(
    "groups, bits, offsets",
    [(1, 1, LEFT_UP), (3, 5, LEFT_UP), (6, 8, LEFT_UP), (2, 4, WIDE), (1, 12, ((0, -1),))],
)
def test_round_trip_random_tokens_fitted_models(groups: int, bits: int, offsets: tuple) -> None:
    rng = np.random.default_rng(groups * bits)
    train = [rng.integers(0, 1 << bits, size=(6, 7, groups)) for _ in range(3)]
    model = fit_context_model(train, groups, bits, offsets=offsets, epochs=2, batch_size=64)
    coder = ContextCoder(ContextModel.from_dict(json.loads(json.dumps(model.to_dict()))))
    tokens = rng.integers(0, 1 << bits, size=(11, 6, groups))
    np.testing.assert_array_equal(coder.decode(coder.encode(tokens), 11, 6).reshape(11, 6, groups), tokens)


def test_coded_size_matches_ideal_and_beats_static_on_predictable_tokens() -> None:
    tokens = smooth_tokens(40, 60)
    model = fit_context_model([smooth_tokens(40, 60, seed=9)], 2, 4, epochs=6, batch_size=256)
    coder = ContextCoder(model)
    data = coder.encode(tokens)
    ideal = model.ideal_bits(tokens) + 8 * fmt.CONTEXT_ID_BYTES
    assert ideal - 8 <= 8 * len(data) <= ideal * 1.01 + 64
    static = RangeCoder(Prior.uniform(2, 4)).encode(tokens.reshape(-1, 2))
    assert len(data) < 0.7 * len(static)


def test_wavefronts_cover_the_grid_once_in_causal_order() -> None:
    for h, w in [(1, 1), (3, 5), (6, 2)]:
        seen = np.full((h, w), -1)
        last = -1
        for rows, cols in wavefronts(h, w):
            t = 2 * rows[0] + cols[0]
            assert t > last and (2 * rows + cols == t).all() and (seen[rows, cols] == -1).all()
            seen[rows, cols], last = t, t
        assert (seen >= 0).all()
        for dr, dc in WIDE:  # every neighbour of every token is decoded in an earlier wavefront
            assert 2 * dr + dc < 0


def test_encode_payload_prefers_context_and_falls_back() -> None:
    coder, static = ContextCoder(golden_model()), RangeCoder(Prior.uniform(2, 4))
    tokens = smooth_tokens(12, 12)
    mode, payload = encode_payload(tokens, 4, "context", static, coder)
    assert mode == "context"
    one = smooth_tokens(1, 1)  # 1 byte raw: the 4-byte id alone is larger, so raw is written
    assert encode_payload(one, 4, "context", static, coder)[0] == "raw"
    assert encode_payload(tokens, 4, "context", static, None)[0] == "raw"  # uniform prior: static not smaller
    with pytest.raises(ModelMismatchError, match="no context model"):
        decode_payload(payload, "context", 144, 2, 4, static, None, (12, 12))


def test_foreign_context_model_is_refused_before_decoding() -> None:
    tokens = smooth_tokens(8, 8)
    payload = ContextCoder(golden_model()).encode(tokens)
    other = golden_model(offsets=WIDE)
    with pytest.raises(ModelMismatchError, match="context model"):
        ContextCoder(other).decode(payload, 8, 8)


def test_short_payload_cannot_claim_a_huge_grid() -> None:
    coder = ContextCoder(golden_model())
    with pytest.raises(WtkFormatError, match="too short"):
        coder.decode(golden_model().model_id + b"\0" * 8, 4096, 4096)


def test_a_payload_holds_at_least_one_bit_per_256_raw_bits() -> None:
    """The table's most confident probability alone let 16 coded bytes claim 117,000 tokens of the bundled
    model: a 37-byte file decoded to 4096 x 4096 (a range decoder fed too few words does not notice)."""
    from wetok.entropy import MAX_CONTEXT_RATIO
    from wetok.zoo import BUNDLED_DIR

    bundled = ContextCoder(ContextModel.load(BUNDLED_DIR / "default"))
    assert bundled.max_tokens(4 + 16) < 2048
    with pytest.raises(WtkFormatError, match="too short"):
        bundled.decode(bundled.context.model_id + bytes(16), 256, 256)
    confident = ContextModel.from_dict(
        {
            **golden_model().to_dict(),
            "bias": [-1000] * 8,
            "table": [1] * 160 + [1 << 23] + [PROB_TOTAL - 1] * 160,
        }
    )
    coder = ContextCoder(confident)
    for n in range(0, 400, 7):
        assert coder.max_tokens(4 + n) * confident.token_bits <= MAX_CONTEXT_RATIO * (32 * -(-n // 4) + 96)
    zeros = np.zeros((128, 128, 2), np.int64)
    assert confident.ideal_bits(zeros) < 1  # nearly free to code: the encoder pads to what decoders accept
    payload = coder.encode(zeros)
    assert len(payload) - 4 == coder.min_coded_bytes(128 * 128) > 40
    assert np.array_equal(coder.decode(payload, 128, 128), zeros.reshape(-1, 2))
    with pytest.raises(WtkFormatError, match="too short"):
        coder.decode(payload[:-8], 128, 128)
    for count in range(1, 5000, 37):  # the padding always suffices, rounding included
        assert coder.max_tokens(4 + coder.min_coded_bytes(count)) >= count


def test_garbage_payloads_raise_format_errors_or_decode() -> None:
    coder = ContextCoder(golden_model())
    rng = np.random.default_rng(0)
    for _ in range(200):
        data = coder.context.model_id + rng.bytes(int(rng.integers(1, 30)))
        try:
            out = coder.decode(data, 5, 6)
        except WtkFormatError:
            continue
        assert out.shape == (30, 2) and out.max() < 16


# -- model files ------------------------------------------------------------------------------------------
def test_save_load_and_id(tmp_path: Path) -> None:
    model = golden_model()
    model.save(tmp_path)
    loaded = ContextModel.load(tmp_path)
    assert loaded.model_id == model.model_id and len(model.model_id) == 4
    assert golden_model(offsets=WIDE).model_id != model.model_id


def _write(tmp_path: Path, mutate) -> Path:
    d = golden_model().to_dict()
    mutate(d)
    (tmp_path / CONTEXT_NAME).write_text(json.dumps(d))
    return tmp_path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "not a wetok-context"),
        (lambda d: d.pop("own"), "missing fields: own"),
        (lambda d: d.update(offsets=[[0, 1]]), "not causal"),
        (lambda d: d.update(offsets=[[-1, 2], [0, -1], [-1, 0], [-1, -1]]), "not causal"),
        (lambda d: d["table"].reverse(), "non-decreasing"),
        (lambda d: d["table"].__setitem__(0, 0), "non-decreasing within"),
        (lambda d: d["own"][3].__setitem__(1, 5), "strictly upper triangular"),
        (lambda d: d["bias"].pop(), "bias must be int32 of shape"),
        (lambda d: d["neighbour"][0][0].__setitem__(0, 1.5), "32-bit integers"),
        (lambda d: d["neighbour"][0][0].__setitem__(0, 1 << 40), "32-bit integers"),
        (lambda d: d["neighbour"][0][0].__setitem__(0, (1 << 31) - 1), "too large"),
        (lambda d: d["neighbour"][0].pop(), "rectangular|shape"),
        (lambda d: d.update(group_bits=30), "d' <= 24"),
    ],
)
def test_malformed_context_model_refused(tmp_path: Path, mutate, message: str) -> None:
    with pytest.raises(ContextModelError, match=message) as err:
        ContextModel.load(_write(tmp_path, mutate))
    assert "\n" not in str(err.value) and CONTEXT_NAME in str(err.value)


def test_oversized_model_refused_before_building_tables() -> None:
    d, k = 256, 12  # 32 groups of 8 bits, 12 neighbours: 96 MiB of look-up tables would be needed
    z = np.zeros
    with pytest.raises(ContextModelError, match="MiB of look-up tables"):
        ContextModel(
            32,
            8,
            WIDER,
            8,
            2,
            z(d, np.int32),
            z((k, d), np.int32),
            z((k, d, d), np.int32),
            z((d, d), np.int32),
            np.array([1, 2, 3], np.int32),
        )


def test_truncated_context_model_refused(tmp_path: Path) -> None:
    golden_model().save(tmp_path)
    text = (tmp_path / CONTEXT_NAME).read_text()
    (tmp_path / CONTEXT_NAME).write_text(text[: len(text) // 2])
    with pytest.raises(ContextModelError, match="cannot read context model"):
        ContextModel.load(tmp_path)


# -- fitting ----------------------------------------------------------------------------------------------
def test_fit_learns_neighbour_structure_and_reports() -> None:
    train = [smooth_tokens(30, 30, seed=s) for s in range(3)]
    model = fit_context_model(train, 2, 4, epochs=4, batch_size=256)
    report = bits_report([smooth_tokens(30, 30, seed=7)], Prior.uniform(2, 4), model)
    assert report["tokens"] == 900 and report["static"] == pytest.approx(8.0)
    assert report["context"] < 0.75 * report["empirical_entropy"]


def test_fit_accepts_batches_and_refuses_bad_tokens() -> None:
    batch = np.stack([smooth_tokens(4, 5), smooth_tokens(4, 5, seed=8)])  # [B, h, w, g]
    assert fit_context_model([batch], 2, 4, epochs=1).token_bits == 8
    with pytest.raises(ContextModelError, match="values in"):
        fit_context_model([batch + 16], 2, 4, epochs=1)
    with pytest.raises(ContextModelError, match="no tokens"):
        fit_context_model([], 2, 4)


def test_quantised_model_is_integer_and_clamped() -> None:
    d = 8
    model = quantise(2, 4, LEFT_UP, np.full((4 * d + 4, d), 0.1), np.ones((d, d)), np.zeros(d))
    assert model.table.min() >= 1 and model.table.max() <= PROB_TOTAL - 1
    assert not np.tril(model.own).any() and model.neighbour.dtype == np.int32


def test_token_bits_order_is_group_major_msb_first() -> None:
    np.testing.assert_array_equal(token_bits(np.array([[5, 2]]), 3), [[1, 0, 1, 0, 1, 0]])


# -- no torch in the decoder ------------------------------------------------------------------------------
def test_entropy_decoder_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np; import wetok.entropy, wetok.context, wetok.format; "
        "from wetok.context import ContextModel; "
        f"m = ContextModel.load({str(FIXTURES)!r}); "
        f"h, p = wetok.format.unpack(open({str(FIXTURES / 'tokens.wtk')!r}, 'rb').read()); "
        "wetok.entropy.ContextCoder(m).decode(p, 9, 13); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
