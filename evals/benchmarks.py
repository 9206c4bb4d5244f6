"""Each benchmark: the task the cascade runs, how a candidate is judged correct, and its records (the cascade's
trace plus the baselines' samples, in `cope_dspy.records`' one format)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from cope_dspy import Math, Task
from cope_dspy.errors import CopeInputError
from cope_dspy.records import Records, candidates, record_each, record_line
from cope_dspy.records import mark_accepted as library_mark_accepted
from cope_dspy.user_tests import docstring_tests, example_tests

from .metrics import gsm8k_match, math_equiv


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: where its problems come from (`evals.loaders.load` reads them), the task the cascade runs
    on them, and how a candidate is judged correct."""

    name: str
    file: str  # committed copy in evals/data/
    hub: tuple[str, str | None, str]  # (dataset path, config, split) on the Hugging Face hub
    to_example: Callable[[int, dict], dict]  # a data row as the example's fields
    task: Callable[..., Task]  # task(instructions=None): a role's wording over the task's own
    correct: Callable[[dspy.Example, dict[str, Any]], bool]
    # code only: the test report of a candidate on the tests that accept it (the example's `tests`)
    accept: Callable[[dspy.Example, dict[str, Any]], dict[str, Any]] | None = None
    # what the cascade is called with: the question, plus the fields the task reads and the LMs never see
    inputs: tuple[str, ...] = ("question",)


def _gsm8k(example, candidate) -> bool:
    return gsm8k_match(candidate["answer"], example.answer)


def _math(example, candidate) -> bool:
    return math_equiv(candidate["answer"], example.answer)


def _code_task(instructions: dict[str, str] | None = None):
    from cope_dspy.code import Code

    return Code(instructions=instructions)


def _hidden_tests(example) -> list[str]:
    """Every grading test; an example built by hand with only `tests` is graded by them."""
    return list(example.get("hidden_tests") or example.tests)


def _code(example, candidate) -> bool:
    """Graded by every test of the benchmark (`hidden_tests`), run in the sandbox. The cascade's report on the
    candidate is reused only when the tests it ran (`tests`, what accepts) are those same grading tests."""
    hidden = _hidden_tests(example)
    tests = (candidate.get("extra") or {}).get("tests")
    if tests is not None and tests.get("n_total") and list(example.tests) == hidden:
        return tests["n_passed"] == tests["n_total"]
    from cope_dspy.sandbox import run_tests

    # the same call the cascade's TestsPass makes: MBPP's asserts, or HumanEval's check block that ends
    # with its own `check(entry_point)` call
    report = run_tests(candidate["answer"], hidden, setup=example.get("test_setup", ""))
    return report.passed


def _code_accept(example, candidate) -> dict[str, Any]:
    """The candidate's report on the tests that accept it (the example's `tests`), as the cascade's ballot
    records it: {n_passed, n_total, status, first_failure}; status "no_tests" when there are none."""
    from cope_dspy.sandbox import run_tests

    tests = list(example.tests)
    if candidate.get("answer") is None:
        return {"n_passed": 0, "n_total": None, "status": "no_code", "first_failure": None}
    if not tests:
        return {"n_passed": 0, "n_total": 0, "status": "no_tests", "first_failure": None}
    report = run_tests(candidate["answer"], tests, setup=example.get("test_setup", ""))
    return {"n_passed": report.n_passed, "n_total": report.n_total, "status": report.result.status,
            "first_failure": report.first_failure}


def _text_task(instructions: dict[str, str] | None = None):
    from cope_dspy.text import Text

    # probe=False: no extra 1-token call at build time (the run's small model is a local llama-server, which
    # returns logprobs); a small model that drops them shows as every stage-1/2 sample with no score.
    return Text(probe=False, instructions=instructions)


def _judged(example, candidate) -> bool:
    """Open-ended replies have no answer key: a method's quality is its pairwise win against large alone,
    judged at report time (evals/judge.py), so nothing is marked correct when recording."""
    return False


def _gsm8k_example(i: int, row: dict) -> dict:
    # The hub's `answer` is the whole solution ending in "#### N"; the committed copy has split them.
    solution = row.get("solution") or row["answer"]
    answer = solution.split("####")[-1].strip().replace(",", "")
    return {"id": f"gsm8k-{i}", "question": row["question"], "answer": answer, "solution": solution}


def _math500_example(i: int, row: dict) -> dict:
    return {
        "id": f"math500-{i}",
        "question": row["problem"],
        "answer": row["answer"],
        "solution": row["solution"],
        "level": int(row["level"]),
        "subject": row.get("subject"),
    }


def _mbpp_example(i: int, row: dict) -> dict:
    tests = list(row["test_list"])
    # The function the tests call: the first `def` of the gold code whose name the first test uses.
    names = re.findall(r"^def\s+(\w+)", row["code"], flags=re.MULTILINE)
    entry_point = next((n for n in names if re.search(rf"\b{n}\s*\(", tests[0])), names[-1] if names else "")
    return {
        "id": f"mbpp-{row['task_id']}",
        # As in the MBPP paper's prompt: the task, then a test that shows the expected signature.
        "question": f"{row['text']}\nYour code should pass this test:\n{tests[0]}",
        "hidden_tests": tests,
        "user_tests": tests[:1],  # the one the prompt shows
        "test_setup": row.get("test_setup_code") or "",
        "entry_point": entry_point,
        "solution": row["code"],
    }


