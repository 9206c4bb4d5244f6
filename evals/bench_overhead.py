"""`python -m evals.bench_overhead`: what the cascade itself costs per call, against LMs that answer at once.

The LMs are instant scripted engines (`evals/scripted.py`: no network, no model, no cache), so every
microsecond measured is orchestration: DSPy's adapter and callbacks, the cascade's waves, votes, cost
tracking. Two cases, each through `forward` (threads) and `aforward` (asyncio), n=8, tau1=0.75, tau2=0.5:

- stage 1 accepts: every execution answers 7 (early decision stops after 6 of 8 samples);
- stage 3 answers: every small execution answers a different number, so both votes fail and the large
  model answers.

Prints, per case and driver, the mean, p50 and p90 microseconds per cascade call, the LM calls one cascade
call makes, and the mean microseconds per LM call. The issue-15 redesign must not make these slower;
compare runs made on the same machine under the same load (the first line says what the load was).

    python -m evals.bench_overhead --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import subprocess
import threading
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from cope_dspy import Cascade, Prices  # noqa: E402

from .scripted import math_replies, scripted_lm  # noqa: E402

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
FREE = Prices({"scripted/small": (0.0, 0.0), "scripted/large": (1.0, 2.0)})


def different_answers() -> Callable:
    counter, lock = itertools.count(), threading.Lock()

    def answer(_call) -> str:
        with lock:
            return str(next(counter))

    return answer


CASES = {
    "stage 1 accepts": lambda: lambda _call: "7",
    "stage 3 answers": different_answers,
}


def build(case: str):
    small, small_engine = scripted_lm("scripted/small", math_replies(CASES[case]()))
    large, large_engine = scripted_lm("scripted/large", math_replies(lambda _call: "7"))
    cascade = Cascade(small=small, large=large, n=8, tau1=0.75, tau2=0.5, prices=FREE)
    return cascade, (small_engine, large_engine)


def time_sync(cascade, calls: int) -> list[int]:
    spent = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        cascade(question=QUESTION)
        spent.append(time.perf_counter_ns() - start)
    return spent


def time_async(cascade, calls: int) -> list[int]:
    async def run() -> list[int]:
        spent = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            await cascade.acall(question=QUESTION)
            spent.append(time.perf_counter_ns() - start)
        return spent

    return asyncio.run(run())


def measure(case: str, driver: str, calls: int, warmup: int) -> dict:
    cascade, engines = build(case)
    timer = time_sync if driver == "forward" else time_async
    timer(cascade, warmup)
    before = sum(e.calls for e in engines)
    spent = timer(cascade, calls)
    lm_calls = (sum(e.calls for e in engines) - before) / calls
    stage = cascade(question=QUESTION).stage
    us = [ns / 1000 for ns in spent]
    mean = statistics.fmean(us)
    return {
        "case": case,
        "driver": driver,
        "stage": stage,
        "mean_us": mean,
        "p50_us": statistics.median(us),
        "p90_us": statistics.quantiles(us, n=10)[-1],
        "lm_calls": lm_calls,
        "us_per_lm_call": mean / lm_calls,
    }


def describe_machine() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"commit {commit}, python {platform.python_version()}, dspy {dspy.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min) at the start"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="orchestration overhead of one cascade call")
    parser.add_argument("--calls", type=int, default=200, help="timed cascade calls per case and driver")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (imports, caches)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(describe_machine())
    print(f"{args.calls} timed calls each after {args.warmup} warm-up calls; n=8, tau1=0.75, tau2=0.5")
    print(f"{'case':<16} {'driver':<9} {'stage':>5} {'mean us':>9} {'p50 us':>9} {'p90 us':>9} "
          f"{'LM calls':>8} {'us/LM call':>10}")  # fmt: skip
    for case in CASES:
        for driver in ("forward", "aforward"):
            r = measure(case, driver, args.calls, args.warmup)
            print(
                f"{r['case']:<16} {r['driver']:<9} {r['stage']:>5} {r['mean_us']:>9.0f} {r['p50_us']:>9.0f} "
                f"{r['p90_us']:>9.0f} {r['lm_calls']:>8.1f} {r['us_per_lm_call']:>10.0f}"
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
