"""MT-Bench in the harness: the pairwise judge with swapped positions, the perplexity replay of COPE, and
the win-rate report (judged against large alone, judgments cached), on scripted models."""

import dataclasses
import json
import math
import re

import dspy
import fakes
import pytest
from dspy.lm15 import TokenLogprob, TopLogprob
from fakes import ScriptedLM, reply

from cope_dspy import Cascade, Prices
from cope_dspy.costs import CostTracker
from cope_dspy.records import upgrade
from cope_dspy.text import Text
from evals.benchmarks import get, record_all
from evals.judge import (
    JUDGE_MAX_TOKENS,
    combine,
    judge,
    judge_pair,
    parse_verdict,
    preference,
    reference_for,
    verdict_probabilities,
)
from evals.report import text_report, text_rows, write_report
from evals.run import build_parser

CALL_USD = (100 * 1.0 + 20 * 2.0) / 1e6  # one scripted call (100 in, 20 out) at $1 / $2 per million
JUDGE_PRICE = Prices({"scripted/judge": (1.0, 2.0)})


def section(text, name):
    """A block of FastChat's judge template: section(user, "Assistant A's Answer"), "Reference Answer"."""
    m = re.search(rf"\[The Start of {re.escape(name)}\]\n(.*?)\n\[The End of {re.escape(name)}\]", text, re.S)
    return m.group(1) if m else ""


def plus_judge(name="scripted/judge"):
    """A fair judge: the response with more '+' marks is better, equal counts tie."""

    def respond(call):
        a = section(call.user, "Assistant A's Answer").count("+")
        b = section(call.user, "Assistant B's Answer").count("+")
        return f"Compared. [[{'A' if a > b else 'B' if b > a else 'C'}]]"

    return ScriptedLM(name, respond)


def judged_pairs(lm):
    return [(section(c.user, "Assistant A's Answer"), section(c.user, "Assistant B's Answer")) for c in lm.calls]


# ---------------------------------------------------------------- the judge


def test_parse_verdict_reads_the_last_bracketed_verdict_or_a_bare_one():
    assert parse_verdict("[[A]]") == "A" and parse_verdict("[[B]]") == "B" and parse_verdict("[[C]]") == "tie"
    assert parse_verdict(" B ") == "B" and parse_verdict("tie") == "tie" and parse_verdict("[[ a ]]") == "A"
    assert parse_verdict("A is more detailed.\n\nFinal verdict: [[A]]") == "A"
    # a reply that quotes the format before its verdict: the final verdict counts, not the first bracket
    assert parse_verdict('I must answer "[[A]]", "[[B]]" or "[[C]]". B is correct, A is not. [[B]]') == "B"
    assert parse_verdict("no idea") is None and parse_verdict(None) is None and parse_verdict("") is None
    assert parse_verdict("A is better") is None  # a bare letter in prose is not a verdict


def test_swap_rule_a_win_only_when_both_orders_agree():
    assert combine("A", "B") == "a"  # a shown first wins, and wins again when shown second
    assert combine("B", "A") == "b"
    assert combine("A", "A") == "tie"  # always the first position: position bias
    assert combine("A", "tie") == "tie" and combine("tie", "tie") == "tie"
    assert combine(None, "B") == "tie" and combine(None, None) == "tie"


def test_judge_pair_asks_twice_with_positions_swapped_and_a_consistent_judge_decides():
    lm = plus_judge()
    assert judge_pair(lm.lm, "Write a poem.", "good ++", "meh +", prices=JUDGE_PRICE) == "a"
    assert judged_pairs(lm) == [("good ++", "meh +"), ("meh +", "good ++")]
    assert judge_pair(lm.lm, "Write a poem.", "meh +", "good ++", prices=JUDGE_PRICE) == "b"
    assert judge_pair(lm.lm, "Write a poem.", "one +", "two +", prices=JUDGE_PRICE) == "tie"
    assert all(c.temperature == 0.0 for c in lm.calls)
    assert "impartial judge" in lm.calls[0].system and "[[C]]" in lm.calls[0].system


