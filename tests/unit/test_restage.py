"""`cope eval ... --stage1-from BASE` (evals/restage.py): stages 2 and 3 recorded anew on BASE's stage 1, on
scripted models."""

import json

import dspy
import pytest
from fakes import math_model

from cope_dspy import Cascade, Math, Prices
from evals import restage
from evals.benchmarks import folder_records, get, record_all
from evals.report import write_report

SETTINGS = {"benchmark": "gsm8k", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": 4,
            "max_tokens": 768, "role_max_tokens": {}, "acceptance": None, "user_tests": None, "formats": {},
            "wordings": {}, "stage1_plans": False}
PRICES = Prices({"scripted/large": (1.0, 2.0), "scripted/small": (0.0, 0.0)})


def examples():
    return [dspy.Example(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
            for i in range(2)]


def small_answer(call):
    """p0: right and agreed everywhere (stage 1 accepts). p1: stage 1's samples all differ; stage 2's agree on
    the right answer only under the new guideline."""
    i = int(call.question.split()[2])
    if i == 0:
        return "0"
    if "New hint" in call.plans:
        return "2"
    return str(100 + (call.rollout_id or 0) + (50 if call.plans else 0))


def cascades(small, large, **kw):
    full = Cascade(small=small.lm, large=large.lm, task=Math(), n=4, prices=PRICES, stage1_plans=False)
    later = Cascade(small=small.lm, large=large.lm, task=Math(), n=4, prices=PRICES, stage1_plans=False,
                    stages=(2, 3))
    return full, later


def base_folder(tmp_path, **settings):
    base = tmp_path / "base"
    base.mkdir()
    small = math_model("scripted/small", small_answer)
    large = math_model("scripted/large", lambda call: "7" if "1 + 1" in call.question else
                       str(2 * int(call.question.split()[2])))  # the base's stage 3 gets p1 wrong
    full, _ = cascades(small, large)
    record_all(full, examples(), get("gsm8k").correct, base / "records.jsonl", progress=False)
    (base / "run.json").write_text(json.dumps({**SETTINGS, "command": "test", **settings}))
    return base


def test_new_stages_are_recorded_on_the_base_folders_stage_1_and_baselines(tmp_path):
    base = base_folder(tmp_path)
    lines = restage.base_records(base, {**SETTINGS, "wordings": {"guideline_planner": "math-hint"}})
    small = math_model("scripted/small", small_answer)
    large = math_model("scripted/large", lambda call: str(2 * int(call.question.split()[2])), guideline="New hint.")
    full, later = cascades(small, large)
    out = tmp_path / "new"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({**SETTINGS, "wordings": {"guideline_planner": "math-hint"},
                                              "stage1_from": str(base), "command": "test"}))
    missing = restage.record_on(lines, str(base), full, later, [*examples(), dspy.Example(
        id="p9", question="What is 9 + 9?", answer="18").with_inputs("question")], get("gsm8k").correct,
        out / "records.jsonl", progress=False)
    assert missing == ["p9"]  # not in the base folder: not recorded
    # only stages 2 and 3 were asked: 4 stage-2 samples and a guideline and a final answer per problem
    assert [c.role for c in small.calls] == ["execute"] * 8 and all(c.plans for c in small.calls)
    assert sorted(c.role for c in large.calls) == ["execute", "execute", "guideline", "guideline"]
    new = folder_records(out).by_id()
    for pid in ("p0", "p1"):
        assert new[pid]["trace"][0] == lines[pid]["trace"][0]  # stage 1 is the base folder's
        assert new[pid]["baselines"] == lines[pid]["baselines"]
        assert new[pid]["policy"] == lines[pid]["policy"] and new[pid]["stage1_from"] == str(base)
        assert [e["kind"] for e in new[pid]["trace"]] == ["vote", "guideline", "vote", "final"]
        assert new[pid]["trace"][1]["guideline"] == "New hint."
    assert (new["p0"]["stage"], new["p0"]["answer"]) == (1, "0")  # the base stage 1 accepted
    assert (new["p1"]["stage"], new["p1"]["answer"]) == (2, "2")  # new stage 2 agrees on the right answer
    assert lines["p1"]["stage"] == 3  # where the base's own stages 2-3 took it
    calls = len(small.calls)
    restage.record_on(lines, str(base), full, later, examples(), get("gsm8k").correct, out / "records.jsonl",
                      progress=False)
    assert len(small.calls) == calls  # resumed: nothing new to record
    md = write_report(out)
    assert "recorded on" in md and str(base) in md
    summary = json.loads((out / "summary.json").read_text())
    assert {m["method"]: m for m in summary["methods"]}["COPE (0.75 / 0.5)"]["accuracy"] == 1.0
    # paired: p1 is right only in the new folder (the base ended at its stage 3, the new one at stage 2)
    result = restage.paired(out)
    assert (result["problems"], result["base"]["right"], result["new"]["right"]) == (2, 1, 2)
    assert (result["only_base_right"], result["only_new_right"]) == (0, 1)
    assert result["only_by_stages"] == {"base": {}, "new": {"3/2": 1}}
    assert result["base"]["exits"] == {1: 1, 2: 0, 3: 1} and result["new"]["exits"] == {1: 1, 2: 1, 3: 0}
    assert result["new"]["guideline_tokens_mean"] == result["base"]["guideline_tokens_mean"] == 20  # one per record
    assert result["new"]["usd_per_1k"] < result["base"]["usd_per_1k"]  # no stage-3 answer paid
    assert "only new right on 1 (1 at stages 3/2)" in restage.markdown(result)


