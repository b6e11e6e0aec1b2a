#!/bin/sh
# The main job on the embedded default: setup -> tiny model -> synthetic data -> a trained LoRA
# -> vLLM in the background -> measure every model x variant -> the run viewer -> stop the
# server (also on failure or Ctrl-C).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
PY=.venv/bin/python
# A port nobody uses unless PORT is given: never score a stale server by mistake.
PORT=${PORT:-$($PY -c "from serve.command import free_port; print(free_port())")}
if $PY -c "import sys; from serve.command import port_in_use; sys.exit(not port_in_use('127.0.0.1', $PORT))"; then
    echo "demo: port $PORT is already in use; set PORT to a free one" >&2
    exit 1
fi
URL="http://127.0.0.1:$PORT/v1"
[ -f data/models/tiny-vlm/config.json ] && [ -f data/adapters/tiny-cued/adapter_config.json ] \
    || $PY -m serve build-tiny
# plain and trajectory clips, the blind and single-frame controls of the shortcut audit, and
# the interventions (objects masked, context masked, the cue alone): where the evidence is.
$PY -m prepare synthetic --out data/synthetic --videos 200 \
    --variants plain,trajectory,blind,single-frame,object-masked,context-masked,cue-only
# A LoRA trained on the synthetic train split (~1.5 min on 2 cores; kept once trained): the
# adapter comparison is then base vs a real adapter, not the random one.
[ -f data/adapters/tiny-trained/train_args.json ] || $PY -m train --model data/models/tiny-vlm \
    --data data/synthetic --out data/adapters/tiny-trained --variants plain,trajectory \
    --rank 16 --alpha 32 --lr 2e-3 --epochs 4 --batch 16 --per-device-batch 8

mkdir -p runs
LOG=runs/demo-serve.log
$PY -m serve run --port "$PORT" --adapters tiny-trained=data/adapters/tiny-trained >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
    status=$?
    trap - EXIT INT TERM
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true  # serve stops vLLM's whole process group
        wait "$SERVER" 2>/dev/null || true
    fi
    [ "$status" -eq 0 ] || echo "demo: failed (exit $status); server log: $LOG" >&2
    exit "$status"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

if ! $PY -m serve wait --base-url "$URL" --pid "$SERVER" --timeout 600; then
    tail -n 30 "$LOG" >&2
    exit 1
fi
RUN=synthetic-$(date +%Y%m%d-%H%M%S)
$PY -m measure --data data/synthetic --base-url "$URL" --run-id "$RUN"
# Where the model looked, on the exact input the server saw: attention by region, plain vs
# cued, paired; heat maps for the viewer (~1.5 min on 2 cores).
$PY -m interpret "runs/$RUN" --limit 24
# The run as one static page: overview, every sample, the frames each variant sent.
echo "viewer: $($PY -m measure view "runs/$RUN")"
