"""The cascade's behaviour on scripted models: exits, votes, early decisions, who saw what, composition."""

import asyncio
import re

import dspy
import pytest
from fakes import ScriptedLM, math_model, reply

from cope_dspy import Cascade, ExactMatch, LargeModelError, Math, Temperatures
from cope_dspy.consensus import Candidate, Vote

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def small_answers(stage1: list, stage2: list | None = None):
    """Executor answers per sample index; stage 2 calls are recognised by the guideline in their plans."""

    def answers(call):
        table = stage2 if "Guideline:" in call.plans else stage1
        return table[call.rollout_id]

    return answers


def make(stage1, stage2=None, large_answer="7", **kwargs):
    small = math_model("scripted/small", small_answers(stage1, stage2))
    large = math_model("scripted/large", lambda call: large_answer, guideline="Count all apples together.")
    return Cascade(small=small.lm, large=large.lm, task=Math(), **kwargs), small, large


def test_stage1_exit_when_small_model_agrees():
    cascade, small, large = make(["7"] * 8)
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage, pred.accepted) == ("7", 1, True)
    assert pred.confidence >= 0.75
    assert large.calls == []  # the paid model was never called
    assert pred.plans["goal"].startswith("Find the number.")


def test_stage2_exit_uses_guideline_and_small_executor():
    cascade, small, large = make(list("12345678"), ["7", "7", "7", "7", "9", "9", "1", "2"])
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage) == ("7", 2)
    assert [c.role for c in large.calls] == ["guideline"]
    assert pred.plans == {"goal": pred.plans["goal"], "guideline": "Count all apples together."}


def test_stage3_exit_when_nobody_agrees():
    cascade, small, large = make(list("12345678"), list("12345678"), large_answer="7")
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage, pred.confidence) == ("7", 3, None)
    assert [c.role for c in large.calls] == ["guideline", "execute"]
    assert large.by_role("execute")[0].temperature == 0.0  # greedy


@pytest.mark.parametrize("guideline_reply, shown", [
    ("\n\n", "its reply was empty, no guideline"),
    ("[[ ## completed ## ]]", "no guideline could be read from the reply '[[ ## completed ## ]]'"),
    ("[[ ## completed ## ]]\n" * 20, "its first 200 of 440 characters; all of it is in error.lm_error.lm_response"),
], ids=["blank", "markers only", "long"])
def test_an_unreadable_guideline_raises_large_model_error_quoting_the_reply(guideline_reply, shown):
    small = math_model("scripted/small", small_answers(list("12345678")))
    large = ScriptedLM("scripted/large", lambda call: guideline_reply)
    cascade = Cascade(small=small.lm, large=large.lm, task=Math())
    with pytest.raises(LargeModelError, match="failed in its guideline_planner call") as raised, \
            pytest.warns(RuntimeWarning, match="asking once more"):
        cascade(question=Q)
    assert shown in str(raised.value)
    assert raised.value.lm_error.lm_response == guideline_reply  # the whole reply, for the caller to inspect
    assert [c.rollout_id for c in large.by_role("guideline")] == [None, 1]  # asked once more, then it raised


@pytest.mark.parametrize("run", ["sync", "async"])
def test_an_unreadable_sampled_guideline_is_asked_for_once_more_and_both_calls_count(run):
    replies = iter(["\n\n", reply(guideline="Count all apples together.")])
    small = math_model("scripted/small", small_answers(list("12345678"), ["7"] * 8))
    large = ScriptedLM("scripted/large", lambda call: next(replies))
    cascade = Cascade(small=small.lm, large=large.lm, task=Math())
    with pytest.warns(RuntimeWarning, match=r"its reply was empty, no guideline\); asking once more"):
        pred = cascade(question=Q) if run == "sync" else asyncio.run(cascade.acall(question=Q))
    assert (pred.answer, pred.stage) == ("7", 2)
    assert pred.plans["guideline"] == "Count all apples together."
    first, second = large.by_role("guideline")
    assert (first.rollout_id, second.rollout_id) == (None, 1) and first.temperature == second.temperature == 0.8
    (entry,) = [e for e in pred.trace if e["kind"] == "guideline"]
    (stage2,) = [e for e in pred.trace if e["kind"] == "vote" and e["stage"] == 2]
    assert entry["usage"]["calls"] == 2 and pred.cost_by_stage[2].calls == 2 + stage2["drawn"]  # both counted


