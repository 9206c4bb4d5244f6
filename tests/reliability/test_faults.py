"""Fault injection: the cascade's small and large LMs point at a server that misbehaves on purpose.

Policy (docs/reliability.md):
- small model: one that cannot be used (refused, 401/403, 404, unknown provider) raises SmallModelError
  before any paid call; when more than half of its last 8 calls failed (timeouts, 5xx, 429, unreadable
  bodies) the guard raises SmallModelFailing; otherwise a failing sample abstains (its error kept in the
  trace) and the stage escalates, as does an unreadable reply;
- large model: DSPy retries transient errors (timeouts, refused connections, 5xx, 429) with exponential
  backoff (or the server's Retry-After), then the cascade raises LargeModelError; a reply with nothing in it
  (truncated JSON body, empty content) raises LargeModelError at once, except that an empty sampled
  guideline is asked for once more first;
- never a wrong answer presented as confident: a large reply in the wrong format, 1 MB long or cut off at
  max_tokens gives a stage-3 prediction with answer=None, accepted=False and the raw reply kept.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import dspy
import pytest
from fault_server import FAULTS, PROSE, always, by_role, closed_port_url, every, first
from reliability_kit import PRICES, TRUTH, Q, cascade, scattered

from cope_dspy import CostTracker, LargeModelError, SmallModelError, SmallModelFailing, Usage

# what each small-model fault does (docs/reliability.md): a model that cannot be used raises at once, a
# failing one trips the guard, an unreadable reply abstains
SMALL_CONFIG = ("refused", "401", "403", "404")
SMALL_FAILING = ("timeout", "500", "429", "truncated")
SMALL_REPLY = ("empty", "prose", "huge", "cut")
assert set(SMALL_CONFIG + SMALL_FAILING + SMALL_REPLY) == {"refused", *FAULTS}


def _small_url(fault, serve):
    """The small model's URL under `fault`, and the server (None for a refused connection)."""
    if fault == "refused":
        return closed_port_url(), None
    server = serve(always(fault), hang=3.0)
    return server.url, server


def _paid(tracker: CostTracker) -> Usage:
    return sum((u for m, u in tracker.by_model().items() if m != "openai/fault-small"), Usage())


@pytest.mark.parametrize("fault", SMALL_CONFIG)
def test_a_small_model_that_cannot_be_used_raises_before_any_paid_call(fault, serve, tally):
    small_url, small = _small_url(fault, serve)
    large = serve()
    c = cascade(small_url, large.url, timeout=0.3, n=8)
    with CostTracker(prices=PRICES) as tracker:
        err = tally.run(lambda: c(question=Q))
    if small is None:
        tally.refused += tracker.usage().calls
    assert isinstance(err, SmallModelError) and not isinstance(err, SmallModelFailing), err
    message = str(err)
    assert "'openai/fault-small' cannot be used" in message and "Fix:" in message
    fix = {"refused": "start the server", "401": "check the API key", "403": "check the API key",
           "404": "check the model name"}[fault]
    assert fix in message
    assert large.requests == 0 and _paid(tracker) == Usage()  # the large model never saw a call: $0
    assert tracker.usage().usd == 0 and tracker.usage().calls >= 1


def test_an_unknown_small_model_name_raises_naming_the_provider_prefix(serve, tally):
    large = serve()
    c = cascade(closed_port_url(), large.url, n=8)
    c.goal_planner.set_lm(dspy.LM("nope", cache=False, num_retries=0))
    c.small_executor.set_lm(c.goal_planner.lm)
    with CostTracker(prices=PRICES) as tracker:
        err = tally.run(lambda: c(question=Q))
    assert isinstance(err, SmallModelError), err
    assert "'nope' cannot be used: LiteLLM does not know its provider" in str(err)
    assert "ollama_chat/" in str(err) and large.requests == 0 and tracker.usage().usd == 0


@pytest.mark.parametrize("fault", SMALL_FAILING)
def test_a_failing_small_model_trips_the_guard_before_any_paid_call(fault, serve, tally):
    small, large = serve(always(fault), hang=3.0), serve()
    c = cascade(small.url, large.url, timeout=0.3, n=8)
    with CostTracker(prices=PRICES) as tracker:
        err = tally.run(lambda: c(question=Q))
    assert isinstance(err, SmallModelFailing), err
    failed, calls = map(int, re.search(r"failed on (\d+) of its last (\d+) calls", str(err)).groups())
    assert failed > 4 and calls <= 8  # more than half of a window of 8
    # early stopping ends stage 1 after 4 failed samples (it can no longer reach tau1): the large model
    # writes its guideline, then the 5th failed call trips the guard; nothing reaches stage 3
    assert large.roles == {"guideline": 1} and tracker.usage().usd == _paid(tracker).usd > 0


