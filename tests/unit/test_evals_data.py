"""Benchmark loaders (committed data, deterministic splits) and answer metrics."""

import os
import sys
from pathlib import Path

# Before `datasets` is imported: hub calls must fail at once, never retry for seconds.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
# `evals` is not an installed package: make plain `pytest` (not only `python -m pytest`) find it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import hashlib  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from cope_dspy.code import Code  # noqa: E402
from evals import loaders  # noqa: E402
from evals.benchmarks import get  # noqa: E402
from evals.loaders import DEV_FRACTION, load  # noqa: E402
from evals.metrics import (  # noqa: E402
    bootstrap_mean_ci,
    extract_number,
    gsm8k_match,
    last_boxed,
    math_equiv,
    wilson_interval,
)

COUNTS = {"gsm8k": 1319, "math500": 500, "mbpp": 500, "humaneval": 164, "mtbench": 80}
# sha256 of the sorted dev ids, first 16 hex digits: a change here means every published split moved.
DEV_DIGESTS = {
    "gsm8k": "b4e625d86ba394a6",
    "math500": "300b794b97d1a6e3",
    "mbpp": "174c7b6131e72008",
    "humaneval": "2c0f6ed3b6c850a0",
    "mtbench": "5f0de53e67b94d8d",
}


# ---- loaders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COUNTS)
def test_counts_ids_and_inputs(name):
    examples = load(name, split="all")
    assert len(examples) == COUNTS[name]
    assert len({ex.id for ex in examples}) == len(examples)
    task = get(name).task()  # what the cascade reads from its call: the question and the task's context fields
    for ex in examples:
        assert {task.input_field, *task.context_fields} <= set(ex.inputs().keys()) <= {"question", "tests", "test_setup"}
        assert isinstance(ex.question, str) and ex.question.strip()


@pytest.mark.parametrize("name", COUNTS)
def test_splits_are_disjoint_complete_and_stable(name):
    all_ids = [ex.id for ex in load(name, split="all")]
    dev = [ex.id for ex in load(name, split="dev")]
    test = [ex.id for ex in load(name, split="test")]
    assert set(dev).isdisjoint(test)
    assert sorted(dev + test) == sorted(all_ids)
    assert len(dev) == round(DEV_FRACTION * len(all_ids))
    assert [ex.id for ex in load(name, split="dev")] == dev  # same on a second call
    assert dev == [i for i in all_ids if i in set(dev)]  # the benchmark's own order is kept
    digest = hashlib.sha256(",".join(sorted(dev)).encode()).hexdigest()[:16]
    assert digest == DEV_DIGESTS[name]


def test_limit_takes_the_first_of_the_split():
    assert [ex.id for ex in load("gsm8k", limit=5)] == [ex.id for ex in load("gsm8k")[:5]]
    assert len(load("math500", split="dev", limit=3)) == 3
    assert len(load("mtbench", split="all", limit=1000)) == 80


def test_gsm8k_fields():
    ex = load("gsm8k", split="all")[0]
    assert ex.id == "gsm8k-0"
    assert ex.question.startswith("Janet")
    assert ex.answer == "18"
    assert ex.solution.rstrip().endswith("#### 18")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", e.answer) for e in load("gsm8k", split="all"))


def test_math500_fields():
    examples = load("math500", split="all")
    first = examples[0]
    assert first.id == "math500-0"
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.level == 2 and first.subject == "Precalculus"
    assert {ex.level for ex in examples} == {1, 2, 3, 4, 5}
    assert len({ex.subject for ex in examples}) == 7
    assert all(last_boxed(ex.solution) == ex.answer for ex in examples)


def test_mbpp_fields():
    ex = load("mbpp", split="all")[0]
    assert ex.id == "mbpp-11"
    assert ex.entry_point == "remove_Occ"
    assert len(ex.hidden_tests) == 3 and all(t.startswith("assert") for t in ex.hidden_tests)
    assert ex.tests == ex.hidden_tests[:1]  # what accepts: the assert its prompt shows (acceptance "user")
    assert ex.question.startswith("Write a python function") and ex.tests[0] in ex.question
    assert ex.test_setup == ""
    examples = load("mbpp", split="all")
    assert {int(e.id.split("-")[1]) for e in examples} == set(range(11, 511))
    assert all(re.search(rf"\b{e.entry_point}\s*\(", e.tests[0]) for e in examples)


