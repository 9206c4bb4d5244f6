"""Realistic code acceptance: a stage accepts on the tests a user has, grading uses every test, and acceptance
never runs a grading-only test; old tables re-derive under the user rule with no model call."""

import json

import dspy
import pytest
from fakes import ScriptedLM, reply

import cope_dspy.code as code_module
import cope_dspy.sandbox as sandbox_module
from cope_dspy import Cascade, Code, CopeInputError, Prices
from cope_dspy.code import TestsPass, doctest_tests
from cope_dspy.consensus import Candidate
from cope_dspy.records import upgrade
from cope_dspy.sandbox import run_tests
from evals.benchmarks import get, record_example
from evals.loaders import load
from evals.report import choose, code_baseline_rows, code_rows, write_report
from evals.rescore import accept_record, main

GOOD = "def add(a, b):\n    return a + b"
# passes the one test a user has (add(1, 2) == 3) and fails a grading test
SHOWN_ONLY = "def add(a, b):\n    return 3 if (a, b) == (1, 2) else a - b"
USER = ["assert add(1, 2) == 3"]
PRICES = Prices({"scripted/large": (1.0, 1.0), "scripted/small": (0.0, 0.0)})
GRADING_ONLY = "assert add(2, 2) == 4, 'GRADING-ONLY TEST RAN'"
STUB = '''from typing import List


def helper(x):
    """
    >>> helper(1)
    99
    """


def add(a: int, b: int) -> int:
    """Add two numbers.
    >>> add(1, 2)
    3
    >>> add(-1, 1)
    0
    """
'''


# ---------------------------------------------------------------- doctest examples as tests


def test_doctest_tests_reads_one_functions_examples_and_runs_them_as_doctests():
    tests = doctest_tests(STUB, "add")
    assert len(tests) == 2  # the helper's example is not about `add`
    assert run_tests(GOOD, tests).passed
    report = run_tests(SHOWN_ONLY, tests)
    assert (report.n_passed, report.n_total) == (1, 2) and "Expected:\n    0" in report.first_failure
    assert len(doctest_tests(STUB)) == 3  # every function's examples when none is named


def test_doctest_tests_without_examples_or_with_a_broken_docstring():
    assert doctest_tests('def f(x):\n    """Double x, e.g. f(2) == 4."""\n', "f") == []
    broken = 'def f(x):\n    """\n    >>> f("a\n  b")\n    """\n'
    with pytest.raises(CopeInputError, match="not valid doctests"):
        doctest_tests(broken, "f")


# ---------------------------------------------------------------- no acceptance test


def test_a_call_without_tests_never_accepts_and_draws_one_sample_a_stage():
    ballot = TestsPass().ballot(4, 0.5, None, {"tests": []}, early_stop=True)
    assert ballot.wave() == 1
    ballot.add([Candidate(index=0, answer=GOOD)])
    assert ballot.wave() == 0
    d = ballot.decision()
    assert (
        not d.accepted and d.chosen.answer == GOOD
    )  # returned (a last stage answers with it), never accepted
    assert d.candidates[0].extra["tests"]["status"] == "no_tests"


def _coder(name, program):
    def respond(call):
        if call.role == "goal":
            return reply(goal="Add two numbers.")
        if call.role == "guideline":
            return reply(guideline="Return a + b.")
        return reply(solution="Add them.", answer=f"```python\n{program}\n```")

    return ScriptedLM(name, respond)


def test_cascade_without_tests_goes_straight_to_stage_three():
    small, large = _coder("scripted/small", GOOD), _coder("scripted/large", GOOD)
    cascade = Cascade(small=small.lm, large=large.lm, task=Code(), n=4, prices=PRICES)
    pred = cascade(question="write add", tests=[])
    assert pred.stage == 3 and pred.answer == GOOD
    assert small.calls == []  # stages 1 and 2 could only escalate: no small-model call at all
    assert [e["kind"] for e in pred.trace] == ["skipped", "guideline", "final"]
    assert pred.trace[0]["stages"] == [1, 2]
    assert pred.trace[1]["stage"] == 3 and set(pred.cost_by_stage) == {3}  # the guideline is stage 3's plan
    assert len(large.by_role("guideline")) == 1 and len(large.by_role("execute")) == 1


