"""The code task: reading code from replies, judging candidates by their tests, and the cascade around it."""

import asyncio
import threading
import time

import pytest
from fakes import ScriptedLM, reply

import cope_dspy.code as code_module
from cope_dspy import Cascade, CopeInputError
from cope_dspy.code import Code, SandboxError, TestsPass, extract_code
from cope_dspy.consensus import Candidate
from cope_dspy.sandbox import SandboxResult, TestReport

Q = "Write a function add(a, b) that returns the sum of a and b."
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]
GOOD = "def add(a, b):\n    return a + b"
WRONG = "def add(a, b):\n    return a - b"  # passes add(0, 0) only
HALF = "def add(a, b):\n    return 3 if (a, b) == (1, 2) else a - b"  # passes add(1, 2) and add(0, 0)


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def ballot(n, tau=0.5, early_stop=False, **kwargs):
    return TestsPass(timeout_s=kwargs.pop("timeout_s", 5), **kwargs).ballot(
        n, tau, None, {"question": Q, "tests": TESTS}, early_stop=early_stop)


def cands(*programs):
    return [Candidate(index=i, answer=p) for i, p in enumerate(programs)]


# ---------------------------------------------------------------- parsing


def test_parse_takes_the_last_fenced_block_of_the_answer():
    answer = f"First try:\n{fenced('x = 1')}\nBetter:\n{fenced(GOOD)}\n"
    assert extract_code("", answer) == GOOD
    assert extract_code("", f"```py\n{GOOD}\n```") == GOOD
    assert extract_code("", f"```\n{GOOD}\n```") == GOOD


def test_parse_falls_back_to_the_solution_then_bare_code_then_abstains():
    assert extract_code(f"Here it is:\n{fenced(GOOD)}", "") == GOOD
    assert extract_code("explanation", GOOD) == GOOD  # answer without fences that looks like code
    assert extract_code("import math", "") is None  # an import alone in the solution is prose, not a program
    # small models put unfenced code in the solution and a test call in the answer: the code is the program
    assert extract_code(f"The approach:\n{GOOD}", "assert add(1, 2) == 3") == GOOD
    assert extract_code(f"import math\n{GOOD}", "") == f"import math\n{GOOD}"
    assert extract_code("We define a helper that adds.", "assert add(1, 2) == 3") is None
    assert extract_code("I would add them.", "The sum of a and b.") is None
    assert extract_code("", f"```python\n{GOOD}\n") == GOOD  # a reply cut off before the closing fence
    assert Code().parse("", fenced(GOOD)) == GOOD


def test_code_signature_asks_for_code_in_the_answer_field():
    sig = Code().signature("small_executor")
    assert "python" in sig.output_fields["answer"].json_schema_extra["desc"].lower()
    assert "expert Python programmer" in Code().signature("goal_planner").instructions
    assert "one sentence" in Code().signature("goal_planner").instructions
    assert "plain text" in Code().signature("guideline_planner").instructions


# ---------------------------------------------------------------- the consensus


def test_lowest_index_passing_candidate_is_chosen():
    b = ballot(3)
    assert b.wave() == 3
    b.add(cands(WRONG, GOOD, GOOD))
    assert b.wave() == 0
    d = b.decision()
    assert (d.accepted, d.confidence, d.chosen.index) == (True, 1.0, 1)
    assert [c.index for c in d.supporters] == [1, 2]
    assert d.candidates[0].score == pytest.approx(1 / 3)
    assert d.candidates[1].score == 1.0
    assert d.candidates[0].extra["tests"]["status"] == "failed"
    assert d.candidates[0].extra["tests"]["first_failure"].startswith("assert add(1, 2) == 3")
    assert d.candidates[1].extra["tests"] == {"n_passed": 3, "n_total": 3, "status": "passed", "first_failure": None}


