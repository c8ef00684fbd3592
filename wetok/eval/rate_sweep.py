"""The rate sweep of ``wetok eval``: one wetok model at several scales (:mod:`wetok.rate`), each classic codec
at the file size of every image at every scale, and Bjøntegaard deltas against JPEG 2000.

Records are of kind ``rate`` (wetok, run ``wetok:<model>@s=0.50``) and ``rate-matched`` (classic, run
``<codec>@rate:s=0.50``); the reconstructions of a few images are kept for the crops figure
(:func:`wetok.eval.report.rate_crops_figure`), not all (25 sets of Kodak would be 700 MB).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from wetok.eval import classic
from wetok.eval.bd import bd_psnr, bd_rate
from wetok.eval.evaluate import EvalOptions, EvalReport, Progress, Scorer, _record, _say, match_and_decode

DEFAULT_SCALES = (0.5, 0.71, 1.0, 1.41, 2.0)  # about 0.014 to 0.18 bpp with the default model on Kodak
REFERENCE = classic.BD_REFERENCE


def crop_picks(count: int, rows: int) -> list[int]:
    """The image indices shown in crops figures (evenly spread), as :func:`crops_figure` picks them."""
    if count == 0 or rows == 0:
        return []
    return sorted(set(np.linspace(0, count - 1, min(rows, count)).round().astype(int).tolist()))


def run_rate_sweep(
    report: EvalReport,
    images: list[tuple[str, np.ndarray]],
    codecs: Sequence[Any],
    options: EvalOptions,
    progress: Progress | None = None,
) -> None:
    """After :func:`~wetok.eval.evaluate.run_eval`: the sweep of the first wetok codec at
    ``options.rate_scales`` with the classic codecs of ``options`` this Pillow can run (nothing without
    scales or a wetok codec). PSNR / SSIM / MS-SSIM only: no perceptual distance, no FID."""
    if not options.rate_scales or not codecs:
        return
    usable = [n for n in options.codecs if classic.unavailable_reason(classic.get_codec(n)) is None]
    scorer = Scorer("none")
    args = (scorer, report, usable, options.match_iters, options.crop_rows, progress)
    evaluate_rate_sweep(codecs[0], images, options.rate_scales, *args)


def evaluate_rate_sweep(
    codec: Any,
    images: list[tuple[str, np.ndarray]],
    scales: Sequence[float],
    scorer: Scorer,
    report: EvalReport,
    codecs: Sequence[str] = (),
    iters: int = 8,
    crop_rows: int = 4,
    progress: Progress | None = None,
) -> None:
    """``codec`` at every scale, then each classic codec in ``codecs`` at the file sizes of each scale."""
    from wetok.rate import quality_of_scale

    keep = crop_picks(len(images), crop_rows)
    for scale in sorted(scales):
        run = f"wetok:{codec.name}@s={scale:.2f}"
        report.labels[run] = f"wetok {codec.name} scale {scale:.2f}"
        sizes = []
        for i, (name, rgb) in enumerate(images):
            _say(progress, f"{report.labels[run]}: {name}")
            t0 = time.perf_counter()
            data = codec.compress(rgb, quality=quality_of_scale(scale))
            t1 = time.perf_counter()
            recon = np.asarray(codec.decompress(data).image)
            t2 = time.perf_counter()
            scores = scorer(rgb, recon, perceptual=False)
            rec = _record(
                run, "wetok", "rate", name, rgb, f"s={scale:.2f}", len(data), scores, t1 - t0, t2 - t1
            )
            report.records.append(rec)
            sizes.append(len(data))
            if i in keep:
                report.rate_recons.setdefault(run, {})[i] = recon
        for name in codecs:
            _matched_at(classic.get_codec(name), images, sizes, scale, scorer, report, iters, keep, progress)
    report.bd = bd_table(report)


def _matched_at(
    cc: classic.ClassicCodec,
    images: list[tuple[str, np.ndarray]],
    targets: list[int],
    scale: float,
    scorer: Scorer,
    report: EvalReport,
    iters: int,
    keep: list[int],
    progress: Progress | None,
) -> None:
    run = f"{cc.name}@rate:s={scale:.2f}"
    report.labels[run] = f"{cc.label} at the size of scale {scale:.2f}"
    for i, ((name, rgb), target) in enumerate(zip(images, targets, strict=True)):
        _say(progress, f"{report.labels[run]}: {name}")
        m, recon, dec, note = match_and_decode(cc, rgb, target, iters)
        scores = scorer(rgb, recon, perceptual=False)
        setting = cc.describe(m.setting)
        rec = _record(
            run, cc.name, "rate-matched", name, rgb, setting, len(m.data), scores, m.encode_s, dec, note
        )
        report.records.append(rec)
        if i in keep:
            report.rate_recons.setdefault(run, {})[i] = recon


def rate_rows(report: EvalReport) -> list[dict[str, Any]]:
    """Summary rows of the sweep (kinds ``rate`` and ``rate-matched``), in run order."""
    return [row for row in report.summary() if row["kind"] in ("rate", "rate-matched")]


def curve(report: EvalReport, codec: str) -> tuple[list[float], list[float]]:
    """``(mean bpp, mean PSNR)`` per sweep point of ``codec`` ("wetok" or a classic name), by rate."""
    rows = sorted((r for r in rate_rows(report) if r["codec"] == codec), key=lambda r: r["bpp"])
    return [r["bpp"] for r in rows], [r["psnr"] for r in rows]


def bd_table(report: EvalReport) -> list[dict[str, Any]]:
    """BD-rate (%) and BD-PSNR (dB) of wetok and every other classic codec against JPEG 2000, over the rates
    where both curves have points (empty without JPEG 2000 in the sweep)."""
    ref = curve(report, REFERENCE)
    if not ref[0]:
        return []
    out = []
    for codec in dict.fromkeys(r["codec"] for r in rate_rows(report)):
        if codec == REFERENCE:
            continue
        rates, psnr = curve(report, codec)
        lo, hi = max(min(rates), min(ref[0])), min(max(rates), max(ref[0]))
        out.append(
            {
                "codec": codec,
                "reference": REFERENCE,
                "bd_rate_percent": bd_rate(*ref, rates, psnr),
                "bd_psnr_db": bd_psnr(*ref, rates, psnr),
                "overlap_bpp": [lo, hi] if hi > lo else None,
            }
        )
    return out


def markdown_rate_table(report: EvalReport) -> str:
    """Per scale: wetok's mean bpp and PSNR, each classic codec's PSNR at those sizes (with how many images
    it could not bring down to the wetok size); then the BD table."""
    rows = rate_rows(report)
    wetok = [r for r in rows if r["codec"] == "wetok"]
    others = list(dict.fromkeys(r["codec"] for r in rows if r["codec"] != "wetok"))
    head = ["scale", "wetok bpp", "wetok PSNR dB"] + [f"{classic.get_codec(c).label} PSNR dB" for c in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
    for w in wetok:
        scale = w["run"].rsplit("@s=", 1)[1]
        cells = [scale, f"{w['bpp']:.4f}", f"{w['psnr']:.2f}"]
        for c in others:
            m = next((r for r in rows if r["run"] == f"{c}@rate:s={scale}"), None)
            cells.append("–" if m is None else _matched_cell(m))
        lines.append("| " + " | ".join(cells) + " |")
    if report.bd:
        lines += ["", "| against JPEG 2000 | BD-rate | BD-PSNR | overlap (bpp) |", "|---|---:|---:|---|"]
        for b in report.bd:
            label = "wetok" if b["codec"] == "wetok" else classic.get_codec(b["codec"]).label
            lap = b["overlap_bpp"]
            lines.append(
                f"| {label} | {_pct(b['bd_rate_percent'])} | {_db(b['bd_psnr_db'])} | "
                f"{f'{lap[0]:.3f}–{lap[1]:.3f}' if lap else 'none'} |"
            )
    return "\n".join(lines)


def _matched_cell(row: dict[str, Any]) -> str:
    over = f", {row['unreached']}/{row['images']} over" if row["unreached"] else ""
    return f"{row['psnr']:.2f} ({row['bpp']:.3f} bpp{over})"


def _pct(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:+.1f} %"


def _db(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:+.2f} dB"
