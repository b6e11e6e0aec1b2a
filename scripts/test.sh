#!/bin/sh
# Install what is missing, lint, then run the test suite (it starts a real vLLM server once).
# Arguments go to pytest, e.g. `sh scripts/test.sh -m "not slow"` for the fast lane (no server,
# nothing over about 2 s: under 2 minutes).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
