"""Plot detail kept (and PSNR) per step of one or more runs, from their ``validation.jsonl``.

    python examples/plot_detail.py RUN_DIR [RUN_DIR ...] -o detail.png

A run writes ``validation.jsonl`` when its config sets ``validation.every`` (steps between measurements on
the validation crops, :mod:`wetok_train.validation`): side by side, the curves show which probe keeps its
texture past the fade. Needs matplotlib (``pip install 'wetok[plot]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(run: Path) -> list[dict]:
    """The rows of a run's ``validation.jsonl`` in step order (a resumed run may repeat a step: last wins)."""
    rows = {}
    for line in (run / "validation.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot(runs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, (detail, quality) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    for run in runs:
        rows = read_curve(run)
        steps = [r["step"] for r in rows]
        detail.plot(steps, [r["detail_kept"] for r in rows], marker=".", label=run.name)
        quality.plot(steps, [r["psnr"] for r in rows], marker=".", label=run.name)
    detail.set_ylabel("detail kept (decoded / original)")
    quality.set_ylabel("PSNR (dB)")
    quality.set_xlabel("step")
    detail.legend()
    detail.grid(alpha=0.3)
    quality.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("-o", "--out", type=Path, default=Path("detail.png"))
    args = ap.parse_args()
    print(plot(args.runs, args.out))


if __name__ == "__main__":
    main()