def test_the_guard_trips_before_the_guideline_when_stage_1_draws_every_sample(serve, tally):
    small, large = serve(always("500")), serve()
    c = cascade(small.url, large.url, n=8, early_stop=False)
    with CostTracker(prices=PRICES) as tracker:
        err = tally.run(lambda: c(question=Q))
    assert isinstance(err, SmallModelFailing) and large.requests == 0 and tracker.usage().usd == 0


@pytest.mark.parametrize("fault", SMALL_FAILING + SMALL_REPLY)
def test_without_the_guard_a_failing_small_model_abstains_and_the_stage_escalates(fault, serve, tally):
    small, large = serve(always(fault), hang=3.0), serve()  # healthy large model: answers 7
    c = cascade(small.url, large.url, timeout=0.3, guard=fault in SMALL_REPLY)  # unreadable: guard or not
    started = time.monotonic()
    pred = tally.run(lambda: c(question=Q))
    assert time.monotonic() - started < 15  # a hung server costs the client timeout, not the server's sleep
    assert (pred.answer, pred.stage, pred.accepted) == (TRUTH, 3, True)
    votes = [e for e in pred.trace if e["kind"] == "vote"]
    assert [v["stage"] for v in votes] == [1, 2] and not any(v["accepted"] for v in votes)
    for v in votes:
        assert all(c["answer"] is None for c in v["candidates"])  # every sample abstained
    errors = [c["error"] for v in votes for c in v["candidates"] if c["error"]]
    if fault in ("prose", "huge"):  # read leniently, nothing answer-like in it: abstains without an error
        assert errors == []
    else:
        assert errors, "a failed sample keeps its error in the trace"
    assert small.injected == small.requests > 0


@pytest.mark.parametrize("fault", ["timeout", "500", "truncated", "cut"])
def test_small_model_faults_under_acall_too(fault, serve, tally):
    small, large = serve(always(fault), hang=3.0), serve()
    c = cascade(small.url, large.url, timeout=0.3, n=8)
    result = asyncio.run(tally.arun(lambda: c.acall(question=Q)))
    if fault == "cut":  # a reply that arrived, cut off: abstains, the stage escalates
        assert (result.answer, result.stage, result.accepted) == (TRUTH, 3, True)
    else:  # as in the sync case: early stopping lets the guideline through, then the guard trips
        assert isinstance(result, SmallModelFailing) and set(large.roles) <= {"guideline"}


def test_a_small_server_that_dies_mid_run_trips_the_guard(serve, tally):
    good = 8 * 2 * 2  # two questions' worth of stage-1 calls (goal + execution, 8 samples)
    small = serve(lambda req: "500" if req.index >= good else None)
    large = serve()
    c = cascade(small.url, large.url, n=8, early_stop=False)
    with CostTracker(prices=PRICES) as tracker:
        answers = [tally.run(lambda: c(question=Q)) for _ in range(3)]
    assert [a.stage for a in answers[:2]] == [1, 1]  # the small model agreed: accepted at stage 1
    assert isinstance(answers[2], SmallModelFailing)
    assert small.faults["500"] == 8  # one wave of goal calls, then the guard stops the run
    assert large.requests == 0 and tracker.usage().usd == 0


def test_intermittent_small_faults_leave_the_healthy_samples_to_vote(serve, tally):
    goals = itertools.count()
    small = serve(lambda req: "500" if req.role == "goal" and next(goals) < 3 else None)  # 3 samples fail
    large = serve()
    c = cascade(small.url, large.url, n=8, tau1=0.5, early_stop=False)
    pred = tally.run(lambda: c(question=Q))
    assert (pred.answer, pred.stage, pred.confidence) == (TRUTH, 1, 5 / 8)  # 5 healthy of 8 agree >= tau1
    assert sum(bool(c["error"]) for c in pred.trace[0]["candidates"]) == 3
    assert small.injected == 3 and large.requests == 0  # the paid model was never asked


def test_every_third_small_request_failing_still_gives_the_right_answer(serve, tally):
    small, large = serve(every(3, "500")), serve()
    pred = tally.run(lambda: cascade(small.url, large.url, n=8)(question=Q))
    assert pred.answer == TRUTH and pred.accepted and small.injected > 0


def test_a_reply_cut_off_at_max_tokens_abstains_instead_of_voting_its_last_number(serve, tally):
    # every small reply is cut mid-solution; its last number is "4". Read naively, 4/4 samples would agree
    # on 4 and stage 1 would accept a wrong answer with confidence 1.0.
    small, large = serve(always("cut")), serve()
    pred = tally.run(lambda: cascade(small.url, large.url)(question=Q))
    assert (pred.answer, pred.stage) == (TRUTH, 3)
    stage1 = pred.trace[0]["candidates"]
    assert all(c["answer"] is None and "cut off at max_tokens" in c["error"] for c in stage1)
    assert all("Tom starts with 3, then buys 4" in c["solution"] for c in stage1)  # the raw reply is kept


