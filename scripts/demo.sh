#!/bin/sh
# The main job on the embedded default: setup -> the model organism -> synthetic data -> a trained LoRA
# -> vLLM in the background -> measure every model x variant -> where the model looked and what
# each region does -> the run viewer; it ends on the run's summary. Quiet: one line per step (a
# progress bar on the long ones), each step's full output in runs/demo-logs/ (its path and last
# lines printed on failure). The server is stopped, its whole process group gone, on any exit.
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
LOGS=runs/demo-logs
mkdir -p "$LOGS" data/models
# Every process started from here carries this mark; the demo returns only once none is left.
export VISUAL_CUES_SESSION="demo-$$-$(date +%s%N)"
SERVER=
finish() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true  # serve run stops vLLM's process group, and waits for it
        wait "$SERVER" 2>/dev/null || true
    fi
    [ -x "$PY" ] && $PY scripts/wait_gone.py demo.sh
    [ "$status" -eq 0 ] || echo "demo: failed (exit $status); logs: $LOGS/" >&2
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM
sh scripts/setup.sh
STEP=0
# step NAME COMMAND...: stdout to the step's log, stderr (its progress bar) to the terminal
step() {
    name=$1
    shift
    STEP=$((STEP + 1))
    echo "demo [$STEP/7] $name" >&2
    if ! "$@" >"$LOGS/$name.log"; then
        echo "demo: $name failed; its log: $LOGS/$name.log" >&2
        tail -n 15 "$LOGS/$name.log" >&2
        exit 1
    fi
}
# quiet NAME COMMAND...: the same with stderr to the log too (a step without a bar of its own)
quiet() {
    name=$1
    shift
    step "$name" sh -c '"$@" 2>&1' sh "$@"
}
# A port nobody uses unless PORT is given: never score a stale server by mistake.
PORT=${PORT:-$($PY -c "from serve.command import free_port; print(free_port())")}
if $PY -c "import sys; from serve.command import port_in_use; sys.exit(not port_in_use('127.0.0.1', $PORT))"; then
    echo "demo: port $PORT is already in use; set PORT to a free one" >&2
    exit 1
fi
URL="http://127.0.0.1:$PORT/v1"
# The base model: the model organism, a tiny Qwen3-VL trained on a synthetic world of its own
# (seed 7), so what the run finds can be checked against what it learned (built once, kept).
# The tests ship it as `train organism` builds it by default (test_organism checks its record);
# a fresh machine starts from that copy, and so does one whose copy was built by an earlier
# default (it is moved aside, not lost). To train it here: rm -r data/models/organism
if [ -e data/models/organism ] && ! cmp -s tests/data/organism/organism.json data/models/organism/organism.json; then
    OLD=data/models/organism.before-$(date +%Y%m%d-%H%M%S)
    echo "demo: data/models/organism was built otherwise than the shipped one: moved to $OLD" >&2
    mv data/models/organism "$OLD"
fi
[ -e data/models/organism ] || cp -r tests/data/organism data/models/organism
quiet organism $PY -m train organism
# plain and trajectory clips (a cue it never saw), the blind and single-frame controls of the
# shortcut audit, and the interventions (objects masked, context masked, the cue alone), on
# videos of another seed of the organism's world (one sentence frame: a verb question's text
# alone is worth chance): where the evidence is.
step prepare $PY -m prepare synthetic --out data/synthetic --videos 200 --templates one-sentence \
    --variants plain,trajectory,blind,single-frame,object-masked,context-masked,cue-only
# The study's recipe in miniature: a LoRA on the language model plus the vision merger (its
# tune_mm_mlp), trained on plain and cued clips (kept once trained on this organism).
if [ data/adapters/organism-cued/train_args.json -nt data/models/organism/organism.json ]; then
    quiet adapter echo "kept data/adapters/organism-cued"
else
    step adapter $PY -m train --model data/models/organism --data data/synthetic --out data/adapters/organism-cued \
        --variants plain,trajectory --tune-merger --rank 64 --alpha 64 --lr 1e-3 --epochs 2 --batch 16 --per-device-batch 8
fi

LOG=$LOGS/serve.log
# The merger's LoRA is applied only with vLLM's tower/connector LoRA on.
$PY -m serve run --port "$PORT" --model data/models/organism --adapters organism-cued=data/adapters/organism-cued \
    -- --enable-tower-connector-lora >"$LOG" 2>&1 &
SERVER=$!
STEP=4
echo "demo [4/7] serve (vLLM on $URL; log: $LOG)" >&2
if ! $PY -m serve wait --base-url "$URL" --pid "$SERVER" --timeout 600 >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    exit 1
fi
RUN=synthetic-$(date +%Y%m%d-%H%M%S)
step measure $PY -m measure --data data/synthetic --base-url "$URL" --run-id "$RUN"
# Where the model looked, on the exact input the server saw: attention by region, plain vs
# cued, paired; heat maps for the viewer; what each region does when its tokens are removed.
step interpret $PY -m interpret "runs/$RUN" --limit 24 --effects ablation
# The run as one static page: overview, every sample, the frames each variant sent.
step view $PY -m measure view "runs/$RUN"
echo >&2
$PY -m measure report "runs/$RUN" 2>/dev/null
echo "report: runs/$RUN/report.md; viewer: $(tail -n 1 "$LOGS/view.log"); step logs: $LOGS/"