def test_without_tests_stage_three_alone_pays_no_guideline():
    small, large = _coder("scripted/small", GOOD), _coder("scripted/large", GOOD)
    cascade = Cascade(small=small.lm, large=large.lm, task=Code(), n=4, prices=PRICES, stage3_plans=False)
    pred = cascade(question="write add", tests=[])
    assert pred.stage == 3 and pred.answer == GOOD and pred.plans == {}
    assert small.calls == [] and large.by_role("guideline") == [] and len(large.by_role("execute")) == 1


def test_without_tests_a_cascade_that_stops_early_still_runs_its_stages_and_record_runs_all():
    small, large = _coder("scripted/small", GOOD), _coder("scripted/large", GOOD)
    stop = Cascade(small=small.lm, large=large.lm, task=Code(), n=4, prices=PRICES, stages=(1, 2))
    pred = stop(question="write add", tests=[])
    assert pred.stage == 2 and not pred.accepted and pred.answer == GOOD  # the first program, untested
    assert "skipped" not in [e["kind"] for e in pred.trace]
    full = Cascade(small=small.lm, large=large.lm, task=Code(), n=4, prices=PRICES)
    kinds = [e["kind"] for e in full.record(question="write add", tests=[]).trace]
    assert kinds == ["vote", "guideline", "vote", "final"]  # calibration replays every stage


# ---------------------------------------------------------------- the loaders


def test_user_acceptance_gives_mbpp_its_shown_assert_and_grades_on_all():
    user, grading = load("mbpp", split="all"), load("mbpp", split="all", acceptance="grading")
    for u, g in zip(user, grading, strict=True):
        assert u.tests == u.user_tests == u.hidden_tests[:1] and u.tests[0] in u.question
        assert g.tests == g.hidden_tests == u.hidden_tests and len(g.hidden_tests) >= 3
        assert set(u.inputs().keys()) == {
            "question",
            "tests",
            "test_setup",
        }  # hidden tests are never an input


def test_user_acceptance_gives_humaneval_its_docstring_examples():
    examples = load("humaneval", split="all")
    assert all("def check(" not in t and f"check({ex.entry_point})" not in t for ex in examples for t in ex.tests)
    assert all(ex.hidden_tests[0].rstrip().endswith(f"check({ex.entry_point})") for ex in examples)
    # 75 prompts have doctest examples for the function to write; of the other 89, 77 show examples written
    # out ("f(x) == y", "f(x) => y", "Input: ... Output: ..."), and 12 show neither: those cannot be accepted
    assert sum(not ex.tests for ex in examples) == 12
    assert sum(bool(ex.tests) and ex.tests[0].startswith("assert ") for ex in examples) == 77
    first = examples[0]
    assert len(first.tests) == 2 and run_tests(first.solution, first.tests, setup=first.test_setup).passed
    with pytest.raises(ValueError, match="acceptance"):
        load("humaneval", acceptance="hidden")


# ---------------------------------------------------------------- acceptance never runs a grading-only test


def test_user_acceptance_never_runs_a_grading_only_test(monkeypatch):
    """Every sandbox run is logged: the cascade's ballot and the baselines' acceptance only ever run the user's
    test; the grading-only test (which fails loudly) runs only when grading, and grading sees it fail."""
    runs = []

    def spy(where, real):
        def run(program, tests, **kwargs):
            runs.append((where, list(tests)))
            return real(program, tests, **kwargs)

        return run

    monkeypatch.setattr(code_module, "run_tests", spy("cascade ballot", code_module.run_tests))
    monkeypatch.setattr(sandbox_module, "run_tests", spy("evals", sandbox_module.run_tests))
    small, large = _coder("scripted/small", SHOWN_ONLY), _coder("scripted/large", GOOD)
    cascade = Cascade(small=small.lm, large=large.lm, task=Code(), n=2, prices=PRICES)
    ex = dspy.Example(
        id="mbpp-x",
        question="write add",
        tests=USER,
        user_tests=USER,
        hidden_tests=[*USER, GRADING_ONLY],
        test_setup="",
    ).with_inputs("question", "tests", "test_setup")
    bench = get("mbpp")
    record = record_example(cascade, ex, bench.correct, accept=bench.accept)

    stage1 = record["trace"][0]
    assert stage1["accepted"] and all(c["accepted"] and not c["correct"] for c in stage1["candidates"])
    assert all(c["accepted"] and not c["correct"] for c in record["baselines"]["small_samples"])
    assert runs and all(tests == USER for where, tests in runs if where == "cascade ballot")
    ran_grading_only = [tests for _, tests in runs if GRADING_ONLY in tests]
    assert ran_grading_only and all(tests == ex.hidden_tests for tests in ran_grading_only)  # grading only
    assert (
        sum(tests == USER for _, tests in runs) == 2 + 2 + 2
    )  # stages 1 and 2 (recorded in full), small samples
    assert record["acceptance_tests"] == 1


