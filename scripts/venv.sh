#!/usr/bin/env bash
# Prints the Python of the project's environment, making the environment first if needed (used by setup.sh):
#   - an active virtual environment ($VIRTUAL_ENV) is used as is;
#   - else .venv in the project, reused when it holds a Python >= 3.11 with pip;
#   - else .venv is created with the first Python >= 3.11 among $PYTHON (if set: only it), python3, python,
#     python3.13, python3.12, python3.11.
# $COPE_UV (set by setup.sh when uv is at hand): .venv is made without ensurepip and uv installs the pip (and,
# below Python 3.12, setuptools) wheels that ensurepip would have installed, from the same files: the same
# environment without ensurepip byte-compiling pip (about 6 s of CPU); any failure makes it the usual way.
# Messages go to stderr, the interpreter's path to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
usable() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
    usable "$python" || die "the active virtual environment $VIRTUAL_ENV has no Python >= 3.11 ($python);" \
        "run 'deactivate' to let set-up make .venv, or activate one with Python >= 3.11."
    say "environment: the active virtual environment $VIRTUAL_ENV ($("$python" -V 2>&1))"
    echo "$python"
    exit 0
fi

venv="$PWD/.venv"
if [ -e "$venv" ]; then
    usable "$venv/bin/python" && "$venv/bin/python" -m pip --version >/dev/null 2>&1 \
        || die "$venv exists but has no working Python >= 3.11 with pip; remove it (rm -rf .venv) and rerun."
    say "environment: reusing $venv ($("$venv/bin/python" -V 2>&1))"
    echo "$venv/bin/python"
    exit 0
fi

if [ -n "${PYTHON:-}" ]; then candidates=("$PYTHON"); else candidates=(python3 python python3.13 python3.12 python3.11); fi
base=""
for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
        base="$(command -v "$candidate")"
        break
    fi
done
[ -n "$base" ] || die "no Python >= 3.11 found (tried: ${candidates[*]}). Install one (Debian/Ubuntu:" \
    "apt-get install python3 python3-venv) or name it: PYTHON=/path/to/python3.11 bash scripts/setup.sh"

say "environment: creating $venv with $base ($("$base" -V 2>&1))"
seeded_by_uv() {  # venv without ensurepip, then ensurepip's own wheels installed by uv (offline)
    [ -n "${COPE_UV:-}" ] && [ -x "$COPE_UV" ] || return 1
    local found
    found="$("$base" -c 'import ensurepip, os, sys, sysconfig
dirs = [sysconfig.get_config_var("WHEEL_PKG_DIR"), os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")]
print(" ".join(["pip"] + (["setuptools"] if sys.version_info < (3, 12) else [])))
print(*(f"--find-links={d}" for d in dirs if d and os.path.isdir(d)))')" || return 1
    local names links
    names="$(sed -n 1p <<<"$found")" links="$(sed -n 2p <<<"$found")"
    [ -n "$links" ] || return 1
    "$base" -m venv --without-pip "$venv" >&2 || return 1
    # shellcheck disable=SC2086  # one name or option per word
    "$COPE_UV" pip install --quiet --python "$venv/bin/python" --no-config --no-index $links $names >&2 \
        && "$venv/bin/python" -m pip --version >/dev/null 2>&1
}
if seeded_by_uv; then
    echo "$venv/bin/python"
    exit 0
fi
rm -rf "$venv"
if ! "$base" -m venv "$venv" >&2; then
    rm -rf "$venv"
    die "$base could not create a virtual environment. On Debian/Ubuntu install python3-venv" \
        "(apt-get install python3-venv), or activate a virtual environment of your own and rerun."
fi
echo "$venv/bin/python"
