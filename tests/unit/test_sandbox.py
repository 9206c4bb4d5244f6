"""The sandbox runs hostile-looking candidates to a failed result, never a crash or a hang of the caller.

Every run here is bounded to a few seconds (the machine may be busy), so the whole file takes seconds.
"""

from __future__ import annotations

import json
import os
import pwd
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from cope_dspy.errors import CopeInputError
from cope_dspy.sandbox import SandboxResult, TestReport, run_python, run_tests

MBPP_PROGRAM = "def add_one(x):\n    return x + 1\n"
MBPP_TESTS = ["assert add_one(1) == 2", "assert add_one(-1) == 0", "assert add_one(41) == 42"]

HUMANEVAL_TEST = """
METADATA = {"author": "jt", "dataset": "test"}


def check(candidate):
    assert candidate(2, 3) == 5
    assert candidate(-1, 1) == 0
"""


# --- plain runs --------------------------------------------------------------------------------------


def test_a_simple_script_passes_and_its_output_is_captured():
    result = run_python("import sys\nprint('hello')\nprint('oops', file=sys.stderr)")
    assert isinstance(result, SandboxResult)
    assert (result.ok, result.status, result.returncode) == (True, "passed", 0)
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert result.truncated is False
    assert 0 < result.duration_s < 5


def test_the_script_runs_as_main():
    result = run_python("if __name__ == '__main__':\n    print('main ran')")
    assert result.stdout == "main ran\n"


@pytest.mark.parametrize(
    "code",
    ["while True:\n    pass", "import time\ntime.sleep(60)"],
    ids=["busy-loop", "sleep"],
)
def test_a_hang_times_out_within_the_limit(code):
    start = time.monotonic()
    result = run_python(code, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert result.ok is False
    assert elapsed < 1.0 + 2.0
    assert result.duration_s >= 1.0


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(10 * 1024**3)\nprint('allocated')",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**6))",
    ],
    ids=["10GB-at-once", "grow-until-full"],
)
def test_allocating_too_much_memory_is_a_memory_failure(code):
    result = run_python(code, memory_mb=128, timeout_s=5.0)
    assert result.status == "memory"
    assert result.ok is False
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


def test_an_exception_is_a_failure_with_its_traceback():
    result = run_python("def f():\n    raise ValueError('boom')\nf()")
    assert (result.ok, result.status, result.returncode) == (False, "failed", 1)
    assert "ValueError: boom" in result.stderr
    assert '"<candidate>", line 3' in result.stderr


def test_a_syntax_error_is_a_failure():
    result = run_python("def f(:\n    pass")
    assert (result.ok, result.status) == (False, "failed")
    assert "SyntaxError" in result.stderr


def test_sys_exit_codes_are_reported():
    assert run_python("import sys\nsys.exit(3)").returncode == 3
    assert run_python("import sys\nsys.exit(3)").status == "failed"
    assert run_python("import sys\nsys.exit(0)").ok is True


def test_a_segfault_is_killed_not_a_crash_of_the_caller():
    result = run_python("import ctypes\nctypes.string_at(0)")
    assert result.status == "killed"
    assert result.returncode is not None and result.returncode < 0
    assert result.ok is False


def test_reading_stdin_gets_eof_instead_of_hanging():
    start = time.monotonic()
    result = run_python("input()", timeout_s=3.0)
    assert time.monotonic() - start < 2.5
    assert result.status == "failed"
    assert "EOFError" in result.stderr


# --- containment -------------------------------------------------------------------------------------


FORK_BOMB = """
import ctypes, os, subprocess, threading
made = 0
failures = set()
libc = ctypes.CDLL(None, use_errno=True)
for _ in range(50):
    for name, start in (
        ("os.fork", lambda: os.fork()),
        ("subprocess", lambda: subprocess.Popen(["true"]).pid),
        ("os.system", lambda: os.system("true")),
        ("thread", lambda: threading.Thread(target=lambda: None).start() or 1),
        ("libc.fork", lambda: libc.fork()),
    ):
        try:
            pid = start()
        except Exception:
            failures.add(name)
            continue
        if name == "libc.fork":
            if pid == 0:
                libc._exit(0)  # a child escaped: leave at once
            if pid < 0:
                failures.add(name)
                continue
        made += 1
print("made", made, "failed", sorted(failures))
"""


