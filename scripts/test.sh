#!/usr/bin/env bash
# The test suite in the environment scripts/setup.sh installed into: the active virtual environment
# ($VIRTUAL_ENV), else the project's .venv. No activation needed.
#
#   bash scripts/test.sh                     # the whole suite, in two runs (below)
#   bash scripts/test.sh tests/unit -q       # arguments: one pytest run with them, paths relative to the project
#
# The whole suite runs as two pytest runs, and fails if either fails:
#   1. the unit tests (scripted models, pure Python) spread over the machine's cores by pytest-xdist;
#   2. everything else, one test at a time: the integration tests (real llama.cpp servers, which use every
#      core themselves), the PostgreSQL workers and the reliability suite (its fault tally is one process's).
# Each prints its slowest tests (--durations), so a slow suite says where its time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${VIRTUAL_ENV:-$PWD/.venv}/bin/python"
[ -x "$python" ] || { echo "error: $python not found: run bash scripts/setup.sh first" >&2; exit 1; }
# Bytecode is cached in the environment even where the shell says not to: set-up leaves compiling to the first
# import (uv does not byte-compile), and with PYTHONDONTWRITEBYTECODE=1 every run, and every process the
# tests start, would compile litellm, dspy and the rest again (over a minute of CPU per run on 2 cores).
unset PYTHONDONTWRITEBYTECODE
if [ "$#" -gt 0 ]; then
    exec "$python" -m pytest "$@"
fi
workers="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
workers=$(( workers < 1 ? 1 : workers > 4 ? 4 : workers ))
set +e
"$python" -m pytest tests/unit -n "$workers" --durations=10
unit=$?
"$python" -m pytest tests --ignore=tests/unit --durations=15
rest=$?
set -e
echo "unit tests: exit $unit; integration, PostgreSQL and reliability tests: exit $rest"
# the first failure's status; 5 (no tests collected) counts as a failure too, for .ci/run to report
if [ "$unit" -ne 0 ]; then exit "$unit"; fi
exit "$rest"
