"""`evals.versus`: the cases where COPE and the MoT-style cascade decide at different stages, and who is right."""

import json

import pytest
from fakes import math_record

from evals.versus import CODE_CASES, MATH_CASES, by_stage, main, markdown, part_ways, without_goals


def row(stage, correct):
    return {"stage": stage, "correct": correct}


def test_each_problem_falls_in_the_case_of_both_deciding_stages_and_counts_who_alone_is_right():
    cope = [row(1, False), row(1, True), row(3, True), row(2, True), row(3, False)]
    mot = [row(1, True), row(1, True), row(2, False), row(2, False), row(1, True)]
    cases = part_ways(cope, mot)
    assert cases[(1, 1)] == {"problems": 2, "only_cope": 0, "only_mot": 1}
    assert cases[(3, 2)] == {"problems": 1, "only_cope": 1, "only_mot": 0}
    assert cases[(2, 2)] == {"problems": 1, "only_cope": 1, "only_mot": 0}
    assert cases[(3, 1)] == {"problems": 1, "only_cope": 0, "only_mot": 1}
    assert cases[(1, 2)]["problems"] == cases[(2, 1)]["problems"] == 0
    md = markdown(cases, "scripted")
    assert "(5 problems): only COPE right on 2, only MoT on 2." in md
    assert "against large alone (3, 2) | 1 | 1 | 0 |" in md


def test_each_method_is_counted_by_the_stage_that_decided_and_said_per_stage():
    cope = [row(1, False), row(1, True), row(3, True), row(2, True), row(3, False)]
    mot = [row(1, True), row(1, True), row(2, False), row(2, False), row(1, True)]
    stages = {"COPE": by_stage(cope), "MoT": by_stage(mot)}
    assert stages["COPE"] == {1: {"problems": 2, "right": 1}, 2: {"problems": 1, "right": 1},
                              3: {"problems": 2, "right": 1}}
    assert stages["MoT"] == {1: {"problems": 3, "right": 3}, 2: {"problems": 2, "right": 0}}
    md = markdown(part_ways(cope, mot), "scripted", CODE_CASES, stages)
    assert "COPE by the stage that decided: stage 1 right on 1 of 2; stage 2 right on 1 of 1; stage 3 right on 1 of 2." in md
    assert "MoT by the stage that decided: stage 1 right on 3 of 3; stage 2 right on 0 of 2." in md
    assert "stage 1 right" not in markdown(part_ways(cope, mot), "scripted")  # the lines only when asked


def test_rows_of_different_problems_are_refused():
    with pytest.raises(ValueError, match="COPE has 1 rows and MoT 2"):
        part_ways([row(1, True)], [row(1, True), row(2, False)])


def test_a_folder_of_another_benchmark_is_refused_with_what_to_give(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "mtbench", "n": 4}))
    with pytest.raises(SystemExit, match="is a mtbench folder; give a code .* or math"):
        main([str(tmp_path)])


def test_a_folder_without_run_json_is_refused_with_what_to_give(tmp_path):
    with pytest.raises(SystemExit, match="has no run.json; give a folder"):
        main([str(tmp_path)])


def test_a_math_folder_is_read_at_the_papers_thresholds_against_mot_vote(tmp_path, capsys):
    scattered = ["1", "2", "3", "4"]
    records = [
        math_record("both-small", ["7"] * 4, scattered, "7", ["7", "7", "7", "1"], "7"),  # (1, 1), both right
        math_record("planned-agree-wrong", ["3"] * 4, scattered, "7", scattered, "7"),  # (1, 2), only MoT
        math_record("guided-right", scattered, ["7", "7", "5", "6"], "9", scattered, "8"),  # (2, 2), only COPE
        math_record("planned-large-wrong", scattered, scattered, "9", scattered, "7"),  # (3, 2), only MoT
    ]
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "n": 4}))
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(4 problems): only COPE right on 1, only MoT on 2." in out
    assert "agree too little and it asks the large model (1, 2) | 1 | 0 | 1 |" in out
    assert "written with the large guideline (2, 2) | 1 | 1 | 0 |" in out
    assert "against large alone (3, 2) | 1 | 0 | 1 |" in out
    assert "(COPE's samples planned, MoT's not) (1, 1) | 1 | 0 | 0 |" in out


def test_a_folder_recorded_without_goals_is_not_described_as_planned_at_stage_1(tmp_path, capsys):
    for texts in (CODE_CASES, MATH_CASES):
        said = without_goals(texts)
        assert said.keys() == texts.keys() and not any("planned" in said[k] for k in ((1, 1), (1, 2), (2, 1), (3, 1)))
        assert said[(3, 2)] == texts[(3, 2)]  # stage 3 still has the guideline
    records = [math_record("both-small", ["7"] * 4, ["1", "2", "3", "4"], "7", ["7", "7", "7", "1"], "7")]
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "n": 4, "stage1_plans": False}))
    (tmp_path / "records.jsonl").write_text(json.dumps(records[0]) + "\n")
    assert main([str(tmp_path)]) == 0
    assert "(no goals in either: two draws of the same call) (1, 1) | 1 | 0 | 0 |" in capsys.readouterr().out
