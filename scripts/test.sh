#!/bin/sh
# Install what is missing, lint, then run the test suite (it starts a real vLLM server once per
# worker). Arguments go to pytest, e.g. `sh scripts/test.sh -m "not slow"` for the fast lane (no
# server, nothing over about 2 s: under 2 minutes).
#
# Two runs: first every test whose figure is not a time, on two workers (pytest-xdist; each
# test module on one worker, each worker with its own session server: most tests wait on a
# server, so one process used one core of two), then the benchmarks whose figures are time or
# CPU ratios (`alone`), with nothing beside them. The exit status is the first failure's, or
# pytest's 5 if neither run had a test to run.
set -eu
cd "$(dirname "$0")/.."
# Every process started from here carries this mark; on exit, wait until none is left (a
# server's engine can outlive the pytest that stopped it by a moment).
export VISUAL_CUES_SESSION="${VISUAL_CUES_SESSION:-test-$$-$(date +%s%N)}"
finish() {
    status=$?
    [ -x .venv/bin/python ] && .venv/bin/python scripts/wait_gone.py test.sh
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM
sh scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Each worker's own torch on one thread: on two threads each, a worker waits for a core the
# other holds, and the suite spends more CPU and time (docs/performance.md).
shared=0
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadscope --phase shared "$@" || shared=$?
alone=0
.venv/bin/python -m pytest --phase alone "$@" || alone=$?
# 5: no test of that run was selected (the fast lane has no `alone` test)
[ "$shared" = 5 ] && shared=$alone
[ "$alone" = 5 ] && alone=$shared
[ "$shared" != 0 ] && exit "$shared"
exit "$alone"