def test_a_fork_bomb_cannot_start_any_process_or_thread():
    start = time.monotonic()
    result = run_python(FORK_BOMB, timeout_s=3.0)
    assert time.monotonic() - start < 5.0
    assert result.status == "passed", result.stderr
    # the guard stops os.fork/subprocess/os.system; RLIMIT_NPROC=0 stops libc's fork() and threads.
    assert (
        result.stdout.strip() == "made 0 failed ['libc.fork', 'os.fork', 'os.system', 'subprocess', 'thread']"
    )


def test_writing_to_home_lands_in_the_temporary_directory(tmp_path, monkeypatch):
    fake_home = tmp_path / "home"
    fake_home.mkdir()
    monkeypatch.setenv("HOME", str(fake_home))  # the caller's HOME: the child must not inherit it
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    name = f"owned-{uuid.uuid4().hex}.txt"
    code = f"""
import json, os
listing = sorted(os.listdir("."))
path = os.path.expanduser("~/{name}")
with open(path, "w") as f:
    f.write("pwned")
print(json.dumps({{"home": os.environ["HOME"], "cwd": os.getcwd(), "path": path, "listing": listing}}))
"""
    result = run_python(code)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert seen["listing"] == []  # a fresh, empty working directory
    assert seen["home"] == seen["cwd"]
    assert os.path.dirname(seen["path"]) == seen["cwd"]
    assert not (fake_home / name).exists()
    assert not (real_home / name).exists()
    assert not Path(seen["cwd"]).exists()  # the temporary directory is removed afterwards


