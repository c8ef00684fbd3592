"""Bit packing, static range coding from integer priors, and prior fitting/persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wetok.entropy import RangeCoder, decode_payload, encode_payload, pack_bits, unpack_bits
from wetok.errors import WtkFormatError
from wetok.prior import PRIOR_TOTAL, Prior, PriorError, count_symbols, fit_prior, quantize_frequencies


def skewed_prior(groups: int, bits: int, concentration: float = 0.3, seed: int = 0) -> Prior:
    rng = np.random.default_rng(seed)
    return Prior(quantize_frequencies(rng.dirichlet(np.full(1 << bits, concentration), size=groups)))


def sample(prior: Prior, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = prior.frequencies.astype(np.float64) / PRIOR_TOTAL
    return np.stack([rng.choice(p.shape[1], size=count, p=row) for row in p], axis=1)


# -- raw --------------------------------------------------------------------------------------------------
def test_pack_bits_is_msb_first() -> None:
    assert pack_bits(np.array([1, 2, 3]), 4) == bytes([0x12, 0x30])
    assert pack_bits(np.array([1]), 1) == bytes([0x80])
    assert pack_bits(np.array([0x2ABCD]), 18) == bytes([0xAA, 0xF3, 0x40])


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 13, 18, 24])
def test_pack_round_trip(bits: int) -> None:
    symbols = np.random.default_rng(bits).integers(0, 1 << bits, size=1001)
    data = pack_bits(symbols, bits)
    assert len(data) == -(-1001 * bits // 8)
    np.testing.assert_array_equal(unpack_bits(data, 1001, bits), symbols)


def test_unpack_checks_length_and_padding() -> None:
    with pytest.raises(WtkFormatError, match="need"):
        unpack_bits(b"\x12", 3, 4)
    with pytest.raises(WtkFormatError, match="padding"):
        unpack_bits(b"\x12\x31", 3, 4)


# -- static range coding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("groups, bits", [(1, 1), (2, 4), (4, 8), (5, 8), (1, 12)])
def test_static_round_trip(groups: int, bits: int) -> None:
    prior = skewed_prior(groups, bits)
    tokens = sample(prior, 1536)
    coder = RangeCoder(prior)
    data = coder.encode(tokens)
    np.testing.assert_array_equal(coder.decode(data, 1536), tokens)


def test_static_is_within_half_a_percent_of_shannon() -> None:
    """768x512 at f16: 48x32 tokens of g=4 groups of d'=8."""
    prior = skewed_prior(4, 8)
    tokens = sample(prior, 48 * 32)
    ideal = prior.ideal_bits(tokens)
    coded = 8 * len(RangeCoder(prior).encode(tokens))
    assert coded <= ideal * 1.005
    assert coded >= ideal - 64


def test_coding_is_deterministic_and_uses_the_exact_integer_table() -> None:
    """Two independently built coders agree, and a long stream costs the ideal size plus O(1) bits: the
    float conversion reproduces the integer table exactly (no second quantization)."""
    prior = skewed_prior(2, 8, concentration=0.05)
    tokens = sample(prior, 100_000)
    a, b = RangeCoder(prior).encode(tokens), RangeCoder(Prior(prior.frequencies.copy())).encode(tokens)
    assert a == b
    assert abs(8 * len(a) - prior.ideal_bits(tokens)) < 64


def test_rare_symbols_with_frequency_one_are_codable() -> None:
    f = np.full((1, 256), 1, dtype=np.uint32)
    f[0, 0] = PRIOR_TOTAL - 255
    tokens = np.arange(256).reshape(-1, 1)
    coder = RangeCoder(Prior(f))
    np.testing.assert_array_equal(coder.decode(coder.encode(tokens), 256), tokens)


def test_lfq_group_of_2_to_the_18() -> None:
    """Open-MAGVIT2's single 18-bit group: 262144-entry tables still code and decode."""
    prior = skewed_prior(1, 18, concentration=0.5)
    tokens = sample(prior, 4096)
    coder = RangeCoder(prior)
    data = coder.encode(tokens)
    np.testing.assert_array_equal(coder.decode(data, 4096), tokens)
    assert 8 * len(data) <= prior.ideal_bits(tokens) + 64


def test_lfq_group_uniform_prior_is_cheap() -> None:
    coder = RangeCoder(Prior.uniform(1, 18))
    tokens = np.arange(0, 1 << 18, 997).reshape(-1, 1)
    np.testing.assert_array_equal(coder.decode(coder.encode(tokens), len(tokens)), tokens)