# ---------------------------------------------------------------- replaying a stage under the user rule


def cand(i, correct, accepted=None, n_passed=0, answer="code", usd=0.0):
    c = {
        "index": i,
        "answer": answer,
        "correct": correct,
        "usage": {"calls": 1, "usd": usd},
        "extra": {"seconds": 1.0, "tests": {"n_passed": n_passed, "n_total": 2, "status": "failed"}},
    }
    if accepted is not None:
        c["accepted"] = accepted
        c["extra"]["tests"]["status"] = "passed" if accepted else "failed"
    return c


def rec(stage1, stage2, final_correct=True, acceptance_tests=2, samples=None):
    return upgrade({
        "id": "p",
        "acceptance_tests": acceptance_tests,
        "cope": {
            "seconds": 1.0,
            "trace": [
                {"kind": "vote", "stage": 1, "tau": 0.75, "candidates": stage1},
                {"kind": "guideline", "stage": 2, "usage": {"calls": 1, "usd": 1.0}, "seconds": 1.0},
                {"kind": "vote", "stage": 2, "tau": 0.5, "candidates": stage2},
                {"kind": "final", "stage": 3, "candidates": [cand(0, final_correct, usd=1.0)]},
            ],
        },
        "baselines": {
            "small_greedy": cand(0, False),
            "large_greedy": cand(0, True, usd=1.0),
            "small_samples": samples or [cand(i, False, False) for i in range(4)],
        },
    })


def test_a_stage_returns_the_first_program_passing_its_user_tests_even_when_wrong():
    r = rec(
        [cand(0, True, False, 1), cand(1, False, True, 2), cand(2, True, True, 2), cand(3, True, False)],
        [cand(i, False, False) for i in range(4)],
    )
    (row,), exits = code_rows([r], n=4)
    assert row["stage"] == 1 and not row["correct"] and row["calls"] == 2  # wave 1 (samples 0-1): 1 accepted
    assert choose(r["trace"][0]["candidates"][:1]) == (r["trace"][0]["candidates"][0], False)


def test_a_last_stage_without_a_pass_answers_with_the_program_passing_most():
    stage2 = [
        cand(0, False, False, 0),
        cand(1, True, False, 1),
        cand(2, False, False, 1),
        cand(3, False, False),
    ]
    (row,), _ = code_rows([rec([cand(i, False, False) for i in range(4)], stage2)], n=4, stages=(1, 2))
    # sample 1: the most user tests passed, the earliest of those; right on grading
    assert row["stage"] == 2 and row["correct"]


def test_no_acceptance_test_goes_straight_to_stage_three_as_the_live_cascade_does():
    r = rec(
        [cand(i, True, False) for i in range(4)], [cand(i, True, False) for i in range(4)], acceptance_tests=0
    )
    (row,), _ = code_rows([r], n=4)
    assert row["stage"] == 3 and row["calls"] == 1 + 1 and row["usd"] == 2.0  # the guideline, the final
    (alone,), _ = code_rows([r], n=4, stage3_plans=False)
    assert alone["calls"] == 1 and alone["usd"] == 1.0 and alone["correct"]  # the large-alone call only
    (stop,), _ = code_rows([r], n=4, stages=(1, 2))  # stopping at stage 2: one sample a stage, untested
    assert stop["stage"] == 2 and stop["calls"] == 1 + 1 + 1 and stop["correct"]
    mot = code_baseline_rows([r], "user")["small n, then large if none passes (MoT-style)"][0]
    assert (mot["stage"], mot["calls"], mot["usd"]) == (2, 1, 1.0)  # no small sample drawn, then large


