"""Losses of both training stages: reconstruction, perceptual, GQ, adversarial (hinge + LeCam).

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