def test_no_pass_rejects_and_keeps_the_candidate_with_most_tests_passed():
    b = ballot(3)
    b.add([Candidate(0, answer=WRONG), Candidate(1, answer=None), Candidate(2, answer=HALF)])
    d = b.decision()
    assert (d.accepted, d.confidence, d.chosen.index, d.supporters) == (False, 0.0, 2, [])
    assert d.candidates[1].extra["tests"]["status"] == "no_code"


def test_tau_one_never_accepts_and_tau_zero_always_does():
    for tau, accepted in ((1.0, False), (0.0, True)):
        b = ballot(1, tau=tau)
        b.add(cands(GOOD if tau == 1.0 else WRONG))
        assert b.decision().accepted is accepted


def test_abstaining_candidates_are_not_run(monkeypatch):
    ran = []
    real = code_module.run_tests
    monkeypatch.setattr(code_module, "run_tests", lambda program, *a, **k: ran.append(program) or real(program, *a, **k))
    b = ballot(2)
    b.add([Candidate(0, answer=None), Candidate(1, answer=GOOD)])
    assert ran == [GOOD]


def test_loops_exits_and_crashes_fail_without_raising():
    bad = [
        "def add(a, b):\n    while True:\n        pass",
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "def add(a, b):\n    raise SystemExit(3)",
        "this is not python",
    ]
    b = ballot(len(bad), timeout_s=1)
    start = time.monotonic()
    b.add(cands(*bad))
    d = b.decision()
    assert time.monotonic() - start < 4  # the loop is cut at its timeout, runs are concurrent
    assert (d.accepted, d.confidence) == (False, 0.0)
    assert [c.extra["tests"]["status"] for c in d.candidates][:1] == ["timeout"]
    assert all(c.score == 0.0 for c in d.candidates)


def test_sandbox_failure_is_retried_then_raised_never_scored(monkeypatch):
    broken = TestReport(False, 0, 3, SandboxResult(False, "error", None, "", "cannot start the interpreter", False, 0.0),
                        "the sandbox failed")
    calls = []
    monkeypatch.setattr(code_module, "run_tests", lambda *a, **k: calls.append(1) or broken)
    with pytest.raises(SandboxError, match="not with the candidate"):
        ballot(1).add(cands(GOOD))
    assert len(calls) == 2  # one retry

    real = TestReport(True, 3, 3, SandboxResult(True, "passed", 0, "", "", False, 0.0), None)
    seq = iter([broken, real])
    monkeypatch.setattr(code_module, "run_tests", lambda *a, **k: next(seq))
    b = ballot(1)
    b.add(cands(GOOD))
    assert b.decision().accepted  # a transient failure is absorbed by the retry


def test_early_stop_draws_waves_of_half_and_stops_at_a_pass():
    b = ballot(8, early_stop=True)
    assert b.wave() == 4
    b.add(cands(WRONG, WRONG, WRONG, WRONG))
    assert b.wave() == 4
    b.add([Candidate(i, answer=GOOD if i == 5 else WRONG) for i in range(4, 8)])
    assert b.wave() == 0 and b.decision().chosen.index == 5


def test_a_pass_cancels_test_runs_of_higher_candidates_not_yet_started(monkeypatch):
    started = []
    lock = threading.Lock()
    ok = TestReport(True, 3, 3, SandboxResult(True, "passed", 0, "", "", False, 0.0), None)
    bad = TestReport(False, 0, 3, SandboxResult(False, "failed", 1, "", "", False, 0.0), "assert ...")

    def fake(program, *a, **k):
        with lock:
            started.append(program)
        if program != "p0":
            time.sleep(0.2)
        return ok if program == "p0" else bad

    monkeypatch.setattr(code_module, "run_tests", fake)
    b = TestsPass(max_workers=1).ballot(4, 0.5, None, {"tests": TESTS}, early_stop=True)
    b.add(cands("p0", "p1", "p2", "p3"))
    d = b.decision()
    assert d.chosen.index == 0 and d.accepted
    assert "p3" not in started and "p2" not in started
    assert d.candidates[3].extra["tests"]["status"] == "skipped"


