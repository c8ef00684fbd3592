"""One HTML page to compare codecs with your eyes: the results table, a rate–distortion plot (inline SVG)
and, per image, a before/after slider (drag to reveal) between two reconstructions, with zoom to 1:1 pixels.

The page needs no network and no framework: plain HTML, CSS and ~80 lines of JavaScript. Images are
lossless PNG, either in a folder beside the page (``report_files/``, for many images) or embedded as data
URIs (one self-contained file). The URL fragment sets the initial view, so scripts and tests can drive it:
``report.html#split=0.25&zoom=1`` (split in ``[0, 1]``: the share of the width showing the left image;
zoom ``0`` = fit to the window, ``1`` = 1:1 pixels, ``2`` = 2:1).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wetok import fileio
from wetok.errors import OutputError
from wetok.eval.classic import CLASSIC_CODECS
from wetok.eval.report import WETOK_COLOR, summary_rows
from wetok.eval.report import _db as ms_ssim_db  # MS-SSIM as dB, as rd.png plots it

FILES_DIR = "report_files"


@dataclass
class Variant:
    """One picture of an image: the original or a reconstruction, with a short caption."""

    key: str
    label: str
    caption: str
    pixels: np.ndarray  # uint8 [H, W, 3]


@dataclass
class Comparison:
    """An image, its variants, and the pairs (left key, right key) the slider offers, first shown first."""

    name: str
    variants: list[Variant]
    pairs: list[tuple[str, str]]


@dataclass
class Page:
    title: str
    intro: str = ""
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows (plain text cells)
    rd_svg: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- the page -------------------------------------------------------------------------------------------
def write_page(page: Page, path: Path, embed: bool = False, exclusive: bool = False) -> Path:
    """Write ``path`` (and, unless ``embed``, the PNGs into ``path.parent / report_files``), atomically;
    ``exclusive``: create the page and its pictures, never replace them (:func:`wetok.fileio.atomic_path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = path.parent / FILES_DIR
    if not embed and files.is_symlink():
        raise OutputError(f"{files} is a symbolic link; refusing to write the report's pictures through it")
    body = [f"<h1>{_e(page.title)}</h1>"]
    body += [f"<p>{_e(page.intro)}</p>"] if page.intro else []
    if page.table:
        body.append(_table(*page.table))
    body += [f"<figure class='rd'>{page.rd_svg}</figure>"] if page.rd_svg else []
    body += [f"<p class='note'>note: {_e(n)}</p>" for n in page.notes]
    for i, comp in enumerate(page.comparisons):
        srcs = {
            v.key: _src(v.pixels, files, f"{i:03d}-{_slug(comp.name)}-{_slug(v.key)}.png", embed, exclusive)
            for v in comp.variants
        }
        body.append(_comparison(i, comp, srcs))
    parts = {"title": _e(page.title), "css": _CSS, "js": _JS, "body": "\n".join(body)}
    # One pass: a name holding "{body}" or "{js}" is text, never a place the template fills in.
    doc = _SLOT.sub(lambda m: parts[m.group(1)], _TEMPLATE)
    fileio.write_atomic(path, doc.encode(), exclusive=exclusive)
    return path


_SLOT = re.compile(r"\{(title|css|js|body)\}")


def _e(text: Any) -> str:
    """``text`` as HTML text; undecodable bytes of a file name (``\\xff`` read as a lone surrogate) are
    shown as U+FFFD, so the page can be written as UTF-8."""
    text = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(text, quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()).strip("-")[:60]


def _src(pixels: np.ndarray, folder: Path, name: str, embed: bool, exclusive: bool) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=6)
    if embed:
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    fileio.write_atomic(folder / name, buffer.getvalue(), exclusive=exclusive)
    return f"{FILES_DIR}/{name}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _comparison(i: int, comp: Comparison, srcs: dict[str, str]) -> str:
    by_key = {v.key: v for v in comp.variants}
    h, w = comp.variants[0].pixels.shape[:2]
    buttons = "".join(
        f"<button data-a='{_e(a)}' data-b='{_e(b)}'{' class=on' if k == 0 else ''}>"
        f"{_e(by_key[a].label)} | {_e(by_key[b].label)}</button>"
        for k, (a, b) in enumerate(comp.pairs)
    )
    zooms = "".join(
        f"<button data-zoom='{z}'{' class=on' if z == 0 else ''}>{t}</button>"
        for z, t in ((0, "fit"), (1, "1:1"), (2, "2:1"))
    )
    a, b = comp.pairs[0]
    role = {a: " class='a'", b: " class='b'"}
    imgs = "".join(
        f"<img{role.get(v.key, '')} data-key='{_e(v.key)}' data-label='{_e(v.label)}' "
        f"data-caption='{_e(v.caption)}' src='{srcs[v.key]}' alt='{_e(v.label)}' width='{w}' "
        f"height='{h}' draggable='false'>"
        for v in comp.variants
    )
    return (
        f"<section class='cmp' id='img{i}' data-w='{w}' data-h='{h}'>"
        f"<h2>{_e(comp.name)} <small>{w}×{h}</small></h2>"
        f"<div class='bar'><span class='pairs'>{buttons}</span><span class='zooms'>{zooms}</span></div>"
        f"<div class='viewer'><div class='stage' style='aspect-ratio:{w}/{h};max-width:{w}px'>{imgs}"
        f"<div class='handle'></div></div></div>"
        f"<div class='caps'><span class='capa'>{_e(by_key[a].label)}: {_e(by_key[a].caption)}</span>"
        f"<span class='capb'>{_e(by_key[b].label)}: {_e(by_key[b].caption)}</span></div></section>"
    )


# -- RD plot as SVG -------------------------------------------------------------------------------------
def rd_svg(series: Sequence[dict[str, Any]], ylabel: str, width: int = 580, height: int = 320) -> str:
    """A plot of series ``{"label", "color", "points": [(bpp, y)], "style": "line" | "star" | "ring"}``."""
    pts = [p for s in series for p in s["points"] if all(map(math.isfinite, p))]
    if not pts:
        return ""
    (x0, x1), (y0, y1) = _span([p[0] for p in pts]), _span([p[1] for p in pts])
    left, right, top, bottom = 52, 150, 12, 40  # the legend goes in the right margin
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' font-size='11' "
        "font-family='sans-serif'>",  # no fixed size: the page's CSS fits two plots side by side
        f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{height - top - bottom}' "
        "fill='none' stroke='#999'/>",
    ]
    for t in _ticks(x0, x1):
        out.append(f"<text x='{sx(t):.1f}' y='{height - bottom + 14}' text-anchor='middle'>{t:g}</text>")
    for t in _ticks(y0, y1):
        out.append(
            f"<text x='{left - 4}' y='{sy(t) + 4:.1f}' text-anchor='end'>{t:g}</text>"
            f"<line x1='{left}' x2='{width - right}' y1='{sy(t):.1f}' y2='{sy(t):.1f}' stroke='#eee'/>"
        )
    out.append(
        f"<text x='{(left + width - right) / 2}' y='{height - 8}' text-anchor='middle'>bits per pixel</text>"
        f"<text transform='translate(12 {(top + height - bottom) / 2}) rotate(-90)' "
        f"text-anchor='middle'>{_e(ylabel)}</text>"
    )
    for k, s in enumerate(series):
        xy = [(sx(x), sy(y)) for x, y in s["points"] if math.isfinite(x) and math.isfinite(y)]
        color = s["color"]
        if s["style"] == "line" and len(xy) > 1:
            out.append(
                f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='"
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
                + "'/>"
            )
        for x, y in xy:
            if s["style"] == "star":
                out.append(
                    f"<text x='{x:.1f}' y='{y + 6:.1f}' text-anchor='middle' font-size='20' "
                    f"fill='{color}'>★</text>"
                )
            else:
                fill = "none" if s["style"] == "ring" else color
                out.append(
                    f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{4 if fill == 'none' else 3}' fill='{fill}' "
                    f"stroke='{color}' stroke-width='2'/>"
                )
        out.append(
            f"<text x='{width - right + 8}' y='{top + 10 + 14 * k}' fill='{color}'>{_e(s['label'])}</text>"
        )
    return "".join(out) + "</svg>"


def _span(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(lo) * 0.1, 0.01)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= n)
    return [round(k * step, 10) for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>
<style>{css}</style></head>
<body>
{body}
<script>{js}</script>
</body></html>
"""

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px auto;max-width:1200px;padding:0 12px;color:#222}
table.results{border-collapse:collapse;font-size:13px;margin:8px 0}
.results th,.results td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
.results th:first-child,.results td:first-child{text-align:left}
figure.rd{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
figure.rd svg{flex:1 1 380px;max-width:580px;height:auto}
.note{color:#666;font-size:12px;margin:2px 0}
section.cmp{margin:28px 0}
.bar{display:flex;justify-content:space-between;flex-wrap:wrap;gap:6px;margin:6px 0}
.bar button{font:inherit;font-size:12px;border:1px solid #aaa;background:#f4f4f4;border-radius:3px;
 padding:2px 8px;margin:0 2px;cursor:pointer}
.bar button.on{background:#333;color:#fff;border-color:#333}
.viewer{overflow:auto;max-height:85vh;border:1px solid #ccc;background:#777}
.stage{position:relative;width:100%;margin:0 auto;touch-action:none;cursor:ew-resize;user-select:none}
.stage img{position:absolute;left:0;top:0;width:100%;height:100%;display:none}
.stage img.a,.stage img.b{display:block}
.stage img.b{clip-path:inset(0 0 0 50%)}
.stage.px img{image-rendering:pixelated}
.handle{position:absolute;top:0;bottom:0;left:50%;width:2px;margin-left:-1px;background:#fff;
 box-shadow:0 0 3px #000;pointer-events:none}
.caps{display:flex;justify-content:space-between;font-size:12px;color:#444;margin-top:4px}
"""

_JS = """
(function () {
  var hash = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var p = kv.split('='), v = p[1] || '';
    try { v = decodeURIComponent(v); } catch (e) { return; }  // '#split=%' is no reason to stop
    if (p[0]) hash[p[0]] = v;
  });
  function setSplit(sec, f) {
    f = isFinite(f) ? Math.min(1, Math.max(0, f)) : 0.5; sec.split = f;
    var pct = (100 * f).toFixed(3) + '%';
    sec.querySelector('img.b').style.clipPath = 'inset(0 0 0 ' + pct + ')';
    sec.querySelector('.handle').style.left = pct;
  }
  function setPair(sec, a, b) {
    sec.querySelectorAll('.stage img').forEach(function (img) {
      img.className = img.dataset.key === a ? 'a' : img.dataset.key === b ? 'b' : '';
      var cap = img.dataset.key === a ? '.capa' : img.dataset.key === b ? '.capb' : null;
      if (cap) sec.querySelector(cap).textContent = img.dataset.label + ': ' + img.dataset.caption;
    });
    setSplit(sec, sec.split);
  }
  function setZoom(sec, z) {
    var st = sec.querySelector('.stage'), w = +sec.dataset.w;
    st.style.width = z > 0 ? (w * z / devicePixelRatio) + 'px' : '100%';
    st.style.maxWidth = z > 0 ? 'none' : w + 'px';
    st.classList.toggle('px', z > 1);
    sec.querySelectorAll('[data-zoom]').forEach(function (b) {
      b.classList.toggle('on', +b.dataset.zoom === z);
    });
  }
  document.querySelectorAll('section.cmp').forEach(function (sec) {
    var st = sec.querySelector('.stage'), dragging = false;
    function at(e) { var r = st.getBoundingClientRect(); setSplit(sec, (e.clientX - r.left) / r.width); }
    st.addEventListener('pointerdown', function (e) {
      dragging = true; st.setPointerCapture(e.pointerId); at(e);
    });
    st.addEventListener('pointermove', function (e) { if (dragging) at(e); });
    st.addEventListener('pointerup', function () { dragging = false; });
    st.tabIndex = 0;
    st.addEventListener('keydown', function (e) {
      if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
        setSplit(sec, sec.split + (e.key === 'ArrowLeft' ? -0.05 : 0.05)); e.preventDefault();
      }
    });
    sec.querySelectorAll('[data-a]').forEach(function (btn) {
      btn.addEventListener('click', function () {
        sec.querySelectorAll('[data-a]').forEach(function (b) { b.classList.remove('on'); });
        btn.classList.add('on'); setPair(sec, btn.dataset.a, btn.dataset.b);
      });
    });
    sec.querySelectorAll('[data-zoom]').forEach(function (btn) {
      btn.addEventListener('click', function () { setZoom(sec, +btn.dataset.zoom); });
    });
    sec.split = 0.5;
    setSplit(sec, hash.split !== undefined ? parseFloat(hash.split) : 0.5);
    if (hash.zoom !== undefined && isFinite(+hash.zoom)) setZoom(sec, +hash.zoom);
  });
  document.documentElement.dataset.ready = '1';
})();
"""


# -- from an evaluation ---------------------------------------------------------------------------------
def eval_page(report: Any, originals: Sequence[np.ndarray]) -> Page:
    """The page of a :class:`wetok.eval.evaluate.EvalReport`: its table, RD plots (PSNR, MS-SSIM in dB),
    and per image original | each model, then the first model | each classic codec at the same file size."""
    rows = report.summary()
    panels = [
        rd_svg(_rd_series(rows, "psnr", lambda v: v), "PSNR-RGB (dB)"),
        rd_svg(_rd_series(rows, "ms_ssim", ms_ssim_db), "MS-SSIM-RGB (dB)"),
    ]
    page = Page(
        title=f"wetok eval: {len(report.names)} images",
        intro="Drag across a picture to move the split; the buttons choose the pair and the zoom "
        "(1:1 = one image pixel per screen pixel). Classic codecs are shown at the wetok "
        "file size of each image (largest file not over it).",
        table=summary_rows(report),
        rd_svg="".join(panels),
        notes=[n for n in report.notes if not n.startswith("RD plot skipped")],
    )  # the page draws its own
    models = report.runs("model")
    for idx, (name, rgb) in enumerate(zip(report.names, originals, strict=True)):
        variants = [Variant("original", "original", f"{rgb.shape[1]}×{rgb.shape[0]}", rgb)]
        for run, recons in report.recons.items():
            rec = next(r for r in report.records if r.run == run and r.image == name)
            caption = f"{rec.bytes:,} B, {rec.bpp:.4f} bpp, PSNR {rec.psnr:.2f} dB"
            variants.append(Variant(run, report.labels[run], caption, recons[idx]))
        pairs = [("original", m) for m in models]
        pairs += [(models[0], r) for r in report.recons if r not in models] if models else []
        if pairs:
            page.comparisons.append(Comparison(name, variants, pairs))
    return page


def _color(codec: str) -> str:
    """The plot colour of a codec, as the RD figure (``rd.png``) draws it."""
    return CLASSIC_CODECS[codec].color if codec in CLASSIC_CODECS else WETOK_COLOR


def _rd_series(rows: list[dict[str, Any]], key: str, f: Any) -> list[dict[str, Any]]:
    out = []
    for row_kind, style in (("sweep", "line"), ("matched", "ring"), ("model", "star")):
        groups: dict[str, list] = {}
        for r in rows:
            if r["kind"] == row_kind and r[key] is not None and f(r[key]) is not None:
                groups.setdefault(r["label"] if row_kind != "sweep" else r["codec"], []).append(r)
        for label, rs in groups.items():
            rs.sort(key=lambda r: r["bpp"])
            name = CLASSIC_CODECS[label].label if label in CLASSIC_CODECS else label
            out.append(
                {
                    "label": name,
                    "color": _color(rs[0]["codec"]),
                    "style": style,
                    "points": [(r["bpp"], f(r[key])) for r in rs],
                }
            )
    return out


# -- one decoded file ------------------------------------------------------------------------------------
def compare_page(
    name: str,
    original: np.ndarray,
    decoded: np.ndarray,
    wtk_bytes: int,
    codecs: Sequence[str] | None = None,
    others: Sequence[tuple[str, np.ndarray]] = (),
) -> Page:
    """One image: original | wetok, then wetok | each other decode of the same file (``others``: label,
    image, e.g. another realism) and each classic codec (default: all four) at the ``.wtk`` file's size."""
    from wetok.eval import classic
    from wetok.metrics import psnr, ssim

    if original.shape != decoded.shape:
        raise ValueError(
            f"the original is {original.shape[1]}x{original.shape[0]}, the decoded image "
            f"{decoded.shape[1]}x{decoded.shape[0]}"
        )
    pixels = original.shape[0] * original.shape[1]
    rows, variants = (
        [],
        [Variant("original", "original", f"{original.shape[1]}×{original.shape[0]}", original)],
    )

    def add(key: str, label: str, size: int, recon: np.ndarray) -> None:
        q, s = psnr(original, recon), ssim(original, recon)
        rows.append([label, f"{size:,}", f"{8 * size / pixels:.4f}", f"{q:.2f}", f"{s:.4f}"])
        variants.append(
            Variant(key, label, f"{size:,} B, {8 * size / pixels:.4f} bpp, PSNR {q:.2f} dB", recon)
        )

    add("wetok", "wetok", wtk_bytes, decoded)
    for k, (label, recon) in enumerate(others):
        add(f"wetok{k + 1}", label, wtk_bytes, recon)
    for cc in (classic.get_codec(c) for c in (codecs or classic.CLASSIC_CODECS)):
        if classic.unavailable_reason(cc) is None:
            m = classic.match_size(cc, original, wtk_bytes)
            add(cc.name, f"{cc.label} {cc.describe(m.setting)}", len(m.data), classic.decode(m.data))
    pairs = [("original", "wetok")] + [("wetok", v.key) for v in variants[2:]]
    return Page(
        title=f"wetok: {name}",
        intro="Drag across the picture to move the split. Classic codecs at the "
        "largest file not over the .wtk file's size.",
        table=(["codec", "bytes", "bpp", "PSNR dB", "SSIM"], rows),
        comparisons=[Comparison(name, variants, pairs)],
    )
