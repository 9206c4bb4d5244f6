"""`evals.versus`: the cases where COPE and the MoT-style cascade decide at different stages, and who is right."""

import json

import pytest

from evals.versus import main, markdown, part_ways


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


def test_rows_of_different_problems_are_refused():
    with pytest.raises(ValueError, match="COPE has 1 rows and MoT 2"):
        part_ways([row(1, True)], [row(1, True), row(2, False)])


def test_a_math_folder_is_refused_with_what_to_give(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "n": 4}))
    with pytest.raises(SystemExit, match="is a gsm8k folder; give a code"):
        main([str(tmp_path)])
