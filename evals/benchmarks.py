"""Each benchmark: the task the cascade runs and how a candidate is judged correct."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy

from cope_dspy import Math, Task

from .metrics import gsm8k_match, math_equiv


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: Callable[[], Task]
    correct: Callable[[dspy.Example, dict[str, Any]], bool]


def _gsm8k(example, candidate) -> bool:
    return gsm8k_match(candidate["answer"], example.answer)


def _math(example, candidate) -> bool:
    return math_equiv(candidate["answer"], example.answer)


def _code_task():
    from cope_dspy.code import Code

    return Code()


def _code(example, candidate) -> bool:
    """Hidden tests = the task's own tests, run in the sandbox (reused when the cascade already ran them)."""
    tests = (candidate.get("extra") or {}).get("tests")
    if tests is not None:
        return tests["n_passed"] == tests["n_total"]
    from cope_dspy.sandbox import run_tests

    # the same call the cascade's TestsPass makes: MBPP's asserts, or HumanEval's check block that ends
    # with its own `check(entry_point)` call
    report = run_tests(candidate["answer"], list(example.tests), setup=example.get("test_setup", ""))
    return report.passed


def _text_task():
    from cope_dspy.text import Text

    # probe=False: no extra 1-token call at build time (the run's small model is a local llama-server, which
    # returns logprobs); a small model that drops them shows as every stage-1/2 sample with no score.
    return Text(probe=False)


def _judged(example, candidate) -> bool:
    """Open-ended replies have no answer key: a method's quality is its pairwise win against large alone,
    judged at report time (evals/judge.py), so nothing is marked correct when recording."""
    return False


_ALL = {
    "gsm8k": Benchmark("gsm8k", Math, _gsm8k),
    "math500": Benchmark("math500", Math, _math),
    "mbpp": Benchmark("mbpp", _code_task, _code),
    "humaneval": Benchmark("humaneval", _code_task, _code),
    "mtbench": Benchmark("mtbench", _text_task, _judged),
}


def get(name: str) -> Benchmark:
    return _ALL[name]