def test_judge_is_sent_fastchats_prompt_as_plain_text():
    lm = plus_judge()
    judge(lm.lm, "Write a poem.", "good ++", "meh +", prices=JUDGE_PRICE)
    system, user = lm.calls[0].system, lm.calls[0].user
    assert system.startswith("Please act as an impartial judge") and system.endswith('"[[C]]" for a tie.')
    assert user == ("[User Question]\nWrite a poem.\n\n[The Start of Assistant A's Answer]\ngood ++\n"
                    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\nmeh +\n"
                    "[The End of Assistant B's Answer]")
    assert "[[ ##" not in system + user  # no DSPy field markers reach the judge


def test_a_reply_cut_at_the_cap_is_counted_and_an_unreadable_one_is_a_tie():
    answers = iter([fakes.cut("A is better because because because"), "B is worse. [[A]]"])
    lm = ScriptedLM("scripted/judge", lambda call: next(answers))
    j = judge(lm.lm, "Q", "x", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.first, j.second, j.cut, j.unparseable) == ("tie", None, "A", 1, 1)


def test_judge_calls_are_tagged_judge_and_priced_apart():
    lm = plus_judge()
    outer = CostTracker(prices=JUDGE_PRICE)
    with outer:
        j = judge(lm.lm, "Q", "x ++", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.first, j.second, j.unparseable, j.consistent) == ("a", "A", "B", 0, True)
    assert j.usage["calls"] == 2 and j.usage["usd"] == pytest.approx(2 * CALL_USD)
    assert list(outer.by_role()) == ["judge"] and list(outer.by_stage()) == [0]


def test_position_biased_judge_gives_a_tie():
    lm = ScriptedLM("scripted/judge", lambda call: "The first is better. [[A]]")
    j = judge(lm.lm, "Q", "x", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.first, j.second, j.consistent, j.unparseable) == ("tie", "A", "A", False, 0)


def test_unparseable_verdict_is_a_tie_and_counted():
    garbled = ScriptedLM("scripted/judge", lambda call: "Hard to say; both are fine.")
    j = judge(garbled.lm, "Q", "x", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.first, j.second, j.unparseable) == ("tie", None, None, 2)
    empty = ScriptedLM("scripted/judge", lambda call: "")  # no reply at all: the adapter cannot parse it
    j = judge(empty.lm, "Q", "x", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.unparseable) == ("tie", 2)
    # one order unreadable, the other a clear win for a: still a tie (a win needs both orders)
    answers = iter(["[[A]]", "unsure"])
    half = ScriptedLM("scripted/judge", lambda call: next(answers))
    j = judge(half.lm, "Q", "x", "y", prices=JUDGE_PRICE)
    assert (j.verdict, j.first, j.second, j.unparseable) == ("tie", "A", None, 1)


def test_math_reasoning_and_coding_are_judged_against_the_reference():
    ex = dspy.Example(category="math", reference_gpt4=["The answer is 4."], reference=None)
    assert reference_for(ex) == "The answer is 4."
    assert reference_for(dspy.Example(category="writing", reference_gpt4=["x"])) is None
    assert reference_for(dspy.Example(category="coding", reference_gpt4=None, reference=["def f(): ..."])) == \
        "def f(): ..."
    lm = plus_judge()
    judge(lm.lm, "What is 2 + 2?", "4 +", "5", reference="The answer is 4.", prices=JUDGE_PRICE)
    assert section(lm.calls[0].user, "Reference Answer") == "The answer is 4."
    assert lm.calls[0].user.index("[The End of Reference Answer]") < lm.calls[0].user.index("Assistant A's")
    assert "reference answer" in lm.calls[0].system
    assert "[The Start of Reference Answer]" not in judge_prompt(plus_judge(), "Q", "x", "y")


