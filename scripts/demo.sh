#!/bin/sh
# The main job on the embedded default: setup -> tiny model -> synthetic data -> vLLM in the
# background -> measure every model x variant -> stop the server (also on failure or Ctrl-C).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
PY=.venv/bin/python
PORT=${PORT:-8000}
URL="http://127.0.0.1:$PORT/v1"
[ -f data/models/tiny-vlm/config.json ] && [ -f data/adapters/tiny-cued/adapter_config.json ] \
    || $PY -m serve build-tiny
$PY -m prepare synthetic --out data/synthetic

mkdir -p runs
LOG=runs/demo-serve.log
# setsid: the server and vLLM's engine processes get their own process group, stopped as one.
setsid $PY -m serve run --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
    status=$?
    trap - EXIT INT TERM
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM -- "-$SERVER" 2>/dev/null || true
        i=0
        while kill -0 "$SERVER" 2>/dev/null && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
        kill -KILL -- "-$SERVER" 2>/dev/null || true
    fi
    [ "$status" -eq 0 ] || echo "demo: failed (exit $status); server log: $LOG" >&2
    exit "$status"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

if ! $PY -m serve wait --url "$URL" --pid "$SERVER" --timeout 600; then
    tail -n 30 "$LOG" >&2
    exit 1
fi
$PY -m measure --data data/synthetic --base-url "$URL"