def test_humaneval_fields():
    ex = load("humaneval", split="all")[0]
    assert ex.id == "HumanEval/0"
    assert ex.entry_point == "has_close_elements"
    assert ex.question.startswith("from typing import List")
    assert len(ex.hidden_tests) == 1 and "def check(candidate)" in ex.hidden_tests[0]
    assert ex.hidden_tests[0].rstrip().endswith("check(has_close_elements)")
    assert len(ex.tests) == 2 and all(">>>" not in t and "has_close_elements(" in t for t in ex.tests)
    assert ex.solution.startswith(ex.question)


@pytest.mark.parametrize("pid, helper", [("HumanEval/0", "from typing import List"),
                                         ("HumanEval/10", "def is_palindrome(")])
def test_a_humaneval_reply_with_just_the_function_has_the_prompts_imports_and_helpers(pid, helper):
    """The prompt asks for one function; the code above it (imports, given helpers) is the test setup."""
    ex = next(e for e in load("humaneval", split="all") if e.id == pid)
    assert helper in ex.test_setup and f"def {ex.entry_point}(" not in ex.test_setup
    function_only = ex.solution[ex.solution.index(f"def {ex.entry_point}("):]
    assert get("humaneval").correct(ex, {"answer": function_only})
    assert not get("humaneval").correct(ex.copy(test_setup=""), {"answer": function_only})


@pytest.mark.parametrize("name", ["mbpp", "humaneval"])
def test_code_examples_call_the_cascade_with_their_tests(name):
    """The cascade reads `tests` from its call: a loaded example's inputs must carry them (not just the question)."""
    ex = load(name, split="all")[0]
    assert set(ex.inputs().keys()) == {"question", "tests", "test_setup"}
    Code().check_inputs(ex.inputs().toDict())  # raises if a field the code task needs is missing


@pytest.mark.parametrize("name", ["mbpp", "humaneval"])
def test_gold_solutions_pass_and_a_wrong_one_fails_the_benchmark_check(name):
    ex = load(name, split="all")[0]
    correct = get(name).correct
    assert correct(ex, {"answer": ex.solution})
    assert not correct(ex, {"answer": "def nothing():\n    return None\n"})


def test_mtbench_fields():
    examples = load("mtbench", split="all")
    assert examples[0].id == "mtbench-81"
    assert all(len(ex.turns) == 2 and ex.question == ex.turns[0] for ex in examples)
    assert len({ex.category for ex in examples}) == 8
    assert sum(ex.reference is not None for ex in examples) == 39
    assert sum(ex.reference_gpt4 is not None for ex in examples) == 30


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown benchmark"):
        load("gsm9k")
    with pytest.raises(ValueError, match="split"):
        load("gsm8k", split="train")
    with pytest.raises(ValueError, match="source"):
        load("gsm8k", source="internet")


def test_hub_source_fails_fast_offline():
    with pytest.raises(OSError):
        load("mtbench", source="hub")


def test_auto_falls_back_to_the_committed_copy(monkeypatch, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(loaders, "_hub_reachable", lambda: False)
    loaders._rows.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="evals.loaders"):
            assert len(load("mtbench", split="all")) == 80
    finally:
        loaders._rows.cache_clear()
    assert "hub unreachable" in caplog.text


def test_data_files_match_licenses_md():
    data = Path(loaders.DATA_DIR)
    licenses = (data / "LICENSES.md").read_text()
    for name, bench in loaders.BENCHMARKS.items():
        digest = hashlib.sha256((data / bench.file).read_bytes()).hexdigest()
        assert f"`{bench.file}` | {COUNTS[name]} |" in licenses
        assert digest in licenses, f"{bench.file} changed: rerun evals/data/extract.py"


