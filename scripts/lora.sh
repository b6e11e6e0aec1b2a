#!/bin/sh
# Train a LoRA adapter with the reference study's recipe, as its scripts/lora_2b.sh runs it
# (4g/visual_cues): Qwen3-VL-2B-Instruct, r=64, alpha=64, dropout 0.05 on the LLM's
# q/k/v/o projections AND the vision merger (its `--tune_mm_mlp True`; the vision tower itself
# frozen, `--tune_mm_vision False`), cosine lr 1e-4, 3 % warm-up, 1 epoch, effective batch 32,
# bf16 + gradient checkpointing on a GPU. Its README says "over llm only": LLM_ONLY=1 trains that.
# `serve` turns on vLLM's tower/connector LoRA for an adapter with merger weights by itself:
#   ADAPTERS=cued=data/adapters/cued sh scripts/serve.sh
# Usage: DATA=data/<name> OUT=data/adapters/<name> VARIANTS=plain,trajectory [LLM_ONLY=1] sh scripts/lora.sh [extra train options]
# Several GPUs: GPUS=4 sh scripts/lora.sh  (torchrun data parallel through the same entry point)
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
MODEL=${MODEL:-Qwen/Qwen3-VL-2B-Instruct}
DATA=${DATA:-data/synthetic}
OUT=${OUT:-data/adapters/cued}
VARIANTS=${VARIANTS:-plain,trajectory}
MERGER=--tune-merger
[ "${LLM_ONLY:-0}" = 1 ] && MERGER=--no-tune-merger
set -- --model "$MODEL" --data "$DATA" --out "$OUT" --variants "$VARIANTS" $MERGER \
    --rank 64 --alpha 64 --dropout 0.05 --lr 1e-4 --warmup 0.03 --epochs 1 --batch 32 "$@"
if [ "${GPUS:-1}" -gt 1 ]; then
    exec .venv/bin/torchrun --nproc-per-node "$GPUS" -m train "$@"
fi
exec .venv/bin/python -m train "$@"