def test_a_greedy_guideline_that_is_unreadable_is_not_asked_again():
    small = math_model("scripted/small", small_answers(list("12345678")))
    large = ScriptedLM("scripted/large", lambda call: "\n")
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), temperatures=Temperatures(guideline=0.0))
    with pytest.raises(LargeModelError, match="its reply was empty"):
        cascade(question=Q)
    assert len(large.by_role("guideline")) == 1  # the same greedy request would give the same reply


def test_six_of_eight_passes_tau_075_and_five_does_not():
    six = ["7"] * 6 + ["1", "2"]
    pred = make(six)[0](question=Q)
    assert (pred.stage, pred.confidence) == (1, 0.75)
    five = ["7"] * 5 + ["1", "2", "3"]
    cascade, _, _ = make(five, list("12345678"))
    assert cascade(question=Q).stage == 3


def test_equivalent_answers_vote_together():
    cascade, _, _ = make(["0.5", "1/2", "\\frac{1}{2}", "0.50", "1/2", "0.5", "3", "4"])
    pred = cascade(question=Q)
    assert pred.stage == 1 and pred.confidence == 0.75


def test_tie_goes_to_the_answer_voted_first():
    ballot = Vote().ballot(4, 0.5, lambda a, b: a == b, early_stop=False)
    ballot.add([Candidate(0, answer="B"), Candidate(1, answer="A"), Candidate(2, answer="A"), Candidate(3, answer="B")])
    d = ballot.decision()
    assert (d.answer, d.confidence, d.accepted) == ("B", 0.5, True)
    assert [c.index for c in d.supporters] == [0, 3]


def test_unparseable_samples_abstain_but_count_in_n():
    # 5 agree, 3 produce nothing readable: 5/8 < 0.75 although every readable answer agrees
    cascade, small, _ = make(["7"] * 5 + [""] * 3, ["7"] * 8)
    pred = cascade(question=Q)
    stage1 = pred.trace[0]
    assert stage1["confidence"] == 5 / 8 and not stage1["accepted"]
    assert sum(c["answer"] is None for c in stage1["candidates"]) == 3
    assert pred.stage == 2


def test_a_failing_small_call_abstains_instead_of_crashing():
    def answers(call):
        return RuntimeError("connection reset") if call.rollout_id in (0, 1) else "7"

    small = math_model("scripted/small", answers)
    large = math_model("scripted/large", lambda call: "7")
    pred = Cascade(small=small.lm, large=large.lm)(question=Q)
    errors = [c["error"] for c in pred.trace[0]["candidates"] if c["error"]]
    assert len(errors) == 2 and "connection reset" in errors[0]
    assert pred.trace[0]["confidence"] == 6 / 8 and pred.stage == 1


def test_early_decision_draws_fewer_samples_and_decides_the_same():
    unanimous = ["7"] * 8
    early, small_early, _ = make(unanimous)
    full, small_full, _ = make(unanimous, early_stop=False)
    a, b = early(question=Q), full(question=Q)
    assert (a.answer, a.stage, a.accepted) == (b.answer, b.stage, b.accepted)
    assert len(small_early.by_role("execute")) == 6 < len(small_full.by_role("execute")) == 8
    # rejection is decided early too: four different answers out of eight cannot reach 6 votes
    scattered = list("1234") + ["5"] * 4
    early, small_early, _ = make(scattered, ["7"] * 8)
    full, small_full, _ = make(scattered, ["7"] * 8, early_stop=False)
    a, b = early(question=Q), full(question=Q)
    assert (a.answer, a.stage) == (b.answer, b.stage) == ("7", 2)
    stage1_calls = [c for c in small_early.by_role("execute") if "Guideline" not in c.plans]
    assert len(stage1_calls) == 4 and a.trace[0]["drawn"] == 4


def test_lms_and_plans_per_role():
    cascade, small, large = make(list("12345678"), list("12345678"), early_stop=False)
    pred = cascade(question=Q)
    assert {c.role for c in small.calls} == {"goal", "execute"}
    assert {c.role for c in large.calls} == {"guideline", "execute"}
    stage1 = [c for c in small.by_role("execute") if "Guideline" not in c.plans]
    stage2 = [c for c in small.by_role("execute") if "Guideline" in c.plans]
    assert len(stage1) == len(stage2) == 8
    assert all(c.plans.startswith("Goal:") and "Count all apples" not in c.plans for c in stage1)  # no g_L in stage 1
    g_s = pred.plans["goal"]
    assert all(f"Goal: {g_s}" in c.plans and "Guideline: Count all apples together." in c.plans for c in stage2)
    (large_exec,) = large.by_role("execute")
    assert "Goal:" not in large_exec.plans and "Guideline: Count all apples together." in large_exec.plans  # no g_S
    assert all(Q in c.question for c in small.calls + large.calls)


