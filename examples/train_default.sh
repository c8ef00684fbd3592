#!/usr/bin/env bash
# Retrain the bundled default model and leave it in runs/default-model, ready to install.
# Usage: bash examples/train_default.sh [DATA_DIR]   (about 1.5 hours of an idle 2-core CPU)
set -euo pipefail
data=${1:-../shared/data/train}
# Stage 1 is one run of its config file: schedules (lr drops, [[phases]]) live in the config, so the
# resolved config of a run (runs/*/config.resolved.json) is enough to replay it.
wetok train examples/train_default.toml --data "$data"
# Phase 2, as the shipped model was trained: continue from phase 1's exported weights, fresh optimizer.
wetok train examples/train_default.toml --data "$data" --out runs/default-continue \
  --init-from runs/default-stage1/model -s optim.warmup_steps=300 -s steps=5000 -s 'optim.lr_drops=[4000]'
# The export fits the entropy tables on 64 crops; refit them on every training photo.
wetok fit-prior runs/default-continue/model "$data" -o runs/default-model --force
cp runs/default-stage1/config.resolved.json runs/default-model/train_stage1.json
cp runs/default-continue/config.resolved.json runs/default-model/train_stage1_continue.json
# Stage 2: the generative decoder, trained against the finished model (frozen) and attached beside it; the
# model's weights, tables and id stay as they are (examples/train_default_stage2.toml). Its discriminator
# ships too (training state only: not part of the model id), so the next stage 2 continues from both.
wetok train examples/train_default_stage2.toml --data "$data" --init-from runs/default-model \
  --out runs/default-stage2
cp runs/default-stage2/model/{decoder_generative,discriminator}.safetensors runs/default-model/
cp runs/default-stage2/config.resolved.json runs/default-model/train_stage2.json
python examples/summarize_training.py runs/default-stage1 runs/default-continue runs/default-stage2 \
  > runs/default-model/TRAINING.md
cat <<'DONE'
Trained: runs/default-model. To ship it as the bundled default, first keep the current one under its own
name, so that its .wtk files still decode (tests/test_released_models.py lists every released model):
  git mv wetok/models/default wetok/models/default-vN && cp -r runs/default-model wetok/models/default
DONE