def test_inputs_are_checked_before_any_call():
    task = Code()
    with pytest.raises(CopeInputError, match="tests"):
        task.check_inputs({"question": Q})
    with pytest.raises(CopeInputError, match="non-empty"):
        task.check_inputs({"question": Q, "tests": [""]})
    task.check_inputs({"question": Q, "tests": []})  # no acceptance test: allowed, nothing can accept
    with pytest.raises(CopeInputError, match="entry_point"):
        task.check_inputs({"question": Q, "tests": TESTS, "entry_point": "not a name"})
    with pytest.raises(CopeInputError):
        Code(timeout_s=0)
    task.check_inputs({"question": Q, "tests": TESTS, "test_setup": "import math"})


# ---------------------------------------------------------------- the cascade


def coder(name, programs, guideline="Return a + b."):
    """A scripted model: goals and guidelines are fixed, executions answer programs(call) in a fence."""

    def respond(call):
        if call.role == "goal":
            return reply(goal=f"Add two numbers #{call.rollout_id}")
        if call.role == "guideline":
            return reply(guideline=guideline)
        return reply(solution="Add the two arguments.", answer=fenced(programs(call)))

    return ScriptedLM(name, respond)


def test_cascade_accepts_stage_one_when_a_sample_passes():
    small = coder("scripted/small", lambda call: GOOD if call.rollout_id == 1 else WRONG)
    large = coder("scripted/large", lambda call: GOOD)
    pred = Cascade(small=small.lm, large=large.lm, task=Code(), n=2)(question=Q, tests=["assert add(1,2)==3"])
    assert (pred.stage, pred.accepted, pred.confidence, pred.answer) == (1, True, 1.0, GOOD)
    assert large.calls == []
    record = pred.trace[0]["candidates"]
    assert [c["extra"]["tests"]["status"] for c in record] == ["failed", "passed"]


def test_cascade_escalates_to_the_large_model_when_nothing_passes():
    small = coder("scripted/small", lambda call: WRONG)
    large = coder("scripted/large", lambda call: GOOD)
    pred = Cascade(small=small.lm, large=large.lm, task=Code(), n=2)(question=Q, tests=TESTS)
    assert (pred.stage, pred.answer) == (3, GOOD)  # stage 3's program, returned as is
    assert [c.role for c in large.calls] == ["guideline", "execute"]
    assert [t["accepted"] for t in pred.trace if t["kind"] == "vote"] == [False, False]


def test_early_stop_draws_fewer_samples_when_the_first_wave_passes():
    small = coder("scripted/small", lambda call: GOOD)
    large = coder("scripted/large", lambda call: GOOD)
    pred = Cascade(small=small.lm, large=large.lm, task=Code(), n=8)(question=Q, tests=TESTS)
    assert pred.stage == 1 and len(small.by_role("execute")) == 4  # one wave of ceil(8/2)

    small = coder("scripted/small", lambda call: GOOD)
    pred = Cascade(small=small.lm, large=large.lm, task=Code(), n=8, early_stop=False)(question=Q, tests=TESTS)
    assert pred.stage == 1 and len(small.by_role("execute")) == 8


def test_cascade_refuses_a_call_without_tests():
    small = coder("scripted/small", lambda call: GOOD)
    cascade = Cascade(small=small.lm, large=small.lm, task=Code(), n=2)
    with pytest.raises(CopeInputError, match="tests"):
        cascade(question=Q)
    assert small.calls == []


def test_async_cascade_runs_the_same_tests():
    small = coder("scripted/small", lambda call: GOOD if call.rollout_id == 0 else WRONG)
    large = coder("scripted/large", lambda call: GOOD)
    pred = asyncio.run(Cascade(small=small.lm, large=large.lm, task=Code(), n=2).acall(question=Q, tests=TESTS))
    assert (pred.stage, pred.answer, pred.confidence) == (1, GOOD, 1.0)
