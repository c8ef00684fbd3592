"""The rate sweep of ``wetok eval``: wetok at several scales, classic codecs at those sizes, Bjøntegaard
deltas, the rate table and figures. Tiny model and images only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.test_evaluate import image_dir, model_dir  # noqa: F401 (fixtures)
from wetok.eval.bd import bd_psnr, bd_rate
from wetok.eval.evaluate import EvalOptions, load_images, run_eval, write_json
from wetok.eval.rate_sweep import curve, markdown_rate_table, run_rate_sweep
from wetok.eval.report import plot_rate_rd, rate_crops_figure
from wetok.fileio import find_images
from wetok.zoo import load_codec
from wetok_cli.cmd_eval import eval_cmd

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNR = [25.0, 27.0, 29.0, 31.0, 33.0]


# -- Bjøntegaard deltas ------------------------------------------------------------------------------------
def test_bd_of_hand_worked_curves() -> None:
    assert bd_rate(RATES, PSNR, RATES, PSNR) == pytest.approx(0, abs=1e-9)
    assert bd_rate(RATES, PSNR, [2 * r for r in RATES], PSNR) == pytest.approx(100)  # twice the bits
    assert bd_rate(RATES, PSNR, [r / 2 for r in RATES], PSNR) == pytest.approx(-50)
    assert bd_psnr(RATES, PSNR, RATES, [p + 1 for p in PSNR]) == pytest.approx(1)
    # 2 dB per doubling: twice the rate at equal quality is 2 dB less at equal rate
    assert bd_psnr(RATES, PSNR, [2 * r for r in RATES], PSNR) == pytest.approx(-2)


def test_bd_without_overlap_or_points_is_none() -> None:
    assert bd_rate(RATES, PSNR, [10, 20], [40, 41]) is None
    assert bd_psnr(RATES, PSNR, [100, 200], [25, 26]) is None
    assert bd_rate(RATES, PSNR, [0.3], [28]) is None


# -- the sweep -------------------------------------------------------------------------------------------
def _options(**changes: object) -> EvalOptions:
    base = {
        "codecs": ("jpeg", "jpeg2000"),
        "match": False,
        "sweep": False,
        "perceptual": "none",
        "fid": False,
        "rate_scales": (0.5, 1.0, 2.0),
        "crop_rows": 2,
    }
    return EvalOptions(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def swept(model_dir: Path, image_dir: Path):  # noqa: F811
    images = load_images(find_images([image_dir]))
    codecs, options = [load_codec(str(model_dir))], _options()
    report = run_eval(images, codecs, options)
    run_rate_sweep(report, images, codecs, options)
    return images, report


def test_sweep_records_and_matched_sizes(swept) -> None:
    images, report = swept
    assert report.runs("rate") == ["wetok:tiny@s=0.50", "wetok:tiny@s=1.00", "wetok:tiny@s=2.00"]
    assert len(report.runs("rate-matched")) == 6
    rates, psnr = curve(report, "wetok")
    assert rates == sorted(rates) and rates[-1] > 8 * rates[0]  # tokens grow as s²
    for run in report.runs("rate"):
        scale = run.rsplit("=", 1)[1]
        wetok = [r for r in report.records if r.run == run]
        for c in ("jpeg", "jpeg2000"):
            matched = [r for r in report.records if r.run == f"{c}@rate:s={scale}"]
            for w, m in zip(wetok, matched, strict=True):
                assert m.bytes <= w.bytes or m.note.startswith("over target")
    assert [b["codec"] for b in report.bd] == ["wetok", "jpeg"]
    assert {"bd_rate_percent", "bd_psnr_db", "overlap_bpp"} <= set(report.bd[0])


def test_sweep_outputs(swept, tmp_path: Path) -> None:
    images, report = swept
    table = markdown_rate_table(report)
    assert table.count("\n| 0.50 |") + table.count("\n| 1.00 |") + table.count("\n| 2.00 |") == 3
    assert "| wetok |" in table and "JPEG 2000 PSNR dB" in table
    paths = write_json(report, tmp_path)
    full = json.loads(paths["eval"].read_text())
    assert full["bd"] == json.loads(json.dumps(report.bd)) and full["settings"]["rate_scales"] == [0.5, 1, 2]
    assert len(json.loads(paths["rd/wetok-rate-sweep"].read_text())["results"]["bpp"]) == 3
    out = rate_crops_figure(report, [a for _, a in images], tmp_path / "crops_rate.png", size=32)
    with Image.open(out) as im:  # original + (wetok, JPEG 2000) at two scales; both images kept
        assert im.size == (5 * 36 + 4, 2 * (32 + 34 + 4) + 4)
        assert np.asarray(im).std() > 10


def test_rate_plot(swept, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert plot_rate_rd(swept[1], tmp_path / "rd_rate.png") is None
    assert (tmp_path / "rd_rate.png").stat().st_size > 1000


def test_eval_command_rate_sweep(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "report"
    args = [str(image_dir), "-m", str(model_dir), "--codecs", "jpeg2000", "--no-sweep", "--no-match"]
    args += ["--no-fid", "--perceptual", "none", "--crops", "1", "-o", str(out), "--no-cache"]
    result = CliRunner().invoke(eval_cmd, [*args, "--rate-sweep", "--rate-scales", "0.5,2"])
    assert result.exit_code == 0, result.output
    assert "rate sweep" in result.stdout and "| 0.50 |" in result.stdout
    assert (out / "crops_rate.png").is_file() and (out / "rd/jpeg-2000-rate-sweep.json").is_file()
    for name in ("eval.json", "rd.png", "crops.png"):
        (out / name).unlink(missing_ok=True)
    again = CliRunner().invoke(eval_cmd, [*args, "--rate-sweep", "--rate-scales", "0.5,2"])
    # Every report file is checked before any work: the first that exists is named (crops or plot).
    assert again.exit_code == 1 and "_rate.png already exists" in again.output and "--force" in again.output
    bad = CliRunner().invoke(eval_cmd, [*args, "--rate-sweep", "--rate-scales", "0.1", "--force"])
    assert bad.exit_code == 2 and "--rate-scales" in bad.output
