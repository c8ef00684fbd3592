"""Reading an :class:`~wetok.eval.evaluate.EvalReport`: tables (rich, markdown), the rate–distortion plot
(matplotlib, an optional extra) and the side-by-side crops figure (PIL only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wetok import fileio
from wetok.eval.classic import BD_REFERENCE, CLASSIC_CODECS
from wetok.eval.evaluate import EvalReport

PLOT_EXTRA = "pip install 'wetok[plot]'"
WETOK_COLOR = "#d62728"


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _fid_header(report: EvalReport) -> str:
    fid = next(iter(report.fid.values()), None)
    if fid is None:
        return "FID"
    return f"FID (n={fid.n} {f'{fid.patch}² patches' if fid.patch else 'images'})"


def _cells(row: dict[str, Any], perceptual: bool) -> list[str]:
    cells = [
        row["label"],
        _fmt(row["bytes"], ",.0f"),
        _fmt(row["bpp"], ".4f"),
        _fmt(row["psnr"], ".2f"),
        _fmt(row["ssim"], ".4f"),
        _fmt(row["ms_ssim"], ".4f"),
    ]
    cells += [_fmt(row["perceptual"], ".4f")] if perceptual else []
    cells += [_fmt(row["encode_ms"], ".1f"), _fmt(row["decode_ms"], ".1f")]
    kid = f"{row['kid']:.4f}±{row['kid_std']:.4f}" if "kid" in row else "–"
    return cells + [_fmt(row.get("fid"), ".2f"), kid]


def _headers(report: EvalReport) -> list[str]:
    cols = ["codec", "bytes", "bpp", "PSNR dB", "SSIM", "MS-SSIM"]
    cols += [report.perceptual] if report.perceptual else []
    return cols + ["enc ms", "dec ms", _fid_header(report), "KID"]


def summary_table(report: EvalReport) -> Any:
    """A rich Table of the per-run means (models, then matched-size and fixed-setting classic runs)."""
    from rich.table import Table

    table = Table(title=f"wetok eval: mean over {len(report.names)} images", title_justify="left")
    for i, col in enumerate(_headers(report)):
        table.add_column(col, justify="left" if i == 0 else "right")
    kind = None
    for row in report.summary():
        if kind is not None and row["kind"] != kind:
            table.add_section()
        kind = row["kind"]
        table.add_row(*_cells(row, bool(report.perceptual)))
    return table


def codebook_table(report: EvalReport) -> Any:
    """A rich Table of per-group codebook usage and bits per token of every model run."""
    from rich.table import Table

    table = Table(title="codebook usage on the evaluated set (bits per token)", title_justify="left")
    for col in ("model", "group", "used", "usage", "entropy", "perplexity", "prior bits", "coded bits"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for run, stats in report.codebook.items():
        for g in stats.groups:
            table.add_row(
                report.labels[run],
                str(g.group),
                f"{g.used}/{g.size}",
                f"{100 * g.usage:.1f}%",
                f"{g.entropy:.3f}",
                f"{g.perplexity:.1f}",
                f"{g.prior_bits:.3f}",
                "",
            )
        table.add_row(
            report.labels[run],
            "all",
            "",
            "",
            f"{stats.entropy:.3f}",
            "",
            f"{stats.prior_bits:.3f}",
            f"{stats.coded_bits:.3f}",
            end_section=True,
        )
    return table


def summary_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """The summary table as text cells: ``(header, rows)``."""
    return _headers(report), [_cells(row, bool(report.perceptual)) for row in report.summary()]


def markdown_table(report: EvalReport, kinds: tuple[str, ...] = ("model", "matched")) -> str:
    """The summary rows of ``kinds`` as a GitHub markdown table."""
    head = _headers(report)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in report.summary():
        if row["kind"] in kinds:
            lines.append("| " + " | ".join(_cells(row, bool(report.perceptual))) + " |")
    return "\n".join(lines)


# ---- RD plot ------------------------------------------------------------------------------------------


def _db(ms_ssim: float | None) -> float | None:
    return None if ms_ssim is None or ms_ssim >= 1 else -10 * math.log10(1 - ms_ssim)


def plot_rd(report: EvalReport, path: Path, exclusive: bool = False) -> str | None:
    """PSNR and MS-SSIM (dB) against bpp, plus the perceptual distance if any; returns a one-line note
    instead when matplotlib is missing. ``exclusive``: create ``path``, never replace it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"RD plot skipped: matplotlib is not installed ({PLOT_EXTRA})"
    panels = [("psnr", "PSNR-RGB (dB)", lambda v: v), ("ms_ssim", "MS-SSIM-RGB (dB)", _db)]
    if report.perceptual:
        panels.append(("perceptual", f"{report.perceptual} (lower is better)", lambda v: v))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    rows = [r for r in report.summary() if r["kind"] in ("model", "matched", "sweep")]  # not the rate sweep
    for ax, (key, title, f) in zip(axes[0], panels, strict=True):
        _draw_panel(ax, rows, key, f)
        ax.set(xlabel="bits per pixel", ylabel=title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{len(report.names)} images; hollow markers: classic codecs at the wetok file size")
    fig.tight_layout()
    with fileio.atomic_path(path, exclusive=exclusive) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return None


MODEL_MARKERS = "*PXD^v"  # one per wetok run (a model's realisms share its colour)


def _draw_panel(ax: Any, rows: list[dict[str, Any]], key: str, f: Any) -> None:
    models = [r["run"] for r in rows if r["kind"] == "model"]
    for codec in dict.fromkeys(r["codec"] for r in rows):
        color = CLASSIC_CODECS[codec].color if codec in CLASSIC_CODECS else WETOK_COLOR
        sweep = [r for r in rows if r["codec"] == codec and r["kind"] == "sweep"]
        sweep.sort(key=lambda r: r["bpp"])
        pts = [(r["bpp"], f(r[key])) for r in sweep if r[key] is not None and f(r[key]) is not None]
        if pts:
            label = CLASSIC_CODECS[codec].label if codec in CLASSIC_CODECS else codec
            ax.plot(*zip(*pts, strict=True), "o-", color=color, ms=4, label=label)
        for r in rows:
            if r["codec"] != codec or r["kind"] == "sweep" or r[key] is None or f(r[key]) is None:
                continue
            if r["kind"] == "model":
                marker = MODEL_MARKERS[models.index(r["run"]) % len(MODEL_MARKERS)]
                size = 14 if marker == "*" else 10  # a star reads smaller than the others at one size
                ax.plot(r["bpp"], f(r[key]), marker, color=color, ms=size, label=r["label"])
            else:
                ax.plot(
                    r["bpp"],
                    f(r[key]),
                    "o",
                    mfc="none",
                    mec=color,
                    ms=9,
                    mew=2,
                    label=None if pts else r["label"],
                )


# ---- crops figure -------------------------------------------------------------------------------------


def detail_window(rgb: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size``² window (on a half-window grid) with the most gradient energy."""
    g = rgb.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = energy.shape
    best, pos = -1.0, (0, 0)
    step = max(1, size // 2)
    for y in range(0, max(1, h - size + 2), step):
        for x in range(0, max(1, w - size + 2), step):
            e = float(energy[y : y + size, x : x + size].sum())
            if e > best:
                best, pos = e, (y, x)
    return pos


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def crops_figure(
    report: EvalReport,
    originals: list[np.ndarray],
    path: Path,
    rows: int = 4,
    size: int = 192,
    runs: list[str] | None = None,
    exclusive: bool = False,
) -> Path:
    """Rows of the same detailed region per image: original, then each run (default: models and
    matched-size classic codecs), each captioned with its bpp and PSNR on that image. ``exclusive``:
    create ``path``, never replace it."""
    runs = runs if runs is not None else list(report.recons)
    picks = sorted(set(np.linspace(0, len(originals) - 1, min(rows, len(originals))).round().astype(int)))

    def tiles(idx: int) -> list[tuple[np.ndarray, str, str]]:
        return [(report.recons[run][idx], report.labels[run], _caption(report, run, idx)) for run in runs]

    return _crop_sheet(report, originals, picks, tiles, path, size, exclusive)


def _crop_sheet(
    report: EvalReport,
    originals: list[np.ndarray],
    picks: list[int],
    tiles: Callable[[int], list[tuple[np.ndarray, str, str]]],
    path: Path,
    size: int,
    exclusive: bool,
) -> Path:
    """One row per image index of ``picks``: the original's most detailed ``size``² window, then the same
    window of each ``(image, title, caption)`` of ``tiles(idx)``. ``exclusive``: create ``path``, never
    replace it."""
    cap, font = 34, _font(13)
    columns = 1 + len(tiles(picks[0])) if picks else 1
    sheet = Image.new("RGB", (columns * (size + 4) + 4, len(picks) * (size + cap + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, idx in enumerate(picks):
        orig = originals[idx]
        s = min(size, *orig.shape[:2])
        y, x = detail_window(orig, s)
        top = 4 + i * (size + cap + 4)
        for j, (img, title, caption) in enumerate([(orig, "original", report.names[idx]), *tiles(idx)]):
            left = 4 + j * (size + 4)
            sheet.paste(Image.fromarray(np.ascontiguousarray(img[y : y + s, x : x + s])), (left, top))
            draw.text((left + 2, top + s + 2), title, fill="black", font=font)
            draw.text((left + 2, top + s + 17), caption, fill="#444444", font=font)
    with fileio.atomic_path(path, exclusive=exclusive) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _caption(report: EvalReport, run: str, idx: int) -> str:
    rec = next(r for r in report.records if r.run == run and r.image == report.names[idx])
    return f"{rec.bpp:.3f} bpp, {rec.psnr:.2f} dB"


# ---- rate sweep: RD plot and crops at two rates ------------------------------------------------------


def plot_rate_rd(report: EvalReport, path: Path, exclusive: bool = False) -> str | None:
    """PSNR and MS-SSIM (dB) against bpp of the rate sweep (:mod:`wetok.eval.rate_sweep`): the wetok model
    over its scales and each classic codec at the same file sizes (hollow where some images could not get
    that small); the BD-rate against JPEG 2000 in the legend. A one-line note instead without matplotlib."""
    from wetok.eval.rate_sweep import rate_rows

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"rate RD plot skipped: matplotlib is not installed ({PLOT_EXTRA})"
    rows = rate_rows(report)
    bd = {b["codec"]: b["bd_rate_percent"] for b in report.bd}
    panels = [p for p in _RATE_PANELS if all(r[p[0]] is not None and p[2](r[p[0]]) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False)
    for ax, (key, title, f) in zip(axes[0], panels, strict=True):
        for codec in dict.fromkeys(r["codec"] for r in rows):
            pts = sorted((r["bpp"], f(r[key]), r["unreached"]) for r in rows if r["codec"] == codec)
            color = CLASSIC_CODECS[codec].color if codec in CLASSIC_CODECS else WETOK_COLOR
            x, y, over = zip(*pts, strict=True)
            ax.plot(x, y, "-", color=color, lw=2.2 if codec == "wetok" else 1.4, label=_rate_label(codec, bd))
            ax.scatter(
                x, y, s=28, color=[color if not o else "white" for o in over], edgecolors=color, zorder=3
            )
        ax.set(xlabel="bits per pixel (log scale)", ylabel=title, xscale="log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(
            [t for t in (0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0) if _in(ax, t)]
        )
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Rate sweep, {len(report.names)} images: wetok coded at several scales, classic codecs at "
        "the same file sizes\n(hollow: some images cannot get that small; BD-rate against JPEG 2000)",
        fontsize=10,
    )
    fig.tight_layout()
    with fileio.atomic_path(path, exclusive=exclusive) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return None


_RATE_PANELS = (("psnr", "PSNR-RGB (dB)", lambda v: v), ("ms_ssim", "MS-SSIM-RGB (dB)", _db))


def _rate_label(codec: str, bd: dict[str, float | None]) -> str:
    if codec == BD_REFERENCE:
        return "JPEG 2000 (reference)"
    name = CLASSIC_CODECS[codec].label if codec in CLASSIC_CODECS else "wetok (resampled)"
    return name + (f", BD-rate {bd[codec]:+.0f} %" if bd.get(codec) is not None else "")


def _in(ax: Any, value: float) -> bool:
    low, high = ax.get_xlim()
    return low <= value <= high


def rate_crops_figure(
    report: EvalReport,
    originals: list[np.ndarray],
    path: Path,
    scales: tuple[str, ...] | None = None,
    codecs: tuple[str, ...] = (BD_REFERENCE, "avif"),
    size: int = 192,
    exclusive: bool = False,
) -> Path | None:
    """Rows of one detailed region per kept image: the original, then at each of two sweep scales (default:
    the second lowest and the second highest) wetok and ``codecs`` at its file size, captioned with bpp and
    PSNR. ``None`` when the report has no rate sweep."""
    wetok_runs = report.runs("rate")
    if not wetok_runs:
        return None
    picks = scales or tuple(r.rsplit("@s=", 1)[1] for r in _two_rates(wetok_runs))
    runs = []
    for scale in picks:
        wetok = next(r for r in wetok_runs if r.endswith(f"@s={scale}"))
        runs += [wetok] + [
            f"{c}@rate:s={scale}" for c in codecs if f"{c}@rate:s={scale}" in report.rate_recons
        ]

    def tiles(idx: int) -> list[tuple[np.ndarray, str, str]]:
        return [
            (report.rate_recons[run][idx], _short_label(report, run), _caption(report, run, idx))
            for run in runs
        ]

    return _crop_sheet(report, originals, sorted(report.rate_recons[runs[0]]), tiles, path, size, exclusive)


def _two_rates(runs: list[str]) -> list[str]:
    """The second lowest and second highest of the sweep (both ends with fewer than four points)."""
    if len(runs) < 4:
        return [runs[0], runs[-1]] if len(runs) > 1 else runs
    return [runs[1], runs[-2]]


def _short_label(report: EvalReport, run: str) -> str:
    codec, _, scale = run.partition("@")
    scale = scale.rsplit("=", 1)[1]
    return f"wetok s={scale}" if codec.startswith("wetok") else f"{CLASSIC_CODECS[codec].label} same size"
