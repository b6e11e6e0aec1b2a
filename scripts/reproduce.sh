#!/bin/sh
# Reproduce the visual-cues study (4g/visual_cues) on its own test set, in one command, on a
# GPU machine with internet: fetch its published questions, clips and LoRA adapter
# (huggingface_hub), import them (`prepare visual-cues`), serve Qwen3-VL-2B-Instruct with
# the adapter, score both models x both variants, and write the report with the study's
# published table beside ours (each number with our 95 % CI).
#
# Frames. The study served with `--media-io-kwargs {"video": {"num_frames": 64}}` on a vLLM
# that still accepted `guided_choice` (< 0.12). In vLLM 0.11.0's source (OpenCVVideoBackend
# in vllm/multimodal/video.py, read for this script) a clip of more than 64 frames is
# sampled uniformly to 64 (np.linspace) and handed over as is; a shorter clip (most SSV2
# clips: 12 fps, ~4 s) is read whole and flagged for the Qwen3-VL processor, which samples it
# at 2 fps (at least 4 frames). Current vLLM ignores num_frames for Qwen-VL. This script
# sends the frames itself (measure --media frames), so either is exact:
#   SAMPLING=study      (default) the study's frames, as above;
#   SAMPLING=processor  the processor's 2 fps for every clip (what current vLLM does).
# The choice is recorded in run.json (`ask.sampling`) and every prediction's frame_indices.
#
# The adapter is served as it holds: the study's script trains the vision merger too, and
# `serve run` then turns vLLM's tower/connector LoRA on (or refuses it in one line where vLLM
# cannot apply it). BOXES (Something-Else box files, space-separated; not in the study's dataset)
# gives the imported clips their regions, so `interpret` can ask its open question of them.
#
# Usage: sh scripts/reproduce.sh [--dry-run]     (--dry-run prints every command, runs none)
# Settings (env): SAMPLING, MODEL, DATASET (hub dataset id), REF_DIR (where it is downloaded),
# TEST_FILE, PLAIN_DIR, TRAJECTORY_DIR, ADAPTER_DIR (paths inside REF_DIR), OUT, PORT, BOXES.
set -eu
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
SAMPLING=${SAMPLING:-study}
MODEL=${MODEL:-Qwen/Qwen3-VL-2B-Instruct}
DATASET=${DATASET:-apurvagup/visual_cues_ssv2}
REF_DIR=${REF_DIR:-data/raw/visual_cues_ssv2}
TEST_FILE=${TEST_FILE:-qwen_format_test.json}
PLAIN_DIR=${PLAIN_DIR:-plain}
TRAJECTORY_DIR=${TRAJECTORY_DIR:-trajectory}
ADAPTER_DIR=${ADAPTER_DIR:-lora}
OUT=${OUT:-data/visual-cues}
PORT=${PORT:-8000}
URL="http://127.0.0.1:$PORT/v1"
PY=.venv/bin/python
RUN=visual-cues-$SAMPLING
case $SAMPLING in study|processor) ;; *) echo "reproduce: SAMPLING must be study or processor" >&2; exit 2 ;; esac

run() {  # print a command; run it unless --dry-run
    echo "+ $*"
    [ "$DRY" = 1 ] || "$@"
}

echo "reproduce: frames sent: $SAMPLING sampling (64 frames max; see the head of this script)"
run sh scripts/setup.sh
run $PY -c "from huggingface_hub import snapshot_download; print(snapshot_download('$DATASET', repo_type='dataset', local_dir='$REF_DIR'))"
for f in "$TEST_FILE" "$PLAIN_DIR" "$TRAJECTORY_DIR" "$ADAPTER_DIR/adapter_config.json"; do
    if [ "$DRY" = 0 ] && [ ! -e "$REF_DIR/$f" ]; then
        echo "reproduce: $REF_DIR/$f not found; the dataset holds:" >&2
        find "$REF_DIR" -maxdepth 2 | head -40 >&2
        echo "set TEST_FILE, PLAIN_DIR, TRAJECTORY_DIR, ADAPTER_DIR to its paths" >&2
        exit 2
    fi
done
BOX_ARGS=""
for b in ${BOXES:-}; do BOX_ARGS="$BOX_ARGS --boxes $b"; done
run $PY -m prepare visual-cues --test "$REF_DIR/$TEST_FILE" --videos-plain "$REF_DIR/$PLAIN_DIR" \
    --videos-trajectory "$REF_DIR/$TRAJECTORY_DIR" --out "$OUT" $BOX_ARGS
echo "+ $PY -m serve run --model $MODEL --adapters finetuned=$REF_DIR/$ADAPTER_DIR --port $PORT &"
if [ "$DRY" = 0 ]; then
    mkdir -p runs
    $PY -m serve run --model "$MODEL" --adapters "finetuned=$REF_DIR/$ADAPTER_DIR" --port "$PORT" >runs/reproduce-serve.log 2>&1 &
    SERVER=$!
    trap 'kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
    trap 'exit 130' INT TERM
fi
run $PY -m serve wait --base-url "$URL" --timeout 1800
run $PY -m measure --data "$OUT" --base-url "$URL" --variants plain,trajectory --media frames --frames 64 \
    --sampling "$SAMPLING" --reference measure/references/visual_cues_qwen3_vl_2b.csv --run-id "$RUN"
echo "reproduce: report: runs/$RUN/report.md"
