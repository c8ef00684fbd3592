"""Losses of both training stages: reconstruction, perceptual, GQ, adversarial (hinge + LeCam + R1),
feature matching on the discriminator's features (L1, as DAC and EnCodec), and the data-efficient GAN
pieces stage 2 uses on a few hundred photos: differentiable augmentation of what the discriminator sees
(DiffAugment, Zhao et al. 2020) and a mode-seeking diversity term (Mao et al. 2019).

Every loss returns a dict with namespaced keys (``rec/l1``, ``gq/entropy``, ``adv/gen`` …). A total is
assembled in one place, :func:`weighted_total`: ``Σ weight·term`` with the generator's weights from the
config's ``[loss]`` table, the discriminator's from ``[disc]``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetok_train.config import TrainConfig


class Critic(Protocol):
    """The discriminator's view of images (:class:`wetok_train.discriminator.Critic`)."""

    def logits(self, images: Tensor, cast: bool = True) -> Tensor: ...

    def features(self, images: Tensor, seed: int | None = None) -> list[Tensor]: ...


class AdversarialLoss(nn.Module):
    """Hinge loss for the discriminator with LeCam regularisation (its pull towards the logits' running
    means, which this module keeps); the generator's non-saturating loss is :func:`generator_adversarial`."""

    def __init__(self, lecam_decay: float = 0.999) -> None:
        super().__init__()
        self.lecam_decay = lecam_decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        real, fake = real_logits.float(), fake_logits.float()
        with torch.no_grad():
            self.ema_real.lerp_(real.mean(), 1 - self.lecam_decay)
            self.ema_fake.lerp_(fake.mean(), 1 - self.lecam_decay)
        hinge = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        lecam = (F.relu(real - self.ema_fake) ** 2).mean() + (F.relu(self.ema_real - fake) ** 2).mean()
        return {
            "adv/disc": hinge,
            "adv/lecam": lecam,
            "adv/logits_real": real.mean().detach(),
            "adv/logits_fake": fake.mean().detach(),
        }


def generator_adversarial(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss ``softplus(-D(fake))``, mean over patches."""
    return F.softplus(-fake_logits.float()).mean()


def feature_matching_loss(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """Mean over the discriminator's layers of the mean |feature(decode) − feature(original)| (DAC,
    EnCodec): a per-layer mean, so the weight means the same whatever the discriminator's depth."""
    return torch.stack([(f.float() - r.float()).abs().mean() for f, r in zip(fake, real, strict=True)]).mean()


def weighted_total(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``Σ weight·term`` over the terms that have a weight: the one place a total loss is assembled."""
    parts = [weights[k] * v for k, v in terms.items() if k in weights]
    return torch.stack([p.float() for p in parts]).sum()


def diff_augment(x: Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment (Zhao et al. 2020): random brightness/saturation/contrast, translation by up to 1/8 of
    the side (zero fill) and a cutout of half the side, each drawn per sample, all differentiable, applied
    to real and fake images alike before the discriminator: it cannot memorise 195 photos through them.

    ``x`` ``[B, 3 + k, H, W]``: colour changes the first 3 channels (the image) only; the rest (codes of a
    conditioned discriminator) move with the image. ``generator``: draw from it (two calls with equally
    seeded generators augment two batches alike), else from the global RNG."""
    if "color" in policy:
        image = _color(x[:, :3], generator)
        x = torch.cat([image, x[:, 3:]], dim=1) if x.shape[1] > 3 else image
    if "translation" in policy:
        x = _translate(x, 0.125, generator)
    if "cutout" in policy:
        x = _cutout(x, 0.5, generator)
    return x


def _color(x: Tensor, gen: torch.Generator | None) -> Tensor:
    b = x.shape[0]

    def draw() -> Tensor:
        return torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype, generator=gen)

    x = x + (draw() - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draw() * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw() + 0.5) + mean


def _translate(x: Tensor, ratio: float, gen: torch.Generator | None = None) -> Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device, generator=gen)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device, generator=gen)
    gy = (torch.arange(h, device=x.device)[None, :, None] + ty).clamp(-1, h)  # -1 and h read the zero pad
    gx = (torch.arange(w, device=x.device)[None, None, :] + tx).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))
    idx = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, gy + 1, gx + 1].permute(0, 3, 1, 2)


def _cutout(x: Tensor, ratio: float, gen: torch.Generator | None = None) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (b, 1, 1), device=x.device, generator=gen)
    cx = torch.randint(0, w + 1 - cw % 2, (b, 1, 1), device=x.device, generator=gen)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() < ch // 2 + 1) & ((xs - cx).abs() < cw // 2 + 1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def r1_penalty(critic: Critic, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): the squared gradient norm of the discriminator at real images (in full
    precision: a gradient penalty is where bf16 rounding would show)."""
    real = real.detach().requires_grad_(True)
    logits = critic.logits(real, cast=False)
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def diversity_loss(first: Tensor, second: Tensor, target: float) -> Tensor:
    """Mode seeking: two decodes of the same tokens with different noise should differ by ``target`` (mean
    absolute difference, on the ``[-1, 1]`` scale); a hinge, so past it the term asks for nothing more."""
    return F.relu(target - (first.float() - second.float()).abs().mean())


class GeneratorLoss(nn.Module):
    """The generator's terms (L1, perceptual, GQ, adversarial, feature matching, diversity) and their
    total, weighted by the config's ``[loss]`` table."""

    def __init__(self, cfg: TrainConfig, perceptual: nn.Module | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.perceptual = perceptual

    def forward(
        self,
        recon: Tensor,
        target: Tensor,
        cfg: TrainConfig | None = None,
        quantizer_losses: dict[str, Tensor] | None = None,
        critic: Critic | None = None,
        second: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its terms. ``cfg``: the config in effect at this step (its phase); ``critic``: the
        discriminator's view (``None`` before ``disc.start``); ``second``: another decode of the first
        ``len(second)`` samples with other noise (the diversity term)."""
        cfg = cfg or self.cfg
        terms: dict[str, Tensor] = {"rec/l1": (recon.float() - target.float()).abs().mean()}
        if self.perceptual is not None and cfg.loss.perceptual > 0:
            terms["rec/perceptual"] = self.perceptual(recon.float(), target.float()).mean()
        terms.update(quantizer_losses or {})
        if critic is not None:
            terms.update(_adversarial_terms(critic, recon, target, cfg))
        if second is not None:
            first = recon[: len(second)]
            terms["div/loss"] = diversity_loss(first, second, cfg.stage2.diversity_target)
        terms["loss/total"] = weighted_total(terms, cfg.loss.weights())
        return terms["loss/total"], terms


def _adversarial_terms(critic: Critic, recon: Tensor, target: Tensor, cfg: TrainConfig) -> dict[str, Tensor]:
    """``adv/gen``, and with ``loss.feature_matching`` the L1 between the features of each decode and its
    original, both augmented alike (the same seed), the original's without a gradient."""
    if cfg.loss.feature_matching <= 0:
        return {"adv/gen": generator_adversarial(critic.logits(recon))}
    seed = int(torch.randint(0, 2**62, ()))
    fake = critic.features(recon, seed)
    with torch.no_grad():
        real = critic.features(target, seed)
    return {
        "adv/gen": generator_adversarial(fake[-1]),
        "adv/feature_matching": feature_matching_loss(fake[:-1], real[:-1]),
    }
