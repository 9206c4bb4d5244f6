"""Code generation: candidates are judged by running the task's own tests (the paper's MBPP setting).

A stage accepts when some candidate passes every test; the cascade then returns that program. When none
passes, the stage escalates (stage 3's program is returned as is: the large model's answer is final).

    from cope_dspy import Cascade
    from cope_dspy.code import Code

    cascade = Cascade(small=..., large=..., task=Code())
    pred = cascade(question="Write a function add(a, b) that returns the sum of a and b.",
                   tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    print(pred.answer)  # the Python program

The tests are never shown to the models (only `question` is): put the function name and signature, or an
example call, in the question, as MBPP prompts do. Call fields the task reads: `tests` (a list of assert
statements, MBPP's `test_list`, or a HumanEval `check(candidate)` block as one string), and optionally
`test_setup` (MBPP's `test_setup_code`) and `entry_point` (HumanEval: the function `check` receives).

Give the tests you really have: those are what accept a program. A docstring's examples become tests with
`doctest_tests(stub)`. `tests=[]` means no acceptance test: no stage can accept a small model's program on
tests, so a cascade that runs stage 3 goes there at once (the trace says which stages it skipped); one
that stops earlier returns its last stage's first program, untested.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import dspy

from .consensus import Candidate, Decision, accepts
from .errors import CopeError, CopeInputError
from .sandbox import TestReport, run_tests
from .tasks import Task
from .user_tests import doctest_tests

__all__ = ["Code", "SandboxError", "TestsPass", "TestsBallot", "doctest_tests", "extract_code"]


class SandboxError(CopeError):
    """The code sandbox itself failed (status "error": the interpreter could not start, a lost child...).

    This is an environment problem, not a wrong program, so it is never scored as a failed candidate:
    scoring it as one would silently escalate every problem to the paid model.
    """


_PROGRAMMER = "You are an expert Python programmer."
_SOLVE = (
    f"{_PROGRAMMER} Write a correct, self-contained Python solution to the coding problem, following the plan "
    "if one is given. Use exactly the function name and signature the problem asks for, include every import "
    "the code needs, and do not read input or print: define the function(s) only."
)
_EXECUTE = f"{_SOLVE} Put the complete code in the answer as a single ```python block."
# In a plain format the whole reply is one field: it ends with the code.
_EXECUTE_PLAIN = f"{_SOLVE} Explain the approach briefly, then end your reply with the complete code in one ```python block."


class Code(Task):
    """Python coding problems judged by their tests: a stage accepts as soon as one candidate passes them all.

    Args:
        timeout_s: wall-clock limit of one candidate's test run (program and all its tests).
        memory_mb: address-space limit of that run.
        max_workers: test runs in flight at once (each is one sandboxed interpreter).
        instructions: per-role instruction overrides (see `Task`).

    Confidence is 1.0 when a candidate passed every test, else 0.0; so any tau in (0, 1) means "accept iff
    some candidate passed" (tau = 1 always escalates, tau = 0 always accepts the best-scoring candidate).
    Each candidate's trace entry gets `score` = tests passed / tests and `extra["tests"]` =
    {n_passed, n_total, status, first_failure}; `status` is the sandbox's ("passed", "failed", "timeout",
    "memory", "killed"), "no_code" for a candidate with no code to run, "no_tests" when the call has no
    tests (nothing can accept it), or "skipped" when the stage was already decided by a lower-index passing
    candidate. A sandbox failure (status "error") is retried once
    and then raises `SandboxError`: an environment problem is never scored as a wrong program.
    """

    name = "code"
    input_field = "question"
    context_fields = ("tests",)
    instructions = {
        "goal_planner": (
            f"{_PROGRAMMER} State the goal of the coding problem in one sentence: what the code must compute "
            "or do. Do not write any code and do not solve the problem."
        ),
        "guideline_planner": (
            f"{_PROGRAMMER} Explain how to solve the coding problem: the strategy and the key ideas (algorithm, "
            "data structures, edge cases), in one or two sentences. Give only the guideline as plain text; "
            "do not write any code."
        ),
        "small_executor": _EXECUTE,
        "large_executor": _EXECUTE,
    }
    plain_instructions = {"small_executor": _EXECUTE_PLAIN, "large_executor": _EXECUTE_PLAIN}

    def __init__(self, timeout_s: float = 5, memory_mb: float = 512, max_workers: int = 4,
                 instructions: dict[str, str] | None = None):
        super().__init__(instructions=instructions)
        if not _is_number(timeout_s) or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise CopeInputError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
        if not _is_number(memory_mb) or not math.isfinite(memory_mb) or memory_mb < 32:
            raise CopeInputError(f"memory_mb must be a number of MiB >= 32, got {memory_mb!r}")
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise CopeInputError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.timeout_s, self.memory_mb, self.max_workers = timeout_s, memory_mb, max_workers

    def signature(self, role: str, format: str = "chat") -> type[dspy.Signature]:
        sig = super().signature(role, format)
        if role.endswith("executor") and "answer" in sig.output_fields:
            sig = sig.with_updated_fields(
                "solution", desc="a brief explanation of the approach, in plain words"
            ).with_updated_fields(
                "answer", desc="only the complete, self-contained Python code, in one ```python block"
            )
        return sig

    def parse(self, solution: str, answer: str = "") -> str | None:
        return extract_code(solution, answer)

    def same(self, a: str, b: str) -> bool:
        return _normalize_code(a) == _normalize_code(b)

    def consensus(self) -> TestsPass:
        return TestsPass(timeout_s=self.timeout_s, memory_mb=self.memory_mb, max_workers=self.max_workers)

    def can_accept(self, inputs: dict[str, Any]) -> bool:
        """A program is accepted only on a passed test: with `tests=[]` no stage can accept."""
        return bool(inputs.get("tests"))

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        super().check_inputs(inputs)
        _check_tests(inputs["tests"])
        setup = inputs.get("test_setup", "")
        if setup is not None and not isinstance(setup, str):
            raise CopeInputError(f"test_setup must be a string of Python source (may be empty), got {setup!r:.80}")
        entry_point = inputs.get("entry_point")
        if entry_point is not None and (not isinstance(entry_point, str) or not entry_point.isidentifier()):
            raise CopeInputError(
                f"entry_point must be the name of the function under test (a Python identifier), got {entry_point!r}"
            )

    def __repr__(self) -> str:
        return f"Code(timeout_s={self.timeout_s}, memory_mb={self.memory_mb}, max_workers={self.max_workers})"


# -------------------------------------------------------------------- reading code from a reply

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
_OPEN_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*)\Z", re.S | re.I)
_LOOKS_LIKE_CODE = re.compile(r"(^|\n)\s*(def |class |import |from \S+ import )")
_DEFINES = re.compile(r"(^|\n)(def|class) \w+")


def _last_block(text: str) -> str | None:
    """The last fenced code block (```python, ```py or bare ```); else an unclosed final fence (a reply cut
    off by max_tokens)."""
    blocks = [m.group(2) for m in _FENCE.finditer(text or "") if m.group(2).strip()]
    if blocks:
        return blocks[-1].strip("\n")
    tail = _OPEN_FENCE.search(text or "")
    if tail and tail.group(2).strip():
        return tail.group(2).strip("\n")
    return None


def extract_code(solution: str, answer: str = "") -> str | None:
    """The program a candidate proposes, or None (abstain): the last fenced block of the answer field, else of
    the solution; else the answer text itself when it looks like code (a `def`, `class` or import); else,
    when the solution defines a function or class without fences (small models often put the code there and
    a test call in the answer), the solution from its first line of code on."""
    for text in (answer, solution):
        code = _last_block(text or "")
        if code is not None:
            return code
    text = (answer or "").strip()
    if text and ("def " in text or "import " in text) and _LOOKS_LIKE_CODE.search("\n" + text):
        return text
    start = _LOOKS_LIKE_CODE.search("\n" + (solution or ""))
    if start and _DEFINES.search(solution or ""):
        return ("\n" + solution)[start.start():].strip("\n")
    return None


def _normalize_code(code: str) -> str:
    return "\n".join(line.rstrip() for line in (code or "").strip().splitlines() if line.strip())


# -------------------------------------------------------------------- the consensus

class TestsPass:
    """Consensus for code: run each candidate on the task's tests; accept when one passes them all.

    With `early_stop`, samples are drawn in waves of ceil(n/2) (a whole wave's tests run concurrently) and
    the ballot is decided as soon as a candidate passes; without it all n are drawn at once and every
    candidate is tested (what `Cascade.record` needs for calibration).
    """

    __test__ = False  # not a pytest class

    def __init__(self, timeout_s: float = 5, memory_mb: float = 512, max_workers: int = 4):
        self.timeout_s, self.memory_mb, self.max_workers = timeout_s, memory_mb, max_workers

    def ballot(self, n: int, tau: float, same, example: dict[str, Any] | None = None,
               early_stop: bool = True) -> TestsBallot:
        if not example or "tests" not in example:
            raise CopeInputError("the code consensus needs the call's tests: cascade(question=..., tests=[...])")
        return TestsBallot(
            n, tau, tests=example["tests"], setup=example.get("test_setup") or "",
            entry_point=example.get("entry_point"), early_stop=early_stop, timeout_s=self.timeout_s,
            memory_mb=self.memory_mb, max_workers=self.max_workers,
        )


class TestsBallot:
    __test__ = False

    def __init__(self, n: int, tau: float, *, tests, setup: str = "", entry_point: str | None = None,
                 early_stop: bool = True, timeout_s: float = 5, memory_mb: float = 512, max_workers: int = 4):
        self.n, self.tau, self.early_stop = n, tau, early_stop
        self.tests, self.setup, self.entry_point = tests, setup, entry_point
        self.timeout_s, self.memory_mb, self.max_workers = timeout_s, memory_mb, max_workers
        self.candidates: list[Candidate] = []
        self.reports: dict[int, TestReport] = {}  # candidate index -> its test report

    # -- protocol

    def wave(self) -> int:
        drawn = len(self.candidates)
        remaining = self.n - drawn
        if remaining <= 0:
            return 0
        if not self.early_stop:
            return remaining
        if self._passers():
            return 0  # decided: the lowest-index passer is final (later samples have higher indices)
        if self.tau >= 1.0 or not self.tests:
            # the stage can never accept (tau = 1, or no test to pass): one sample is enough to pass a goal on
            # (as Vote does)
            return 0 if drawn else 1
        return min(math.ceil(self.n / 2), remaining)

    def add(self, candidates: list[Candidate]) -> None:
        new = sorted(candidates, key=lambda c: c.index)
        self.candidates.extend(new)
        runnable = []
        for c in new:
            if c.answer is None:
                c.score = None
                c.extra["tests"] = {"n_passed": 0, "n_total": None, "status": "no_code", "first_failure": None}
            elif not self.tests:  # nothing to run it against: it can be returned, never accepted
                c.score = None
                c.extra["tests"] = {"n_passed": 0, "n_total": 0, "status": "no_tests", "first_failure": None}
            else:
                runnable.append(c)
        if runnable:
            self._test(runnable)

    def decision(self) -> Decision:
        passers = self._passers()
        tested = [c for c in self.candidates if c.index in self.reports]
        if passers:
            chosen, confidence = passers[0], 1.0
        elif tested:  # the candidate that passed the most tests; the earliest on ties
            chosen, confidence = max(tested, key=lambda c: (self.reports[c.index].n_passed, -c.index)), 0.0
        else:  # nothing was run (no tests, or every sample abstained): the first program, if any
            programs = [c for c in self.candidates if c.answer is not None] or self.candidates
            chosen, confidence = (programs[0] if programs else None), 0.0
        return Decision(
            accepted=accepts(confidence, self.tau), confidence=confidence, chosen=chosen,
            supporters=list(passers), drawn=len(self.candidates), candidates=list(self.candidates),
        )

    # -- running tests

    def _passers(self) -> list[Candidate]:
        return [c for c in self.candidates if c.index in self.reports and self.reports[c.index].passed]

    def _run(self, c: Candidate) -> TestReport:
        report = None
        for _attempt in range(2):  # one retry: a sandbox failure may be transient (e.g. fork under load)
            report = run_tests(
                c.answer, self.tests, setup=self.setup, entry_point=self.entry_point,
                timeout_s=self.timeout_s, memory_mb=self.memory_mb,
            )
            if report.result.status != "error":
                return report
        detail = (report.result.stderr or "").strip()[-300:] if report is not None else ""
        raise SandboxError(
            f"the code sandbox could not run candidate {c.index} (twice): {detail or 'no detail'}. This is a "
            "problem with the environment (Python interpreter, temporary directory, process limits), not with "
            "the candidate; fix it rather than letting every candidate count as wrong. See docs/sandbox.md."
        )

    def _test(self, runnable: list[Candidate]) -> None:
        """Run the candidates' tests concurrently. With early stop, once a candidate passes, test runs of
        higher-index candidates that have not started are cancelled (they could not be chosen)."""
        best_pass: int | None = None  # the lowest passing index so far
        workers = min(self.max_workers, len(runnable))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cope-tests") as pool:
            futures: dict[Future, Candidate] = {pool.submit(self._run, c): c for c in runnable}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in sorted(done, key=lambda f: futures[f].index):
                        c = futures[f]
                        if f.cancelled():
                            continue
                        report = f.result()  # a SandboxError propagates
                        self.reports[c.index] = report
                        _record(c, report)
                        if report.passed and self.early_stop and (best_pass is None or c.index < best_pass):
                            best_pass = c.index
                            for g, other in futures.items():
                                if other.index > c.index:
                                    g.cancel()  # only succeeds for runs that have not started
            except BaseException:
                for g in futures:
                    g.cancel()
                raise
        for f, c in futures.items():
            if f.cancelled():
                c.score = None
                c.extra["tests"] = {"n_passed": None, "n_total": None, "status": "skipped",
                                    "first_failure": None}


def _record(c: Candidate, report: TestReport) -> None:
    c.score = report.n_passed / report.n_total if report.n_total else 0.0
    c.extra["tests"] = {
        "n_passed": report.n_passed, "n_total": report.n_total, "status": report.result.status,
        "first_failure": report.first_failure,
    }


# -------------------------------------------------------------------- input checks

def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_tests(tests: object) -> None:
    if isinstance(tests, str):
        parts = [tests]
    elif isinstance(tests, Sequence) and not isinstance(tests, bytes | bytearray):
        parts = list(tests)
    else:
        raise CopeInputError(
            f"tests must be a list of assert statements or one string of test code, got {type(tests).__name__}"
        )
    for i, part in enumerate(parts):
        if not isinstance(part, str) or not part.strip():
            raise CopeInputError(f"tests[{i}] must be a non-empty string of Python source, got {part!r:.80}")