def verdict_model(p_better, name="scripted/judge"):
    """A judge that always replies "[[A]]" (position bias) while its verdict token's top alternatives give the
    answer with more '+' marks probability p_better of being named, the other 1 - p_better - 0.1, a tie 0.1;
    logprobs only when asked for (`.requested`: each call's config.logprobs)."""

    def tokens(scripted, response):
        user = scripted.calls[-1].user
        a = section(user, "Assistant A's Answer").count("+")
        b = section(user, "Assistant B's Answer").count("+")
        pa = 0.45 if a == b else p_better if a > b else 0.9 - p_better
        top = (TopLogprob(token="A", logprob=math.log(pa)), TopLogprob(token=" B", logprob=math.log(0.9 - pa)),
               TopLogprob(token="C", logprob=math.log(0.1)), TopLogprob(token="D", logprob=math.log(0.01)))
        return (TokenLogprob(token="[[", logprob=0.0), TokenLogprob(token="A", logprob=math.log(pa), top=top),
                TokenLogprob(token="]]", logprob=0.0))

    return with_logprobs(ScriptedLM(name, lambda call: "[[A]]"), tokens)


def test_verdict_probabilities_read_the_letter_after_the_brackets_and_cancel_position_bias():
    lm = verdict_model(0.7)
    j = judge(lm.lm, "Q", "x ++", "y", prices=JUDGE_PRICE, logprobs=True)
    assert (j.first, j.second, j.verdict) == ("A", "A", "tie")  # the swap rule sees only position bias
    assert j.p_first == pytest.approx({"A": 0.7 / 1.0, "B": 0.2, "C": 0.1}, abs=1e-3)  # "D" is not a verdict
    assert j.p_second == pytest.approx({"A": 0.2, "B": 0.7, "C": 0.1}, abs=1e-3)
    assert j.score == pytest.approx((0.7 + 0.05 + 0.7 + 0.05) / 2, abs=1e-3)  # x is preferred in both orders
    assert lm.requested == [5, 5]
    same = verdict_model(0.7)
    assert judge(same.lm, "Q", "x +", "y +", prices=JUDGE_PRICE, logprobs=True).score == pytest.approx(0.5)
    plain = verdict_model(0.7)
    j = judge(plain.lm, "Q", "x ++", "y", prices=JUDGE_PRICE)  # not asked for: no probabilities, no score
    assert (j.p_first, j.score) == (None, None) and plain.requested == [None, None]
    assert verdict_probabilities(None) is None
    assert verdict_probabilities([TokenLogprob(token="A", logprob=-0.1)]) is None  # no "[[" before the letter
    assert preference({"A": 1.0, "B": 0.0, "C": 0.0}, {"A": 0.0, "B": 1.0, "C": 0.0}) == 1.0


