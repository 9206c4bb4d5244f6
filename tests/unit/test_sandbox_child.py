"""The sandbox's child module, tested in-process where that is harmless (no limits, no guard applied here).

`tests/unit/test_sandbox.py` runs it for real in a child; these tests pin its pieces one by one.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import cope_dspy.sandbox_child as child
from cope_dspy.sandbox import _parse_marks, run_python

CHILD_SOURCE = Path(child.__file__).read_text(encoding="utf-8")


class Marks(list):
    """A `mark` that keeps what it was given."""

    def __call__(self, kind, *fields):
        self.append((kind, list(fields)))


# --- the child stays small and separate ---------------------------------------------------------------


def test_the_child_imports_the_standard_library_only():
    imported = set()
    for node in ast.walk(ast.parse(CHILD_SOURCE)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, "no imports found: the parse is wrong"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_a_candidate_sees_no_library_module_and_not_the_childs_directory():
    code = """
import code, json, sys
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("cope_dspy", "dspy", "litellm", "optuna"))
print(json.dumps({"loaded": loaded, "path": sys.path, "code": code.__file__}))
"""
    result = run_python(code)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert seen["loaded"] == []
    package_dir = os.path.dirname(child.__file__)
    assert package_dir not in seen["path"]
    assert os.path.dirname(seen["code"]) != package_dir  # `import code` is the standard library's, not ours


# --- markers ------------------------------------------------------------------------------------------


def test_marker_lines_read_back_as_the_parent_parses_them():
    nonce = "ab" * 16
    lines = [
        child.marker_line(nonce, "PASS", [0]),
        child.marker_line(nonce, "FAIL", [1, "AssertionError: héllo\nsecond line"]),
        child.marker_line("someone-else", "PASS", [2]),  # another nonce: ignored
        child.marker_line(nonce, "END", [1]),
    ]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    text = b"".join(lines).decode("utf-8")
    assert _parse_marks(text, nonce) == [
        ("PASS", [0]),
        ("FAIL", [1, "AssertionError: héllo\nsecond line"]),
        ("END", [1]),
    ]


def test_the_marker_writes_to_its_pipe_and_survives_a_closed_one():
    read_fd, write_fd = os.pipe()
    try:
        mark = child.Marker("n" * 32, write_fd)
        mark("READY")
        mark("FAIL", 3, "boom")
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            read_fd = -1
            written = f.read().decode()
        assert _parse_marks(written, "n" * 32) == [("READY", []), ("FAIL", [3, "boom"])]
        mark("END", 0)  # the fd is closed: dropped, not raised (the parent counts a missing END as a failure)
    finally:
        if read_fd >= 0:
            os.close(read_fd)


def test_read_payload_removes_the_file(tmp_path):
    path = tmp_path / "payload.json"
    path.write_text(json.dumps({"nonce": "x", "mode": "script"}), encoding="utf-8")
    assert child.read_payload(str(path)) == {"nonce": "x", "mode": "script"}
    assert not path.exists()


# --- descriptions -------------------------------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("boom"), "ValueError: boom"),
        (AssertionError(), "AssertionError"),
        (SystemExit(0), "SystemExit(0): the code exited before the tests finished"),
        (Unprintable(), "Unprintable: <unprintable>"),
        (ValueError("x" * 1000), "ValueError: " + "x" * 488),
    ],
    ids=["message", "no-message", "exit", "unprintable", "long"],
)
def test_describe_is_one_bounded_line_that_never_raises(exc, expected):
    assert child.describe(exc) == expected
    assert len(child.describe(exc)) <= 500


# --- limits and guard ---------------------------------------------------------------------------------


def test_the_run_gets_the_six_limits_from_its_payload():
    limits = {"memory_bytes": 512 * 2**20, "cpu_s": 6, "fsize": 32 * 2**20, "nofile": 256}
    assert child.rlimits(limits) == [
        ("RLIMIT_AS", 512 * 2**20),
        ("RLIMIT_CPU", 6),
        ("RLIMIT_NPROC", 0),
        ("RLIMIT_FSIZE", 32 * 2**20),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_CORE", 0),
    ]
    assert all(hasattr(resource, name) for name, _ in child.rlimits(limits))


def test_a_limit_never_exceeds_the_hard_limit_and_cpu_keeps_a_second_for_sigxcpu():
    inf = resource.RLIM_INFINITY
    assert child.soft_and_hard("RLIMIT_AS", 100, inf) == (100, 100)
    assert child.soft_and_hard("RLIMIT_AS", 100, 50) == (50, 50)  # cannot raise a finite hard limit
    assert child.soft_and_hard("RLIMIT_CPU", 6, inf) == (6, 7)
    assert child.soft_and_hard("RLIMIT_CPU", 6, 4) == (4, 4)


def test_disable_sets_the_named_functions_that_exist_to_none():
    module = SimpleNamespace(fork=lambda: 1, system=lambda cmd: 0, getcwd=lambda: "/")
    child.disable(module, ("fork", "system", "spawnv"))
    assert (module.fork, module.system) == (None, None)
    assert module.getcwd() == "/"
    assert not hasattr(module, "spawnv")


def test_the_guard_covers_process_creation_and_deletion():
    names = set(child.DISABLED_OS)
    assert {"fork", "system", "kill", "execv", "posix_spawn"} <= names
    assert {"remove", "unlink", "rename", "chmod", "chdir"} <= names
    assert {"setuid", "setresuid", "setsid", "setgroups"} <= names
    assert "getcwd" not in names  # left working on purpose (see docs/sandbox.md)
    assert {"resource", "_posixsubprocess", "psutil"} <= set(child.BLOCKED_MODULES)


# --- running the candidate ----------------------------------------------------------------------------


def test_a_script_runs_as_main(capsys):
    child.run_script("if __name__ == '__main__':\n    print('main ran')")
    assert capsys.readouterr().out == "main ran\n"


def test_a_failing_script_exits_1_with_the_candidates_traceback_only(capsys):
    with pytest.raises(SystemExit) as info:
        child.run_script("def f():\n    raise ValueError('boom')\nf()")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "ValueError: boom" in err
    assert '"<candidate>", line 3' in err
    assert "sandbox_child" not in err  # the harness's own frame is not shown


def test_a_syntax_error_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        child.run_script("def f(:\n    pass")
    assert info.value.code == 1
    assert "SyntaxError" in capsys.readouterr().err


def test_the_candidate_is_compiled_without_the_harness_future_imports(capsys):
    # an annotation naming something never imported fails at `def`, as it would in the candidate's own file
    with pytest.raises(SystemExit) as info:
        child.run_script("def f(xs: List[int]) -> int:\n    return 0\n")
    assert info.value.code == 1
    assert "NameError: name 'List' is not defined" in capsys.readouterr().err
    marks = Marks()
    with pytest.raises(SystemExit):
        child.run_program_and_tests(
            payload("def f(xs: List[int]):\n    return 0\n", ["assert f([]) == 0"]), marks
        )
    assert marks == [("LOADERR", ["program", "NameError: name 'List' is not defined"])]
    result = run_python("def f(xs: List[int]):\n    return 0\n")  # and so in a real child
    assert result.status == "failed" and "NameError: name 'List' is not defined" in result.stderr


def test_a_scripts_own_exit_code_passes_through():
    with pytest.raises(SystemExit) as info:
        child.run_script("import sys\nsys.exit(3)")
    assert info.value.code == 3


def payload(program: str, tests: list[str], setup: str = "", test_defs: str = "") -> dict:
    return {"setup": setup, "program": program, "test_defs": test_defs, "tests": tests}


def test_each_test_is_marked_and_the_run_ends_with_the_count(capsys):
    marks = Marks()
    tests = ["assert add_one(1) == 2", "assert add_one(1) == 3", "assert add_one(2) == 3"]
    with pytest.raises(SystemExit) as info:
        child.run_program_and_tests(payload("def add_one(x):\n    return x + 1\n", tests), marks)
    assert info.value.code == 1
    assert marks == [("PASS", [0]), ("FAIL", [1, "AssertionError"]), ("PASS", [2]), ("END", [2])]
    assert "test 1 failed:" in capsys.readouterr().err


def test_all_tests_passing_exits_0_and_setup_and_definitions_share_the_namespace():
    marks = Marks()
    with pytest.raises(SystemExit) as info:
        child.run_program_and_tests(
            payload("def area(r):\n    return pi * r * r\n", ["check(area)"], setup="from math import pi",
                    test_defs="def check(f):\n    assert f(1) == pi\n"),
            marks,
        )  # fmt: skip
    assert info.value.code == 0
    assert marks == [("PASS", [0]), ("END", [1])]


def test_the_program_does_not_run_as_main():
    marks = Marks()
    with pytest.raises(SystemExit) as info:
        child.run_program_and_tests(payload("assert __name__ != '__main__'", ["assert True"]), marks)
    assert info.value.code == 0


def test_a_program_that_raises_is_a_load_error_and_no_test_runs(capsys):
    marks = Marks()
    with pytest.raises(SystemExit) as info:
        child.run_program_and_tests(payload("raise ValueError('broken at import')", ["assert True"]), marks)
    assert info.value.code == 1
    assert marks == [("LOADERR", ["program", "ValueError: broken at import"])]


def test_sys_exit_inside_a_test_fails_that_test_only():
    marks = Marks()
    program = "import sys\ndef f(x):\n    if x < 0:\n        sys.exit(0)\n    return x\n"
    with pytest.raises(SystemExit) as info:
        child.run_program_and_tests(payload(program, ["assert f(-1) == -1", "assert f(1) == 1"]), marks)
    assert info.value.code == 1
    assert marks[0] == ("FAIL", [0, "SystemExit(0): the code exited before the tests finished"])
    assert marks[1:] == [("PASS", [1]), ("END", [1])]
