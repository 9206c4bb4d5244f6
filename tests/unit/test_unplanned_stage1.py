"""`evals.unplanned_stage1`: COPE replayed with MoT's unplanned samples as its stage 1 (an estimate)."""

import json

import pytest
from fakes import math_record

from cope_dspy.errors import CopeInputError
from cope_dspy.replay import unplanned_stage1
from evals.unplanned_stage1 import main

SCATTERED = ["1", "2", "3", "4"]


def test_stage_one_samples_are_swapped_for_the_unplanned_ones_on_copies():
    record = math_record("p", ["3"] * 4, SCATTERED, "7", ["7", "7", "7", "1"], "7")
    (swapped,) = unplanned_stage1([record])
    stage1 = next(e for e in swapped["trace"] if e["kind"] == "vote" and e["stage"] == 1)
    assert [c["answer"] for c in stage1["candidates"]] == ["7", "7", "7", "1"]
    assert [c["answer"] for c in record["trace"][0]["candidates"]] == ["3"] * 4  # the original is untouched
    assert swapped["trace"][2] == record["trace"][2]  # stage 2 and 3 as recorded


def test_a_record_without_unplanned_samples_is_refused():
    record = math_record("p", ["3"] * 4, SCATTERED, "7", SCATTERED, "7")
    record["baselines"]["small_samples"] = []
    with pytest.raises(CopeInputError, match="has no unplanned small samples"):
        unplanned_stage1([record])


def test_a_math_folder_is_replayed_with_and_without_goals_at_stage_one(tmp_path):
    patterns = [
        # the goals make the small samples agree on a wrong answer; unplanned they agree on the right one
        (["3"] * 4, SCATTERED, "9", ["7", "7", "7", "1"], "7"),
        # neither stage 1 agrees; the guideline's samples do, on the right answer
        (SCATTERED, ["7", "7", "5", "6"], "9", SCATTERED, "8"),
        # nothing small agrees: stage 3, right with the plans, wrong alone
        (SCATTERED, SCATTERED, "7", SCATTERED, "8"),
    ]
    records = [math_record(f"p{i}", *patterns[i % 3]) for i in range(12)]  # 4 of each: enough for 5 folds
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "n": 4}))
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "unplanned_stage1.json").read_text())[tmp_path.name]
    methods = result["methods"]
    assert methods["COPE (the paper's)"]["correct"] == 8 and methods["COPE (the paper's)"]["exits"] == [4, 4, 4]
    unplanned = methods["COPE, stage 1 without goals (estimate)"]
    assert unplanned["correct"] == 12 and unplanned["exits"] == [4, 4, 4]
    assert methods["COPE, stage 1 without goals, stage 3 alone (estimate)"]["correct"] == 8
    assert methods["large alone"]["correct"] == 4
    assert len(result["stage1_chosen_per_fold"]) == 5 and set(result["stage1_chosen_per_fold"]) <= {"goals", "alone"}
    assert "COPE calibrated, stage 1 chosen too (cross-fitted; estimate)" in methods
    assert "Stage 1 per fold" in (tmp_path / "out" / "unplanned_stage1.md").read_text()


def test_a_folder_recorded_without_goals_keeps_that_setting(tmp_path):
    from evals.folders import check_same_settings

    run = {"benchmark": "gsm8k", "split": "test", "small": "s", "large": "l", "n": 4, "max_tokens": 768,
           "role_max_tokens": {}, "acceptance": None, "user_tests": None, "formats": {}, "wordings": {}}
    (tmp_path / "run.json").write_text(json.dumps(run))  # recorded before the setting existed: goals
    (tmp_path / "records.jsonl").write_text(json.dumps(math_record("p0", *([SCATTERED] * 2), "7", SCATTERED, "7")))
    check_same_settings(tmp_path, {**run, "stage1_plans": True})
    with pytest.raises(SystemExit, match="stage1_plans=True.*stage1_plans=False"):
        check_same_settings(tmp_path, {**run, "stage1_plans": False})


def test_the_table_of_records_made_without_goals_replays_their_own_stage1():
    from cope_dspy.records import Records
    from evals.report import math_report

    records = []
    for i in range(10):
        r = math_record(f"p{i}", ["7"] * 4 if i % 2 else SCATTERED, SCATTERED, "9", SCATTERED, "7")
        r["policy"]["stage1_plans"] = False  # recorded by Cascade(stage1_plans=False): stage 1 had no goals
        records.append(r)
    rows = {row["method"]: row for row in math_report(Records(records))}
    # the unanimous problems exit at stage 1; the paper's stage 1 (goals) was never recorded, and is not asked for
    assert rows["COPE (0.75 / 0.5)"]["exits"] == {1: 5, 2: 0, 3: 5}
    assert rows["COPE (0.75 / 0.5)"]["accuracy"] == 0.5
    assert "exact: stage 1 had no goals" in rows["COPE skip stage 1"]["note"]
