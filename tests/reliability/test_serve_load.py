"""Load on the cascade server (uvicorn on 127.0.0.1): 210 requests, 32 in flight, one shared budget.

None is lost (each gets its answer or the budget's 429), each reply's cost is what the scripted backends
billed for that request's calls, and the shared budget never goes past its cap though requests race for it.
The run is bounded by a generous timeout; nothing here asserts on speed.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fixtures.serving import CALL_USD, billed, serving, sums_cascade

from cope_dspy import Budget
from cope_dspy.server import create_app

REQUESTS = 210
CONCURRENT = 32
LEVELS = ("easy", "medium", "hard")
# A medium request pays for a guideline, a hard one for a guideline and an answer.
PAID_CALLS = REQUESTS // 3 * (1 + 2)
# Room for half of them: the cap is reached mid-run, with requests racing for what is left.
CAP_USD = PAID_CALLS / 2 * CALL_USD["scripted/large"]


def question(i: int) -> str:
    return f"What is {i} + {2 * i}? ({LEVELS[i % 3]}) #{i}#"


async def hammer(url: str) -> list[httpx.Response]:
    gate = asyncio.Semaphore(CONCURRENT)
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def one(i: int) -> httpx.Response:
            async with gate:
                body = {"model": "cope", "messages": [{"role": "user", "content": question(i)}]}
                return await http.post("/v1/chat/completions", json=body)

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def test_concurrent_requests_share_one_budget_and_every_cost_is_exact():
    budget = Budget(usd=CAP_USD)
    cascade, small, large = sums_cascade(budget=budget)
    with serving(create_app(cascade)) as url:
        replies = asyncio.run(asyncio.wait_for(hammer(url), timeout=300))

    calls = small.calls + large.calls
    assert len(replies) == REQUESTS
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429}, [r.text for r in replies if r.status_code not in (200, 429)][:3]
    for i, r in enumerate(replies):
        usd = float(r.headers["x-cope-cost-usd"])
        assert usd == pytest.approx(billed(calls, f"#{i}#"), abs=1e-12), (i, r.text)
        if r.status_code == 200:
            reply = r.json()
            answer = reply["choices"][0]["message"]["content"]
            assert answer == str(3 * i)  # its own answer, not a neighbour's
            assert reply["cope"]["cost_usd"] == pytest.approx(usd, abs=1e-12)
            mine = [c for c in calls if f"#{i}#" in c.question]
            assert reply["usage"]["total_tokens"] == 120 * len(mine)
        else:
            assert r.json()["error"]["code"] == "insufficient_quota" and i % 3 != 0  # easy ones never pay
    assert budget.spent_usd <= CAP_USD + 1e-12
    assert budget.spent_usd == pytest.approx(sum(CALL_USD[c.lm] for c in calls), abs=1e-12)
    paid = [r for i, r in enumerate(replies) if r.status_code == 200 and i % 3 != 0]
    # the cap was reached mid-run, and paid answers came before it
    assert statuses.count(429) > 0 and len(paid) > 0
