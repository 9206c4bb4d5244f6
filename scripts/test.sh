#!/usr/bin/env bash
# The test suite in the environment scripts/setup.sh installed into: the active virtual environment
# ($VIRTUAL_ENV), else the project's .venv. No activation needed. Arguments go to pytest, paths relative to
# the project:  bash scripts/test.sh tests/unit -q
set -euo pipefail
cd "$(dirname "$0")/.."
python="${VIRTUAL_ENV:-$PWD/.venv}/bin/python"
[ -x "$python" ] || { echo "error: $python not found: run bash scripts/setup.sh first" >&2; exit 1; }
# Bytecode is cached in the environment even where the shell says not to: set-up leaves compiling to the first
# import (uv does not byte-compile), and with PYTHONDONTWRITEBYTECODE=1 every run, and every process the
# tests start, would compile litellm, dspy and the rest again (over a minute of CPU per run on 2 cores).
unset PYTHONDONTWRITEBYTECODE
exec "$python" -m pytest "$@"