def test_g_s_is_a_goal_behind_the_majority_answer():
    cascade, small, _ = make(["1", "7", "7", "7", "7", "2", "3", "4"], ["7"] * 8)
    pred = cascade(question=Q)
    assert pred.stage == 2 and pred.plans["goal"].endswith("#1")  # sample 1 is the first behind "7"


def test_temperatures_and_rollout_ids():
    cascade, small, large = make(list("12345678"), list("12345678"), early_stop=False)
    cascade(question=Q)
    goals = small.by_role("goal")
    assert {c.temperature for c in goals} == {0.8} and sorted(c.rollout_id for c in goals) == list(range(8))
    stage1 = [c for c in small.by_role("execute") if "Guideline" not in c.plans]
    stage2 = [c for c in small.by_role("execute") if "Guideline" in c.plans]
    assert {c.temperature for c in stage1} == {0.4} and sorted(c.rollout_id for c in stage1) == list(range(8))
    assert {c.temperature for c in stage2} == {0.8} and sorted(c.rollout_id for c in stage2) == list(range(8))
    assert large.by_role("guideline")[0].temperature == 0.8
    assert large.by_role("execute")[0].rollout_id is None


def test_rollout_ids_bust_the_cache_but_a_rerun_is_cached(tmp_path):
    import itertools

    counter = itertools.count()
    small = math_model("scripted/small-cached", lambda call: str(next(counter)), cache=True)
    large = math_model("scripted/large-cached", lambda call: "7", cache=True)
    cascade = Cascade(small=small.lm, large=large.lm, stages=(1,), n=4, early_stop=False)
    first = cascade(question="What is 40 + 2?")
    answers = [c["answer"] for c in first.trace[0]["candidates"]]
    assert len(set(answers)) == 4  # four distinct samples, not one cached sample four times
    calls = len(small.calls)
    again = cascade(question="What is 40 + 2?")
    assert len(small.calls) == calls  # identical rerun: every call served from the cache
    assert [c["answer"] for c in again.trace[0]["candidates"]] == answers


def test_stage_subsets_thresholds_and_sample_counts():
    # stop after stage 2: its majority answer is final even below tau2
    cascade, _, large = make(list("12345678"), ["9", "9", "1", "2", "3", "4", "5", "6"], stages=(1, 2))
    pred = cascade(question=Q)
    assert (pred.stage, pred.answer, pred.accepted) == (2, "9", False)
    assert [c.role for c in large.calls] == ["guideline"]
    # skip stage 1: no goals written
    cascade, small, _ = make(["7"] * 8, ["7"] * 8, stages=(2, 3))
    pred = cascade(question=Q)
    assert pred.stage == 2 and small.by_role("goal") == [] and "goal" not in pred.plans
    # tau1 = 0 always accepts; tau1 = 1 always escalates, even when unanimous
    assert make(list("12345678"), tau1=0.0)[0](question=Q).stage == 1
    assert make(["7"] * 8, ["7"] * 8, tau1=1.0)[0](question=Q).stage == 2
    # any n
    cascade, small, _ = make(["7"] * 3, n=3)
    assert cascade(question=Q).stage == 1 and len(small.by_role("goal")) == 3


def test_async_acall_matches_sync():
    cascade, small, large = make(list("12345678"), ["7"] * 4 + list("1234"))
    pred = asyncio.run(cascade.acall(question=Q))
    sync_cascade, sync_small, _ = make(list("12345678"), ["7"] * 4 + list("1234"))
    expected = sync_cascade(question=Q)
    assert (pred.answer, pred.stage, pred.confidence) == (expected.answer, expected.stage, expected.confidence) == ("7", 2, 0.5)
    assert len(small.calls) == len(sync_small.calls) and [c.role for c in large.calls] == ["guideline"]


