"""The cascade end to end on a real model (SmolLM2-135M on llama.cpp): real tokens, real concurrency.

SmolLM2 is weak at math, so answers may be wrong: these tests check the mechanics (calls per stage,
usage counted and priced, samples decoded concurrently, save/load and an identical rerun served from
the cache), not quality.
"""

import threading
import time

import dspy
import pytest

from cope_dspy import Cascade, CostTracker, Math, Prices, Temperatures

pytestmark = pytest.mark.integration

QUESTIONS = ["What is 2 + 3?", "Tom has 4 apples and eats 1. How many are left?"]
PRICE = (0.15, 0.60)  # a declared stand-in price for the "large" role, per million tokens


def make_cascade(server, **kwargs):
    """The guideline is drawn greedily, so the calls per stage are fixed: sampled at the paper's 0.8, SmolLM2
    rarely gives a reply with no readable guideline (once in CI; 0 of about 640 full replies sampled here), which the
    cascade asks for once more (an extra call) or, twice in a row, raises LargeModelError on."""
    small = server.lm(max_tokens=48)
    large = server.lm(max_tokens=48)
    prices = Prices({small.model: PRICE})
    return Cascade(small=small, large=large, task=Math(), n=4, prices=prices,
                   temperatures=Temperatures(guideline=0.0), **kwargs)


def test_every_stage_runs_with_real_tokens_and_counted_cost(local_server):
    cascade = make_cascade(local_server, early_stop=False)
    with CostTracker(prices=cascade.prices) as outer:
        preds = [cascade.record(question=q) for q in QUESTIONS]
    for pred in preds:
        kinds = [entry["kind"] for entry in pred.trace]
        assert kinds == ["vote", "guideline", "vote", "final"]
        stage1, guideline, stage2, final = pred.trace
        assert len(stage1["candidates"]) == len(stage2["candidates"]) == 4
        # stage 1: a goal and a solution per sample; stage 2: one solution per sample; both with real tokens.
        # A sample whose goal SmolLM2 leaves unreadable (sampled at 0.8, cut at 48 tokens: it happened in CI)
        # abstains after that one call, with no goal in its plans; every other stage-1 sample made both.
        assert any(c["plans"].get("goal") for c in stage1["candidates"])
        assert all(c["usage"]["calls"] == (2 if c["plans"].get("goal") else 1) for c in stage1["candidates"])
        assert all(c["usage"]["calls"] == 1 for c in stage2["candidates"])
        assert all(c["usage"]["completion_tokens"] > 0 for c in stage1["candidates"] + stage2["candidates"])
        assert guideline["guideline"].strip() and guideline["usage"]["prompt_tokens"] > 0
        stage1_calls = sum(c["usage"]["calls"] for c in stage1["candidates"])
        assert pred.cost.calls == stage1_calls + 1 + 4 + 1 and pred.cost.estimated_calls == 0  # usage reported
        by_stage = pred.cost_by_stage
        assert by_stage[1].calls == stage1_calls and by_stage[2].calls == 5 and by_stage[3].calls == 1
        expected = sum(Prices({"m": PRICE}).cost("m", u.prompt_tokens, u.completion_tokens)
                       for u in [pred.cost])
        assert pred.cost.usd == pytest.approx(expected)
    assert outer.usage().calls == sum(p.cost.calls for p in preds)
    assert outer.usage().usd == pytest.approx(sum(p.cost.usd for p in preds))


def test_samples_of_a_stage_decode_concurrently(local_server):
    cascade = make_cascade(local_server, early_stop=False)
    busy, done = [], threading.Event()

    def watch():
        while not done.is_set():
            busy.append(sum(bool(s.get("is_processing")) for s in local_server.slots()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        cascade(question="What is 7 times 6?")
    finally:
        done.set()
        watcher.join()
    assert max(busy) >= 2, f"the server never had two samples in flight: {busy}"


def test_save_load_and_an_identical_rerun_is_served_from_cache(local_server, tmp_path):
    cascade = make_cascade(local_server, tau1=0.5)
    first = cascade(question=QUESTIONS[0])
    path = tmp_path / "cascade.json"
    cascade.save(str(path))

    loaded = Cascade(task=Math())
    loaded.load(str(path), allow_unsafe_lm_state=True)  # keeps the pinned LMs' api_base (our own server)
    assert (loaded.n, loaded.tau1, loaded.tau2) == (4, 0.5, 0.5)
    assert loaded.small_executor.lm.kwargs["api_base"] == local_server.base_url
    loaded.prices = cascade.prices
    again = loaded(question=QUESTIONS[0])
    assert (again.answer, again.stage) == (first.answer, first.stage)
    assert again.cost.calls == first.cost.calls and again.cost.cached_calls == again.cost.calls
    assert again.cost.usd == 0  # cache hits are not billed


def test_a_code_cascade_is_recorded_replayed_as_it_reruns_and_calibrated(local_server, tmp_path):
    """Code calibration on real replies: programs accepted on the shown test, graded on hidden ones."""
    from cope_dspy import Code
    from cope_dspy.calibrate import calibrate, record, replay
    from cope_dspy.sandbox import run_tests

    small, large = local_server.lm(max_tokens=96), local_server.lm(max_tokens=96)
    cascade = Cascade(small=small, large=large, task=Code(), n=2, prices=Prices({small.model: PRICE}),
                      temperatures=Temperatures(guideline=0.0), early_stop=False)
    devset = [dspy.Example(id=name, question=f"Write a Python function {name}(x) that returns {what}.",
                           tests=[f"assert {name}(2) == {value(2)}"],
                           hidden=[f"assert {name}({x}) == {value(x)}" for x in (0, 3, -5)]).with_inputs("question", "tests")
              for name, what, value in [("double", "x times 2", lambda x: 2 * x), ("inc", "x plus 1", lambda x: x + 1)]]

    def graded(example, pred):
        return pred.answer is not None and run_tests(pred.answer, example.hidden).passed

    records = record(cascade, devset, graded, tmp_path / "code.jsonl", progress=False, baselines=True)
    assert records.policies["default"]["consensus"] == "tests-pass"
    for item in records:
        assert item["acceptance_tests"] == 1
        votes = [e for e in item["trace"] if e["kind"] == "vote"]
        assert len(votes) == 2 and all(isinstance(c["accepted"], bool) for v in votes for c in v["candidates"])
    live = {ex.id: cascade(**ex.inputs()) for ex in devset}  # the same prompts and rollout ids: from the cache
    result = replay(records, cascade.tau1, cascade.tau2, 2, early_stop=False)
    assert [(r["answer"], r["stage"]) for r in result.per_example] == [(live[r["id"]].answer, live[r["id"]].stage)
                                                                       for r in result.per_example]
    assert result.calls == sum(p.cost.calls for p in live.values())
    cal = calibrate(records, storage="memory", sampler="grid", stages=[(1, 2, 3), (1, 3)])
    assert [c["stages"] for c in cal.stage_sets] == [[1, 2, 3], [1, 3]] and 0 <= cal.result.accuracy <= 1
