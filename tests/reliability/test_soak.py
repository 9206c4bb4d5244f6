"""Soak: 500 cascade calls against the fast local fake (4 in flight), then stop. Memory must stay bounded.

Measured between the end of the first 100 calls and the end of the last 100 (after a gc each time):
RSS, Python's allocated blocks, and the live objects of cope-dspy's per-call machinery (CostTracker,
CallRecord, the cut-off watcher, Candidate), which must not accumulate at all. tracemalloc traces the
last 50 calls to say who retains what. Expected retention is DSPy's own: every LM call's entry is kept
in GLOBAL_HISTORY, in lm.history and in each calling module's history, and every predictor call in
dspy.settings.trace, each list capped at 10,000 entries (MAX_HISTORY_SIZE, settings.max_history_size,
settings.max_trace_size): it grows until the caps, then plateaus.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

import dspy
from dspy.clients import base_lm
from fault_server import Request
from reliability_kit import TRUTH, cascade

from cope_dspy.consensus import Candidate
from cope_dspy.costs import CallRecord, CostTracker

CALLS = 500
WINDOW = 100  # "first" and "last" calls compared
TRACED = 50  # the last calls, traced by tracemalloc (it slows calls tenfold)
THREADS = 4  # cascade calls in flight at once
MAX_GROWTH = 50 * 2**20  # bytes of RSS growth from call 100 to call 500
DEADLINE = 120.0  # seconds: the soak stops by itself long before this on any machine
OWN_TYPES = (CostTracker, CallRecord, Candidate)


def answers(req: Request) -> str:
    """Every tenth question escalates (the small model disagrees with itself), the rest exit at stage 1."""
    user = next(m["content"] for m in req.body["messages"] if m["role"] == "user")
    return str(100 + req.index) if "#0." in user and "Guideline:" not in req.plans else TRUTH


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _measure() -> dict[str, int]:
    gc.collect()
    own = sum(isinstance(o, OWN_TYPES) for o in gc.get_objects())
    return {"rss": _rss(), "blocks": sys.getallocatedblocks(), "own": own, "history": len(base_lm.GLOBAL_HISTORY),
            "trace": len(dspy.settings.trace or [])}


def test_soak_500_calls_memory_is_bounded(serve, tally):
    small, large = serve(answer=answers), serve()
    c = cascade(small.url, large.url, n=2, tau1=0.75)
    stages: list[int] = []
    started = time.monotonic()

    def calls(first: int, last: int) -> None:
        def one(i: int) -> None:
            pred = tally.run(lambda: c(question=f"Tom has 3 apples and buys 4 more. How many now? #{i % 10}."))
            assert pred.answer == TRUTH and pred.accepted, (i, pred)
            stages.append(pred.stage)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: copy_context().run(one, i), range(first, last + 1)))
        assert time.monotonic() - started < DEADLINE, f"the soak is too slow: {last} calls"

    calls(1, WINDOW)
    first = _measure()
    calls(WINDOW + 1, CALLS - TRACED)
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        calls(CALLS - TRACED + 1, CALLS)
        gc.collect()
        after = tracemalloc.take_snapshot()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    last = _measure()
    seconds = time.monotonic() - started

    diff = after.compare_to(before, "filename")
    retained = sum(s.size_diff for s in diff)
    lm_calls = small.requests + large.requests
    per_lm_call = retained / max(1, lm_calls * TRACED / CALLS)
    top = sorted(diff, key=lambda s: -s.size_diff)[:4]
    grew = {k: last[k] - first[k] for k in first}
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"\nsoak: {CALLS} calls in {seconds:.1f} s ({lm_calls} LM requests, {THREADS} calls at a time; "
        f"{stages.count(1)} exits at stage 1, {stages.count(2)} at stage 2)\n"
        f"  calls {WINDOW} -> {CALLS}: RSS {first['rss'] / 2**20:.0f} -> {last['rss'] / 2**20:.0f} MB "
        f"({grew['rss'] / 2**20:+.1f} MB), allocated blocks {grew['blocks']:+,}, live cope-dspy call objects "
        f"{first['own']} -> {last['own']}, DSPy GLOBAL_HISTORY {first['history']} -> {last['history']} entries "
        f"(cap {base_lm.MAX_HISTORY_SIZE}), dspy.settings.trace {first['trace']} -> {last['trace']} "
        f"(cap {dspy.settings.max_trace_size})\n"
        f"  peak RSS {peak_rss / 2**20:.0f} MB; last {TRACED} calls traced: {retained / 2**20:.2f} MB retained "
        f"(~{per_lm_call / 1024:.1f} KB per LM call), peak traced {traced_peak / 2**20:.1f} MB; retained by: "
        + ", ".join(f"{s.traceback[0].filename.rsplit('/', 3)[-2:]} {s.size_diff / 2**10:+.0f} KB" for s in top)
    )
    assert len(stages) == CALLS and set(stages) == {1, 2}  # the escalating questions used the large model
    assert grew["own"] == 0  # trackers, records, callbacks and candidates are all released after each call
    assert grew["rss"] < MAX_GROWTH
    assert len(c.history) <= dspy.settings.max_history_size  # DSPy's own caps hold
    assert all(len(p.lm.history) <= dspy.settings.max_history_size for p in c.predictors())
