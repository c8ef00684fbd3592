#!/usr/bin/env bash
# Retrain the bundled default model (both stages) and install it as wetok/models/default.
# Usage: bash examples/train_default.sh [DATA_DIR]   (about 100 minutes on 2 CPU cores)
set -euo pipefail
data=${1:-../shared/data/train}
wetok train examples/train_default.toml --data "$data" -s steps=1112 -s perceptual_weight=0.1
wetok train examples/train_default.toml --data "$data" --resume
wetok train examples/train_default_stage2.toml --data "$data"
rm -rf wetok/models/default
mkdir -p wetok/models
cp -r runs/default-stage2/model wetok/models/default
python - <<'PY' > wetok/models/default/TRAINING.md
import json
rows = [json.loads(l) for s in ("runs/default-stage1", "runs/default-stage2") for l in open(f"{s}/metrics.jsonl")]
print("# Training log summary of the bundled default model\n")
print("| stage | step | img/s | rec/l1 | rec/perceptual | gq/entropy | adv/gen | usage (min over groups) |")
print("|---|---|---|---|---|---|---|---|")
for r in rows[:: max(1, len(rows) // 30)] + rows[-1:]:
    f = lambda k: f"{r[k]:.4f}" if k in r else "-"
    print(f"| {r['stage']} | {r['step']} | {r['img_per_s']:.1f} | {f('rec/l1')} | {f('rec/perceptual')} "
          f"| {f('gq/entropy')} | {f('adv/gen')} | {min(r['gq/usage']):.3f} |")
PY