def _humaneval_example(i: int, row: dict) -> dict:
    # The prompt's code above the function to write (its imports, and the helpers some problems give, e.g.
    # `is_palindrome` for `make_palindrome`) runs before the program: a reply that writes just the function,
    # as the prompt asks, still has `List` and the helpers it was shown.
    start = re.search(rf"^def\s+{re.escape(row['entry_point'])}\s*\(", row["prompt"], flags=re.MULTILINE)
    return {
        "id": row["task_id"],
        "question": row["prompt"],
        # One test program: HumanEval's `check(candidate)` and its call on the entry point.
        "hidden_tests": [f"{row['test']}\n\ncheck({row['entry_point']})\n"],
        # The examples in the docstring of the function to write (the helpers' are not about it): its
        # doctests, else its example lines ("f(2) == 4"); [] when it has neither.
        "user_tests": _user_tests(row),
        "test_setup": row["prompt"][: start.start()] if start else "",
        "entry_point": row["entry_point"],
        "solution": row["prompt"] + row["canonical_solution"],
    }


def _user_tests(row: dict) -> list[str]:
    """The examples of the entry point's docstring: as doctests, else as example lines. When doctest refuses
    the docstring (a user running `python -m doctest` on it would get an error, not a test), its example
    lines only."""
    try:
        return docstring_tests(row["prompt"], row["entry_point"])
    except CopeInputError:
        return example_tests(row["prompt"], row["entry_point"])


def _mtbench_example(i: int, row: dict) -> dict:
    return {
        "id": f"mtbench-{row['question_id']}",
        "question": row["turns"][0],
        "turns": list(row["turns"]),
        "category": row["category"],
        "reference": list(row["reference"]) if row.get("reference") else None,
        "reference_gpt4": list(row["reference_gpt4"]) if row.get("reference_gpt4") else None,
    }


CODE_INPUTS = ("question", "tests", "test_setup")
BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", "gsm8k.jsonl.gz", ("openai/gsm8k", "main", "test"), _gsm8k_example, Math, _gsm8k),
    "math500": Benchmark("math500", "math500.jsonl.gz", ("HuggingFaceH4/MATH-500", None, "test"), _math500_example,
                         Math, _math),
    "mbpp": Benchmark("mbpp", "mbpp.jsonl.gz", ("google-research-datasets/mbpp", "full", "test"), _mbpp_example,
                      _code_task, _code, _code_accept, CODE_INPUTS),
    "humaneval": Benchmark("humaneval", "humaneval.jsonl.gz", ("openai/openai_humaneval", None, "test"),
                           _humaneval_example, _code_task, _code, _code_accept, CODE_INPUTS),
    "mtbench": Benchmark("mtbench", "mtbench.jsonl", ("lighteval/mt-bench", None, "train"), _mtbench_example,
                         _text_task, _judged),
}


def get(name: str) -> Benchmark:
    return BENCHMARKS[name]


Correct = Callable[[dspy.Example, dict[str, Any]], bool]
Accept = Callable[[dspy.Example, dict[str, Any]], dict[str, Any]]


def mark_accepted(record: dict[str, Any], example: dspy.Example, accept: Accept) -> None:
    """Code: say of every candidate a stage could accept whether it passed the tests that accept (the
    example's `tests`: under the user rule not the grading ones), in place. The cascade's samples carry the
    report of its own ballot, which ran those tests; the unplanned small samples are run here."""
    library_mark_accepted(record)
    record["acceptance_tests"] = len(example.tests)
    for c in (record.get("baselines") or {}).get("small_samples", []):
        c.setdefault("extra", {})["tests"] = report = accept(example, c)
        c["accepted"] = report["status"] == "passed"


def record_example(cascade, example: dspy.Example, correct: Correct, baselines: bool = True,
                   accept: Accept | None = None) -> dict[str, Any]:
    """One problem's record: the cascade's full trace and the baselines' samples, each candidate graded."""
    record = record_line(cascade, example, example.id, baselines=baselines)
    if accept is not None:  # before grading: under the grading rule the grader reuses these reports
        mark_accepted(record, example, accept)
    for candidate in candidates(record):
        candidate["correct"] = bool(candidate["answer"] is not None and correct(example, candidate))
    return record


def record_all(cascade, examples: list[dspy.Example], correct: Correct, path: Path, *, concurrency: int = 2,
               progress: bool = True, baselines: bool = True, accept: Accept | None = None) -> dict[str, dict]:
    """Record every example not yet in `path` (`cope_dspy.records.record_each`: resumable, Ctrl-C keeps the
    problems in flight); returns all records (old and new) by id."""
    return record_each(cascade, [(ex.id, ex) for ex in examples],
                       lambda job: record_example(cascade, job[1], correct, baselines, accept), path,
                       concurrency=concurrency, progress=progress, desc=f"recording {path.parent.name}",
                       unit="problem").by_id()


def folder_records(folder: Path) -> Records:
    """A result folder's records (`records.jsonl`, none yet when it is missing). Records made before the format
    had a `format` field name no task: the folder's benchmark (run.json) says it."""
    path = Path(folder) / "records.jsonl"
    if not path.exists():
        return Records([], path)
    run = json.loads((Path(folder) / "run.json").read_text())
    return Records.load(path, task=get(run["benchmark"]).task().name)
