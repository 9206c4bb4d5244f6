"""Calibrating a Code cascade from its records: `record` keeps what accepted each program (the call's tests)
apart from what grades it (the metric), replay reproduces live code runs for any tau, n and stages, and the
study's choice is the cheapest setting that keeps accuracy."""

import dspy
import pytest
from fakes import ScriptedLM, reply
from fixtures.replay_check import assert_replays_live

from cope_dspy import Cascade, Code, CopeInputError, Prices
from cope_dspy.calibrate import Records, calibrate, grid_settings, record, replay, within_points_of_large

PRICES = Prices({"scripted/small": (0.5, 1.0), "scripted/large": (5.0, 15.0)})  # both > 0: every draw counts
GOOD = "def add(a, b):\n    return a + b"
SHOWN_ONLY = "def add(a, b):\n    return 3 if (a, b) == (1, 2) else a - b"  # passes the user's test, graded wrong
BAD = "def add(a, b):\n    return a * b"
NONE = ""  # a reply with no code: abstains
USER = ["assert add(1, 2) == 3"]

# question -> (stage-1 programs, stage-2 programs, the large model's program, the call's tests)
SCRIPT = {
    "q-first-passes": ([GOOD, BAD, BAD, BAD], [GOOD] * 4, GOOD, USER),
    "q-second-wave": ([BAD, NONE, GOOD, BAD], [BAD, GOOD, BAD, BAD], GOOD, USER),
    "q-shown-only": ([SHOWN_ONLY, BAD, GOOD, BAD], [GOOD] * 4, GOOD, USER),
    "q-guided": ([BAD] * 4, [BAD, GOOD, BAD, BAD], BAD, USER),
    "q-hard": ([BAD, NONE, BAD, BAD], [BAD, BAD, SHOWN_ONLY, BAD], GOOD, USER),
    "q-untested": ([GOOD] * 4, [GOOD] * 4, BAD, []),
}


def coder(name, pick):
    def respond(call):
        if call.role == "goal":
            return reply(goal=f"Add two numbers #{call.rollout_id}.")
        if call.role == "guideline":
            return reply(guideline="Return a + b.")
        program = pick(call)
        return reply(solution="Here it is.", answer=f"```python\n{program}\n```" if program else "none")

    return ScriptedLM(name, respond)


def script(call):
    return SCRIPT[next(q for q in SCRIPT if call.question.startswith(q))]  # a call without plans: more text


def make_cascade(**kwargs):
    small = coder("scripted/small", lambda c: script(c)[1 if "Guideline:" in c.plans else 0][c.rollout_id])
    large = coder("scripted/large", lambda c: script(c)[2])
    kwargs.setdefault("prices", PRICES)
    kwargs.setdefault("n", 4)
    return Cascade(small=small.lm, large=large.lm, task=Code(), **kwargs), small, large


def devset(questions=SCRIPT):
    return [dspy.Example(id=q, question=q, tests=SCRIPT[q][3]).with_inputs("question", "tests") for q in questions]


def graded(example, pred):  # the grader the cascade never sees: only GOOD is right
    return pred.answer is not None and pred.answer.strip() == GOOD


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "code.jsonl"
    cascade, small, large = make_cascade()
    return record(cascade, devset(), graded, path, progress=False, baselines=True)


def test_records_keep_acceptance_apart_from_grading(recorded):
    items = recorded.by_id()
    assert recorded.policies["default"]["consensus"] == "tests-pass"
    assert items["q-untested"]["acceptance_tests"] == 0 and items["q-hard"]["acceptance_tests"] == 1
    first = {c["index"]: c for c in items["q-shown-only"]["trace"][0]["candidates"]}
    assert first[0]["accepted"] and not first[0]["correct"]  # passed the user's test, wrong by the grader
    assert first[2]["accepted"] and first[2]["correct"]
    assert not first[1]["accepted"] and not first[1]["correct"]


@pytest.mark.parametrize("tau1, tau2, n, stages, early_stop", [
    (0.75, 0.5, 4, (1, 2, 3), True),
    (0.75, 0.5, 4, (1, 2, 3), False),
    (0.5, 0.5, 2, (1, 2, 3), True),
    (0.5, 0.5, 3, (1, 2, 3), True),
    (0.0, 0.5, 4, (1, 2, 3), True),   # stop after stage 1 with its best program
    (1.0, 0.5, 4, (1, 2, 3), True),   # stage 1 never accepts: one sample, then stage 2
    (0.5, 0.0, 4, (1, 2, 3), True),
    (0.5, 1.0, 1, (1, 2, 3), True),
    (0.5, 0.5, 4, (1, 2), True),
    (0.5, 0.5, 4, (1, 3), True),
    (0.5, 0.5, 4, (2, 3), True),
    (0.5, 0.5, 4, (3,), True),
])
def test_replay_equals_live(recorded, tau1, tau2, n, stages, early_stop):
    cascade, small, large = make_cascade(tau1=tau1, tau2=tau2, n=n, stages=stages, early_stop=early_stop)
    live = {ex.id: cascade(**ex.inputs()) for ex in devset()}
    result = replay(recorded, tau1, tau2, n, stages, early_stop)
    assert_replays_live(result, live, graded, devset())
    assert result.calls == len(small.calls) + len(large.calls)


def test_stage3_alone_replays_the_live_cascade(recorded):
    cascade, small, large = make_cascade(stage3_plans=False, stages=(1, 3))
    live = {ex.id: cascade(**ex.inputs()) for ex in devset()}
    result = replay(recorded, 0.5, 0.5, 4, (1, 3), stage3_plans=False)
    assert [(r["answer"], r["stage"]) for r in result.per_example] == [
        (live[r["id"]].answer, live[r["id"]].stage) for r in result.per_example]
    assert result.usd_total == pytest.approx(sum(p.cost.usd for p in live.values()), rel=1e-9)
    assert large.by_role("guideline") == []