def test_composes_inside_a_module_evaluate_and_parallel():
    cascade, _, _ = make(["7"] * 8)

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.solve = cascade

        def forward(self, question):
            return dspy.Prediction(answer=self.solve(question=question).answer)

    program = Program()
    assert program(question=Q).answer == "7"
    assert {name for name, _ in program.named_predictors()} >= {"solve.goal_planner", "solve.large_executor"}

    devset = [dspy.Example(question=Q, answer="7").with_inputs("question") for _ in range(3)]
    result = dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
                           num_threads=2, display_progress=False)(program)
    assert result.score == 100.0

    outputs = dspy.Parallel(num_threads=3)([(cascade, ex) for ex in devset])
    assert [o.answer for o in outputs] == ["7", "7", "7"]


def test_save_load_keeps_policy_and_pinned_lms(tmp_path):
    small, large = dspy.LM("ollama_chat/qwen2.5:1.5b"), dspy.LM("openai/gpt-4o-mini")
    cascade = Cascade(small=small, large=large, n=5, tau1=0.6, tau2=0.4, stages=(1, 3))
    path = tmp_path / "cascade.json"
    cascade.save(str(path))
    loaded = Cascade(task=Math())
    loaded.load(str(path))
    assert (loaded.n, loaded.tau1, loaded.tau2, loaded.stages) == (5, 0.6, 0.4, (1, 3))
    assert loaded.goal_planner.lm.model == "ollama_chat/qwen2.5:1.5b"
    assert loaded.small_executor.lm.model == "ollama_chat/qwen2.5:1.5b"
    assert loaded.guideline_planner.lm.model == "openai/gpt-4o-mini"
    assert loaded.large_executor.lm.model == "openai/gpt-4o-mini"


def test_policy_survives_save_when_nested(tmp_path):
    class Outer(dspy.Module):
        def __init__(self, **kw):
            super().__init__()
            self.inner = Cascade(**kw)

    Outer(n=3, tau1=0.9).save(str(tmp_path / "outer.json"))
    loaded = Outer()
    loaded.load(str(tmp_path / "outer.json"))
    assert (loaded.inner.n, loaded.inner.tau1) == (3, 0.9)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n": 0}, "n must be an integer >= 1"),
        ({"n": 2.5}, "n must be an integer"),
        ({"tau1": 1.2}, "tau1 must be a number in [0, 1]"),
        ({"tau2": -0.1}, "tau2 must be a number in [0, 1]"),
        ({"stages": (0, 2)}, "stages must be a non-empty subset"),
        ({"stages": ()}, "stages must be a non-empty subset"),
        ({"small": "qwen"}, "small must be a dspy.LM"),
        ({"task": "math"}, "task must be a cope_dspy Task"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        Cascade(**kwargs)


def test_bad_call_inputs_raise_before_any_lm_call():
    cascade, small, large = make(["7"] * 8)
    with pytest.raises(ValueError, match="missing input field 'question'"):
        cascade(problem=Q)
    with pytest.raises(ValueError, match="'question' must be a non-empty string"):
        cascade(question="   ")
    with pytest.raises(ValueError, match="tau1"):
        cascade.tau1 = 2
    assert small.calls == [] and large.calls == []


def test_missing_models_are_named():
    with pytest.raises(ValueError, match="no small model"):
        Cascade()(question=Q)


def test_exact_match_task_with_choices():
    def answers(call):
        return ["Positive", "positive.", "POSITIVE", "negative", "maybe", "positive", "Positive", "positive"][call.rollout_id]

    small = math_model("scripted/small", answers)
    large = math_model("scripted/large", lambda call: "negative")
    cascade = Cascade(small=small.lm, large=large.lm, task=ExactMatch(choices=["positive", "negative"]))
    pred = cascade(question="Review: great film!")
    assert pred.stage == 1 and pred.answer.lower().startswith("positive") and pred.confidence == 6 / 8
    assert sum(c["answer"] is None for c in pred.trace[0]["candidates"]) == 1  # "maybe" abstains


def _priced(stage1, stage2, budget):
    from cope_dspy import Prices

    small = math_model("scripted/small", small_answers(stage1, stage2))
    large = math_model("scripted/large", lambda call: "7")
    prices = Prices({"scripted/large": (1.0, 2.0), "scripted/small": (0.0, 0.0)})
    return Cascade(small=small.lm, large=large.lm, prices=prices, budget=budget), small, large


def test_budget_refuses_the_paid_call_that_would_cross_the_cap():
    from cope_dspy import Budget, BudgetExceeded

    cascade, small, large = _priced(list("12345678"), ["7"] * 8, Budget(usd=1e-6))
    with pytest.raises(BudgetExceeded):
        cascade(question=Q)
    assert large.calls == [] and len(small.calls) > 0  # the free stage ran; the paid guideline was refused
    # a question the small model settles never needs the budget
    cascade, _, large = _priced(["7"] * 8, ["7"] * 8, Budget(usd=1e-6))
    assert cascade(question=Q).stage == 1 and large.calls == []


def test_budget_fallback_answers_from_the_last_stage_flagged():
    from cope_dspy import Budget

    cascade, _, large = _priced(["3", "3", "3", "3", "3", "1", "2", "4"], ["7"] * 8, Budget(usd=1e-6, on_exceed="fallback"))
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage, pred.accepted, pred.budget_limited) == ("3", 1, False, True)
    assert large.calls == []
    # with room for the whole cascade, the same question escalates normally and is not flagged
    cascade, _, large = _priced(["3", "3", "3", "3", "3", "1", "2", "4"], ["7"] * 8, Budget(usd=10.0, on_exceed="fallback"))
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage, pred.budget_limited) == ("7", 2, False)
    assert cascade.budget.spent_usd == pytest.approx(pred.cost.usd) and pred.cost.usd > 0
    assert pred.cost_by_model["scripted/small"].usd == 0 and pred.cost_by_model["scripted/large"].calls == 1