def test_text_report_adds_the_probability_win_rate_when_the_judge_gives_it(tmp_path):
    write_run(tmp_path, RECORDS)
    write_report(tmp_path, examples_for(["t1", "t2", "t3"]), judge=verdict_model(0.7).lm, judge_logprobs=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert summary["judge"]["setup"].endswith(", verdict logprobs")
    assert methods["large alone"]["win_rate_p"] == 0.5
    # small single: loses t1 (0.25), wins t2 (0.75), identical on t3 (0.5, no judge asked)
    assert methods["small single"]["win_rate_p"] == pytest.approx((0.25 + 0.75 + 0.5) / 3, abs=1e-3)
    assert methods["small single"]["accuracy"] == 0.5  # the swap rule: all ties from an always-"A" judge
    assert "by probabilities (95% CI)" in (tmp_path / "table.md").read_text()
    assert summary["judge"]["without_probabilities"] == 0
    # a judge whose reply has no "[[" + letter to read: those pairs score as ties, and are counted
    write_run(tmp_path / "silent", RECORDS)
    silent = with_logprobs(ScriptedLM("scripted/judge", lambda call: "Both fine. [[C]]"),
                           lambda scripted, response: (TokenLogprob(token="Both", logprob=-0.1),))
    write_report(tmp_path / "silent", examples_for(["t1", "t2", "t3"]), judge=silent.lm, judge_logprobs=True)
    summary = json.loads((tmp_path / "silent" / "summary.json").read_text())
    assert summary["judge"]["without_probabilities"] == summary["judge"]["judgments"] == 6
    assert {m["method"]: m["win_rate_p"] for m in summary["methods"]}["small single"] == 0.5
    assert "6 judgments without verdict probabilities" in (tmp_path / "silent" / "table.md").read_text()
    write_run(tmp_path / "plain", RECORDS)
    write_report(tmp_path / "plain", examples_for(["t1", "t2", "t3"]), judge=plus_judge().lm)
    assert "by probabilities" not in (tmp_path / "plain" / "table.md").read_text()


def judge_prompt(lm, question, a, b, **kwargs):
    judge(lm.lm, question, a, b, prices=JUDGE_PRICE, **kwargs)
    return lm.calls[-1].user


# ---------------------------------------------------------------- COPE replayed with perplexity


def usage(calls, usd=0.0):
    return {"calls": calls, "usd": usd}


def cand(i, text, score, calls=1):
    return {"index": i, "solution": text, "answer": text, "score": score, "usage": usage(calls)}


def record(pid, stage1, stage2, final, small_greedy, large):
    """A benchmark record as `record_example` writes it: stage-1 samples cost 2 free calls (goal + reply),
    stage-2 samples 1 free call, the guideline and the large model's answers 1 paid call each."""
    return upgrade({
        "id": pid,
        "cope": {"seconds": 1.0, "trace": [
            {"kind": "vote", "stage": 1, "candidates": [cand(i, t, s, calls=2) for i, (t, s) in enumerate(stage1)]},
            {"kind": "guideline", "stage": 2, "guideline": "Be concrete.", "usage": usage(1, CALL_USD)},
            {"kind": "vote", "stage": 2, "candidates": [cand(i, t, s) for i, (t, s) in enumerate(stage2)]},
            {"kind": "final", "stage": 3, "candidates": [{**cand(0, final, None), "usage": usage(1, CALL_USD)}]},
        ]},
        "baselines": {
            "small_greedy": cand(0, small_greedy, None),
            "small_samples": [],
            "large_greedy": {**cand(0, large, None), "usage": usage(1, CALL_USD)},
        },
    })


RECORDS = [
    # t1: stage 1's best reply (score -0.3: confidence 0.74 >= 0.5) is accepted; it is not the first sample
    record("t1", [("s1 +", -0.6), ("s1 +++", -0.3)], [("u", -0.1)], "F", "g +", "L ++"),
    # t2: stage 1 unsure (0.37); stage 2 accepts its best scored reply; a better-scored abstainer is ignored
    record("t2", [("a", -1.0), ("b", -2.0)], [("c ++", -0.4), ("d +++", -0.01)], "F", "g +++", "L ++"),
    # t3: both stages unsure: the large model answers (stop-after-2 keeps stage 2's best)
    record("t3", [("a", -1.5), ("b", -1.2)], [("e +", -0.9), ("f", -3.0)], "F +++", "L ++", "L ++"),
]
RECORDS[1]["trace"][2]["candidates"][1]["answer"] = None  # t2's "d +++" abstains (e.g. cut off)


def test_perplexity_replay_picks_the_most_likely_reply_and_escalates_below_tau():
    rows, exits = text_rows(RECORDS, n=2, tau1=0.5, tau2=0.5)
    assert [r["response"] for r in rows] == ["s1 +++", "c ++", "F +++"]
    assert [r["stage"] for r in rows] == [1, 2, 3] and exits == {1: 1, 2: 1, 3: 1}
    assert rows[0]["confidence"] == pytest.approx(math.exp(-0.3))
    # all n samples of every stage reached are paid for (no early decision with perplexity)
    assert [r["calls"] for r in rows] == [4, 4 + 1 + 2, 4 + 1 + 2 + 1]
    assert [r["usd"] for r in rows] == pytest.approx([0, CALL_USD, 2 * CALL_USD])
    rows, exits = text_rows(RECORDS, n=2, tau1=0.5, tau2=0.5, stages=(1, 2))
    assert [r["response"] for r in rows] == ["s1 +++", "c ++", "e +"] and exits == {1: 1, 2: 2, 3: 0}
    rows, _ = text_rows(RECORDS, n=2, tau1=0.8, tau2=0.5)  # 0.74 < 0.8: t1 escalates to stage 2
    assert rows[0]["stage"] == 2 and rows[0]["response"] == "u"


# ---------------------------------------------------------------- the report


def write_run(folder, records, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({
        "benchmark": "mtbench", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": n,
        "command": "test", "prices": {"scripted/judge": [1.0, 2.0]}}))
    with (folder / "records.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def examples_for(ids, category="writing"):
    return [dspy.Example(id=i, question=f"Request {i}", category=category, reference=None,
                         reference_gpt4=None).with_inputs("question") for i in ids]


def test_text_report_win_rates_costs_and_cached_judgments(tmp_path):
    write_run(tmp_path, RECORDS)
    lm = plus_judge()
    md = write_report(tmp_path, examples_for(["t1", "t2", "t3"]), judge=lm.lm)
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert list(methods) == ["small single", "large alone", "COPE (tau 0.5 / 0.5)", "COPE stop after stage 2"]
    # vs large alone ("L ++"): small single loses t1 ("g +"), wins t2 ("g +++"), is identical on t3 (a tie)
    small = methods["small single"]
    assert (small["wins"], small["ties"], small["losses"], small["accuracy"]) == (1, 1, 1, pytest.approx(0.5))
    assert methods["large alone"]["accuracy"] == 0.5 and methods["large alone"]["accuracy_ci95"] == [0.5, 0.5]
    cope = methods["COPE (tau 0.5 / 0.5)"]
    assert (cope["wins"], cope["ties"], cope["losses"]) == (2, 1, 0)
    assert cope["win_rate"] == pytest.approx(2.5 / 3) and cope["accuracy"] == pytest.approx(2.5 / 3)
    lo, hi = cope["accuracy_ci95"]
    assert 0 <= lo <= 2.5 / 3 <= hi <= 1
    assert {int(k): v for k, v in cope["exits"].items()} == {1: 1, 2: 1, 3: 1}
    assert cope["usd_per_1k"] == pytest.approx(1000 * CALL_USD)  # t2: guideline; t3: guideline + final
    assert cope["calls_per_problem"] == pytest.approx((4 + 7 + 8) / 3)
    assert methods["large alone"]["usd_per_1k"] == pytest.approx(1000 * CALL_USD)
    assert cope["cost_vs_large"] == pytest.approx(0.0)
    stop2 = methods["COPE stop after stage 2"]
    assert (stop2["wins"], stop2["ties"], stop2["losses"]) == (1, 1, 1)
    assert stop2["usd_per_1k"] == pytest.approx(1000 * 2 * CALL_USD / 3)
    # judged once per distinct (problem, response): small t1/t2, COPE t1/t2/t3 (stop-after-2 shares t1/t2), e +
    judge_stats = summary["judge"]
    assert (judge_stats["judgments"], judge_stats["new"], judge_stats["identical"]) == (6, 6, 1)
    assert judge_stats["calls"] == 12 == len(lm.calls)
    assert judge_stats["usd"] == pytest.approx(12 * CALL_USD)  # reported apart: not in any method's cost
    assert (judge_stats["unparseable"], judge_stats["inconsistent"]) == (0, 0)
    assert summary["metric"] == "win rate vs large alone"
    assert "| method | win rate vs large alone (95% CI) |" in md
    assert "| COPE (tau 0.5 / 0.5) | 83.3 (" in md and "Judge: scripted/judge" in md
    assert "perplexity <= 2 / 2" in md and "the paper gives no threshold" in md
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "judgments.jsonl").read_text().splitlines()) == 6

    # a rerun reads every judgment from judgments.jsonl: no judge is opened, the table is the same
    def no_judge():
        raise AssertionError("the judge must not be opened when every judgment is cached")

    assert write_report(tmp_path, examples_for(["t1", "t2", "t3"]), judge=no_judge,
                        judge_name="scripted/judge") == md.replace("6 judged for this report", "0 judged for this report")
    assert len(lm.calls) == 12