@pytest.mark.parametrize("tau1, stages", [(0.5, (1, 2, 3)), (0.5, (1, 3)), (1.0, (1, 2, 3))])
def test_stage1_without_goals_replays_the_live_cascade(recorded, tau1, stages):
    # the unplanned small samples were run against each call's tests when recorded, as a stage's are
    shown_only = recorded.by_id()["q-shown-only"]["baselines"]["small_samples"]
    assert [c["accepted"] for c in shown_only] == [True, False, True, False]
    cascade, small, large = make_cascade(stage1_plans=False, tau1=tau1, stages=stages)
    live = {ex.id: cascade(**ex.inputs()) for ex in devset()}
    result = replay(recorded, tau1, 0.5, 4, stages, stage1_plans=False)
    assert_replays_live(result, live, graded, devset())
    assert result.calls == len(small.calls) + len(large.calls)
    assert small.by_role("goal") == []


def test_unplanned_samples_never_run_against_the_tests_cannot_stand_for_stage1(recorded):
    import copy

    items = copy.deepcopy(recorded.items)
    for item in items:  # as records made before they were judged
        for c in item["baselines"]["small_samples"]:
            del c["accepted"]
    with pytest.raises(CopeInputError, match="not run against the call's acceptance tests"):
        replay(Records(items), stage1_plans=False)
    with pytest.raises(CopeInputError, match="not run against the call's acceptance tests"):
        calibrate(Records(items), storage="memory", stage1_plans=(True, False))


def test_the_study_picks_the_cheapest_setting_that_keeps_accuracy_and_it_runs_live(recorded, tmp_path):
    cal = calibrate(recorded, sampler="grid", storage="memory", constraint=within_points_of_large(0))
    grid = grid_settings(4, (1, 2, 3), True, tests_pass=True)
    assert len(cal.trials) == len(grid) == 4 * 3 * 3
    results = [replay(recorded, g["tau1"], g["tau2"], g["n"]) for g in grid]
    big = cal.large_alone["accuracy"]
    feasible = [r for r in results if r.accuracy >= big - 1e-12]
    assert feasible and cal.constraint_met
    assert cal.result.usd_per_1k == pytest.approx(min(r.usd_per_1k for r in feasible))
    cascade, _, _ = make_cascade()
    cal.apply(cascade)
    preds = [cascade(**ex.inputs()) for ex in devset()]
    assert sum(p.cost.usd for p in preds) == pytest.approx(cal.result.usd_total, rel=1e-9)
    assert sum(graded(ex, p) for ex, p in zip(devset(), preds, strict=True)) / len(preds) == pytest.approx(
        cal.result.accuracy)


def test_code_records_replay_without_an_answer_equality_and_refuse_what_they_lack(recorded, tmp_path):
    with pytest.raises(CopeInputError, match="more samples than were recorded"):
        replay(recorded, n=5)
    path = tmp_path / "no-baselines.jsonl"
    record(make_cascade()[0], devset(["q-guided"]), graded, path, progress=False)
    with pytest.raises(CopeInputError, match="no large-alone baseline"):
        replay(Records.load(path), stage3_plans=False)
    assert replay(Records.load(path), task=Code()).exits == {1: 0, 2: 1, 3: 0}


SETS = [(1, 2, 3), (1, 3), (1, 2)]


def test_several_stage_sets_one_study_each_the_cheapest_that_keeps_accuracy_wins(recorded):
    kwargs = dict(sampler="grid", storage="memory", constraint=within_points_of_large(0), stage3_plans=(True, False))
    cal = calibrate(recorded, stages=SETS, **kwargs)
    singles = [calibrate(recorded, stages=s, **kwargs) for s in SETS]
    assert [c["stages"] for c in cal.stage_sets] == [list(s) for s in SETS]
    assert [c["usd_per_1k"] for c in cal.stage_sets] == [c.result.usd_per_1k for c in singles]
    met = [c for c in singles if c.constraint_met]
    assert met and cal.result.usd_per_1k == min(c.result.usd_per_1k for c in met)
    assert "stages=" in cal.summary().splitlines()[0]
    assert cal.default.params["stages"] == [1, 2, 3]  # the paper default runs the paper's stages, whichever set won

    cascade, _, _ = make_cascade(stages=(2, 3))
    with pytest.warns(UserWarning, match="now runs the calibrated"):
        cal.apply(cascade)
    assert cascade.stages == tuple(cal.params["stages"])
    preds = [cascade(**ex.inputs()) for ex in devset()]
    assert sum(p.cost.usd for p in preds) == pytest.approx(cal.result.usd_total, rel=1e-9, abs=1e-15)


def test_cli_calibrates_code_records_over_stage_sets(recorded, tmp_path, capsys):
    from cope_dspy.calibrate import load_calibration, main

    out = tmp_path / "cal.json"
    assert main(["run", "--records", str(recorded.path), "--sampler", "grid", "--storage", "memory",
                 "--stages", "1,2,3", "1,3", "--json", str(out)]) == 0
    assert "stages (1, 3):" in capsys.readouterr().out
    assert load_calibration(out)["stages"] in ([1, 2, 3], [1, 3])
    assert main(["run", "--records", str(recorded.path), "--storage", "memory", "--stages", "1,x"]) == 2
    assert "--stages: each set is stage numbers" in capsys.readouterr().err
    with pytest.raises(CopeInputError, match="each stage set once"):
        calibrate(recorded, storage="memory", stages=[(1, 3), (3, 1)])
