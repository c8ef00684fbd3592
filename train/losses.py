"""Losses of both training stages: reconstruction, perceptual, GQ, adversarial (hinge + LeCam + R1), and
the data-efficient GAN pieces stage 2 uses on a few hundred photos: differentiable augmentation of what the
discriminator sees (DiffAugment, Zhao et al. 2020) and a mode-seeking diversity term (Mao et al. 2019).

Every loss returns a dict with namespaced keys (``rec/l1``, ``gq/entropy``, ``adv/gen`` …); the total is
``Σ weight·term`` with the weights from :class:`wetok_train.config.TrainConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetok_train.config import TrainConfig


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4×4 convs ``3→c (s2) →2c (s2) →4c (s2) →8c (s1) →1 (s1)``, BatchNorm + LeakyReLU(0.2)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2)]
        for cin, cout, stride in [(c, 2 * c, 2), (2 * c, 4 * c, 2), (4 * c, 8 * c, 1)]:
            layers += [
                nn.Conv2d(cin, cout, 4, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(8 * c, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` → patch logits ``[B, 1, h, w]``."""
        return self.main(x)


class AdversarialLoss(nn.Module):
    """Hinge loss for the discriminator with LeCam regularisation; non-saturating loss for the generator."""

    def __init__(self, lecam_weight: float = 0.05, lecam_decay: float = 0.999) -> None:
        super().__init__()
        self.lecam_weight, self.lecam_decay = lecam_weight, lecam_decay
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
            "adv/total": hinge + self.lecam_weight * lecam,
            "adv/logits_real": real.mean().detach(),
            "adv/logits_fake": fake.mean().detach(),
        }


def diff_augment(x: Tensor, policy: tuple[str, ...]) -> Tensor:
    """DiffAugment (Zhao et al. 2020): random brightness/saturation/contrast, translation by up to 1/8 of
    the side (zero fill) and a cutout of half the side, each drawn per sample, all differentiable, applied
    to real and fake images alike before the discriminator: it cannot memorise 195 photos through them."""
    if "color" in policy:
        b = x.shape[0]
        x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean
    if "translation" in policy:
        x = _translate(x, 0.125)
    if "cutout" in policy:
        x = _cutout(x, 0.5)
    return x


def _translate(x: Tensor, ratio: float) -> Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    gy = (torch.arange(h, device=x.device)[None, :, None] + ty).clamp(-1, h)  # -1 and h read the zero pad
    gx = (torch.arange(w, device=x.device)[None, None, :] + tx).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))
    idx = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, gy + 1, gx + 1].permute(0, 3, 1, 2)


def _cutout(x: Tensor, ratio: float) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() < ch // 2 + 1) & ((xs - cx).abs() < cw // 2 + 1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def r1_penalty(disc: nn.Module, real: Tensor, augment: tuple[str, ...]) -> Tensor:
    """R1 (Mescheder et al. 2018): the squared gradient norm of the discriminator at real images."""
    real = real.detach().requires_grad_(True)
    logits = disc(diff_augment(real, augment) if augment else real)
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def diversity_loss(first: Tensor, second: Tensor, target: float) -> Tensor:
    """Mode seeking: two decodes of the same tokens with different noise should differ by ``target`` (mean
    absolute difference, on the ``[-1, 1]`` scale); a hinge, so past it the term asks for nothing more."""
    return F.relu(target - (first.float() - second.float()).abs().mean())


class GeneratorLoss(nn.Module):
    """L1 + perceptual + GQ entropy + commitment + adversarial, weighted by the config."""

    def __init__(self, cfg: TrainConfig, perceptual: nn.Module | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.perceptual = perceptual

    def forward(
        self,
        recon: Tensor,
        target: Tensor,
        quantizer_losses: dict[str, Tensor],
        fake_logits: Tensor | None,
        cfg: TrainConfig | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its terms; ``cfg`` is the config in effect at this step (its phase)."""
        cfg = cfg or self.cfg
        terms: dict[str, Tensor] = {"rec/l1": (recon.float() - target.float()).abs().mean()}
        total = cfg.l1_weight * terms["rec/l1"]
        if self.perceptual is not None and cfg.perceptual_weight > 0:
            terms["rec/perceptual"] = self.perceptual(recon.float(), target.float()).mean()
            total = total + cfg.perceptual_weight * terms["rec/perceptual"]
        if quantizer_losses:
            terms.update(quantizer_losses)
            total = total + cfg.entropy_weight * quantizer_losses["gq/entropy"]
            total = total + cfg.commitment_weight * quantizer_losses["gq/commitment"]
        if fake_logits is not None:
            terms["adv/gen"] = F.softplus(-fake_logits.float()).mean()
            total = total + cfg.adversarial_weight * terms["adv/gen"]
        terms["loss/total"] = total
        return total, terms