def test_judgments_are_cached_per_judge_setup_so_a_new_cap_or_prompt_judges_again(tmp_path, monkeypatch):
    write_run(tmp_path, RECORDS[:1])
    lm = plus_judge()
    write_report(tmp_path, examples_for(["t1"]), judge=lm.lm, judge_name="scripted/judge")
    first = json.loads((tmp_path / "summary.json").read_text())["judge"]
    assert first["setup"].endswith(f"plain text, max_tokens {JUDGE_MAX_TOKENS}") and first["new"] == 2
    assert first["cut"] == 0 and "0 replies cut at the judge's reply cap" in (tmp_path / "table.md").read_text()
    write_report(tmp_path, examples_for(["t1"]), judge=lm.lm, judge_name="scripted/judge", judge_max_tokens=256)
    assert json.loads((tmp_path / "summary.json").read_text())["judge"]["new"] == 2  # another cap: judged again
    import evals.judge

    monkeypatch.setattr(evals.judge, "PairwiseJudge",
                        evals.judge.PairwiseJudge.with_instructions("Pick one. End with [[A]], [[B]] or [[C]]."))
    write_report(tmp_path, examples_for(["t1"]), judge=lm.lm, judge_name="scripted/judge")
    assert json.loads((tmp_path / "summary.json").read_text())["judge"]["new"] == 2  # another prompt: again
    assert len(lm.calls) == 12 and lm.calls[-1].system == "Pick one. End with [[A]], [[B]] or [[C]]."


