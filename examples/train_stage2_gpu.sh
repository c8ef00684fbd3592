#!/usr/bin/env bash
# Stage 2 of the bundled default on one GPU, in at most 9 minutes, with nothing but this repository:
#
#   OUT=/some/folder examples/train_stage2_gpu.sh
#
# The recipe is examples/train_default_stage2.toml (encoder, quantizer, entropy tables frozen; the decoder
# gains noise inputs and is fine-tuned as a GAN generator), with a GPU-sized batch and step count. The run
# stops itself after TIME_LIMIT seconds at the latest (SIGTERM saves a checkpoint) and is then exported
# from that checkpoint, so the model directory always appears:
#   $OUT/default-stage2/model/   the default model unchanged + decoder_generative.safetensors
#                                + discriminator.safetensors (stage 2 from this folder continues from it)
# Without a CUDA GPU it does nothing and says so (exit 0): the CPU recipe is the toml itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-runs}
DATA=${DATA:-../shared/data/train}
TIME_LIMIT=${TIME_LIMIT:-480}  # training seconds; start-up and export fit in the rest of 9 minutes
RUN="$OUT/default-stage2"
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "train_stage2_gpu.sh: no CUDA GPU here; nothing done" >&2
  exit 0
fi
args=(examples/train_default_stage2.toml -s "data=\"$DATA\"" -s "out=\"$RUN\"" -s 'device="cuda"'
      -s threads=0 -s num_workers=6 -s batch_size=32 -s steps=12000 -s optim.lr_drops=[10000]
      -s disc.warmup=300 -s log_every=100 -s sample_every=2000 -s checkpoint_every=500)
status=0
timeout --signal=TERM --kill-after=60 "$TIME_LIMIT" wetok train "${args[@]}" --force || status=$?
if [[ ! -d "$RUN/model" ]]; then
  # Stopped by the time limit (exit 124 from timeout, or wetok's own stop message): export the checkpoint.
  echo "train_stage2_gpu.sh: training stopped (status $status); exporting the last checkpoint" >&2
  step=$(python -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["step"])' \
         "$RUN/metrics.jsonl")
  wetok train "${args[@]}" -s "steps=$step" --resume
fi
echo "exported: $RUN/model"
