"""64 concurrent cascade calls against the local fake servers: every call answered, costs exact.

Three counts of the same calls must agree to the token (and the dollars to float rounding):
the sum of each prediction's pred.cost, one CostTracker around all 64 calls, and the servers' own
request counts times the scripted usage (100 prompt + 20 completion tokens per request).
"""

from __future__ import annotations

import asyncio

import dspy
import pytest
from fault_server import Request
from reliability_kit import LARGE_PRICE, PRICES, TRUTH, cascade

from cope_dspy import CostTracker, Usage

CALLS = 64
USAGE = (100, 20)


def small_answers(req: Request) -> str:
    """Questions ending in a multiple of 3 escalate (the small model never agrees on them): a mix of exits."""
    question = next(m["content"] for m in req.body["messages"] if m["role"] == "user")
    hard = any(f"problem {i}." in question for i in range(0, CALLS, 3))
    return str(100 + req.index) if hard else TRUTH


def question(i: int) -> str:
    return f"Tom has 3 apples and buys 4 more. How many apples does he have? (problem {i}.)"


def _check(preds, tracker, small, large):
    assert len(preds) == CALLS and all(p.answer == TRUTH and p.accepted for p in preds)
    stages = {p.stage for p in preds}
    assert 1 in stages and stages & {2, 3}, stages  # both the cheap exit and escalation happened
    per_prediction = sum((p.cost for p in preds), Usage())
    around_all = tracker.usage()
    requests = small.requests + large.requests
    assert small.injected == large.injected == 0
    assert per_prediction.calls == around_all.calls == requests
    assert per_prediction.prompt_tokens == around_all.prompt_tokens == requests * USAGE[0]
    assert per_prediction.completion_tokens == around_all.completion_tokens == requests * USAGE[1]
    paid = large.requests * (USAGE[0] * LARGE_PRICE[0] + USAGE[1] * LARGE_PRICE[1]) / 1e6
    assert per_prediction.usd == pytest.approx(paid, rel=1e-12) and around_all.usd == pytest.approx(paid, rel=1e-12)
    assert per_prediction.failed_calls == per_prediction.estimated_calls == per_prediction.cached_calls == 0
    # and per stage: the trace's per-sample usage adds up to each prediction's cost
    for p in preds:
        traced = sum(c["usage"]["calls"] for e in p.trace if e["kind"] in ("vote", "final") for c in e["candidates"])
        traced += sum(e["usage"]["calls"] for e in p.trace if e["kind"] == "guideline")
        assert traced == p.cost.calls


def test_64_concurrent_calls_with_dspy_parallel(serve, tally):
    small, large = serve(answer=small_answers), serve()
    c = cascade(small.url, large.url, n=4, prices=PRICES)
    examples = [dspy.Example(question=question(i)).with_inputs("question") for i in range(CALLS)]
    with CostTracker(prices=PRICES) as tracker:
        preds = dspy.Parallel(num_threads=CALLS, disable_progress_bar=True)([(c, ex) for ex in examples])
    for p in preds:
        tally.judge(p, TRUTH)
    _check(preds, tracker, small, large)


def test_64_concurrent_calls_with_threads(serve, tally):
    from concurrent.futures import ThreadPoolExecutor
    from contextvars import copy_context

    small, large = serve(answer=small_answers), serve()
    c = cascade(small.url, large.url, n=4, prices=PRICES)
    with CostTracker(prices=PRICES) as tracker, ThreadPoolExecutor(CALLS) as pool:
        futures = [pool.submit(copy_context().run, tally.run, lambda i=i: c(question=question(i)))
                   for i in range(CALLS)]
        preds = [f.result() for f in futures]
    _check(preds, tracker, small, large)


def test_64_concurrent_acalls_with_asyncio_gather(serve, tally):
    small, large = serve(answer=small_answers), serve()
    c = cascade(small.url, large.url, n=4, prices=PRICES)

    async def main():
        with CostTracker(prices=PRICES) as tracker:
            preds = await asyncio.gather(*(tally.arun(lambda i=i: c.acall(question=question(i)))
                                           for i in range(CALLS)))
        return preds, tracker

    preds, tracker = asyncio.run(main())
    _check(preds, tracker, small, large)
