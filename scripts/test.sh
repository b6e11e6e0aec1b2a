#!/bin/sh
# Install what is missing, lint, then run the test suite (it starts a real vLLM server once).
# Arguments go to pytest, e.g. `sh scripts/test.sh -m "not server"` for the fast lane.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
