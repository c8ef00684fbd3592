"""Grouped lookup-free quantization: bit order, exact inverse, gradients, entropy loss and its memory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from wetok.quantizer import GroupedLFQ, codebook, codes_to_indices, entropy_terms, indices_to_codes


def test_bit_order_is_lsb_first_per_group() -> None:
    # d = 6: two groups of 3 channels. Group 0 has channels (+, -, +) → bits 1,0,1 → 1 + 4 = 5;
    # group 1 has channels (-, +, +) → bits 0,1,1 → 2 + 4 = 6. An exact zero counts as negative.
    latent = torch.tensor([0.3, -2.0, 1.0, 0.0, 0.5, 7.0]).view(1, 6, 1, 1)
    assert codes_to_indices(latent, 3).tolist() == [[[[5, 6]]]]
    assert indices_to_codes(torch.tensor([[[[5, 6]]]]), 3).flatten().tolist() == [1, -1, 1, -1, 1, 1]


@pytest.mark.parametrize("groups,bits", [(1, 1), (1, 8), (4, 1), (2, 4), (3, 5), (1, 12)])
def test_symbols_codes_round_trip(groups: int, bits: int) -> None:
    gen = torch.Generator().manual_seed(groups * 100 + bits)
    tokens = torch.randint(0, 2**bits, (2, 3, 5, groups), generator=gen)
    codes = indices_to_codes(tokens, bits)
    assert codes.shape == (2, groups * bits, 3, 5)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes_to_indices(codes, bits), tokens)


def test_quantizer_output_and_straight_through_gradient() -> None:
    q = GroupedLFQ(groups=2, group_bits=4)
    latent = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = q(latent)
    assert torch.equal(out.codes.detach(), torch.where(latent > 0, 1.0, -1.0))
    assert torch.equal(out.indices, codes_to_indices(latent, 4))
    out.codes.sum().backward()
    assert torch.equal(latent.grad, torch.ones_like(latent))  # identity gradient through the sign


def test_entropy_loss_gradient_flows() -> None:
    q = GroupedLFQ(groups=2, group_bits=4)
    latent = torch.randn(2, 8, 4, 4, requires_grad=True)
    losses = q(latent).losses
    (losses["gq/entropy"] + losses["gq/commitment"]).backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def _brute_force(latent: torch.Tensor, tau: float) -> tuple[float, float]:
    """Token entropy and codebook entropy over the full 2^d codebook (one group), in float64."""
    d = latent.shape[1]
    u = latent.permute(0, 2, 3, 1).reshape(-1, d).double()
    full = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)
    p = torch.softmax(2 * u @ full.t() / tau, dim=-1)
    token = -(p * torch.log(p.clamp_min(1e-300))).sum(-1).mean().item()
    avg = p.mean(0)
    return token, -(avg * torch.log(avg + 1e-5)).sum().item()


@pytest.mark.parametrize("groups,bits", [(1, 6), (2, 3), (3, 2), (6, 1)])
def test_token_entropy_matches_brute_force_over_full_codebook(groups: int, bits: int) -> None:
    latent = torch.randn(2, groups * bits, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.02
    token, _ = entropy_terms(latent, bits, temperature=0.01)
    full_token, _ = _brute_force(latent, 0.01)
    # The full softmax over 2^d codes factorises over groups: H_full = Σ_groups H_j = g · mean_j H_j.
    assert math.isclose(token.item() * groups, full_token, rel_tol=1e-4, abs_tol=1e-5)


def test_codebook_entropy_single_group_matches_brute_force() -> None:
    latent = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.02
    _, cb = entropy_terms(latent, 6, temperature=0.01)
    assert math.isclose(cb.item(), _brute_force(latent, 0.01)[1], rel_tol=1e-4)


def test_codebook_entropy_variants_differ_and_per_group_is_mean_of_groups() -> None:
    latent = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(3))
    _, pooled = entropy_terms(latent, 4, variant="pooled")
    _, per_group = entropy_terms(latent, 4, variant="per_group")
    singles = [entropy_terms(latent[:, 4 * j : 4 * j + 4], 4)[1] for j in range(2)]
    assert math.isclose(per_group.item(), sum(s.item() for s in singles) / 2, rel_tol=1e-6)
    assert not math.isclose(pooled.item(), per_group.item(), rel_tol=1e-3)


def _saved_bytes(groups: int, bits: int, tokens: int = 256) -> int:
    """Bytes autograd keeps for the backward pass of the entropy loss (the memory that explodes in LFQ)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    latent = torch.randn(1, groups * bits, 1, tokens, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tok, cb = entropy_terms(latent, bits)
        (tok - cb).backward()
    return total


def test_entropy_loss_memory_grows_with_groups_not_with_2_pow_d() -> None:
    base = _saved_bytes(1, 8)
    gq_d40 = _saved_bytes(5, 8)  # d = 40 as 5 groups of 8 bits
    assert gq_d40 <= 5.5 * base  # linear in g
    lfq_d12 = _saved_bytes(1, 12)  # d = 12 as one group: 16x the codebook
    assert lfq_d12 >= 10 * base


def test_codebook_rows_are_symbols() -> None:
    cb = codebook(3)
    assert torch.equal(codes_to_indices(cb.t().reshape(1, 3, 1, 8), 3).flatten(), torch.arange(8))