def test_sign_test_is_exact_and_two_sided():
    assert restage.sign_test(0, 5) == pytest.approx(2 / 32)
    assert restage.sign_test(5, 0) == restage.sign_test(0, 5)
    assert restage.sign_test(3, 3) == 1.0 and restage.sign_test(0, 0) == 1.0
    assert restage.sign_test(1, 9) == pytest.approx(2 * 11 / 1024)


def test_a_base_folder_that_cannot_be_paired_is_refused_and_named(tmp_path):
    with pytest.raises(SystemExit, match="not a result folder"):
        restage.base_records(tmp_path / "nowhere", SETTINGS)
    goals = base_folder(tmp_path, stage1_plans=True)
    with pytest.raises(SystemExit, match="follow the goal behind stage 1's ballot"):
        restage.base_records(goals, {**SETTINGS, "stage1_plans": True})
    (goals / "run.json").write_text(json.dumps({**SETTINGS, "command": "the base command"}))
    # the guideline planner's settings may differ, any other role's may not
    assert sorted(restage.base_records(goals, {**SETTINGS, "formats": {"guideline_planner": "paragraph"},
                                               "role_max_tokens": {"guideline_planner": 64}})) == ["p0", "p1"]
    with pytest.raises(SystemExit, match=r"wordings: \{\} there, \{'small_executor': 'qwen-math'\} here.*the base "
                                         "command"):
        restage.base_records(goals, {**SETTINGS, "wordings": {"small_executor": "qwen-math"}})
    with pytest.raises(SystemExit, match="n: 4 there, 8 here"):
        restage.base_records(goals, {**SETTINGS, "n": 8})
    (goals / "run.json").write_text(json.dumps({**SETTINGS, "stage1_from": "elsewhere", "command": "x"}))
    with pytest.raises(SystemExit, match="itself elsewhere's"):
        restage.base_records(goals, SETTINGS)


def test_the_command_line_takes_another_stage_1_only_without_goals(tmp_path):
    from evals.run import main

    with pytest.raises(SystemExit, match="--stage1-from needs --stage1 alone"):
        main(["gsm8k", "--limit", "1", "--stage1-from", str(tmp_path), "--out", str(tmp_path / "x")])