def test_an_api_key_in_the_callers_environment_is_invisible(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-SECRET")
    code = """
import os
print(os.environ.get("OPENAI_API_KEY"))
print(dict(os.environ))
try:
    print(open("/proc/self/environ", "rb").read())
except OSError as exc:
    print("no /proc/self/environ:", exc)
"""
    result = run_python(code)
    assert result.ok, result.stderr
    assert result.stdout.startswith("None\n")
    assert "SECRET" not in result.stdout + result.stderr
    assert "OPENAI_API_KEY" not in result.stdout


def test_env_adds_variables_to_the_minimal_environment(monkeypatch):
    monkeypatch.setenv("COPE_TEST_PARENT_ONLY", "parent")
    result = run_python(
        "import os\nprint(os.environ.get('FOO'), os.environ.get('COPE_TEST_PARENT_ONLY'))", env={"FOO": "bar"}
    )
    assert result.stdout == "bar None\n"


def test_the_candidate_does_not_run_with_the_callers_privileges():
    code = """
import os
print(os.getuid(), os.geteuid())
try:
    open("/proc/%d/environ" % os.getppid(), "rb").read()
    print("parent-environ-readable")
except OSError:
    print("parent-environ-denied")
"""
    result = run_python(code)
    assert result.ok, result.stderr
    uid_line, environ_line = result.stdout.split("\n")[:2]
    uid, euid = map(int, uid_line.split())
    if os.geteuid() == 0:
        assert uid != 0 and euid != 0  # dropped to nobody
        assert environ_line == "parent-environ-denied"
    else:
        assert (uid, euid) == (os.getuid(), os.geteuid())  # never gains privileges


def test_destructive_functions_are_disabled():
    code = """
import os, shutil
for name, call in (("os.remove", lambda: os.remove("x")), ("shutil.rmtree", lambda: shutil.rmtree("/tmp/x")),
                   ("os.kill", lambda: os.kill(1, 9)), ("os.chdir", lambda: os.chdir("/"))):
    try:
        call()
        print(name, "ran")
    except TypeError:
        print(name, "disabled")
"""
    result = run_python(code)
    assert result.stdout.split("\n")[:4] == [
        "os.remove disabled",
        "shutil.rmtree disabled",
        "os.kill disabled",
        "os.chdir disabled",
    ]


def test_a_huge_file_is_refused():
    code = "f = open('big', 'wb')\nf.seek(200 * 2**20)\nf.write(b'x')\nf.flush()"
    result = run_python(code)
    assert result.status == "failed"
    assert "File too large" in result.stderr


def test_printing_100_mb_is_truncated_without_buffering_it():
    code = "import sys\nfor i in range(100):\n    sys.stdout.write('x' * 1_000_000)\nsys.stdout.write('END')"
    tracemalloc.start()
    try:
        result = run_python(code, timeout_s=10.0, max_output_bytes=64_000)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "passed"
    assert result.truncated is True
    assert len(result.stdout) < 64_000 + 200  # kept bytes plus the truncation note
    assert result.stdout.startswith("x" * 1000)
    assert result.stdout.endswith("xEND")  # the tail is kept too
    assert "bytes truncated" in result.stdout
    assert peak < 8 * 2**20  # the parent never held the 100 MB


def test_endless_output_is_bounded_and_times_out():
    result = run_python("while True:\n    print('y' * 1000)", timeout_s=1.0, max_output_bytes=10_000)
    assert result.status == "timeout"
    assert result.truncated is True
    assert len(result.stdout) < 10_000 + 200


def test_concurrent_runs_do_not_interfere_and_leak_no_descriptors():
    fds_before = len(os.listdir("/proc/self/fd"))
    results: dict[int, SandboxResult] = {}

    def work(i: int) -> None:
        results[i] = run_python(f"import os\nprint({i}, os.getcwd())")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(r.ok for r in results.values())
    assert len({r.stdout.split()[1] for r in results.values()}) == 4  # four different directories
    assert all(r.stdout.split()[0] == str(i) for i, r in results.items())
    assert len(os.listdir("/proc/self/fd")) == fds_before


# --- tests of programs ------------------------------------------------------------------------------


def test_a_correct_mbpp_program_passes_every_assert():
    report = run_tests(MBPP_PROGRAM, MBPP_TESTS)
    assert isinstance(report, TestReport)
    assert (report.passed, report.n_passed, report.n_total) == (True, 3, 3)
    assert report.first_failure is None
    assert report.result.ok


def test_a_partly_correct_program_counts_each_assert():
    program = "def add_one(x):\n    return x + 1 if x > 0 else x\n"
    report = run_tests(program, MBPP_TESTS)
    assert report.passed is False
    assert (report.n_passed, report.n_total) == (2, 3)
    assert report.first_failure == "assert add_one(-1) == 0 -> AssertionError"
    assert report.result.status == "failed"


def test_setup_code_runs_before_the_program():
    report = run_tests(
        "def area(r):\n    return pi * r * r\n",
        ["assert area(1) == pi"],
        setup="from math import pi",
    )
    assert report.passed, report.first_failure


def test_humaneval_check_with_entry_point():
    good = run_tests("def add(a, b):\n    return a + b\n", HUMANEVAL_TEST, entry_point="add")
    assert (good.passed, good.n_passed, good.n_total) == (True, 1, 1)
    bad = run_tests("def add(a, b):\n    return a - b\n", HUMANEVAL_TEST, entry_point="add")
    assert (bad.passed, bad.n_passed, bad.n_total) == (False, 0, 1)
    assert bad.first_failure is not None and bad.first_failure.startswith("check(add) -> AssertionError")


def test_sys_exit_before_the_tests_is_a_failure():
    program = "import sys\nsys.exit(0)\ndef add_one(x):\n    return x + 1\n"
    report = run_tests(program, MBPP_TESTS)
    assert report.passed is False
    assert report.n_passed == 0
    assert "SystemExit(0)" in report.first_failure


def test_os_exit_zero_before_the_tests_is_a_failure():
    program = "import os\nos._exit(0)\ndef add_one(x):\n    return x + 1\n"
    report = run_tests(program, MBPP_TESTS)
    assert report.result.returncode == 0  # the process "succeeded"...
    assert report.passed is False  # ...but the harness never reached its end marker
    assert report.n_passed == 0
    assert "did not finish" in report.first_failure


def test_sys_exit_inside_a_test_fails_that_test_only():
    program = "import sys\ndef add_one(x):\n    if x < 0:\n        sys.exit(0)\n    return x + 1\n"
    report = run_tests(program, MBPP_TESTS)
    assert (report.passed, report.n_passed, report.n_total) == (False, 2, 3)
    assert "SystemExit(0)" in report.first_failure


def test_a_program_that_raises_fails_every_test():
    report = run_tests("raise ValueError('broken at import')", MBPP_TESTS)
    assert (report.passed, report.n_passed, report.n_total) == (False, 0, 3)
    assert report.first_failure == "the program raised ValueError: broken at import"


def test_junk_and_fake_markers_on_stdout_do_not_count_as_passes():
    def program(result: str) -> str:
        return (
            "import sys\n"
            "def add_one(x):\n"
            "    print('PASS 0\\nEND 3\\n0123456789abcdef0123456789abcdef PASS [2]')\n"
            f"    return {result}\n"
            "print('x' * 500_000)\n"
            "print('END', file=sys.stderr)\n"
        )

    wrong = run_tests(program("-100"), MBPP_TESTS)
    assert (wrong.passed, wrong.n_passed) == (False, 0)
    assert wrong.result.truncated is True
    right = run_tests(program("x + 1"), MBPP_TESTS)
    assert (right.passed, right.n_passed) == (True, 3)
    assert right.result.truncated is True


def test_a_hanging_test_keeps_the_passes_before_it():
    tests = ["assert add_one(1) == 2", "while True:\n    pass", "assert add_one(2) == 3"]
    start = time.monotonic()
    report = run_tests(MBPP_PROGRAM, tests, timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert (report.passed, report.n_passed, report.n_total) == (False, 1, 3)
    assert report.result.status == "timeout"
    assert report.first_failure.startswith("test 1 (while True: pass) did not finish: timed out")


def test_the_program_is_not_run_as_main():
    program = "def add_one(x):\n    return x + 1\nif __name__ == '__main__':\n    add_one(int(input()))\n"
    assert run_tests(program, MBPP_TESTS).passed


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: run_python(""), "code"),
        (lambda: run_python("   \n"), "code"),
        (lambda: run_python(None), "code"),  # type: ignore[arg-type]
        (lambda: run_python("pass", timeout_s=0), "timeout_s"),
        (lambda: run_python("pass", timeout_s=-1), "timeout_s"),
        (lambda: run_python("pass", timeout_s=float("inf")), "timeout_s"),
        (lambda: run_python("pass", timeout_s=True), "timeout_s"),
        (lambda: run_python("pass", memory_mb=0), "memory_mb"),
        (lambda: run_python("pass", max_output_bytes=-1), "max_output_bytes"),
        (lambda: run_python("pass", env={"A": 1}), "env"),  # type: ignore[dict-item]
        (lambda: run_python("pass", env={"A=B": "1"}), "env"),
        (lambda: run_tests("", ["assert True"]), "program"),
        (lambda: run_tests("pass", []), "tests"),
        (lambda: run_tests("pass", ["assert True", ""]), "tests[1]"),
        (lambda: run_tests("pass", 42), "tests"),  # type: ignore[arg-type]
        (lambda: run_tests("pass", "def check(c): pass", entry_point="not valid"), "entry_point"),
        (lambda: run_tests("pass", ["assert True"], setup=None), "setup"),  # type: ignore[arg-type]
        (lambda: run_tests("pass", ["assert True"], timeout_s=0), "timeout_s"),
    ],
)
def test_bad_arguments_raise_an_input_error_naming_the_argument(call, argument):
    with pytest.raises(CopeInputError) as info:
        call()
    assert str(info.value).startswith(argument)
    assert isinstance(info.value, ValueError)