# -- the large model ----------------------------------------------------------------------------------------


LARGE_FAULTS = [(f, r) for f in ("refused", "timeout", "500", "429", "401", "truncated", "empty")
                for r in ("guideline", "execute") if (f, r) != ("refused", "execute")]  # refused: no call lands


@pytest.mark.parametrize("fault, role", LARGE_FAULTS)
def test_large_model_fault_raises_large_model_error_after_retries(fault, role, serve, tally):
    small = serve(answer=scattered)  # the small samples never agree: the cascade must ask the large model
    retries = 1
    if fault == "refused":
        large_url, large = closed_port_url(), None
    else:
        large = serve(by_role(**{role: fault}), hang=3.0)
        large_url = large.url
    c = cascade(small.url, large_url, timeout=0.3, large_retries=retries)
    err = tally.run(lambda: c(question=Q))
    assert isinstance(err, LargeModelError), err
    message = str(err)
    failing_role = "guideline_planner" if role == "guideline" else "large_executor"
    assert f"failed in its {failing_role} call" in message and "returns no answer" in message
    transient = fault in ("refused", "timeout", "500", "429")
    if transient:
        assert f"after {retries} retries" in message
    if large is not None:
        # transient errors are retried by DSPy (1 + num_retries attempts); the others are not
        # an empty sampled guideline is asked for once more (a fresh sample), then the cascade raises
        asked_again = (fault, role) == ("empty", "guideline")
        assert large.faults[fault] == (1 + retries if transient else 2 if asked_again else 1)
    else:
        tally.refused += 1 + retries
    expected = {"refused": "LMTransportError", "timeout": "LMTransportError", "500": "LMServerError",
                "429": "LMRateLimitError", "401": "LMAuthError", "truncated": "LMProviderError",
                "empty": "AdapterParseError"}[fault]
    assert expected in message


def test_large_model_5xx_is_retried_with_exponential_backoff_then_succeeds(serve, tally):
    small = serve(answer=scattered)
    large = serve(first(2, "500"), retry_after=None)  # no Retry-After: DSPy backs off 1 s, then 2 s
    c = cascade(small.url, large.url, large_retries=2)
    started = time.monotonic()
    pred = tally.run(lambda: c(question=Q))
    assert time.monotonic() - started >= 3.0
    assert (pred.answer, pred.stage, pred.accepted) == (TRUTH, 3, True)
    assert large.faults["500"] == 2 and large.ok == 2  # guideline after two retries, then the execution


def test_large_model_429_honours_retry_after(serve, tally):
    small = serve(answer=scattered)
    large = serve(first(1, "429"), retry_after="1")
    c = cascade(small.url, large.url, large_retries=1)
    started = time.monotonic()
    pred = tally.run(lambda: c(question=Q))
    assert time.monotonic() - started >= 1.0
    assert pred.answer == TRUTH and large.faults["429"] == 1


@pytest.mark.parametrize("fault", ["prose", "huge", "cut"])
def test_unreadable_large_answer_is_kept_raw_and_never_accepted(fault, serve, tally):
    small = serve(answer=scattered)
    large = serve(by_role(execute=fault))
    pred = tally.run(lambda: cascade(small.url, large.url)(question=Q))
    assert (pred.stage, pred.answer, pred.accepted, pred.confidence) == (3, None, False, None)
    final = pred.trace[-1]
    assert final["kind"] == "final" and final["accepted"] is False
    raw = {"prose": PROSE, "huge": "This reply goes on and on", "cut": "Tom starts with 3"}[fault]
    assert raw in pred.solution and raw in final["candidates"][0]["solution"]  # the raw reply, recorded
    if fault == "huge":
        assert len(pred.solution) >= 1_000_000


@pytest.mark.parametrize("fault", ["prose", "huge"])
def test_a_bad_large_guideline_never_becomes_an_answer(fault, serve, tally):
    """The guideline is only a plan: in the wrong format or 1 MB long it is passed on as text, and the
    answer still has to win the stage-2 vote of the small model (here: it does, and it is right)."""

    def small_answers(req):
        return TRUTH if "Guideline:" in req.plans else scattered(req)

    small, large = serve(answer=small_answers), serve(by_role(guideline=fault))
    pred = tally.run(lambda: cascade(small.url, large.url)(question=Q))
    assert (pred.answer, pred.stage, pred.accepted) == (TRUTH, 2, True)
    guideline = next(e["guideline"] for e in pred.trace if e["kind"] == "guideline")
    assert guideline.startswith(PROSE[:20] if fault == "prose" else "This reply goes on")


def test_both_models_failing_gives_a_clear_error_not_an_answer(serve, tally):
    small, large = serve(always("500")), serve(always("500"))
    err = tally.run(lambda: cascade(small.url, large.url, large_retries=1)(question=Q))
    assert isinstance(err, LargeModelError)
    assert large.faults["500"] == 2 and small.faults["500"] > 0