def test_trimmed_tail_decodes_from_zero_padding() -> None:
    prior = skewed_prior(4, 8)
    coder = RangeCoder(prior)
    lengths = set()
    for seed in range(20):
        tokens = sample(prior, 50, seed=seed)
        data = coder.encode(tokens)
        lengths.add(len(data) % 4)
        np.testing.assert_array_equal(coder.decode(data, 50), tokens)
    assert lengths != {0}, "the tail is trimmed at least sometimes"


def test_short_payload_cannot_claim_many_tokens() -> None:
    coder = RangeCoder(Prior.uniform(4, 8))
    with pytest.raises(WtkFormatError, match="too short"):
        coder.decode(b"\x00" * 8, 10_000)


def test_garbage_payload_raises_format_error_or_decodes() -> None:
    coder = RangeCoder(skewed_prior(2, 4, concentration=0.05))
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = rng.integers(0, 256, size=int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        try:
            out = coder.decode(data, 20)
        except WtkFormatError:
            continue
        assert out.shape == (20, 2) and out.max() < 16


def test_static_falls_back_to_raw_when_not_smaller() -> None:
    tokens = np.random.default_rng(0).integers(0, 256, size=(100, 4))
    mode, payload = encode_payload(tokens, 8, "static", RangeCoder(Prior.uniform(4, 8)))
    assert (mode, payload) == ("raw", pack_bits(tokens, 8))
    assert encode_payload(tokens, 8, "raw", None)[0] == "raw"
    with pytest.raises(ValueError, match="unknown coding mode"):
        encode_payload(tokens, 8, "zip", RangeCoder(Prior.uniform(4, 8)))
    np.testing.assert_array_equal(decode_payload(payload, "raw", 100, 4, 8, None), tokens)


# -- priors -----------------------------------------------------------------------------------------------
def test_uniform_prior() -> None:
    prior = Prior.uniform(3, 8)
    assert prior.frequencies.shape == (3, 256) and prior.bits_per_token() == pytest.approx(24.0)
    assert Prior.uniform(1, 24).frequencies.max() == 1


def test_fit_prior_counts_and_floors() -> None:
    batches = [torch.zeros(2, 4, 4, 2, dtype=torch.int64), torch.ones(1, 4, 4, 2, dtype=torch.int64)]
    counts = count_symbols(batches, 2, 4)
    assert counts[:, 0].tolist() == [32, 32] and counts[:, 1].tolist() == [16, 16] and counts.sum() == 96
    prior = fit_prior(batches, 2, 4)
    f = prior.frequencies
    assert f.dtype == np.uint32 and f.min() >= 1 and (f.sum(1) == PRIOR_TOTAL).all()
    assert f[0, 0] > f[0, 1] > f[0, 2] and abs(int(f[0, 2]) - int(f[0, 15])) <= 1
    assert prior.bits_per_token() < 8


def test_fit_prior_large_group() -> None:
    tokens = torch.randint(0, 1 << 18, (2, 8, 8, 1))
    prior = fit_prior([tokens], 1, 18)
    assert prior.frequencies.shape == (1, 1 << 18) and prior.frequencies.min() >= 1


def test_quantize_is_exact_and_deterministic() -> None:
    p = np.random.default_rng(3).dirichlet(np.full(256, 0.1), size=3)
    f = quantize_frequencies(p)
    assert (f.sum(1, dtype=np.int64) == PRIOR_TOTAL).all() and f.min() >= 1
    np.testing.assert_array_equal(f, quantize_frequencies(p.copy()))


def test_prior_save_load(tmp_path: Path) -> None:
    prior = skewed_prior(2, 4)
    prior.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior.json"]
    np.testing.assert_array_equal(Prior.load(tmp_path).frequencies, prior.frequencies)
    np.testing.assert_array_equal(Prior.load(tmp_path / "prior.json").frequencies, prior.frequencies)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "not a wetok-prior"),
        (lambda d: d.update(total=1000), "total"),
        (lambda d: d["frequencies"].pop(), "lists of"),
        (lambda d: d["frequencies"][0].__setitem__(0, 1.5), "integers"),
        (lambda d: d["frequencies"][0].__setitem__(0, 0), "must be >= 1"),
        (lambda d: d["frequencies"][0].__setitem__(1, d["frequencies"][0][1] + 1), "sum to"),
        (lambda d: d.update(group_bits=30), "group_bits"),
    ],
)
def test_malformed_prior_refused(tmp_path: Path, mutate, message: str) -> None:
    d = skewed_prior(2, 4).to_dict()
    mutate(d)
    (tmp_path / "prior.json").write_text(json.dumps(d))
    with pytest.raises(PriorError, match=message):
        Prior.load(tmp_path)


def test_unreadable_prior(tmp_path: Path) -> None:
    (tmp_path / "prior.json").write_text("{not json")
    with pytest.raises(PriorError, match="cannot read"):
        Prior.load(tmp_path)