# ---- metrics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, number",
    [
        ("18", "18"),
        ("She makes $18 every day.", "18"),
        ("1,000 apples", "1000"),
        ("It costs $1,234.50.", "1234.50"),
        ("-7 degrees", "-7"),
        ("\u22127", "-7"),
        ("5-3 is 2", "2"),
        (r"so \boxed{\frac{3}{4}} is it, not 5", "3/4"),
        (r"\boxed{1{,}000}", "1000"),
        ("The answer is 42. Check: 6*7 = 42, 3 more is 45", "42"),
        ("Answer:\n12", "12"),
        ("step 1 ... #### 72", "72"),
        ("no number here", None),
        (None, None),
        (18, "18"),
    ],
)
def test_extract_number(text, number):
    assert extract_number(text) == number


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("18", "18"),
        ("$18", "18"),
        ("18.00", "18"),
        ("18.", "18"),
        ("The answer is 18", "18"),
        ("1,000", "1000"),
        ("1000", "1,000"),
        ("-5", "-5"),
        ("3/4", "0.75"),
        (r"\frac{3}{4}", "0.75"),
        ("Janet makes 9 * 2 = 18 dollars.\n#### 18", "#### 18"),
        (18, "18"),
    ],
)
def test_gsm8k_match_true(pred, gold):
    assert gsm8k_match(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [("17", "18"), ("5", "-5"), ("0.7", "3/4"), ("180", "18"), ("", "18"), (None, "18"), ("no idea", "18")],
)
def test_gsm8k_match_false(pred, gold):
    assert not gsm8k_match(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        (r"\dfrac{14}{3}", r"\frac{14}{3}"),
        ("14/3", r"\frac{14}{3}"),
        ("0.75", r"\frac{3}{4}"),
        (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"),
        ("90", r"90^\circ"),
        (r"90^{\circ}", r"90^\circ"),
        ("Evelyn", r"\text{Evelyn}"),
        (r"\sqrt{117}", r"3\sqrt{13}"),
        ("(-\\infty,3]", r"(-\infty, 3]"),
        ("-2, 1", "1,-2"),
        ("32348", r"\$32,\!348"),
        ("18.9", r"\$18.90"),
        ("x^2+2x+1", "(x+1)^2"),
        (r"so the answer is $\boxed{4}$.", "4"),
        ("The answer is 5", "5"),
    ],
)
def test_math_equiv_true(pred, gold):
    assert math_equiv(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("5", r"\frac{1}{2}"),
        ("4.6667", r"\frac{14}{3}"),
        ("(-\\infty,3)", r"(-\infty, 3]"),
        ("Bob", r"\text{Evelyn}"),
        ("8n^2 + 4n + 1", "1"),
        ("x^2+2x", "(x+1)^2"),
        ("", "5"),
        (None, "5"),
        (r"\frac{", "5"),
        (r"}}{{\sqrt", r"\frac{1}{2}"),
    ],
)
def test_math_equiv_false(pred, gold):
    assert not math_equiv(pred, gold)


def test_math_equiv_reads_whole_solutions():
    for ex in load("math500", split="all", limit=10):
        assert math_equiv(ex.solution, ex.answer)


def test_math_equiv_works_off_the_main_thread():
    # math-verify's timeouts use SIGALRM, which raises outside the main thread (as under dspy.Parallel).
    results = []
    worker = threading.Thread(target=lambda: results.append(math_equiv("0.5", r"\frac{1}{2}")))
    worker.start()
    worker.join()
    assert results == [True]


def test_wilson_interval_holds_the_observed_rate_for_every_count():
    for n in range(1, 201):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, low, high)


def test_wilson_interval():
    low, high = wilson_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=1e-4) and high == pytest.approx(0.8666, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_bootstrap_mean_ci():
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    low, high = bootstrap_mean_ci(values)
    assert low < 3.5 < high
    assert bootstrap_mean_ci(values) == (low, high)  # same seed, same interval
    assert bootstrap_mean_ci([2.0] * 5) == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])
