"""evals.plan_stats on tiny synthetic records: guideline cost, plans that state answers, cut-off replies."""

import json

import pytest

from cope_dspy.records import upgrade
from evals.metrics import gsm8k_match
from evals.plan_stats import (
    after_code,
    cap_under,
    code_states_answer,
    cut_off,
    guideline_share,
    large_after_code,
    main,
    markdown,
    math_states_answer,
)


def reply(tokens, answer="1", error=None):
    return {"answer": answer, "error": error, "usage": {"completion_tokens": tokens}}


def record(pid, guideline_tokens, answer_tokens, guideline="Add the numbers.", large=None, small_tokens=10):
    return upgrade({
        "id": pid,
        "cope": {
            "seconds": 1.0,
            "trace": [
                {
                    "kind": "guideline",
                    "stage": 2,
                    "guideline": guideline,
                    "usage": {"completion_tokens": guideline_tokens},
                }
            ],
        },
        "baselines": {"large_greedy": large or reply(answer_tokens), "small_greedy": reply(small_tokens)},
    })


def test_guideline_share_per_problem_and_of_totals():
    s = guideline_share([record("a", 50, 100), record("b", 300, 100), record("c", 20, 200)])
    assert s["problems"] == 3
    assert s["mean"] == pytest.approx((0.5 + 3.0 + 0.1) / 3)
    assert s["median"] == pytest.approx(0.5)
    assert s["ratio_of_totals"] == pytest.approx(370 / 400)
    no_answer = record("d", 50, 0)  # a large-alone reply with no tokens counted is left out
    assert guideline_share([no_answer])["problems"] == 0


def test_a_math_guideline_states_an_answer_by_box_gold_or_the_large_answer():
    assert math_states_answer("Halve 4 and add 1: \\boxed{3}", "3", "3", gsm8k_match) == {
        "boxed": True,
        "gold": True,
        "large_answer": True,
        "any": True,
    }
    # ends with the large model's (wrong) answer, not the gold one
    assert math_states_answer("Multiply 6 by 7 to get 42.", "40", "42", gsm8k_match) == {
        "boxed": False,
        "gold": False,
        "large_answer": True,
        "any": True,
    }
    plan = "Find the total cost first, then split it between the friends."
    assert not math_states_answer(plan, "40", None, gsm8k_match)["any"]


def test_a_code_guideline_states_an_answer_when_it_defines_the_entry_point():
    code = "Use a set.\n```python\ndef uniq(xs):\n    return list(set(xs))\n```"
    assert code_states_answer(code, "uniq") == {"def": True, "code_block": True, "any": True}
    assert not code_states_answer("Write `def uniq(xs):` that keeps the first of each item.", "uniq")["any"]
    assert not code_states_answer(code, "other")["def"]


def test_cut_off_and_the_cap_that_keeps_cuts_under_five_percent():
    assert cut_off(reply(320), 320) and not cut_off(reply(319), 320)
    assert cut_off(reply(12, error="the reply reached max_tokens=320 ..."), 320)
    tokens = list(range(1, 101))  # 100 replies of 1..100 tokens, none at the cap of 200
    assert cap_under(tokens, 200) == 97  # 96 or more tokens reach 96: 5 replies (5%); 97: 4 (4%)
    assert cap_under([*[100] * 94, *[200] * 6], 200) is None  # 6% at the cap: lengths past it unknown
    assert cap_under([], 200) is None


def test_cli_writes_its_table(tmp_path):
    folder = tmp_path / "gsm8k-run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "max_tokens": 320}))
    records = [
        record("gsm8k-0", 60, 120, guideline="Compute 16 - 3 - 4 = 9, then 9 * 2 = 18."),
        record("gsm8k-1", 30, 320, large=reply(320, answer=None)),
    ]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / "plan_stats.json").read_text())
    # gsm8k-0's guideline ends with its gold answer, 18
    assert row["states_answer"] == {"boxed": 0, "gold": 1, "large_answer": 0, "any": 1}
    assert row["large_cut_off"] == 1 and row["large_cap_under_5pct"] is None
    assert (tmp_path / "out" / "plan_stats.md").read_text() == markdown([row])