def test_trace_times_every_sample_and_plan():
    """Each candidate carries its wall-clock seconds (plan + execution) and the guideline entry its own:
    the benchmark report's latency per method is built from these."""
    import time

    def slow_large(call):
        time.sleep(0.2)
        return "7"

    small = math_model("scripted/small", small_answers(list("12345678"), list("12345678")))
    large = math_model("scripted/large", slow_large)
    pred = Cascade(small=small.lm, large=large.lm, task=Math()).record(question=Q)
    entries = {e["kind"] + str(e["stage"]): e for e in pred.trace}
    assert entries["guideline2"]["seconds"] >= 0
    for key in ("vote1", "vote2", "final3"):
        assert all(c["extra"]["seconds"] >= 0 for c in entries[key]["candidates"])
    assert entries["final3"]["candidates"][0]["extra"]["seconds"] >= 0.2  # the large executor slept 0.2 s


def test_per_role_max_tokens_caps_only_that_roles_calls():
    small = math_model("scripted/small", small_answers(list("12345678"), list("12345678")))
    large = math_model("scripted/large", lambda call: "7")
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), max_tokens={"guideline_planner": 96})
    assert cascade(question=Q).stage == 3
    assert [c.max_tokens for c in large.by_role("guideline")] == [96]
    assert all(c.max_tokens != 96 for c in large.by_role("execute") + small.calls)


@pytest.mark.parametrize("caps, words", [
    ({"planner": 10}, "unknown role 'planner'"),
    ({"guideline_planner": 0}, "max_tokens['guideline_planner'] must be an integer >= 1"),
    ({"guideline_planner": True}, "must be an integer >= 1"),
    (128, "max_tokens must be a dict of role -> tokens"),
])
def test_bad_per_role_max_tokens_is_named(caps, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Cascade(small=math_model("scripted/s", lambda c: "1").lm, large=math_model("scripted/l", lambda c: "1").lm,
                max_tokens=caps)


@pytest.mark.parametrize("run", ["sync", "async"])
def test_an_error_carries_what_the_run_paid_before_it(run):
    small = math_model("scripted/small", small_answers(list("12345678"), list("12345678")))
    large = math_model("scripted/large", lambda call: RuntimeError("the provider is down"))
    cascade = Cascade(small=small.lm, large=large.lm, task=Math())
    with pytest.raises(LargeModelError) as raised:
        cascade(question=Q) if run == "sync" else asyncio.run(cascade.acall(question=Q))
    assert raised.value.cost.calls == len(small.calls) + len(large.calls)  # the failed call counts too
    assert raised.value.cost_by_model["scripted/large"].calls == 2 and raised.value.cost.failed_calls == 1


@pytest.mark.parametrize("driver", ["forward", "aforward"])
def test_each_samples_cost_comes_from_the_runs_tracker_by_stage_and_sample(driver):
    """The trace's per-sample and per-plan usage partitions the run's cost: every call counted once,
    each in the sample (or plan) that made it."""
    small = math_model("scripted/small", small_answers(list("12345678"), list("12345678")), usage=(10, 3))
    large = math_model("scripted/large", lambda call: "7", usage=(40, 9))
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=4, early_stop=False)
    pred = cascade(question=Q) if driver == "forward" else asyncio.run(cascade.acall(question=Q))
    assert pred.stage == 3
    per_job = [c["usage"] for e in pred.trace for c in e.get("candidates", [])]
    per_job += [e["usage"] for e in pred.trace if e["kind"] == "guideline"]
    assert sum(u["calls"] for u in per_job) == pred.cost.calls == len(small.calls) + len(large.calls) == 4 * 2 + 4 + 2
    assert sum(u["prompt_tokens"] for u in per_job) == pred.cost.prompt_tokens == 12 * 10 + 2 * 40
    stage1 = [c["usage"] for c in pred.trace[0]["candidates"]]
    assert [u["calls"] for u in stage1] == [2] * 4  # a stage-1 sample: its goal and its execution


