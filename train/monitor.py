"""Training progress: a rich bar (on a terminal), JSONL metrics, codebook usage per group, sample PNGs, and
the detail-kept log on validation crops (``validation.jsonl``: one row per ``validation.every`` steps, the
curve ``examples/plot_detail.py`` draws)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from wetok.image import tensor_to_array
from wetok.tokenizer import Tokenizer
from wetok_train.config import TrainConfig
from wetok_train.validation import measure_model

SHOWN = (
    "loss/total",
    "rec/l1",
    "rec/perceptual",
    "gq/entropy",
    "adv/gen",
    "adv/feature_matching",
    "adv/disc",
)


class Monitor:
    """Accumulates loss terms between log steps; rank 0 only (``enabled=False`` makes it a no-op)."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        enabled: bool = True,
        quiet: bool = False,
        crops: Tensor | None = None,
    ) -> None:
        self.cfg, self.out, self.enabled, self.crops = cfg, out, enabled, crops
        self.console = Console(stderr=True)
        self.bar = enabled and not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("stage {task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count, self.images, self.t0 = 0, 0, time.perf_counter()
        g, bits = self.cfg.model.groups, self.cfg.model.group_bits
        self.usage = torch.zeros(g, 2**bits, dtype=torch.bool)

    def __enter__(self) -> Monitor:
        if self.bar:
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.cfg.steps, stage=self.cfg.stage, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.progress.stop()

    def record(self, step: int, terms: dict[str, Tensor], indices: Tensor, images: int) -> None:
        """Add one step's loss terms and token indices ``[B, h, w, g]``; log every ``log_every`` steps."""
        if not self.enabled:
            return
        indices = indices.reshape(-1, self.usage.shape[0]).cpu()
        for j in range(self.usage.shape[0]):
            self.usage[j, indices[:, j]] = True
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.images += images
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            self._log(step)

    def _log(self, step: int) -> None:
        dt = time.perf_counter() - self.t0
        row = {"step": step, "stage": self.cfg.stage, "img_per_s": round(self.images / dt, 3)}
        row |= {k: round(v / self.count, 6) for k, v in self.sums.items()}
        row["gq/usage"] = [round(float(u), 4) for u in self.usage.float().mean(dim=1)]
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        info = " ".join(f"{k.split('/')[-1]}={row[k]:.4f}" for k in SHOWN if k in row)
        info += f" usage={min(row['gq/usage']):.2f} {row['img_per_s']:.1f} img/s"
        if self.bar:
            self.progress.update(self.task, completed=step, info=info)
        elif not self.quiet:
            self.console.print(f"step {step}/{self.cfg.steps} {info}", highlight=False)
        self._reset()

    @torch.no_grad()
    def save_samples(self, step: int, ema: Tokenizer, real: Tensor, n: int = 4) -> None:
        """Originals (top row) above EMA reconstructions (bottom row) as ``samples/step_NNNNNNN.png``."""
        if not self.enabled:
            return
        x = real[:n].float()
        recon = ema.decode(ema.encode(x), seed=0)
        grid = torch.cat([torch.cat(list(x), dim=2), torch.cat(list(recon.float()), dim=2)], dim=1)
        img = tensor_to_array(grid)
        (self.out / "samples").mkdir(exist_ok=True)
        Image.fromarray(img).save(self.out / "samples" / f"step_{step:07d}.png")

    @torch.no_grad()
    def validate(self, step: int, ema: Tokenizer) -> None:
        """PSNR, detail kept and seed spread of the EMA weights on the validation crops, appended to
        ``validation.jsonl`` (nothing without crops: ``validation.every`` = 0)."""
        if not self.enabled or self.crops is None:
            return
        crops = self.crops.to(ema.device)
        row = {"step": step} | measure_model(lambda t, s: ema.decode(t, seed=s), ema.encode, crops)
        with open(self.out / "validation.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
