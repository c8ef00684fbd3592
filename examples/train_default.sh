#!/usr/bin/env bash
# Retrain the bundled default model (both stages) and install it as wetok/models/default.
# Usage: bash examples/train_default.sh [DATA_DIR]   (about 2 hours on 2 CPU cores)
set -euo pipefail
data=${1:-../shared/data/train}
# Each stage is one run of its config file: schedules (lr drops, [[phases]]) live in the config, so the
# resolved config of a run (runs/*/config.resolved.json) is enough to replay it.
wetok train examples/train_default.toml --data "$data"
wetok train examples/train_default_stage2.toml --data "$data"
rm -rf wetok/models/default
mkdir -p wetok/models
cp -r runs/default-stage2/model wetok/models/default
python examples/summarize_training.py runs/default-stage1 runs/default-stage2 > wetok/models/default/TRAINING.md
