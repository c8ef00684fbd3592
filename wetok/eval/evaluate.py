"""``wetok eval`` as a library: wetok models beside classic codecs on a set of images, the way
learned-compression papers report them.

For every image and codec: the real file size (headers included), bits per pixel over the original
pixels, PSNR / SSIM / MS-SSIM on 8-bit RGB, a perceptual distance, and encode / decode wall time. Set means
are plain averages of the per-image values (as CompressAI averages them). Classic codecs run twice: at
each image's wetok file size (bisection on their quality, :mod:`wetok.eval.classic`) and at a few fixed
settings for rate–distortion curves. FID / KID and codebook statistics come from :mod:`wetok.eval.stats`.
Nothing here imports matplotlib; :mod:`wetok.eval.report` draws.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wetok import __version__, fileio
from wetok import format as fmt
from wetok.eval import classic
from wetok.eval import stats as evalstats

METRICS = ("psnr", "ssim", "ms_ssim", "perceptual")
Progress = Callable[[str], None]


@dataclass
class Record:
    """One image through one codec setting. ``run`` groups records into a table row / RD point."""

    run: str  # "wetok:default", "jpeg@matched", "jpeg@q=10"
    codec: str  # "wetok" or a classic codec name
    kind: str  # "model", "matched" or "sweep"
    image: str
    setting: str  # "static", "q=37", "bpp=0.12"
    width: int
    height: int
    bytes: int
    psnr: float
    ssim: float | None
    ms_ssim: float | None
    perceptual: float | None
    encode_ms: float
    decode_ms: float
    note: str = ""

    @property
    def bpp(self) -> float:
        return 8.0 * self.bytes / (self.width * self.height)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bpp"] = self.bpp
        return {k: evalstats.finite_or_none(v) if isinstance(v, float) else v for k, v in d.items()}


@dataclass
class EvalOptions:
    """What to run. ``fid_patch``: None = automatic (:func:`~wetok.eval.stats.auto_patch`), 0 = whole
    images."""

    codecs: tuple[str, ...] = tuple(classic.CLASSIC_CODECS)
    match: bool = True
    match_iters: int = 8
    sweep: bool = True
    sweep_settings: dict[str, tuple[float, ...]] = field(default_factory=dict)
    perceptual: str = "auto"
    fid: bool = True
    fid_patch: int | None = None
    cache_dir: Path | None = field(default_factory=evalstats.default_cache_dir)
    seed: int = 0
    # Decoder settings of models with a generative decoder: None = what `decompress` gives by default (the
    # model's default realism) and both ends, 0 and 1; models without one are evaluated as they decode.
    realisms: tuple[float, ...] | None = None
    # Rate sweep of the first model (wetok.eval.rate_sweep.run_rate_sweep, after run_eval): these scales,
    # classic codecs at its sizes.
    rate_scales: tuple[float, ...] = ()
    crop_rows: int = 4  # images whose rate-sweep reconstructions are kept for the crops figure


@dataclass
class EvalReport:
    """Everything an evaluation produced; ``recons`` (model and matched runs) feed the crops figure."""

    names: list[str]
    records: list[Record] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    fid: dict[str, evalstats.FidResult] = field(default_factory=dict)
    codebook: dict[str, evalstats.CodebookStats] = field(default_factory=dict)
    recons: dict[str, list[np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    perceptual: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # what was run, for eval.json
    realism: dict[str, float] = field(default_factory=dict)  # decoder setting of wetok runs that have one
    rate_recons: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # rate sweep, a few images
    bd: list[dict[str, Any]] = field(default_factory=list)  # BD-rate / BD-PSNR against JPEG 2000

    def runs(self, kind: str | None = None) -> list[str]:
        """Run ids in order of first appearance (optionally of one kind)."""
        seen = dict.fromkeys(r.run for r in self.records if kind is None or r.kind == kind)
        return list(seen)

    def summary(self) -> list[dict[str, Any]]:
        """One row per run: means over its images, plus FID / KID where computed."""
        return [self._row(run) for run in self.runs()]

    def _row(self, run: str) -> dict[str, Any]:
        recs = [r for r in self.records if r.run == run]
        row: dict[str, Any] = {
            "run": run,
            "label": self.labels.get(run, run),
            "codec": recs[0].codec,
            "kind": recs[0].kind,
            "images": len(recs),
        }
        if run in self.realism:
            row["realism"] = self.realism[run]
        for key in ("bytes", "bpp", *METRICS, "encode_ms", "decode_ms"):
            values = [getattr(r, key) for r in recs]
            row[key] = None if any(v is None for v in values) else float(np.mean(values))
        row["unreached"] = sum(r.note.startswith("over target") for r in recs)
        if run in self.fid:
            row.update(
                {
                    f"fid_{k}" if k in ("n", "patch") else k: v
                    for k, v in dataclasses.asdict(self.fid[run]).items()
                }
            )
        return row

    def rd_curves(self) -> list[dict[str, Any]]:
        """RD data in CompressAI's JSON layout, one dict per wetok model and per classic codec."""
        curves = []
        for run in self.runs("model"):
            curves.append(self._curve(self.labels[run], [run], "wetok model, one operating point"))
        for codec in dict.fromkeys(r.codec for r in self.records if r.kind in ("matched", "sweep")):
            runs = [r for r in self.runs("matched") + self.runs("sweep") if r.startswith(f"{codec}@")]
            kinds = {r.kind for r in self.records if r.codec == codec}
            what = " and ".join(
                k
                for k, on in (
                    ("fixed settings", "sweep" in kinds),
                    ("matched to the wetok file size", "matched" in kinds),
                )
                if on
            )
            label = classic.get_codec(codec).label
            curves.append(self._curve(label, runs, f"Pillow {label}, {what}"))
        return curves + self._rate_curves()

    def _rate_curves(self) -> list[dict[str, Any]]:
        """The rate sweep's curves: the wetok model over its scales, each classic codec at those sizes."""
        curves = []
        for codec in dict.fromkeys(r.codec for r in self.records if r.kind in ("rate", "rate-matched")):
            runs = [r for r in self.runs("rate") + self.runs("rate-matched") if self._codec_of(r) == codec]
            if codec == "wetok":
                curves.append(self._curve("wetok rate sweep", runs, "wetok model coded at several scales"))
            else:
                label = classic.get_codec(codec).label
                what = f"Pillow {label} at the file sizes of the wetok rate sweep"
                curves.append(self._curve(f"{label} rate sweep", runs, what))
        return curves

    def _codec_of(self, run: str) -> str:
        return next(r.codec for r in self.records if r.run == run)

    def _curve(self, name: str, runs: list[str], description: str) -> dict[str, Any]:
        rows = sorted((self._row(run) for run in runs), key=lambda r: r["bpp"])
        keys = {"bpp": "bpp", "psnr-rgb": "psnr", "ms-ssim-rgb": "ms_ssim", "ssim-rgb": "ssim"}
        results = {k: [evalstats.finite_or_none(r[v]) for r in rows] for k, v in keys.items()}
        if self.perceptual:
            results[self.perceptual] = [r["perceptual"] for r in rows]
        results["encoding_time"] = [r["encode_ms"] / 1000 for r in rows]
        results["decoding_time"] = [r["decode_ms"] / 1000 for r in rows]
        return {
            "name": name,
            "description": f"{description}; mean over {len(self.names)} images",
            "results": results,
        }

    def to_dict(self) -> dict[str, Any]:
        summary = [
            {k: evalstats.finite_or_none(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in self.summary()
        ]
        return {
            "wetok_version": __version__,
            "images": self.names,
            "perceptual": self.perceptual,
            "settings": self.settings,
            "summary": summary,
            "per_image": [r.to_dict() for r in self.records],
            "codebook": {k: v.to_dict() for k, v in self.codebook.items()},
            "notes": self.notes,
            "rd": self.rd_curves(),
            "bd": self.bd,
        }


# ---- inputs -------------------------------------------------------------------------------------------


def load_images(
    paths: Sequence[Path], on_error: Callable[[Path, Exception], None] | None = None
) -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 RGB [H, W, 3])`` per file; names are file names, or paths where those repeat.

    A file that cannot be read raises, unless ``on_error(path, error)`` is given: then it is reported
    there and left out, so one bad file does not end a long evaluation."""
    from wetok.image import open_image

    names = [p.name for p in paths]
    unique = len(set(names)) == len(names)
    loaded = []
    for p in paths:
        try:
            loaded.append((p.name if unique else str(p), open_image(p)))
        except Exception as e:
            if on_error is None or not isinstance(e, (OSError, ValueError, SyntaxError, EOFError)):
                raise
            on_error(p, e)
    return loaded


# ---- scoring ------------------------------------------------------------------------------------------


class Scorer:
    """Per-image quality scores; the perceptual network is loaded once."""

    def __init__(self, perceptual: str = "auto") -> None:
        net, self.name, self.note = evalstats.load_distance(perceptual)
        self.perceptual = evalstats.PerceptualScorer(net) if net is not None else None

    def __call__(self, orig: np.ndarray, recon: np.ndarray, perceptual: bool = True) -> dict[str, Any]:
        from wetok.metrics import psnr, ssim_and_ms_ssim

        if orig.shape != recon.shape:
            raise ValueError(f"reconstruction is {recon.shape}, original {orig.shape}")
        ssim, ms_ssim = ssim_and_ms_ssim(orig, recon)
        dist = self.perceptual(orig, recon) if perceptual and self.perceptual else None
        return {"psnr": psnr(orig, recon), "ssim": ssim, "ms_ssim": ms_ssim, "perceptual": dist}


def _record(
    run: str,
    codec: str,
    kind: str,
    name: str,
    rgb: np.ndarray,
    setting: str,
    data_len: int,
    scores: dict[str, Any],
    enc: float,
    dec: float,
    note: str = "",
) -> Record:
    return Record(
        run,
        codec,
        kind,
        name,
        setting,
        rgb.shape[1],
        rgb.shape[0],
        data_len,
        **scores,
        encode_ms=1000 * enc,
        decode_ms=1000 * dec,
        note=note,
    )


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# ---- runs ---------------------------------------------------------------------------------------------


def decoder_settings(codec: Any, realisms: tuple[float, ...] | None, seed: int) -> list[Any]:
    """The decoder settings to evaluate ``codec`` at: ``[None]`` (the file as the model writes it) for a
    model without a generative decoder, else one :class:`~wetok.setting.DecoderSetting` per realism, the
    default first."""
    from wetok.setting import DecoderSetting, default_setting

    if not getattr(getattr(codec, "model", None), "has_generative_decoder", False):
        return [None]
    default = default_setting(codec.model)
    wanted = realisms if realisms is not None else (default.realism if default else 0.0, 0.0, 1.0)
    return [DecoderSetting(r, seed) for r in dict.fromkeys(round(float(r), 2) for r in wanted)]


def evaluate_model(
    codec: Any,
    images: list[tuple[str, np.ndarray]],
    scorer: Scorer,
    report: EvalReport,
    run: str,
    seed: int = 0,
    progress: Progress | None = None,
    setting: Any = None,
) -> list[int]:
    """Compress and decompress every image with a :class:`wetok.codec.Codec` (files with decoder
    ``setting``, if given); returns the file sizes."""
    warm = images[0][1][:64, :64]
    warm_tokens, warm_size = codec.encode_tokens(warm)  # first-call set-up stays out of the timings
    codec.decompress(codec.pack_tokens(warm_tokens, warm_size, setting=setting), seed=seed)
    recons, tokens, sizes, payload = [], [], [], 0
    for name, rgb in images:
        _say(progress, f"{report.labels[run]}: {name}")
        t0 = time.perf_counter()
        toks, size = codec.encode_tokens(rgb)
        data = codec.pack_tokens(toks, size, setting=setting)
        t1 = time.perf_counter()
        recon = np.asarray(codec.decompress(data, seed=seed).image)
        t2 = time.perf_counter()
        header, body = fmt.unpack(data)
        report.records.append(
            _record(
                run, "wetok", "model", name, rgb, header.mode, len(data), scorer(rgb, recon), t1 - t0, t2 - t1
            )
        )
        recons.append(recon)
        tokens.append(toks.numpy())
        sizes.append(len(data))
        payload += len(body)
    report.recons[run] = recons
    report.codebook[run] = evalstats.codebook_stats(tokens, codec.prior, payload)
    return sizes


def evaluate_matched(
    cc: classic.ClassicCodec,
    images: list[tuple[str, np.ndarray]],
    targets: list[int],
    scorer: Scorer,
    report: EvalReport,
    iters: int = 8,
    progress: Progress | None = None,
) -> None:
    """Each image at the largest ``cc`` file not over its target size (its smallest file if none fits)."""
    run = f"{cc.name}@matched"
    report.labels[run] = f"{cc.label} (matched size)"
    recons = []
    for (name, rgb), target in zip(images, targets, strict=True):
        _say(progress, f"{report.labels[run]}: {name}")
        m, recon, dec, note = match_and_decode(cc, rgb, target, iters)
        report.records.append(
            _record(
                run,
                cc.name,
                "matched",
                name,
                rgb,
                cc.describe(m.setting),
                len(m.data),
                scorer(rgb, recon),
                m.encode_s,
                dec,
                note,
            )
        )
        recons.append(recon)
    report.recons[run] = recons
    missed = sum(r.run == run and bool(r.note) for r in report.records)
    if missed:
        report.notes.append(
            f"{cc.label}: {missed}/{len(images)} images cannot get down to the wetok file "
            "size; their smallest file is used (bpp above wetok's)"
        )


def match_and_decode(
    cc: Any, rgb: np.ndarray, target: int, iters: int
) -> tuple[classic.Match, np.ndarray, float, str]:
    """``cc``'s largest file of ``rgb`` not over ``target`` bytes, its decode, the decode's seconds, and the
    note when even its smallest file is over the target."""
    m = classic.match_size(cc, rgb, target, iters)
    t0 = time.perf_counter()
    recon = classic.decode(m.data)
    dec = time.perf_counter() - t0
    note = "" if m.reached else f"over target: smallest {cc.label} file is {len(m.data)} B > {target} B"
    return m, recon, dec, note


def evaluate_sweep(
    cc: classic.ClassicCodec,
    images: list[tuple[str, np.ndarray]],
    settings: Sequence[float],
    scorer: Scorer,
    report: EvalReport,
    progress: Progress | None = None,
) -> None:
    """``cc`` at fixed settings for its RD curve (PSNR, SSIM, MS-SSIM; no perceptual distance)."""
    for setting in settings:
        run = f"{cc.name}@{cc.describe(setting)}"
        report.labels[run] = f"{cc.label} {cc.describe(setting)}"
        _say(progress, f"{report.labels[run]}")
        for name, rgb in images:
            t0 = time.perf_counter()
            data = classic.encode(cc, rgb, setting)
            t1 = time.perf_counter()
            recon = classic.decode(data)
            t2 = time.perf_counter()
            report.records.append(
                _record(
                    run,
                    cc.name,
                    "sweep",
                    name,
                    rgb,
                    cc.describe(setting),
                    len(data),
                    scorer(rgb, recon, perceptual=False),
                    t1 - t0,
                    t2 - t1,
                )
            )


def evaluate_fid(
    report: EvalReport, originals: list[np.ndarray], options: EvalOptions, progress: Progress | None = None
) -> None:
    """FID / KID of every stored reconstruction set against the originals (patches when images are few)."""
    try:
        bank = evalstats.FeatureBank(options.cache_dir)
    except RuntimeError as e:
        report.notes.append(f"FID / KID skipped: {e}")
        return
    patch = evalstats.auto_patch(originals) if options.fid_patch is None else options.fid_patch
    _say(progress, "FID features: originals")
    real = bank.features(originals, patch)
    for run, recons in report.recons.items():
        _say(progress, f"FID features: {report.labels[run]}")
        report.fid[run] = evalstats.fid_kid(real, bank.features(recons, patch), patch)
    what = f"{patch}x{patch} patches" if patch else "whole images resized to 299x299"
    report.notes.append(
        f"FID / KID (TF FID Inception pool3) on {len(real)} {what} per set, from "
        f"{len(originals)} images; FID is strongly biased at this n: compare, don't quote"
    )


def run_eval(
    images: list[tuple[str, np.ndarray]],
    codecs: Sequence[Any],
    options: EvalOptions | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate wetok ``codecs`` (zero or more) and ``options.codecs`` (classic) on ``images``.

    Classic codecs are size-matched to the first wetok codec, image by image.
    """
    options = options or EvalOptions()
    if not images:
        raise ValueError("no images to evaluate")
    report = EvalReport(names=[n for n, _ in images])
    scorer = Scorer(options.perceptual)
    report.perceptual = scorer.name
    report.settings = _settings(codecs, options)
    report.notes += [scorer.note] if scorer.note else []
    targets: list[int] | None = None
    for codec in codecs:
        settings = decoder_settings(codec, options.realisms, options.seed)
        for setting in settings:
            suffix = "" if setting is None else f" realism {setting.realism:.2f}"
            run = _unique(f"wetok:{codec.name}{suffix.replace(' ', ':', 1)}", report.labels)
            report.labels[run] = f"wetok {codec.name}{suffix}"
            if setting is not None:
                report.realism[run] = setting.realism
            sizes = evaluate_model(codec, images, scorer, report, run, options.seed, progress, setting)
            targets = targets or sizes
    for name in options.codecs:
        cc = classic.get_codec(name)
        reason = classic.unavailable_reason(cc)
        if reason:
            report.notes.append(reason)
            continue
        if options.match and targets is not None:
            evaluate_matched(cc, images, targets, scorer, report, options.match_iters, progress)
        if options.sweep:
            settings = options.sweep_settings.get(cc.name, cc.sweep)
            evaluate_sweep(cc, images, settings, scorer, report, progress)
    if options.fid and report.recons:
        evaluate_fid(report, [rgb for _, rgb in images], options, progress)
    return report


def _settings(codecs: Sequence[Any], options: EvalOptions) -> dict[str, Any]:
    models = [
        {
            "name": c.name,
            "path": str(getattr(c, "path", "") or ""),
            "model_id": getattr(c, "model_id_hex", None),
        }
        for c in codecs
    ]
    sweep = {n: list(options.sweep_settings.get(n, classic.get_codec(n).sweep)) for n in options.codecs}
    return {
        "models": models,
        "classic": list(options.codecs),
        "match": options.match,
        "match_iters": options.match_iters,
        "sweep": sweep if options.sweep else {},
        "rate_scales": list(options.rate_scales),
        "fid": options.fid,
        "fid_patch": options.fid_patch,
        "seed": options.seed,
    }


def _unique(run: str, taken: dict[str, str]) -> str:
    k, out = 2, run
    while out in taken:
        out, k = f"{run}#{k}", k + 1
    return out


def write_json(report: EvalReport, out_dir: Path, exclusive: bool = False) -> dict[str, Path]:
    """``out_dir/eval.json`` (everything) and ``out_dir/rd/<name>.json`` (CompressAI layout, per codec).

    Every file is written atomically (a full disk leaves no half or empty file; a symbolic link planted in
    its place is replaced, never followed); ``exclusive``: each is created, never replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"eval": out_dir / "eval.json"}
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    fileio.write_atomic(paths["eval"], text, exclusive=exclusive)
    for curve in report.rd_curves():
        slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in curve["name"].lower()).strip("-")
        path = out_dir / "rd" / f"{slug}.json"
        fileio.write_atomic(path, json.dumps(curve, indent=2, allow_nan=False) + "\n", exclusive=exclusive)
        paths[f"rd/{slug}"] = path
    return paths
