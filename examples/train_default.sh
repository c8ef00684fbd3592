#!/usr/bin/env bash
# Retrain the bundled default model (both stages) and install it as wetok/models/default.
# Usage: bash examples/train_default.sh [DATA_DIR]   (about 2 hours on 2 CPU cores)
set -euo pipefail
data=${1:-../shared/data/train}
# Stage 1 as the shipped run did it: perceptual weight 0.1 for 1112 steps, then the config's 0.03.
wetok train examples/train_default.toml --data "$data" -s steps=1112 -s perceptual_weight=0.1
wetok train examples/train_default.toml --data "$data" --resume
wetok train examples/train_default_stage2.toml --data "$data"
rm -rf wetok/models/default
mkdir -p wetok/models
cp -r runs/default-stage2/model wetok/models/default
python examples/summarize_training.py runs/default-stage1 runs/default-stage2 > wetok/models/default/TRAINING.md
