#!/bin/sh
# Install what is missing, then run the test suite (it starts a real vLLM server once).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
