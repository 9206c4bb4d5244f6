"""Re-reading recorded code replies with the current parser: no model call, costs kept, stages re-decided."""

import json

import dspy

from cope_dspy import Code
from cope_dspy.records import CUT_OFF_CHECKED, upgrade
from evals.benchmarks import get
from evals.rescore import INFERRED, RETESTED, main, rescore_record, retest_record

GOOD = "def add(a, b):\n    return a + b"


def cand(i, solution, answer=None, raw="", error=None):
    return {"index": i, "solution": solution, "answer": answer, "plans": {}, "error": error, "score": None,
            "usage": {"calls": 1, "usd": 0.001}, "extra": {"raw_answer": raw, "seconds": 2.0}, "correct": False}


def record():
    unfenced = cand(1, f"The approach:\n{GOOD}", raw="assert add(1, 2) == 3")  # the old parser found no code
    cut_off = cand(2, f"The approach:\n{GOOD}", error="the reply was cut off at max_tokens")
    stage1 = [cand(0, "I would add them."), unfenced, cut_off, cand(3, "no code here")]
    return upgrade({"id": "mbpp-x", "cope": {"seconds": 1.0, "trace": [
        {"kind": "vote", "stage": 1, "tau": 0.75, "drawn": 4, "accepted": False, "confidence": 0.0, "answer": None,
         "candidates": stage1},
        {"kind": "guideline", "stage": 2, "guideline": "Add.", "usage": {"calls": 1}, "seconds": 1.0},
        {"kind": "final", "stage": 3, "accepted": False, "answer": None,
         "candidates": [cand(0, "def add(a, b):\n    return a - b")]}]},
        "baselines": {"small_greedy": cand(0, GOOD), "small_samples": [cand(i, "prose") for i in range(4)],
                      "large_greedy": cand(0, "x", answer=GOOD, raw=f"```python\n{GOOD}\n```")}})


def example():
    return dspy.Example(id="mbpp-x", question="write add", tests=["assert add(1, 2) == 3"], test_setup="")


def test_rescore_reads_unfenced_code_retests_and_redecides_the_stage():
    r = record()
    r["baselines"]["large_greedy"]["correct"] = True
    changed = rescore_record(r, example(), get("mbpp").correct, Code())
    stage1 = r["trace"][0]
    assert changed == 3  # stage-1 sample 1, the final answer (a wrong program), small greedy
    assert stage1["accepted"] and stage1["confidence"] == 1.0 and stage1["answer"] == GOOD
    by_index = {c["index"]: c for c in stage1["candidates"]}
    assert by_index[1]["correct"] and by_index[1]["extra"]["tests"]["status"] == "passed"
    assert by_index[1]["usage"] == {"calls": 1, "usd": 0.001} and by_index[1]["extra"]["seconds"] == 2.0
    assert by_index[2]["answer"] is None  # cut off at max_tokens: stays an abstention
    assert not by_index[0]["correct"] and by_index[0]["answer"] is None
    final = r["trace"][2]
    assert final["accepted"] and not final["candidates"][0]["correct"]  # re-read, tested, and wrong
    assert r["baselines"]["small_greedy"]["correct"] and r["baselines"]["large_greedy"]["correct"]
    assert rescore_record(r, example(), get("mbpp").correct, Code()) == 0  # nothing left to re-read