def test_mtbench_has_no_answer_to_state_and_still_reports_plan_cost_and_cuts(tmp_path):
    folder = tmp_path / "mtbench-run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"benchmark": "mtbench", "max_tokens": 1024}))
    records = [record("mtbench-81", 100, 400), record("mtbench-82", 50, 1024, large=reply(1024, answer=None))]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / "plan_stats.json").read_text())
    assert row["states_answer"] == {} and row["problems"] == 2 and row["large_cut_off"] == 1
    assert row["guideline_share"]["ratio_of_totals"] == pytest.approx(150 / 1424)
    assert "n/a (open-ended questions)" in (tmp_path / "out" / "plan_stats.md").read_text()


def test_the_large_alone_reply_after_its_code_and_what_that_text_cost():
    code = "Use a set.\n```python\ndef uniq(xs):\n    return list(set(xs))\n```"
    assert after_code(code) == 0.0
    assert after_code(code + "x" * len(code)) == pytest.approx(0.5)
    two = "```python\nprint(1)\n```\n" + code + "\nDone."  # the last block is the one read
    assert after_code(two) == pytest.approx(len("\nDone.") / len(two))
    assert after_code("no code here") is None and after_code("```python\ndef f(): cut") is None
    chatty = {"solution": code + "y" * len(code), "usage": {"completion_tokens": 100, "usd": 0.0002}}
    bare = {"solution": code, "usage": {"completion_tokens": 100, "usd": 0.0002}}
    prose = {"solution": "I cannot.", "usage": {"completion_tokens": 100, "usd": 0.0002}}
    rows = [record(p, 10, 100, large=c) for p, c in (("a", chatty), ("b", bare), ("c", prose))]
    a = large_after_code(rows, out_price=1.0)  # $1 per million completion tokens
    assert a["replies"] == 2 and a["share_of_chars"] == pytest.approx(len(code) / (3 * len(code)))
    assert a["share_of_usd_est"] == pytest.approx(0.5 * 100 * 1e-6 / 0.0006)  # half of one reply's tokens


def test_reply_tokens_compares_calls_and_says_why_large_alone_programs_differ():
    from evals.reply_tokens import compare

    def rec(pid, large_text, large_answer, large_tokens, sample_tokens):
        return {"id": pid, "trace": [{"kind": "vote", "stage": 1,
                                      "candidates": [reply(t) for t in sample_tokens]}],
                "baselines": {"large_greedy": {**reply(large_tokens, large_answer), "solution": large_text},
                              "small_greedy": reply(10), "small_samples": [reply(20)]}}

    a = [rec("p0", "code A\nmore", "A", 100, [40, 40]), rec("p1", "code B\nmore", "B", 100, [40]),
         rec("p2", "code C", "C", 100, [40])]
    b = [rec("p0", "code A", "A", 60, [20, 20]), rec("p1", "code B", "B0", 60, [20]),  # cut: another part read
         rec("p2", "code D", "D", 60, [20])]  # decoded differently
    out = compare(a, b)
    assert out["calls"]["large alone"] == {"a": 100, "b": 60, "change": pytest.approx(-0.4)}
    assert out["calls"]["vote stage 1"]["change"] == pytest.approx(-0.5)
    assert out["large_alone_programs"] == {"same": 1, "b_reply_starts_a_reply": 1, "decoding_differed": 1}


def test_common_reads_every_folder_on_the_problems_all_of_them_hold(tmp_path):
    def folder(name, records):
        f = tmp_path / name
        f.mkdir()
        (f / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "max_tokens": 320}))
        (f / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return f

    long = folder("long", [record("gsm8k-0", 60, 120), record("gsm8k-1", 100, 100), record("gsm8k-2", 10, 100)])
    short = folder("short", [record("gsm8k-0", 30, 120), record("gsm8k-1", 20, 100)])
    assert main([str(long), str(short), "--common", "--out", str(tmp_path / "c")]) == 0
    rows = json.loads((tmp_path / "c" / "plan_stats.json").read_text())
    assert [r["problems"] for r in rows] == [2, 2]
    assert rows[0]["guideline_share"]["ratio_of_totals"] == pytest.approx(160 / 220)
    assert main([str(long), str(short), "--out", str(tmp_path / "all")]) == 0
    assert [r["problems"] for r in json.loads((tmp_path / "all" / "plan_stats.json").read_text())] == [3, 2]
