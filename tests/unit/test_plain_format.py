"""`python -m evals.plain_format`'s few-shot executor: dev demos, annotations removed, sent in the prompt."""

import json
import re

import pytest
from dspy.utils.callback import BaseCallback
from fakes import ScriptedLM

from evals import plain_format
from evals.loaders import load


class Messages(BaseCallback):
    """The whole message list each LM call is sent (assistant turns too: the demos' solutions)."""

    def __init__(self):
        self.seen = []

    def on_lm_start(self, call_id, instance, inputs):
        self.seen.append(list(inputs.get("messages") or []))


class _Serving:
    """A llama.cpp server stand-in: `lm()` is the scripted model."""

    def __init__(self, lm):
        self._lm = lm

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def lm(self, **kwargs):
        return self._lm


@pytest.fixture
def scripted(monkeypatch):
    """`record` against a scripted model in place of a llama.cpp server; every reply boxes 18."""
    small = ScriptedLM("scripted/small", lambda call: "16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. \\boxed{18}")
    messages = Messages()
    small.lm.callbacks.append(messages)

    monkeypatch.setattr(plain_format, "LocalServer", lambda model, **kw: _Serving(small.lm))
    return small, messages


def test_demos_are_short_dev_problems_without_calculator_annotations():
    demos = plain_format.demos(4)
    dev = {ex.id: ex for ex in load("gsm8k", split="dev")}
    test_ids = {ex.id for ex in load("gsm8k", split="test")}
    assert len(demos) == 4 and len({d.id for d in demos}) == 4
    assert all(d.id in dev and d.id not in test_ids for d in demos)  # dev only, never a scored problem
    assert [d.id for d in demos] == [d.id for d in plain_format.demos(4)]  # the same demos on every run
    assert sum("<<" in dev[d.id].solution for d in demos) >= 3  # the data has annotations to strip
    for d in demos:
        assert "<<" not in d.solution and ">>" not in d.solution and "####" not in d.solution
        assert d.solution.endswith(f"\\boxed{{{dev[d.id].answer}}}.")
        assert len(d.solution) <= plain_format.DEMO_MAX_CHARS
        assert set(d.inputs().keys()) == {"question"}
    # the first of them, whole: the steps of the reference with the calculator's <<a*b=c>> removed
    assert demos[0].id == "gsm8k-22"
    assert demos[0].solution == (
        "His first 3 customers buy 3 * 1 = 3 DVDs.\nHis next 2 buy 2 * 2 = 4 DVDs.\n"
        "He sells a total of 3 + 4 + 0 = 7 DVDs.\nThe answer is \\boxed{7}."
    )


def test_few_shot_variant_sends_the_demos_and_the_plain_one_does_not(scripted, tmp_path):
    small, messages = scripted
    out = tmp_path / "run"
    argv = [
        "--models",
        "m",
        "--executors",
        "plain",
        "plain-4shot",
        "--planners",
        "--limit",
        "2",
        "--out",
        str(out),
    ]
    assert plain_format.main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["part"] for r in records} == {"executor"}  # `--planners` with no names: no guideline calls
    assert sorted((r["variant"], r["id"]) for r in records) == [
        ("plain", "gsm8k-0"),
        ("plain", "gsm8k-1"),
        ("plain-4shot", "gsm8k-0"),
        ("plain-4shot", "gsm8k-1"),
    ]
    demos = plain_format.demos(4)
    assert all(r["demos"] == [d.id for d in demos] for r in records if r["variant"] == "plain-4shot")
    assert all("demos" not in r for r in records if r["variant"] == "plain")

    assert len(messages.seen) == 4
    few_shot = [m for m in messages.seen if len(m) > 2]
    zero_shot = [m for m in messages.seen if len(m) == 2]
    assert len(few_shot) == 2 and len(zero_shot) == 2
    test_questions = {ex.question for ex in load("gsm8k", split="test", limit=2)}
    for sent in few_shot:
        assert [m["role"] for m in sent] == ["system"] + ["user", "assistant"] * 4 + ["user"]
        for i, d in enumerate(demos):
            assert sent[1 + 2 * i]["content"] == d.question.strip()  # the demo's question, as plain text
            assert sent[2 + 2 * i]["content"] == d.solution  # its worked solution, the whole reply
        text = "\n".join(m["content"] for m in sent[1:])  # past the instructions (which say "\boxed{}")
        assert re.findall(r"\\boxed\{([^}]*)\}", text) == ["7", "26", "25", "70"]  # the demos' answers
        assert (
            "<<" not in text and "####" not in text and "[[" not in text and "This is an example" not in text
        )
        assert sent[-1]["content"] in test_questions  # the scored question comes last
    for sent in zero_shot:
        assert [m["role"] for m in sent] == ["system", "user"]
        assert "\\boxed{7}" not in sent[1]["content"]
    # the reply is read as before: both variants score the scripted 18 (gsm8k-0's answer)
    assert {r["candidate"]["answer"] for r in records} == {"18"}
    summary = json.loads((out / "summary.json").read_text())
    assert {e["variant"] for e in summary["executors"]} == {"plain", "plain-4shot"}
    assert all(e["problems"] == 2 and e["mean_prompt_tokens"] == 100 for e in summary["executors"])