def test_old_grading_records_replay_as_before_and_a_missing_stage_three_is_refused():
    old = rec([cand(i, i == 3) for i in range(4)], [cand(i, False) for i in range(4)])
    for c in [*old["trace"][0]["candidates"], *old["trace"][2]["candidates"]]:
        c.pop("accepted", None)  # old records: accepted = correct
    (row,), _ = code_rows([old], n=4)
    assert row["stage"] == 1 and row["correct"] and row["calls"] == 4
    old["trace"] = old["trace"][:3]
    with pytest.raises(ValueError, match="no stage-3 answer"):
        code_rows([old], n=4)


def test_stage3_alone_answers_with_the_recorded_large_alone_program():
    nothing = [cand(i, False, False) for i in range(4)]
    r = rec(nothing, nothing, final_correct=False)  # the planned stage 3 is wrong, the large model alone right
    (planned,), _ = code_rows([r], n=4)
    (alone,), _ = code_rows([r], n=4, stage3_plans=False)
    assert (planned["stage"], planned["correct"]) == (3, False) and (alone["stage"], alone["correct"]) == (3, True)
    r["baselines"]["large_greedy"]["usage"]["usd"] = 2.5
    (alone,), _ = code_rows([r], n=4, stage3_plans=False)
    assert alone["usd"] == 1.0 + 2.5  # the guideline for stage 2, then the large-alone call
    (skip2,), _ = code_rows([r], n=4, stages=(1, 3), stage3_plans=False)
    assert skip2["usd"] == 2.5 and skip2["calls"] == 4 + 1  # no guideline without stage 2: a MoT-style cascade


def test_mot_style_keeps_the_first_sample_passing_its_user_tests():
    samples = [cand(0, False, False), cand(1, False, True), cand(2, True, True), cand(3, True, False)]
    rows = code_baseline_rows([rec([], [], samples=samples)], "user")
    mot = rows["small n, then large if none passes (MoT-style)"][0]
    assert mot["stage"] == 1 and not mot["correct"] and mot["usd"] == 0.0
    assert not rows["small n, the one its user tests pick"][0]["correct"]


# ---------------------------------------------------------------- re-deriving a recorded folder


def test_accept_record_decides_each_stage_again_and_keeps_the_recorded_grades():
    stage1 = [
        {
            "index": 0,
            "answer": SHOWN_ONLY,
            "correct": False,
            "solution": "",
            "usage": {"calls": 1},
            "extra": {},
        },
        {"index": 1, "answer": GOOD, "correct": True, "solution": "", "usage": {"calls": 1}, "extra": {}},
    ]
    r = rec(
        stage1,
        [{**c, "extra": {}} for c in stage1],
        samples=[{"index": 0, "answer": SHOWN_ONLY, "correct": False, "extra": {}}],
    )
    ex = dspy.Example(tests=USER, hidden_tests=[*USER, GRADING_ONLY], test_setup="")
    ran = accept_record(r, ex, Code(), get("mbpp").accept)
    vote = r["trace"][0]
    assert ran == 5 and vote["accepted"] and vote["answer"] == SHOWN_ONLY  # the first passing the shown test
    assert [(c["accepted"], c["correct"]) for c in vote["candidates"]] == [(True, False), (True, True)]
    assert all(c["extra"]["tests"]["n_total"] == 1 for c in vote["candidates"])
    assert r["baselines"]["small_samples"][0]["accepted"] and r["acceptance_tests"] == 1