def test_rescore_cli_rewrites_the_records(tmp_path):
    r = record()
    r["id"] = "mbpp-11"  # a real MBPP id: the CLI looks examples up in the benchmark
    r["baselines"]["small_greedy"] = cand(0, "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)[::-1]"
                                          ".replace(ch, '', 1)[::-1]")
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "mbpp", "split": "test", "n": 4}))
    (tmp_path / "records.jsonl").write_text(json.dumps(r) + "\n")
    assert main([str(tmp_path)]) == 0
    (out,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert out["baselines"]["small_greedy"]["answer"].startswith("def remove_Occ")
    assert out["baselines"]["small_greedy"]["correct"]


def test_retest_runs_every_program_again_with_the_current_setup_and_redecides():
    uses_setup = "def add(a, b):\n    return plus(a, b)"  # needs a helper the example's setup defines
    r = record()
    stage1 = r["trace"][0]["candidates"]
    stage1[0].update(answer=uses_setup, correct=False, extra={"raw_answer": "", "seconds": 2.0,
                     "tests": {"n_passed": 0, "n_total": 1, "status": "failed", "first_failure": "NameError"}})
    r["baselines"]["large_greedy"].update(answer=uses_setup, correct=False)
    r["trace"][2]["candidates"][0].update(answer=uses_setup)
    ex = example().copy(test_setup="def plus(a, b):\n    return a + b\n")
    tested = retest_record(r, ex, get("mbpp").correct, Code())
    assert tested == 3  # the stage-1 program, the final answer and large greedy (the rest hold no program)
    vote = r["trace"][0]
    assert vote["accepted"] and vote["answer"] == uses_setup
    first = next(c for c in vote["candidates"] if c["index"] == 0)
    assert first["correct"] and first["extra"]["tests"]["status"] == "passed"
    assert r["trace"][2]["candidates"][0]["correct"] and r["baselines"]["large_greedy"]["correct"]
    assert r["retested"] == RETESTED
    assert retest_record(r, example(), get("mbpp").correct, Code()) == 3  # without the helper: failing again
    assert not r["trace"][0]["accepted"] and not r["baselines"]["large_greedy"]["correct"]


def math_cand(i, answer, tokens, calls=1):
    return {"index": i, "solution": f"so \\boxed{{{answer}}}", "answer": answer, "plans": {}, "error": None,
            "score": None, "usage": {"calls": calls, "completion_tokens": tokens, "usd": 0.001},
            "extra": {"seconds": 1.0}, "correct": answer == "18"}


def test_cut_off_marks_replies_that_reached_the_cap_and_decides_votes_again(tmp_path, capsys):
    # gsm8k-0's gold answer is 18; the run's cap is 320 tokens
    stage1 = [math_cand(0, "18", 330, calls=2), math_cand(1, "7", 40, calls=2)]  # goal + executor: can't tell
    stage2 = [math_cand(0, "18", 320), math_cand(1, "18", 200), math_cand(2, "5", 90), math_cand(3, "9", 80)]
    rec = upgrade({"id": "gsm8k-0", "cope": {"seconds": 1.0, "trace": [
        {"kind": "vote", "stage": 1, "tau": 0.75, "drawn": 2, "accepted": False, "confidence": 0.5, "answer": "18",
         "candidates": stage1},
        {"kind": "guideline", "stage": 2, "guideline": "Add.", "usage": {"calls": 1, "completion_tokens": 400}},
        {"kind": "vote", "stage": 2, "tau": 0.5, "drawn": 4, "accepted": True, "confidence": 0.5, "answer": "18",
         "candidates": stage2},
        {"kind": "final", "stage": 3, "accepted": True, "answer": "18", "candidates": [math_cand(0, "18", 320)]}]},
        "baselines": {"small_greedy": math_cand(0, "18", 100), "small_samples": [math_cand(i, "18", 320) for i in range(2)],
                      "large_greedy": math_cand(0, "18", 321)}})
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "max_tokens": 320}))
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n")
    assert main([str(tmp_path), "--cut-off"]) == 0
    assert "5 replies that reached max_tokens marked cut off in 1 of 1 problems; 1 stage-1" in capsys.readouterr().out
    (out,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    s1, guideline, s2, final = out["trace"]
    assert s1 == rec["trace"][0] and guideline == rec["trace"][1]  # not judged, not touched
    assert [c["answer"] for c in s2["candidates"]] == [None, "18", "5", "9"]
    assert "reached max_tokens=320" in s2["candidates"][0]["error"]
    assert not s2["accepted"] and s2["confidence"] == 0.25  # 18 now has 1 of 4 votes: the vote fails
    assert [c["correct"] for c in s2["candidates"]] == [False, True, False, False]
    assert final["answer"] is None and not final["accepted"] and final["candidates"][0]["correct"] is False
    b = out["baselines"]
    assert b["small_greedy"]["answer"] == "18" and b["small_greedy"]["correct"]  # under the cap: kept
    assert all(c["answer"] is None for c in b["small_samples"]) and b["large_greedy"]["answer"] is None
    assert b["large_greedy"]["usage"] == rec["baselines"]["large_greedy"]["usage"]  # costs stay as recorded
    assert out["cut_off"] == INFERRED
    assert main([str(tmp_path), "--cut-off"]) == 0  # idempotent: a marked record is left alone
    assert "0 replies that reached max_tokens marked cut off in 0 of 0 problems" in capsys.readouterr().out
    assert [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()] == [out]


def test_cut_off_leaves_records_made_with_the_finish_reason_check_alone(tmp_path, capsys):
    # a reply may end naturally on exactly the cap's last token: the recorded finish_reason said so
    natural = math_cand(0, "18", 320)
    rec = upgrade({"id": "gsm8k-0", "cut_off": CUT_OFF_CHECKED, "cope": {"seconds": 1.0, "trace": [
        {"kind": "vote", "stage": 2, "tau": 0.5, "drawn": 1, "accepted": True, "confidence": 1.0, "answer": "18",
         "candidates": [natural]}]},
        "baselines": {"small_greedy": math_cand(0, "18", 320), "small_samples": [], "large_greedy": math_cand(0, "18", 320)}})
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "max_tokens": 320}))
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n")
    assert main([str(tmp_path), "--cut-off"]) == 0
    printed = capsys.readouterr().out
    assert "0 replies that reached max_tokens marked cut off in 0 of 0 problems" in printed
    assert "1 problems left alone" in printed
    (out,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert out == rec
