"""The one record format: old files of both kinds load, a torn last line is recorded again, a torn line before
it is an error naming the file and line, and benchmark records (baselines included) feed replay directly."""

import json

import dspy
import pytest
from fakes import math_model

from cope_dspy import Cascade, CopeInputError, Math, Prices
from cope_dspy.records import FORMAT, Records, record, upgrade
from cope_dspy.replay import replay
from evals.benchmarks import get, record_all

PRICES = Prices({"scripted/small": (0.0, 0.0), "scripted/large": (1.0, 2.0)})


def cascade(n=4):
    def small(call):  # p0 agreed on at stage 1; p1 split at stage 1, agreed on with the guideline; p2 escalates
        i = int(call.question.split()[2])
        if i == 0:
            return "0"
        if i == 1:
            return "2" if "Guideline" in call.plans else str(call.rollout_id or 0)
        return str(100 + (call.rollout_id or 0))

    small_lm = math_model("scripted/small", small)
    large = math_model("scripted/large", lambda call: str(2 * int(call.question.split()[2])))
    return Cascade(small=small_lm.lm, large=large.lm, task=Math(), n=n, prices=PRICES), large


def examples(k):
    return [dspy.Example(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
            for i in range(k)]


def test_benchmark_records_are_the_calibration_format_and_feed_replay_directly(tmp_path):
    c, _ = cascade()
    path = tmp_path / "records.jsonl"
    by_id = record_all(c, examples(3), get("gsm8k").correct, path, progress=False)
    records = Records.load(path)  # no converter, no task= (the records name theirs)
    assert records.task == "math" and records.n == 4 and set(by_id) == {"p0", "p1", "p2"}
    for item in records:
        assert item["format"] == FORMAT and item["policy"]["stages"] == [1, 2, 3]
        assert set(item["baselines"]) == {"small_greedy", "small_samples", "large_greedy"}
    rows = {r["id"]: r for r in replay(records, 0.75, 0.5, early_stop=False).per_example}
    assert all((rows[i["id"]]["answer"], rows[i["id"]]["stage"]) == (i["answer"], i["stage"]) for i in records)
    assert [rows[p]["stage"] for p in ("p0", "p1", "p2")] == [1, 2, 3]


def test_a_torn_last_line_is_dropped_and_recorded_again(tmp_path):
    c, large = cascade(n=2)
    path = tmp_path / "records.jsonl"
    record_all(c, examples(3), get("gsm8k").correct, path, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    torn = json.loads(lines[2])["id"]
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    assert sorted(Records.load(path).by_id()) == sorted({"p0", "p1", "p2"} - {torn})
    before = len(large.calls)
    record_all(c, examples(3), get("gsm8k").correct, path, progress=False)
    assert len(large.calls) - before == 3  # only the torn one was drawn again: guideline, final, large alone
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids[2] == torn and sorted(ids) == ["p0", "p1", "p2"]


def test_a_torn_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    c, _ = cascade(n=2)
    path = tmp_path / "dev.jsonl"
    record(c, examples(2), lambda ex, pred: pred.answer == ex.answer, path, progress=False)
    first, second = path.read_text().splitlines(keepends=True)
    path.write_text(first[:40] + "\n" + second)
    with pytest.raises(CopeInputError, match=r"dev\.jsonl, line 1: not valid JSON"):
        Records.load(path)
    with pytest.raises(CopeInputError, match="line 1"):  # recording refuses to append after it too
        record(c, examples(2), lambda ex, pred: pred.answer == ex.answer, path, progress=False)


def _vote(stage, answers, usd=0.0):
    return {"kind": "vote", "stage": stage, "tau": 0.5, "candidates": [
        {"index": i, "answer": a, "solution": a, "usage": {"calls": 1, "usd": usd}, "correct": a == "7"}
        for i, a in enumerate(answers)]}


TRACE = [_vote(1, ["7", "7"]), {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "usd": 1.0}},
         _vote(2, ["7", "1"]), {"kind": "final", "stage": 3, "candidates": [
             {"index": 0, "answer": "7", "solution": "7", "usage": {"calls": 1, "usd": 2.0}, "correct": True}]}]


def test_old_record_files_of_both_kinds_load(tmp_path):
    # a calibration file as `record` wrote it before benchmarks shared the format
    calibration = {"format": FORMAT, "id": "e0", "variant": "default", "inputs": {"question": "q"}, "answer": "7",
                   "stage": 1, "trace": TRACE, "policy": {"n": 2, "stages": [1, 2, 3], "task": "math",
                                                          "variant": "default"}}
    (tmp_path / "dev.jsonl").write_text(json.dumps(calibration) + "\n")
    assert Records.load(tmp_path / "dev.jsonl").items == [calibration]
    # a benchmark file as the harness wrote it before: no format, the trace under "cope", the baselines beside it
    bench = {"id": "gsm8k-0", "cope": {"trace": TRACE, "seconds": 3.5}, "cut_off": "inferred",
             "baselines": {"small_greedy": {"answer": "7"}, "small_samples": [], "large_greedy": {"answer": "7"}}}
    (tmp_path / "records.jsonl").write_text(json.dumps(bench) + "\n")
    (item,) = Records.load(tmp_path / "records.jsonl", task="math")
    assert item == upgrade(bench, task="math")
    assert (item["format"], item["id"], item["trace"], item["seconds"]) == (FORMAT, "gsm8k-0", TRACE, 3.5)
    assert item["policy"] == {"n": 2, "stages": [1, 2, 3], "task": "math", "variant": "default"}
    assert (item["cut_off"], item["baselines"]) == (bench["cut_off"], bench["baselines"])
    result = replay(Records.load(tmp_path / "records.jsonl", task="math"), 0.75, 0.5)
    assert (result.exits, result.usd_total) == ({1: 1, 2: 0, 3: 0}, 0.0)
    # a folder recorded before: the benchmark in its run.json names the task
    from evals.benchmarks import folder_records

    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k"}))
    assert folder_records(tmp_path).task == "math"
    (tmp_path / "other.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(CopeInputError, match="other.jsonl, record 1: not a cope-dspy record"):
        Records.load(tmp_path / "other.jsonl")
