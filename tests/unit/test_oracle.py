"""evals.oracle on synthetic records: each cascade replayed with a perfect confidence signal."""

import json

import pytest

from cope_dspy.records import upgrade
from evals.oracle import complete, main, oracle


def cand(correct, usd=0.0):
    return {"answer": "1", "correct": correct, "usage": {"usd": usd}}


def record(pid, *, greedy=False, unplanned=(False,), stage1=(False,), stage2=(False,), final=False, large=False,
           guideline_usd=0.2, final_usd=1.0, large_usd=1.0):
    return upgrade({
        "id": pid,
        "cope": {"seconds": 1.0, "trace": [
            {"kind": "vote", "stage": 1, "candidates": [cand(c) for c in stage1]},
            {"kind": "guideline", "stage": 2, "usage": {"usd": guideline_usd}},
            {"kind": "vote", "stage": 2, "candidates": [cand(c) for c in stage2]},
            {"kind": "final", "stage": 3, "candidates": [cand(final, final_usd)]},
        ]},
        "baselines": {
            "small_greedy": cand(greedy),
            "small_samples": [cand(c) for c in unplanned],
            "large_greedy": cand(large, large_usd),
        },
    })


RECORDS = [
    record("p0", greedy=True, unplanned=(False, True), stage1=(True,), large=True),  # every small stage has it
    record("p1", unplanned=(True,), stage2=(True,), final=True),  # only COPE's guided samples and unplanned ones
    record("p2", final=True, large=False),  # no small sample right: the planned answer is, large alone is not
    record("p3", large=True, final=False),  # no small sample right: large alone is, the planned answer is not
]


def test_each_row_settles_a_problem_when_one_of_its_samples_is_right_and_pays_the_next_stage_otherwise():
    result = oracle(RECORDS)
    rows = result["rows"]
    assert result["problems"] == 4 and result["large_alone"] == {"correct": 2, "usd": 4.0}
    greedy = rows["small greedy, then large alone"]
    assert greedy["correct"] == 2 and greedy["usd"] == 3.0  # p0 free; p1 and p2 wrong at large, p3 right
    mot = rows["MoT-style with an oracle (n unplanned small samples, then large alone)"]
    assert mot["correct"] == 3 and mot["usd"] == 2.0 and mot["cost_vs_large"] == pytest.approx(-0.5)
    cope = rows["COPE with an oracle (stage 1, stage 2, then the planned large answer)"]
    # p0 at stage 1 (free), p1 at stage 2 (the guideline), p2 and p3 at stage 3 (guideline + planned answer)
    assert cope["correct"] == 3 and cope["usd"] == pytest.approx(0.2 + 2 * 1.2)
    assert cope["settled"] == [1, 1, 2] and mot["settled"] == [2, 0, 2]
    cope12 = rows["COPE stages 1-2 with an oracle, then large alone"]
    assert cope12["correct"] == 3 and cope12["usd"] == pytest.approx(0.2 + 2 * 1.2)  # p3 right instead of p2


def test_a_record_without_every_stage_drawn_is_left_out_and_counted(tmp_path):
    partial = record("p4")
    partial["trace"] = partial["trace"][:1]
    assert not complete(partial) and complete(RECORDS[0])
    folder = tmp_path / "gsm8k-run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "max_tokens": 320}))
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*RECORDS, partial]))
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "oracle.json").read_text())["gsm8k-run"]
    assert saved["problems"] == 4 and saved["skipped_incomplete"] == 1
    assert "| large alone | 2 (50.0%) | +0% | |" in (tmp_path / "out" / "oracle.md").read_text()


def test_a_folder_without_run_json_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="has no run.json: give a folder"):
        main([str(tmp_path)])
