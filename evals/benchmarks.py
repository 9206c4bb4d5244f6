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

    report = run_tests(candidate["answer"], list(example.tests), setup=example.get("test_setup", ""),
                       entry_point=example.get("entry_point") if example.id.startswith("HumanEval") else None)
    return report.passed


_ALL = {
    "gsm8k": Benchmark("gsm8k", Math, _gsm8k),
    "math500": Benchmark("math500", Math, _math),
    "mbpp": Benchmark("mbpp", _code_task, _code),
    "humaneval": Benchmark("humaneval", _code_task, _code),
}


def get(name: str) -> Benchmark:
    return _ALL[name]