def test_ctrl_c_while_judging_keeps_finished_judgments_and_a_rerun_resumes(tmp_path):
    write_run(tmp_path, RECORDS)
    fair = plus_judge()

    def interrupted(call):
        if len(fair.calls) == 3:  # the second judgment's first call: Ctrl-C arrives
            return KeyboardInterrupt()
        return fair.respond(call)

    lm = ScriptedLM("scripted/judge", interrupted)
    fair.calls = lm.calls
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    run = json.loads((tmp_path / "run.json").read_text())
    with pytest.raises(KeyboardInterrupt):
        text_report(records, run, lm.lm, examples=examples_for(["t1", "t2", "t3"]),
                    cache=tmp_path / "judgments.jsonl", judge_name="scripted/judge", concurrency=1)
    kept = (tmp_path / "judgments.jsonl").read_text().splitlines()
    assert 1 <= len(kept) <= 2 and len(lm.calls) <= 5  # pending judgments were cancelled, not all 12 calls made
    write_report(tmp_path, examples_for(["t1", "t2", "t3"]), judge=plus_judge().lm, judge_name="scripted/judge")
    assert json.loads((tmp_path / "summary.json").read_text())["judge"]["new"] == 6 - len(kept)


def test_text_report_resumes_a_torn_cache_and_counts_biased_verdicts(tmp_path):
    write_run(tmp_path, RECORDS[:1])
    biased = ScriptedLM("scripted/judge", lambda call: "First one. [[A]]")
    write_report(tmp_path, examples_for(["t1"]), judge=biased.lm)
    with (tmp_path / "judgments.jsonl").open("a") as f:
        f.write('{"key": "torn')  # a report killed mid-write
    write_report(tmp_path, examples_for(["t1"]), judge=None, judge_name="scripted/judge")
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert all(m["accuracy"] == 0.5 for m in methods.values())  # every pair position-inconsistent: ties
    assert summary["judge"]["inconsistent"] == 2 and summary["judge"]["new"] == 0
    # a judgment missing and no judge named: a clear error, not a silent tie
    write_run(tmp_path / "more", RECORDS[:2])
    with pytest.raises(RuntimeError, match="--judge"):
        write_report(tmp_path / "more", examples_for(["t1", "t2"]), judge=None, judge_name="scripted/judge")


def test_cli_takes_mtbench_and_a_judge():
    args = build_parser().parse_args(["mtbench", "--judge", "openai/gpt-4o-mini"])
    assert (args.benchmark, args.judge) == ("mtbench", "openai/gpt-4o-mini")
    assert build_parser().parse_args(["mtbench"]).judge is None  # the large model judges
    assert isinstance(get("mtbench").task(), Text) and get("mtbench").task().probe_lms is False


# ---------------------------------------------------------------- recorded end to end


