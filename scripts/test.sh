#!/usr/bin/env bash
# The test suite in the environment scripts/setup.sh installed into: the active virtual environment
# ($VIRTUAL_ENV), else the project's .venv. No activation needed. Arguments go to pytest, paths relative to
# the project:  bash scripts/test.sh tests/unit -q
set -euo pipefail
cd "$(dirname "$0")/.."
python="${VIRTUAL_ENV:-$PWD/.venv}/bin/python"
[ -x "$python" ] || { echo "error: $python not found: run bash scripts/setup.sh first" >&2; exit 1; }
exec "$python" -m pytest "$@"