def test_stage3_without_plans_is_the_large_model_alone():
    cascade, small, large = make(list("12345678"), list("12345678"), large_answer="7", stage3_plans=False)
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage) == ("7", 3)
    assert [c.role for c in large.calls] == ["guideline", "execute"]  # the guideline still serves stage 2
    (alone,) = large.by_role("execute")
    assert "[[ ## plans ## ]]" not in alone.user and "Count all apples" not in alone.user
    assert alone.temperature == 0.0
    # the very call the large-alone baseline makes (one builder for both): same system and user message
    from cope_dspy.records import unplanned_samples

    unplanned_samples(cascade, Q)
    baseline = large.by_role("execute")[-1]
    assert (baseline.system, baseline.user) == (alone.system, alone.user)


def test_stage3_without_plans_and_without_stage2_writes_no_guideline():
    cascade, small, large = make(list("12345678"), stages=(1, 3), stage3_plans=False)
    pred = cascade(question=Q)
    assert pred.stage == 3 and "guideline" not in pred.plans
    assert [c.role for c in large.calls] == ["execute"]
    with_plans, _, large2 = make(list("12345678"), stages=(1, 3))
    with_plans(question=Q)
    assert [c.role for c in large2.calls] == ["guideline", "execute"]


def test_stage1_without_plans_is_the_small_model_alone():
    cascade, small, large = make(["7"] * 8, stage1_plans=False)
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage, pred.plans) == ("7", 1, {})
    drawn = pred.trace[0]["drawn"]
    assert [c.role for c in small.calls] == ["execute"] * drawn  # no goals written
    assert all(c.plans == "" and "[[ ## plans ## ]]" not in c.user for c in small.calls)
    assert {c.temperature for c in small.calls} == {Temperatures().stage2_executor}
    assert large.calls == []
    # the very calls the unplanned baseline samples make (one builder for both): same messages, rollout, temperature
    from cope_dspy.records import unplanned_samples

    unplanned_samples(cascade, Q)
    baseline = sorted((c for c in small.calls[drawn:] if c.temperature == Temperatures().stage2_executor),
                      key=lambda c: c.rollout_id)[:drawn]
    stage1 = sorted(small.calls[:drawn], key=lambda c: c.rollout_id)
    assert [(c.system, c.user, c.rollout_id) for c in baseline] == [(c.system, c.user, c.rollout_id) for c in stage1]


def test_stage1_without_plans_gives_stage2_the_guideline_only():
    cascade, small, large = make(list("12345678"), ["7"] * 8, stage1_plans=False)
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage) == ("7", 2)
    assert pred.plans == {"guideline": "Count all apples together."}
    stage2 = [c for c in small.calls if "Guideline:" in c.plans]
    assert stage2 and not any("Goal:" in c.plans for c in stage2)
    assert [c.role for c in large.calls] == ["guideline"]


@pytest.mark.parametrize("option, other", [("stage3_plans", "stage1_plans"), ("stage1_plans", "stage3_plans")])
def test_a_plans_switch_is_saved_and_checked(tmp_path, option, other):
    cascade = Cascade(small=dspy.LM("ollama_chat/qwen2.5:1.5b"), large=dspy.LM("openai/gpt-4o-mini"),
                      **{option: False})
    cascade.save(str(tmp_path / "c.json"))
    loaded = Cascade(task=Math())
    assert getattr(loaded, option) is True  # the paper's stage by default
    loaded.load(str(tmp_path / "c.json"))
    assert getattr(loaded, option) is False and getattr(loaded, other) is True
    with pytest.raises(ValueError, match=f"{option} must be True"):
        Cascade(**{option: "no"})
    with pytest.raises(ValueError, match=f"{option} must be True"):
        setattr(loaded, option, 0)