def with_logprobs(scripted, tokens):
    """`scripted` (a ScriptedLM) whose replies carry `tokens(scripted, response)` (lm15 TokenLogprobs) when logprobs are
    asked for; `.requested` records each call's config.logprobs (None, or how many alternatives a token)."""
    inner = fakes._Engine(scripted)
    scripted.requested = []

    class Engine:
        def complete(self, request):
            response = inner.complete(request)
            scripted.requested.append(request.config.logprobs)
            if request.config.logprobs is None:
                return response
            return dataclasses.replace(response, logprobs=tokens(scripted, response))

    class AsyncEngine:
        async def complete(self, request):
            return Engine().complete(request)

    scripted.lm = dspy.LM(scripted.name, engine=Engine(), async_engine=AsyncEngine(), cache=False,
                          callbacks=[fakes._Capture()])
    return scripted


def logprob_model(name, respond, logprob):
    """A scripted LM whose replies carry per-token logprobs `logprob(text)` when they are asked for."""

    def tokens(scripted, response):
        return tuple(TokenLogprob(token=t, logprob=logprob(response.message.parts[0].text)) for t in "abc")

    return with_logprobs(ScriptedLM(name, respond), tokens)


def test_recorded_mtbench_run_reports_win_rates(tmp_path):
    def small(call):
        if call.role == "goal":
            return reply(goal="Help them.")
        sure = "r0" in call.question  # r0: the small model is sure of its reply; r1: it is not
        return reply(solution=("small sure ++" if sure else "small unsure") + f" #{call.rollout_id}")

    def large(call):
        if call.role == "guideline":
            return reply(guideline="Cover the key points.")
        return reply(solution="large +++" if call.plans else "large ++")

    s = logprob_model("scripted/small", small, lambda text: -0.1 if "sure ++" in text else -2.0)
    lg = ScriptedLM("scripted/large", large)
    prices = Prices({"scripted/large": (1.0, 2.0), "scripted/small": (0.0, 0.0)})
    cascade = Cascade(small=s.lm, large=lg.lm, task=get("mtbench").task(), n=2, prices=prices)
    exs = examples_for(["r0", "r1"])
    for ex in exs:
        ex["question"] = f"{ex.id}: write something"
    write_run(tmp_path, [])
    record_all(cascade, exs, get("mtbench").correct, tmp_path / "records.jsonl", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert all(c["score"] is not None for r in lines for e in r["trace"] if e["kind"] == "vote"
               for c in e["candidates"])
    assert all(r["baselines"]["large_greedy"]["answer"] == "large ++" for r in lines)
    write_report(tmp_path, exs, judge=plus_judge().lm)
    methods = {m["method"]: m for m in json.loads((tmp_path / "summary.json").read_text())["methods"]}
    cope = methods["COPE (tau 0.5 / 0.5)"]
    # r0: stage 1's "small sure ++" ties large's "large ++", free; r1: stage 3's "large +++" wins, 2 paid calls
    assert {int(k): v for k, v in cope["exits"].items()} == {1: 1, 2: 0, 3: 1}
    assert cope["accuracy"] == pytest.approx(0.75)
    assert cope["usd_per_1k"] == pytest.approx(1000 * 2 * CALL_USD / 2)


def test_judge_lms_skip_dspys_cache_so_judgment_costs_are_real(monkeypatch):
    import contextlib

    from evals.judge import open_judge

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with contextlib.ExitStack() as stack:
        for name in ("openai/gpt-4o-mini", "ollama_chat/qwen2.5:1.5b"):
            lm = open_judge(stack, name, max_tokens=64)
            assert lm.cache is False and lm.kwargs["max_tokens"] == 64


def test_ctrl_c_while_judging_ends_the_command_with_130_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import evals.report
    from evals.run import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evals.report, "write_report", interrupted)
    assert main(["mtbench", "--report-only", "--out", str(tmp_path)]) == 130
    assert "stopped judging" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):  # another benchmark has no judge: the interrupt is not dressed up
        main(["gsm8k", "--report-only", "--out", str(tmp_path / "g")])
