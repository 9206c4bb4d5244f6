"""Record once, replay many: replay reproduces live runs exactly, the study makes no LM call, recording
resumes, and the constrained choice is the cheapest (or most accurate) point."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dspy
import pytest
from fakes import math_model

from cope_dspy import Cascade, CopeInputError, Math, Prices
from cope_dspy.answers import math_equal
from cope_dspy.calibrate import (
    Records,
    calibrate,
    grid_settings,
    main,
    max_usd_per_1k,
    record,
    replay,
    within_points_of_large,
)

REPO = Path(__file__).resolve().parents[2]
PRICES = Prices({"scripted/small": (0.5, 1.0), "scripted/large": (5.0, 15.0)})  # both > 0: every draw counts

# question -> (stage-1 answers, stage-2 answers, large answer); "" is unreadable (abstains). Truth is "7".
SCRIPT = {
    "q-unanimous": (["7"] * 8, ["7"] * 8, "7"),
    "q-six-of-eight": (["7"] * 6 + ["1", "2"], ["7"] * 8, "7"),
    "q-five-then-guided": (["7"] * 5 + ["1", "2", "3"], ["7"] * 4 + ["9"] * 4, "7"),
    "q-scattered": (list("12345678"), list("12345678"), "7"),
    "q-wrong-majority": (["3"] * 7 + ["7"], ["3"] * 5 + ["7"] * 3, "7"),
    "q-abstains": (["7"] * 4 + [""] * 4, ["", "7", "", "8", "8", "8", "", "7"], "8"),
    "q-equivalent": (["0.5", "1/2", "\\frac{1}{2}", "0.50", "3", "4", "1/2", "5"], ["1/2"] * 8, "0.5"),
}
TRUTH = {"q-equivalent": "1/2"}


def make_cascade(script=SCRIPT, large_answer=None, **kwargs):
    def small_answers(call):
        stage1, stage2, _ = script[call.question]
        return (stage2 if "Guideline:" in call.plans else stage1)[call.rollout_id]

    small = math_model("scripted/small", small_answers)
    large = math_model("scripted/large", lambda call: large_answer or script[call.question][2])
    kwargs.setdefault("prices", PRICES)
    return Cascade(small=small.lm, large=large.lm, task=Math(), **kwargs), small, large


def devset(questions=SCRIPT):
    return [dspy.Example(question=q, answer=TRUTH.get(q, "7")).with_inputs("question") for q in questions]


def metric(example, pred):
    return pred.answer is not None and math_equal(pred.answer, example.answer)


def lm_calls(*models):
    return sum(len(m.calls) for m in models)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "dev.jsonl"
    cascade, small, large = make_cascade()
    records = record(cascade, devset(), metric, path, progress=False)
    return records, small, large


# ------------------------------------------------------------------------------------- replay == live


@pytest.mark.parametrize("tau1, tau2, n, stages, early_stop", [
    (0.75, 0.5, 8, (1, 2, 3), False),
    (0.5, 0.75, 8, (1, 2, 3), False),
    (1.0, 0.5, 8, (1, 2, 3), False),
    (0.0, 0.5, 8, (1, 2, 3), False),
    (0.6, 0.4, 5, (1, 2, 3), False),
    (0.75, 0.5, 8, (1, 3), False),
    (0.75, 0.5, 8, (1, 2), False),
    (0.75, 0.5, 8, (2, 3), False),
    (0.75, 0.5, 8, (1, 2, 3), True),
    (0.5, 0.75, 6, (1, 2, 3), True),
    (0.9, 0.9, 8, (1, 2, 3), True),
])
def test_replay_equals_live(recorded, tau1, tau2, n, stages, early_stop):
    # The scripted answers depend only on the sample index, not on which goal g_S is passed on, so even
    # where a live run may pass on another goal (smaller n, early stop, no stage 1) replay must be exact.
    records = recorded[0]
    cascade, small, large = make_cascade(tau1=tau1, tau2=tau2, n=n, stages=stages, early_stop=early_stop)
    live = {ex.question: cascade(**ex.inputs()) for ex in devset()}
    result = replay(records, tau1, tau2, n, stages, early_stop)
    by_id = {row["id"]: row for row in result.per_example}
    ids = {item["inputs"]["question"]: item["id"] for item in records}
    for question, pred in live.items():
        row = by_id[ids[question]]
        assert (row["answer"], row["stage"]) == (pred.answer, pred.stage), question
        assert row["usd"] == pytest.approx(pred.cost.usd, rel=1e-9, abs=1e-15), question
        assert row["calls"] == pred.cost.calls, question
    assert result.usd_total == pytest.approx(sum(p.cost.usd for p in live.values()), rel=1e-9)
    assert result.calls == lm_calls(small, large)
    assert result.exits == {s: sum(p.stage == s for p in live.values()) for s in (1, 2, 3)}
    assert result.accuracy == pytest.approx(
        sum(metric(ex, live[ex.question]) for ex in devset()) / len(SCRIPT))


@pytest.mark.parametrize("recorded_stages, replayed", [((1, 3), [(1, 3), (3,)]), ((2, 3), [(2, 3), (2,)])])
def test_records_of_fewer_stages_replay_their_subsets(tmp_path, recorded_stages, replayed):
    questions = ["q-six-of-eight", "q-five-then-guided", "q-scattered", "q-wrong-majority"]
    cascade, _, _ = make_cascade(stages=recorded_stages)
    records = record(cascade, devset(questions), metric, tmp_path / "dev.jsonl", progress=False)
    for stages in replayed:
        live, small, large = make_cascade(stages=stages)
        preds = [live(**ex.inputs()) for ex in devset(questions)]
        result = replay(records, stages=stages)
        assert [(r["answer"], r["stage"]) for r in result.per_example] == [(p.answer, p.stage) for p in preds]
        assert result.usd_total == pytest.approx(sum(p.cost.usd for p in preds), rel=1e-9)
        assert result.calls == lm_calls(small, large)
    with pytest.raises(CopeInputError, match="recorded with stages"):
        replay(records, stages=(1, 2, 3))


def test_records_hold_trace_policy_and_scores(recorded):
    records = recorded[0]
    assert len(records) == len(SCRIPT) and records.n == 8 and records.variants == ["default"]
    item = next(i for i in records if i["inputs"]["question"] == "q-equivalent")
    assert item["policy"] == {"n": 8, "stages": [1, 2, 3], "task": "math", "variant": "default"}
    stage1 = item["trace"][0]
    assert [c["correct"] for c in stage1["candidates"]] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert [e["kind"] for e in item["trace"]] == ["vote", "guideline", "vote", "final"]
    assert all(len(i["id"]) == 16 for i in records)  # sha256 of the inputs when the example has no id


def test_paper_default_replay_matches_the_recorded_prediction(recorded):
    # cascade.record returns what a live run without early stopping returns: replay must agree
    records = recorded[0]
    rows = {r["id"]: r for r in replay(records, 0.75, 0.5, early_stop=False).per_example}
    assert all((rows[i["id"]]["answer"], rows[i["id"]]["stage"]) == (i["answer"], i["stage"]) for i in records)


# ------------------------------------------------------------------------------------- no LM calls


def test_calibration_makes_no_lm_call(recorded, tmp_path):
    records, small, large = recorded
    recording_calls = lm_calls(small, large)
    assert recording_calls == len(SCRIPT) * (8 * 2 + 1 + 8 + 1)  # goal+execute x8, guideline, x8, final
    cal = calibrate(records, n_trials=20, storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    assert lm_calls(small, large) == recording_calls
    assert len(cal.trials) == 20 and cal.pareto
    assert cal.default.params["tau1"] == 0.75 and cal.default.params["n"] == 8
    assert any(t["trial"] == 0 and (t["tau1"], t["tau2"], t["n"]) == (0.75, 0.5, 8) for t in cal.trials)
    # the chosen setting, applied and saved, survives a reload
    cascade = Cascade(task=Math())  # no scripted LMs: those cannot be saved
    cal.apply(cascade)
    assert (cascade.tau1, cascade.tau2, cascade.n) == (cal.params["tau1"], cal.params["tau2"], cal.params["n"])
    cascade.save(str(tmp_path / "cascade.json"))
    fresh = Cascade(task=Math())
    fresh.load(str(tmp_path / "cascade.json"))
    assert (fresh.tau1, fresh.tau2, fresh.n) == (cascade.tau1, cascade.tau2, cascade.n)
    cal.to_json(tmp_path / "cal.json")
    saved = json.loads((tmp_path / "cal.json").read_text())
    assert saved["params"] == cal.params and saved["result"]["accuracy"] == cal.result.accuracy


def test_plot_writes_a_png(recorded, tmp_path):
    import matplotlib  # noqa: F401  (a dev dependency: the plot must be tested, never skipped)
    cal = calibrate(recorded[0], n_trials=10, storage="memory")
    out = cal.plot(tmp_path / "front.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- resume


def test_recording_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "dev.jsonl"
    questions = list(SCRIPT)[:5]
    cascade, small, large = make_cascade()
    record(cascade, devset(questions[:3]), metric, path, progress=False)
    assert len(large.by_role("execute")) == 3  # one final call per recorded example
    records = record(cascade, devset(questions), metric, path, progress=False)
    assert len(large.by_role("execute")) == 5  # only the 2 new examples ran
    assert len(records) == 5 and len(path.read_text().splitlines()) == 5


def test_a_half_written_last_line_is_ignored_and_rewritten(tmp_path):
    path = tmp_path / "dev.jsonl"
    questions = list(SCRIPT)[:3]
    cascade, _, large = make_cascade()
    record(cascade, devset(questions), metric, path, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    assert len(Records.load(path)) == 2
    before = len(large.by_role("execute"))
    records = record(cascade, devset(questions), metric, path, progress=False)
    assert len(large.by_role("execute")) == before + 1
    assert len(records) == 3 and all(json.loads(line) for line in path.read_text().splitlines())


def test_concurrent_recording_matches_serial(recorded, tmp_path):
    cascade, _, _ = make_cascade()
    records = record(cascade, devset(), metric, tmp_path / "dev.jsonl", concurrency=3, progress=False)
    strip = lambda rs: {i["id"]: (i["answer"], i["stage"], i["trace"][0]["confidence"]) for i in rs}  # noqa: E731
    assert strip(records) == strip(recorded[0])


def test_variants_are_recorded_apart_and_searched(tmp_path):
    path = tmp_path / "dev.jsonl"
    questions = list(SCRIPT)[:4]
    record(make_cascade()[0], devset(questions), metric, path, variant="a", progress=False)
    record(make_cascade(large_answer="5")[0], devset(questions), metric, path, variant="b", progress=False)
    records = Records.load(path)
    assert records.variants == ["a", "b"] and len(records) == 8
    with pytest.raises(CopeInputError, match="several variants"):
        replay(records)
    assert replay(records, 1.0, 1.0, variant="a").accuracy == 1.0
    assert replay(records, 1.0, 1.0, variant="b").accuracy == 0.0
    cal = calibrate(records, n_trials=20, storage="memory")
    assert {t["variant"] for t in cal.trials} <= {"a", "b"}
    with pytest.raises(CopeInputError, match="n=8"):  # same variant, other policy
        record(make_cascade(n=4)[0], devset(questions), metric, path, variant="a", progress=False)


# ------------------------------------------------------------------------------------- the choice


def synthetic_records(path, size=80, n=4, seed=0):
    """Records with random votes: many distinct decisions for the choice to be non-trivial."""
    rng = random.Random(seed)

    def cand(i, p_right, usd, calls):
        r = rng.random()
        answer = "7" if r < p_right else (None if r > 0.93 else str(rng.randint(0, 3)))
        return {"index": i, "solution": "", "answer": answer, "plans": {}, "error": None, "score": None,
                "usage": {"calls": calls, "usd": usd}, "correct": float(answer == "7")}

    with open(path, "w") as f:
        for e in range(size):
            p = rng.random()
            trace = [
                {"kind": "vote", "stage": 1, "candidates": [cand(i, p, 0.0001, 2) for i in range(n)]},
                {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "usd": 0.001}},
                {"kind": "vote", "stage": 2, "candidates": [cand(i, min(1, p + 0.3), 0.0001, 1) for i in range(n)]},
                {"kind": "final", "stage": 3, "candidates": [cand(0, 0.8, 0.004, 1)]},
            ]
            f.write(json.dumps({"format": "cope-dspy/records/1", "id": f"e{e}", "variant": "default",
                                "policy": {"n": n, "stages": [1, 2, 3], "task": "math", "variant": "default"},
                                "inputs": {"question": f"q{e}"}, "answer": None, "stage": 3, "trace": trace}) + "\n")
    return Records.load(path)


def brute_force(records, n_max):
    """Replay on a fine tau grid, independent of grid_settings."""
    taus = sorted({round(i / 40, 6) for i in range(41)} | {(k - 0.5) / n for n in range(1, n_max + 1)
                                                           for k in range(1, n + 1)})
    return [replay(records, t1, t2, n) for n in range(1, n_max + 1) for t1 in taus for t2 in taus]


def test_grid_covers_every_distinct_setting_and_the_choice_is_the_cheapest(tmp_path):
    records = synthetic_records(tmp_path / "synth.jsonl")
    brute = brute_force(records, 4)
    grid = {(r.accuracy, r.usd_total) for r in (replay(records, **s) for s in grid_settings(4))}
    assert {(r.accuracy, r.usd_total) for r in brute} <= grid
    large = max(r.accuracy for r in [replay(records, stages=(3,))])
    for points in (0.0, 2.0, 5.0):
        cal = calibrate(records, sampler="grid", storage="memory", constraint=within_points_of_large(points))
        feasible = [r for r in brute if r.accuracy >= large - points / 100 - 1e-12]
        assert cal.constraint_met and cal.large_alone["accuracy"] == large
        assert cal.result.usd_per_1k == pytest.approx(min(r.usd_per_1k for r in feasible))
        assert cal.result.accuracy >= large - points / 100 - 1e-12
    for usd in (1.0, 2.5, 4.0):
        cal = calibrate(records, sampler="grid", storage="memory", constraint=max_usd_per_1k(usd))
        assert cal.result.accuracy == max(r.accuracy for r in brute if r.usd_per_1k <= usd + 1e-12)
        assert cal.result.usd_per_1k <= usd


def test_sampled_choice_is_the_cheapest_feasible_trial(tmp_path):
    records = synthetic_records(tmp_path / "synth.jsonl")
    cal = calibrate(records, n_trials=60, storage="memory", constraint=within_points_of_large(3.0))
    bar = cal.large_alone["accuracy"] - 0.03 - 1e-12
    replays = [replay(records, t["tau1"], t["tau2"], t["n"]) for t in cal.trials] + [cal.default]
    assert cal.result.usd_per_1k == pytest.approx(min(r.usd_per_1k for r in replays if r.accuracy >= bar))
    front = {(p["accuracy"], p["usd_per_1k"]) for p in cal.pareto}
    assert all(not (r.accuracy >= a and r.usd_per_1k <= u and (r.accuracy, r.usd_per_1k) != (a, u))
               for r in replays for a, u in front)  # nothing dominates a Pareto point


# ------------------------------------------------------------------------------------- persistence


def _complete(url, name):
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_sqlite_study_survives_a_kill_and_continues(tmp_path):
    records = synthetic_records(tmp_path / "synth.jsonl")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "cope_dspy.calibrate", "worker", "--records", str(records.path), "--storage", url,
         "--study", "kill", "--trials", "100000"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert worker.poll() is None, worker.stdout.read().decode()
            try:
                if _complete(url, "kill") >= 5:
                    break
            except Exception:  # noqa: BLE001 - the study may not exist yet
                pass
            assert time.monotonic() < deadline, "the worker made no trials"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    before = _complete(url, "kill")
    cal = calibrate(records, n_trials=before + 5, storage=url, study_name="kill")
    assert _complete(url, "kill") == before + 5 == len(cal.trials)


def test_cli_runs_a_study(recorded, tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert main(["run", "--records", str(recorded[0].path), "--trials", "8", "--storage", "memory",
                 "--json", str(out), "--max-usd-per-1k", "50"]) == 0
    assert "chosen: tau1=" in capsys.readouterr().out and json.loads(out.read_text())["trials"] == 8
    assert main(["run", "--records", str(tmp_path / "missing.jsonl"), "--storage", "memory"]) == 2


# ------------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_a_clear_message(recorded, tmp_path):
    records = recorded[0]
    cascade, small, large = make_cascade()
    with pytest.raises(CopeInputError, match="devset is empty"):
        record(cascade, [], metric, tmp_path / "a.jsonl")
    with pytest.raises(CopeInputError, match="stage 3"):
        record(make_cascade(stages=(1, 2))[0], devset(), metric, tmp_path / "a.jsonl")
    with pytest.raises(CopeInputError, match="n=9 is more samples than were recorded"):
        replay(records, n=9)
    for bad in (1.5, -0.1, "high"):
        with pytest.raises(CopeInputError, match=r"tau1 must be a number in \[0, 1\]"):
            replay(records, tau1=bad)
    with pytest.raises(CopeInputError, match="tau2"):
        replay(records, tau2=2)
    with pytest.raises(ValueError):  # CopeInputError is a ValueError
        replay(records, n=0)
    with pytest.raises(CopeInputError, match="within_points_of_large"):
        within_points_of_large(-1)
    with pytest.raises(CopeInputError, match="stages"):
        replay(records, stages=(4,))


def test_a_raising_metric_stops_recording_after_one_example(tmp_path):
    def broken(example, pred):
        return pred.answer.strip() == example.answer  # None when a sample abstains

    cascade, _, large = make_cascade()
    questions = ["q-abstains", "q-unanimous", "q-scattered"]
    with pytest.raises(CopeInputError, match=r"metric .*broken.* raised on example '[0-9a-f]{16}'.*AttributeError"):
        record(cascade, devset(questions), broken, tmp_path / "a.jsonl", concurrency=2, progress=False)
    assert len(large.by_role("execute")) == 1  # only the first example's calls were made
    assert Records.load(tmp_path / "a.jsonl").items == []


def test_only_replayable_tasks_are_recorded_for_replay(recorded, tmp_path):
    from cope_dspy.code import Code

    cascade = Cascade(small=make_cascade()[1].lm, large=make_cascade()[2].lm, task=Math())
    cascade.task.consensus = lambda: object()  # a consensus replay does not know (as Text's perplexity vote)
    with pytest.raises(CopeInputError, match="which replay does not reproduce yet"):
        record(cascade, devset(["q-unanimous"]), metric, tmp_path / "a.jsonl", progress=False)
    with pytest.raises(CopeInputError, match="answer equality"):  # math records, a code task's equality
        replay(recorded[0], task=Code())


# ------------------------------------------------------------------------------ stage 3 without plans


def _plans_hurt_cascade(**kwargs):
    """The large model answers right alone ("7") and wrong when handed its guideline ("5")."""
    def small_answers(call):
        stage1, stage2, _ = SCRIPT[call.question]
        return (stage2 if "Guideline:" in call.plans else stage1)[call.rollout_id]

    small = math_model("scripted/small", small_answers)
    large = math_model("scripted/large", lambda call: "5" if "Guideline:" in call.plans
                       else "1/2" if "q-equivalent" in call.question else "7")
    return Cascade(small=small.lm, large=large.lm, task=Math(), prices=PRICES, **kwargs), small, large


@pytest.fixture(scope="module")
def recorded_with_baselines(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "dev.jsonl"
    return record(_plans_hurt_cascade()[0], devset(), metric, path, progress=False, baselines=True)


SETTINGS = [(0.75, 0.5, 8, (1, 2, 3), False), (1.0, 1.0, 8, (1, 2, 3), False), (0.75, 0.5, 8, (1, 3), False),
            (0.75, 0.5, 8, (1, 2, 3), True), (0.5, 0.75, 6, (2, 3), True), (1.0, 0.5, 4, (1, 2), True)]


@pytest.mark.parametrize("switch", ["stage3_plans", "stage1_plans"])
@pytest.mark.parametrize("tau1, tau2, n, stages, early_stop", SETTINGS)
def test_a_stage_without_plans_replays_the_live_cascade(recorded_with_baselines, switch, tau1, tau2, n, stages,
                                                        early_stop):
    """Stage 3 alone (the large-alone baseline's call) and stage 1 without goals (the unplanned small samples'
    calls) replay live runs exactly from records made with baselines."""
    cascade, small, large = _plans_hurt_cascade(tau1=tau1, tau2=tau2, n=n, stages=stages, early_stop=early_stop,
                                                **{switch: False})
    live = [cascade(**ex.inputs()) for ex in devset()]
    result = replay(recorded_with_baselines, tau1, tau2, n, stages, early_stop, **{switch: False})
    assert [(r["answer"], r["stage"]) for r in result.per_example] == [(p.answer, p.stage) for p in live]
    assert [r["usd"] for r in result.per_example] == pytest.approx([p.cost.usd for p in live], rel=1e-9)
    assert result.calls == lm_calls(small, large)
    assert result.accuracy == pytest.approx(sum(metric(ex, p) for ex, p in zip(devset(), live, strict=True)) / len(live))
    assert result.params[switch] is False


def test_calibration_chooses_stage3_alone_when_the_plans_hurt(recorded_with_baselines, recorded):
    records = recorded_with_baselines
    planned = calibrate(records, sampler="grid", storage="memory")
    either = calibrate(records, sampler="grid", storage="memory", stage3_plans=(True, False))
    # large alone is read from its recorded baseline (right on all 7), not from stage 3 (handed the guideline)
    assert either.large_alone["accuracy"] == 1.0 and "alone" in either.large_alone["source"]
    assert either.params["stage3_plans"] is False and either.constraint_met
    assert either.result.accuracy == 1.0 and not planned.constraint_met
    cascade, _, _ = _plans_hurt_cascade()
    either.apply(cascade)
    assert cascade.stage3_plans is False
    # records without the large-alone baseline cannot replay it, and say how to fix that
    with pytest.raises(CopeInputError, match="baselines=True"):
        calibrate(recorded[0], sampler="grid", storage="memory", stage3_plans=(True, False))
    with pytest.raises(CopeInputError, match="has none|baseline"):
        replay(recorded[0], stage3_plans=False)
    with pytest.raises(CopeInputError, match="stage3_plans must be"):
        calibrate(records, storage="memory", stage3_plans=())


def _recorded_without(switch: str, path: Path) -> Records:
    """Records of a cascade made with `switch=False` (no baselines needed), checked to replay its live runs."""
    cascade, _, _ = _plans_hurt_cascade(**{switch: False})
    records = record(cascade, devset(), metric, path, progress=False)
    assert records.policies["default"][switch] is False
    live = [cascade(**ex.inputs()) for ex in devset()]
    result = replay(records, early_stop=True, **{switch: False})
    assert [(r["answer"], r["stage"]) for r in result.per_example] == [(p.answer, p.stage) for p in live]
    return records


def test_records_made_without_goals_at_stage1_replay_as_such(tmp_path, recorded):
    records = _recorded_without("stage1_plans", tmp_path / "nogoals.jsonl")
    assert replay(records).params["stage1_plans"] is False  # by default the records' own stage 1
    with pytest.raises(CopeInputError, match="recorded without goals"):
        replay(records, stage1_plans=True)  # the paper's stage 1 was never recorded here
    assert replay(records, stages=(2, 3), stage1_plans=True).params["stage1_plans"] is True  # no stage 1 read
    cal = calibrate(records, sampler="grid", storage="memory")  # the records' own stage 1, without goals
    assert cal.params["stage1_plans"] is False
    with pytest.raises(CopeInputError, match="no goals"):
        calibrate(records, storage="memory", stage1_plans=(True, False))
    with pytest.raises(CopeInputError, match="stage1_plans=False"):  # one file, one policy per variant
        record(_plans_hurt_cascade()[0], devset(), metric, tmp_path / "nogoals.jsonl", progress=False)
    with pytest.raises(CopeInputError, match="baselines=True"):  # records without unplanned samples
        replay(recorded[0], stage1_plans=False)


def test_calibration_chooses_stage1_without_goals_when_the_goals_mislead(tmp_path):
    """The small model answers right alone and wrong when handed its own goal: the study that may choose
    stage 1 without goals settles every question there, with the small model only."""
    def small_answers(call):
        if "Guideline:" in call.plans:
            return "7"
        return "3" if "Goal:" in call.plans else "7"

    def misled_cascade(**kwargs):
        small = math_model("scripted/small", small_answers)
        large = math_model("scripted/large", lambda call: "7")
        return Cascade(small=small.lm, large=large.lm, task=Math(), prices=PRICES, **kwargs)

    questions = ["q-a", "q-b", "q-c", "q-d", "q-e"]
    records = record(misled_cascade(), devset(questions), metric, tmp_path / "misled.jsonl", progress=False,
                     baselines=True)
    goals = calibrate(records, sampler="grid", storage="memory")
    either = calibrate(records, sampler="grid", storage="memory", stage1_plans=(True, False))
    assert goals.params["stage1_plans"] is True and goals.result.usd_per_1k > 0
    assert either.params["stage1_plans"] is False and either.constraint_met
    assert either.result.accuracy == 1.0 and either.result.exits[1] == 5
    assert either.result.usd_per_1k < goals.result.usd_per_1k  # the small model only: no large call
    cascade = misled_cascade()
    either.apply(cascade)
    assert cascade.stage1_plans is False
    assert "stage1_plans=False" in either.summary()
    with pytest.raises(CopeInputError, match="stage1_plans must be"):
        calibrate(records, storage="memory", stage1_plans=())


@pytest.mark.parametrize("flag, key", [("--stage3", "stage3_plans"), ("--stage1", "stage1_plans")])
def test_cli_lets_the_study_choose_a_plans_switch(recorded_with_baselines, recorded, tmp_path, capsys, flag, key):
    # the plans hurt the large model; the goals cost small calls and change no small answer: both go
    out = tmp_path / "cal.json"
    assert main(["run", "--records", str(recorded_with_baselines.path), "--sampler", "grid", "--storage", "memory",
                 flag, "choose", "--json", str(out)]) == 0
    assert f"{key}=False" in capsys.readouterr().out
    assert json.loads(out.read_text())["params"][key] is False
    assert main(["run", "--records", str(recorded[0].path), "--storage", "memory", flag, "alone"]) == 2
    assert "baselines=True" in capsys.readouterr().err


def test_records_made_without_plans_at_stage3_replay_as_such(tmp_path):
    records = _recorded_without("stage3_plans", tmp_path / "alone.jsonl")
    with pytest.raises(CopeInputError, match="recorded without plans"):
        replay(records)  # the paper's stage 3 was never recorded here
    with pytest.raises(CopeInputError, match="stage3_plans=False"):
        calibrate(records, storage="memory")
    cal = calibrate(records, sampler="grid", storage="memory", stage3_plans=(False,))
    assert cal.params["stage3_plans"] is False and "alone" in cal.large_alone["source"]
    with pytest.raises(CopeInputError, match="stage3_plans=False"):  # one file, one policy per variant
        record(_plans_hurt_cascade()[0], devset(), metric, tmp_path / "alone.jsonl", progress=False)


def test_average_accuracy_is_the_mean_of_the_non_decreasing_upper_hull():
    from cope_dspy.calibrate import Calibration

    trials = [{"usd_per_1k": c, "accuracy": a} for c, a in [(0.0, 0.4), (1.0, 0.45), (2.0, 0.7), (4.0, 0.6), (6.0, 0.9),
                                                            (2.0, 0.5)]]
    cal = Calibration(params={}, result=None, pareto=[], default=None, constraint="", constraint_met=True,
                      large_alone={"accuracy": 0.8, "usd_per_1k": 10.0}, trials=trials)
    # hull (0, .4) - (2, .7) - (6, .9), flat at .9 to large alone's $10 (its .8 lies under it)
    assert cal.average_accuracy() == {"accuracy": pytest.approx((1.1 + 3.2 + 3.6) / 10), "usd_per_1k_from": 0.0,
                                      "usd_per_1k_to": 10.0}
    assert cal.average_accuracy(2.0)["accuracy"] == pytest.approx(0.55)
    assert cal.average_accuracy(0.0)["accuracy"] == pytest.approx(0.4)


def test_a_calibration_reports_its_curve_as_one_number(recorded):
    cal = calibrate(recorded[0], storage="memory", sampler="grid")
    auc = cal.average_accuracy()
    assert auc["usd_per_1k_to"] == cal.large_alone["usd_per_1k"]
    best = max([t["accuracy"] for t in cal.trials] + [cal.large_alone["accuracy"]])
    assert min(t["accuracy"] for t in cal.trials) <= auc["accuracy"] <= best
    assert "the curve's mean accuracy" in cal.summary() and cal.to_dict()["average_accuracy"] == auc
