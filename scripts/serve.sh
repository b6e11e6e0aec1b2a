#!/bin/sh
# Start a vLLM OpenAI-compatible server: the base VLM plus every LoRA adapter made for it
# (default: the embedded tiny model on a CPU, built on first use; Qwen3-VL-2B on a GPU).
# Settings as env vars or flags: MODEL, ADAPTERS (name=path,...), HOST, PORT, FRAMES,
# MAX_MODEL_LEN, VLLM_API_KEY; arguments after `--` go to `vllm serve` as they are.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/python -m serve run "$@"
