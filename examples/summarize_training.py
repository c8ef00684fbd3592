"""Summarise the metrics logs of the default model's two training stages as markdown (TRAINING.md).

python examples/summarize_training.py runs/default-stage1 runs/default-stage2 > TRAINING.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("rec/l1", "rec/perceptual", "gq/entropy", "adv/gen", "adv/disc")


def main(runs: list[str]) -> None:
    logs = [(Path(run) / "metrics.jsonl").read_text() for run in runs]
    rows = [json.loads(line) for log in logs for line in log.splitlines()]
    print("# Training log of the bundled default model\n")
    print("Every ~30th row of `metrics.jsonl` (means over a log window) and the last one of each stage.")
    print("Reproduce with `bash examples/train_default.sh DATA_DIR`; the repository's TRAINING.md has the")
    print("history of every shipped model.\n")
    print("| stage | step | img/s | " + " | ".join(COLUMNS) + " | codebook usage (min group) |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    keep = set(range(0, len(rows), max(1, len(rows) // 30)))
    keep |= {i for i in range(len(rows)) if i + 1 == len(rows) or rows[i + 1]["stage"] != rows[i]["stage"]}
    for i in sorted(keep):
        r = rows[i]
        cells = [f"{r[k]:.4f}" if k in r else "–" for k in COLUMNS]
        print(
            f"| {r['stage']} | {r['step']} | {r['img_per_s']:.1f} | "
            + " | ".join(cells)
            + f" | {min(r['gq/usage']):.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