def test_rescore_acceptance_writes_a_new_folder_and_leaves_the_recorded_one_alone(tmp_path):
    examples = {ex.id: ex for ex in load("mbpp", split="all")}
    ex = examples["mbpp-11"]
    gold = {
        "index": 0,
        "answer": ex.solution,
        "correct": True,
        "solution": "",
        "usage": {"calls": 1, "usd": 0.0},
        "extra": {"seconds": 1.0},
    }
    r = rec([gold], [gold], samples=[dict(gold)])
    r["id"] = "mbpp-11"
    r.pop("acceptance_tests")
    (tmp_path / "run.json").write_text(
        json.dumps(
            {"benchmark": "mbpp", "split": "test", "n": 1, "small": "s", "large": "l", "command": "recorded"}
        )
    )
    (tmp_path / "records.jsonl").write_text(json.dumps(r) + "\n")
    write_report(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main([str(tmp_path), "--acceptance", "user"]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    out = tmp_path / "acceptance-user"
    run = json.loads((out / "run.json").read_text())
    assert (run["acceptance"], run["recorded_acceptance"], run["derived_from"]) == (
        "user",
        "grading",
        str(tmp_path),
    )
    assert "Code acceptance: **user**" in (out / "table.md").read_text()
    (new,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert new["acceptance_tests"] == 1 and new["trace"][0]["candidates"][0]["accepted"]
    with pytest.raises(SystemExit, match="acceptance 'user' already.*--out"):
        main([str(out), "--acceptance", "user"])
    again = tmp_path / "again"  # the same rule on today's tests: only into a folder named for it
    assert main([str(out), "--acceptance", "user", "--out", str(again)]) == 0
    run = json.loads((again / "run.json").read_text())
    assert (run["acceptance"], run["recorded_acceptance"], run["derived_from"]) == ("user", "user", str(out))
    (same,) = [json.loads(line) for line in (again / "records.jsonl").read_text().splitlines()]
    assert same["trace"][0]["candidates"][0]["accepted"] and same["acceptance_tests"] == 1


def test_a_code_folder_recorded_before_the_setting_refuses_new_user_records(tmp_path):
    from evals.run import check_same_settings

    meta = {"benchmark": "mbpp", "split": "test", "small": "s", "large": "l", "n": 4, "max_tokens": 384}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (tmp_path / "records.jsonl").write_text('{"id": "mbpp-11"}\n')
    check_same_settings(tmp_path, meta | {"role_max_tokens": {}, "acceptance": "grading"})
    with pytest.raises(SystemExit, match="acceptance='grading'; this run asks acceptance='user'"):
        check_same_settings(tmp_path, meta | {"role_max_tokens": {}, "acceptance": "user"})
    (tmp_path / "run.json").write_text(json.dumps(meta | {"benchmark": "gsm8k"}))  # no rule for math: resumes
    check_same_settings(tmp_path, meta | {"benchmark": "gsm8k", "role_max_tokens": {}, "acceptance": None})


def test_a_humaneval_folder_of_doctest_acceptance_takes_no_records_of_the_example_line_rule(tmp_path):
    from evals.folders import user_tests
    from evals.join import join
    from evals.run import check_same_settings

    old = {"benchmark": "humaneval", "split": "test", "small": "s", "large": "l", "n": 4, "max_tokens": 768,
           "acceptance": "user", "command": "recorded"}  # recorded before run.json named its user tests
    now = old | {"role_max_tokens": {}, "formats": {}, "wordings": {}, "prices": {},
                 "user_tests": user_tests("humaneval", "user")}
    (tmp_path / "run.json").write_text(json.dumps(old))
    (tmp_path / "records.jsonl").write_text('{"id": "HumanEval/0"}\n')
    with pytest.raises(SystemExit, match="user_tests='docstring doctests'; this run asks user_tests='docstring "
                                         "doctests, else example lines'"):
        check_same_settings(tmp_path, now)
    new = tmp_path / "new"
    new.mkdir()
    (new / "run.json").write_text(json.dumps(now))
    (new / "records.jsonl").write_text('{"id": "HumanEval/1"}\n')
    with pytest.raises(SystemExit, match="user_tests="):
        join(new, tmp_path)
    assert user_tests("mbpp", "user") == "the first assert" and user_tests("humaneval", "grading") is None
    mbpp = old | {"benchmark": "mbpp"}  # MBPP's user tests did not change: an old folder resumes
    (tmp_path / "run.json").write_text(json.dumps(mbpp))
    check_same_settings(tmp_path, now | {"benchmark": "mbpp", "user_tests": user_tests("mbpp", "user")})
