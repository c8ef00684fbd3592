"""The discriminator: a PatchGAN (Isola et al. 2017), optionally conditioned on the codes the decoder
painted from (HiFiC, Mentzer et al. 2020: realism judged for these tokens), what it sees of an image
(:class:`Critic`), and its file beside a model, ``discriminator.safetensors``, so that stage 2 continues
from a shipped state instead of starting over.

The file is training state only: nothing in :mod:`wetok` reads it, so it changes neither the model id nor
any file format.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from wetok.errors import CheckpointError
from wetok.fileio import atomic_path
from wetok_train.losses import AdversarialLoss, diff_augment

DISCRIMINATOR_NAME = "discriminator.safetensors"
_FORMAT = "wetok-discriminator"


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4×4 convs ``(3 + cond)→c (s2) →2c (s2) →4c (s2) →8c (s1) →1 (s1)``, BatchNorm +
    LeakyReLU(0.2). ``cond_channels``: code channels concatenated to the image (0: unconditioned)."""

    def __init__(self, channels: int = 64, cond_channels: int = 0) -> None:
        super().__init__()
        c = channels
        self.channels, self.cond_channels = channels, cond_channels
        layers: list[nn.Module] = [nn.Conv2d(3 + cond_channels, c, 4, 2, 1), nn.LeakyReLU(0.2)]
        for cin, cout, stride in [(c, 2 * c, 2), (2 * c, 4 * c, 2), (4 * c, 8 * c, 1)]:
            layers += [
                nn.Conv2d(cin, cout, 4, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(8 * c, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)  # the name of runs' checkpoints: keep it
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | list[Tensor]:
        """Images ``[B, 3 + cond, H, W]`` → patch logits ``[B, 1, h, w]``; with ``features`` the output of
        every LeakyReLU too, logits last (feature matching, through DDP's forward like the logits)."""
        if not features:
            return self.main(x)
        out = []
        for layer in self.main:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return [*out, x]


def condition(images: Tensor, codes: Tensor) -> Tensor:
    """Images ``[B, 3, H, W]`` with the codes ``[B, d, h, w]`` upsampled (nearest) beside them."""
    up = F.interpolate(codes.to(images.dtype), size=images.shape[-2:], mode="nearest")
    return torch.cat([images, up], dim=1)


class Critic:
    """What the discriminator sees of images: the codes beside them (``codes``: conditioned), DiffAugment
    (``policy``), under ``autocast``. ``seed`` augments two batches alike (real and fake of a pair)."""

    def __init__(
        self, net: nn.Module, policy: tuple[str, ...], codes: Tensor | None, autocast: object = None
    ) -> None:
        self.net, self.policy, self.codes = net, policy, codes
        self.autocast = autocast or contextlib.nullcontext()

    def _view(self, images: Tensor, seed: int | None) -> Tensor:
        x = images if self.codes is None else condition(images, self.codes)
        if not self.policy:
            return x
        gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
        return diff_augment(x, self.policy, gen)

    def logits(self, images: Tensor, cast: bool = True) -> Tensor:
        x = self._view(images, None)
        with self.autocast if cast else contextlib.nullcontext():
            return self.net(x)

    def features(self, images: Tensor, seed: int | None = None) -> list[Tensor]:
        x = self._view(images, seed)
        with self.autocast:
            return self.net(x, features=True)


def cond_channels(conditioned: bool, latent_dim: int) -> int:
    return latent_dim if conditioned else 0


def save_discriminator(
    disc: nn.Module, adv: AdversarialLoss, path: Path, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the discriminator's weights (float ones as ``dtype``) and LeCam's logit averages to ``path``."""
    state = {f"disc.{k}": v for k, v in disc.state_dict().items()}
    state |= {f"lecam.{k}": v for k, v in adv.state_dict().items()}
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in state.items()
    }
    metadata = {
        "format": _FORMAT,
        "version": "1",
        "channels": str(disc.channels),
        "cond_channels": str(disc.cond_channels),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def load_discriminator(path: Path, disc: PatchDiscriminator, adv: AdversarialLoss) -> None:
    """Load ``path`` into ``disc`` and ``adv``; :class:`CheckpointError` (one line naming the file) when
    it is not a discriminator file or holds another architecture than the run's."""
    try:
        with safe_open(str(path), framework="pt") as f:
            _check_metadata(path, f.metadata() or {}, disc)  # before any tensor is read
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a discriminator file ({str(e).splitlines()[0]})") from None
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{path} holds NaN or infinite weights")
    try:
        disc.load_state_dict(_part(state, "disc.", disc))
        adv.load_state_dict(_part(state, "lecam.", adv))
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the discriminator ({str(e).splitlines()[0]})") from None


def _check_metadata(path: Path, meta: dict[str, str], disc: PatchDiscriminator) -> None:
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a wetok discriminator file")
    shipped = (meta.get("channels"), meta.get("cond_channels"))
    if shipped != (str(disc.channels), str(disc.cond_channels)):
        raise CheckpointError(
            f"{path} holds a discriminator of {shipped[0]} channels ({shipped[1]} code channels), the run "
            f"asks for {disc.channels} ({disc.cond_channels}): match disc.channels and disc.conditioned, "
            "or start a fresh one with stage2.continue_shipped = false"
        )


def _part(state: dict[str, Tensor], prefix: str, module: nn.Module) -> dict[str, Tensor]:
    like = module.state_dict()
    part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v.to(like[k].dtype) if k in like else v for k, v in part.items()}
