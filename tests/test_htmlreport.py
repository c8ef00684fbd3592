"""``wetok eval --html`` and ``wetok decompress --compare``: the page's content, that it loads nothing from
the network, and (``browser``, where Chromium is installed) that it renders and its slider follows a drag."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.browser import Browser, find_chromium
from wetok import Tokenizer, TokenizerConfig
from wetok.prior import Prior
from wetok_cli.cmd_eval import eval_cmd


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(9 * x + 1), np.cos(7 * y), np.sin(5 * (x + y))], axis=-1) * 90 + 128
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``wetok eval --html`` of a tiny model on two images, beside JPEG and WebP."""
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    config = TokenizerConfig.preset("tiny")
    Tokenizer(config).save_pretrained(root / "tiny")
    Prior.uniform(config.groups, config.group_bits).save(root / "tiny")
    for i, (h, w) in enumerate([(96, 128), (80, 112)]):
        Image.fromarray(_photo(h, w, i)).save(root / f"img{i}.png")
    args = [
        str(root / "img0.png"),
        str(root / "img1.png"),
        "-m",
        str(root / "tiny"),
        "--codecs",
        "jpeg,webp",
        "--settings",
        "jpeg=10,40",
        "--settings",
        "webp=10,40",
        "--no-fid",
        "--perceptual",
        "none",
        "--crops",
        "0",
        "-o",
        str(root / "out"),
        "--no-cache",
        "--html",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(eval_cmd, args)
    assert result.exit_code == 0, result.output
    return root / "out"


def test_page_content_and_no_network(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert page.count("<section class='cmp'") == 2
    for label in ("wetok tiny", "JPEG (matched size)", "WebP (matched size)", "JPEG q=10", "WebP q=40"):
        assert label in page
    assert page.count("<svg") >= 1 and "<polyline" in page  # MS-SSIM needs images over 160 px and "★" in page
    pairs = re.findall(r"<button data-a='([^']+)' data-b='([^']+)'", page)
    assert pairs[:3] == [
        ("original", "wetok:tiny"),
        ("wetok:tiny", "jpeg@matched"),
        ("wetok:tiny", "webp@matched"),
    ]
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page) and "@import" not in page
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) == 2 * 4
    for src in sources:  # lossless: every picture on the page is the exact pixels evaluated
        assert (report_dir / src).is_file() and src.endswith(".png")
    with Image.open(report_dir / "report_files" / "000-img0-png-original.png") as im:
        assert np.array_equal(np.asarray(im), _photo(96, 128, 0))


def _stage_box(browser: Browser) -> dict[str, float]:
    return browser.evaluate(
        "(() => { const r = document.querySelector('.stage').getBoundingClientRect();"
        " return {x: r.left, y: r.top, w: r.width, h: r.height}; })()"
    )


@pytest.mark.browser
def test_page_renders_and_slider_follows_a_drag(report_dir: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium installed (apt-get install chromium-headless-shell)")
    with Browser(binary, width=900, height=900) as browser:
        browser.open((report_dir / "report.html").as_uri())
        assert browser.evaluate("document.documentElement.dataset.ready") == "1"
        assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        browser.evaluate("document.querySelector('section.cmp').scrollIntoView()")
        before = browser.screenshot()
        shot = np.asarray(Image.open(io.BytesIO(before)).convert("RGB")).astype(np.float32)
        assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # not blank
        box = _stage_box(browser)
        assert box["w"] == pytest.approx(128) and box["h"] == pytest.approx(96)  # 1:1 when it fits
        y = box["y"] + box["h"] / 2
        browser.drag(box["x"] + box["w"] * 0.5, y, box["x"] + box["w"] * 0.1, y)
        assert browser.evaluate("document.querySelector('section.cmp').split") == pytest.approx(0.1, abs=0.02)
        after = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB")).astype(np.float32)
        diff = np.abs(after - shot).sum(axis=2) > 30
        ys, xs = np.nonzero(diff)
        assert len(xs) > 200  # the revealed strip changed ...
        assert xs.min() >= box["x"] - 2 and xs.max() <= box["x"] + box["w"] * 0.5 + 2  # ... and only it
        browser.evaluate("document.querySelector(\"[data-zoom='2']\").click()")
        assert _stage_box(browser)["w"] == pytest.approx(256)


def test_decompress_compare_writes_one_self_contained_page(report_dir: Path, tmp_path: Path) -> None:
    from wetok_cli.main import cli

    root = report_dir.parent
    env = {"WETOK_MODELS": str(root)}
    original = root / "img0.png"
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["compress", str(original), "-o", str(tmp_path / "a.wtk")], env=env).exit_code == 0
    )
    args = ["decompress", str(tmp_path / "a.wtk"), "-o", str(tmp_path / "a.png"), "--compare", str(original)]
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "a.html").read_text()
    assert page.count("src='data:image/png;base64,") >= 3 and "report_files" not in page
    assert "original | wetok" in page and re.search(r"wetok \| JPEG q=\d+", page)
    again = runner.invoke(cli, args, env=env)
    assert again.exit_code == 1 and "already exists" in again.output
    other = root / "img1.png"  # another size: a clear error, not a broken page
    bad = runner.invoke(cli, [*args[:-1], str(other), "-f"], env=env)
    assert bad.exit_code == 1 and f"--compare {other}: the original is 112x80" in bad.output