@pytest.mark.parametrize(
    "benchmark, ids, entry_point",
    [("humaneval", ["HumanEval/0", "HumanEval/3"], "has_close_elements"), ("mbpp", ["mbpp-11", "mbpp-13"], "remove_Occ")],
)
def test_code_planner_wordings_are_compared_with_recorded_large_alone_replies(
    monkeypatch, tmp_path, benchmark, ids, entry_point
):
    """`--benchmark humaneval` / `mbpp`: one guideline per recorded problem and wording, in plain text with the
    wording as the system message; a def of the function to write counts as stating the answer; the share is of
    the recorded large-alone reply's completion tokens on the same problems."""
    folder = tmp_path / "recorded"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"benchmark": benchmark}))
    lines = [
        {
            "format": "cope-dspy/records/1",
            "id": i,
            "variant": "default",
            "policy": {"n": 4, "stages": [1, 2, 3], "task": "code", "variant": "default"},
            "inputs": {},
            "answer": None,
            "stage": 1,
            "trace": [],
            "baselines": {"large_greedy": {"solution": "x", "usage": {"completion_tokens": 200}}},
        }
        for i in ids
    ]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))

    def respond(call):
        if "one sentence" in call.system:
            return "Sort the numbers, then compare neighbours."
        return f"Compare every pair:\n\n```python\ndef {entry_point}(numbers, threshold):\n    return False\n```"

    planner = ScriptedLM("scripted/large", respond, usage=(100, 50))
    monkeypatch.setattr(plain_format, "LocalServer", lambda model, **kw: _Serving(planner.lm))
    out = tmp_path / "run"
    argv = [
        "--benchmark",
        benchmark,
        "--models",
        "--answers",
        str(folder),
        "--guideline-limit",
        "500",
        "--out",
        str(out),
    ]
    assert plain_format.main(argv) == 0

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted((r["variant"], r["id"]) for r in records) == sorted(
        (v, i) for v in plain_format.CODE_PLANNERS for i in ids
    )  # only the recorded problems are asked
    assert {c.system.strip() for c in planner.calls} == {
        plain_format.CODE_ONE_SENTENCE,
        plain_format.CODE_HINT,
        plain_format.Code.instructions["guideline_planner"],
    }
    assert all("[[ ##" not in c.user for c in planner.calls)  # plain text, no field markers
    by = {(r["variant"], r["id"]): r for r in records}
    assert by[("code-today", ids[0])]["states_answer"]  # a def of the entry point, with a body
    assert not by[("code-today", ids[1])]["states_answer"]  # another function's name
    assert not any(by[(v, i)]["states_answer"] for v in ("code-one-sentence", "code-hint") for i in ids)
    summary = json.loads((out / "summary.json").read_text())
    shares = {g["variant"]: g["share_of_recorded_answer"] for g in summary["guidelines"]}
    assert shares == dict.fromkeys(plain_format.CODE_PLANNERS, 0.25)  # 50 scripted tokens of 200 recorded


def test_code_planner_run_refuses_executors_and_a_missing_answers_folder(tmp_path):
    with pytest.raises(SystemExit):
        plain_format.main(["--benchmark", "humaneval", "--out", str(tmp_path / "a")])  # executors' models
    with pytest.raises(SystemExit):
        plain_format.main(
            ["--benchmark", "humaneval", "--models", "--out", str(tmp_path / "b")]
        )  # no --answers
    with pytest.raises(SystemExit):
        plain_format.main(
            [
                "--benchmark",
                "humaneval",
                "--models",
                "--planners",
                "plain-today",
                "--answers",
                str(tmp_path),
                "--out",
                str(tmp_path / "c"),
            ]
        )  # a GSM8K wording


def test_math500_planner_wordings_count_boxed_answers_and_the_share_of_recorded_answers(monkeypatch, tmp_path):
    """`--benchmark math500`: guidelines only, as on HumanEval; a guideline that boxes an answer or whose
    answer reads as the gold one states the answer."""
    examples = load("math500", split="test", limit=2)
    folder = tmp_path / "recorded"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"benchmark": "math500"}))
    record = {"format": "cope-dspy/records/1", "variant": "default", "inputs": {}, "answer": None, "stage": 1,
              "policy": {"n": 4, "stages": [1, 2, 3], "task": "math", "variant": "default"}, "trace": [],
              "baselines": {"large_greedy": {"solution": "x", "usage": {"completion_tokens": 400}}}}
    (folder / "records.jsonl").write_text("".join(json.dumps({**record, "id": ex.id}) + "\n" for ex in examples))
    gold = {ex.question.strip(): ex.answer for ex in examples}

    def respond(call):
        if "hint" in call.system:
            return "Use the distance formula."
        return f"Work it out step by step, so the answer is \\boxed{{{gold[call.user.strip()]}}}."

    planner = ScriptedLM("scripted/large", respond, usage=(100, 40))
    monkeypatch.setattr(plain_format, "LocalServer", lambda model, **kw: _Serving(planner.lm))
    out = tmp_path / "run"
    argv = ["--benchmark", "math500", "--models", "--planners", "plain-one-sentence", "plain-hint", "--answers",
            str(folder), "--guideline-limit", "500", "--out", str(out)]
    assert plain_format.main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted((r["variant"], r["id"]) for r in records) == sorted(
        (v, ex.id) for v in ("plain-one-sentence", "plain-hint") for ex in examples)
    assert {r["variant"]: r["states_answer"] for r in records} == {"plain-one-sentence": True, "plain-hint": False}
    summary = json.loads((out / "summary.json").read_text())
    assert {g["variant"]: g["share_of_recorded_answer"] for g in summary["guidelines"]} == {
        "plain-one-sentence": 0.1, "plain-hint": 0.1}  # 40 scripted tokens of 400 recorded
    assert {g["variant"]: g["states_answer"] for g in summary["guidelines"]} == {
        "plain-one-sentence": 2, "plain-hint": 0}
