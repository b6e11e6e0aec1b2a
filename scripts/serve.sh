#!/bin/sh
# Start a vLLM OpenAI-compatible server: the base VLM plus every LoRA adapter made for it
# (default: the embedded tiny model on a CPU, built on first use; Qwen3-VL-2B on a GPU).
# Settings as env vars or flags: MODEL, ADAPTERS (name=path,...), HOST, PORT, FRAMES,
# MAX_MODEL_LEN, DP, TP, VLLM_API_KEY; this script turns the env vars into `serve run`
# options (flags given too win). Arguments after `--` go to `vllm serve` as they are.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
for pair in MODEL:--model ADAPTERS:--adapters HOST:--host PORT:--port FRAMES:--frames \
    MAX_MODEL_LEN:--max-model-len DP:--data-parallel-size TP:--tensor-parallel-size; do
    value=$(printenv "${pair%%:*}" || true)
    if [ -n "$value" ]; then
        set -- "${pair#*:}" "$value" "$@"
    fi
done
exec .venv/bin/python -m serve run "$@"
