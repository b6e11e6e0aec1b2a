#!/bin/sh
# Train a LoRA adapter with the reference recipe (the counterpart of 4g/visual_cues' lora_2b.sh):
# Qwen3-VL-2B-Instruct, r=64, alpha=64, dropout 0.05 on the LLM's q/k/v/o projections (vision
# frozen), cosine lr 1e-4, 3 % warm-up, 1 epoch, effective batch 32, bf16 + gradient
# checkpointing on a GPU. The adapter is served unmerged: ADAPTERS=cued=data/adapters/cued sh scripts/serve.sh
# Usage: DATA=data/<name> OUT=data/adapters/<name> VARIANTS=plain,trajectory sh scripts/lora.sh [extra train options]
# Several GPUs: GPUS=4 sh scripts/lora.sh  (torchrun data parallel through the same entry point)
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
MODEL=${MODEL:-Qwen/Qwen3-VL-2B-Instruct}
DATA=${DATA:-data/synthetic}
OUT=${OUT:-data/adapters/cued}
VARIANTS=${VARIANTS:-plain,trajectory}
set -- --model "$MODEL" --data "$DATA" --out "$OUT" --variants "$VARIANTS" "$@"
if [ "${GPUS:-1}" -gt 1 ]; then
    exec .venv/bin/torchrun --nproc-per-node "$GPUS" -m train "$@"
fi
exec .venv/bin/python -m train "$@"
