"""Run untrusted, LLM-generated Python with limits, the way human-eval / evalplus do.

Every run starts a fresh interpreter (``python -I -B``) in its own session and process group, inside a
fresh temporary directory that is also its ``HOME`` and ``TMPDIR``, with a minimal environment (never
``os.environ``: no API keys), stdin from ``/dev/null`` and stdout/stderr read through bounded buffers.
Before the candidate's code runs, the child (``cope_dspy/sandbox_child.py``, standard library only)

1. drops root to ``nobody`` when the caller is root (see ``docs/sandbox.md``),
2. sets ``resource`` limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_NPROC=0 (no fork, no threads),
   RLIMIT_FSIZE, RLIMIT_NOFILE and RLIMIT_CORE=0,
3. applies evalplus's ``reliability_guard`` (``os.fork``, ``os.system``, ``subprocess.Popen``,
   ``os.kill``, ``shutil.rmtree``, ``os.remove``... set to ``None``).

The parent enforces the wall-clock limit and kills the whole process group (``os.killpg``) when the
child ends or runs out of time, so no straggler survives a run. A crash, hang, flood of output,
``sys.exit`` or ``os._exit`` of the candidate is a failed :class:`SandboxResult`, never an exception.

Test results travel over a private pipe (not stdout), one line per test, each starting with a random
nonce, so a candidate that prints junk, or prints 100 MB, cannot fake or hide them; a run counts as
passed only if the harness reached its end marker.

This is a guard against accidents of generated code (loops, memory blow-ups, fork bombs, stray writes,
``sys.exit``), not a security boundary against a determined attacker: there is no network or
filesystem namespace. Read ``docs/sandbox.md`` before running code from anyone hostile.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cope_dspy.errors import CopeInputError

__all__ = ["SandboxResult", "TestReport", "run_python", "run_tests"]

log = logging.getLogger(__name__)

_MIN_MEMORY_MB = 32  # a bare interpreter plus the harness peaks near 20 MiB of address space
_MAX_FILE_BYTES = 32 * 2**20  # RLIMIT_FSIZE: largest file the candidate may write
_MAX_OPEN_FILES = 256  # RLIMIT_NOFILE
_MARKER_BYTES = 4 * 2**20  # the harness's result channel; markers beyond this are lost (a failure)
_READ_CHUNK = 65_536
_DRAIN_GRACE_S = 1.0  # after the child is gone, how long to wait for the pipes to reach EOF
_REAP_TIMEOUT_S = 5.0
_NOBODY_ID = 65534
# The child side (limits, guard, running the candidate) is a module of its own, run by path so that the
# child imports the standard library only: `python -m` would import the cope_dspy package first.
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")

_warned: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did.

    ``status`` is one of:
    ``"passed"`` exit code 0; ``"failed"`` non-zero exit (an exception, ``sys.exit(1)``, a syntax
    error, a failing test); ``"timeout"`` wall-clock or CPU limit hit; ``"memory"`` the candidate hit
    the memory limit (``MemoryError``); ``"killed"`` ended by a signal (e.g. a segfault);
    ``"error"`` the sandbox itself could not run the code (not the candidate's fault: an interpreter
    that fails to start, a lost child).
    ``stdout``/``stderr`` keep at most ``max_output_bytes`` bytes of each stream (its head and tail);
    ``truncated`` says whether anything was dropped.
    """

    ok: bool
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool
    duration_s: float


@dataclass(frozen=True)
class TestReport:
    """The outcome of :func:`run_tests`: ``passed`` only if every test passed and the run finished."""

    __test__ = False  # not a pytest test class, despite the name

    passed: bool
    n_passed: int
    n_total: int
    result: SandboxResult
    first_failure: str | None


# --------------------------------------------------------------------------------------------------
# Public API


def run_python(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: float = 512,
    max_output_bytes: int = 64_000,
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run ``code`` as a script (``__name__ == "__main__"``) in the sandbox and report what happened.

    ``env`` adds variables to the minimal environment the child gets (``PATH``, ``HOME``/``TMPDIR`` =
    the temporary directory, ``LANG``, thread-count caps); the caller's environment is never passed.
    """
    _check_source("code", code)
    _check_limits(timeout_s, memory_mb, max_output_bytes)
    extra_env = _check_env(env)
    result, _marks = _execute(
        {"mode": "script", "code": code},
        timeout_s=float(timeout_s),
        memory_mb=memory_mb,
        max_output_bytes=max_output_bytes,
        extra_env=extra_env,
    )
    return result


def run_tests(
    program: str,
    tests: Sequence[str] | str,
    *,
    setup: str = "",
    entry_point: str | None = None,
    timeout_s: float = 5.0,
    memory_mb: float = 512,
    max_output_bytes: int = 64_000,
) -> TestReport:
    """Run ``program`` and then its tests in one sandboxed process; count the tests that pass.

    MBPP style: ``tests`` is a list of assert statements (``test_list``); each runs in its own ``try``
    block, so ``n_passed`` counts them one by one. ``setup`` (MBPP's ``test_setup_code``) runs before
    the program, in the same namespace.

    HumanEval style: ``tests`` is the ``test`` block defining ``check(candidate)`` and ``entry_point``
    names the function under test: the block is defined after the program and the one counted test is
    ``check(<entry_point>)``. Without ``entry_point`` a string ``tests`` is a single test.

    ``timeout_s`` and ``memory_mb`` bound the whole run (program and all tests). The program runs with
    ``__name__ != "__main__"`` so a ``if __name__ == "__main__":`` demo block does not run. A program
    that exits (``sys.exit``, ``os._exit``) before the last test is a failure.
    """
    _check_source("program", program)
    if not isinstance(setup, str):
        raise CopeInputError(
            f"setup must be a string of Python source (may be empty), got {type(setup).__name__}"
        )
    _check_limits(timeout_s, memory_mb, max_output_bytes)
    test_defs, units = _test_units(tests, entry_point)

    result, marks = _execute(
        {"mode": "tests", "setup": setup, "program": program, "test_defs": test_defs, "tests": units},
        timeout_s=float(timeout_s),
        memory_mb=memory_mb,
        max_output_bytes=max_output_bytes,
        extra_env={},
    )
    return _report(result, marks, units, float(timeout_s))


# --------------------------------------------------------------------------------------------------
# Validation


def _check_source(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        shown = repr(value) if not isinstance(value, str) else "an empty string"
        raise CopeInputError(f"{name} must be a non-empty string of Python source, got {shown[:80]}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_limits(timeout_s: object, memory_mb: object, max_output_bytes: object) -> None:
    if not _is_number(timeout_s) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise CopeInputError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    if not _is_number(memory_mb) or not math.isfinite(memory_mb) or memory_mb < _MIN_MEMORY_MB:
        raise CopeInputError(
            f"memory_mb must be a number of MiB >= {_MIN_MEMORY_MB} (the interpreter alone needs about 20), "
            f"got {memory_mb!r}"
        )
    if not isinstance(max_output_bytes, int) or isinstance(max_output_bytes, bool) or max_output_bytes < 0:
        raise CopeInputError(f"max_output_bytes must be an int >= 0, got {max_output_bytes!r}")


def _check_env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise CopeInputError(f"env must be a mapping of str to str or None, got {type(env).__name__}")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise CopeInputError(f"env has an invalid variable name {key!r}: use a non-empty str without '='")
        if not isinstance(value, str) or "\0" in value:
            raise CopeInputError(f"env[{key!r}] must be a str without NUL bytes, got {value!r:.60}")
        checked[key] = value
    return checked


def _test_units(tests: object, entry_point: object) -> tuple[str, list[str]]:
    """Split ``tests`` into (uncounted definitions, counted test units)."""
    if isinstance(tests, str):
        parts = [tests]
    elif isinstance(tests, Sequence) and not isinstance(tests, bytes | bytearray):
        parts = list(tests)
    else:
        raise CopeInputError(f"tests must be a string or a list of strings, got {type(tests).__name__}")
    if not parts:
        raise CopeInputError("tests is empty: give at least one assert statement or a check() block")
    for i, part in enumerate(parts):
        if not isinstance(part, str) or not part.strip():
            raise CopeInputError(f"tests[{i}] must be a non-empty string of Python source, got {part!r:.80}")
    if entry_point is None:
        return "", parts
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise CopeInputError(
            f"entry_point must be a Python identifier (the function to check), got {entry_point!r}"
        )
    return "\n\n".join(parts), [f"check({entry_point})"]


# --------------------------------------------------------------------------------------------------
# The parent side


class _Capture:
    """Keeps the head and the tail of a byte stream, at most ``limit`` bytes in all."""

    def __init__(self, limit: int, *, keep_tail: bool = True) -> None:
        self.tail_limit = limit // 4 if keep_tail else 0
        self.head_limit = limit - self.tail_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_limit:
            self.tail += chunk
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail}" if self.tail_limit else head


def _child_env(workdir: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "TMP": workdir,
        "TEMP": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    env.update(extra)
    return env


def _nobody_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return _NOBODY_ID, _NOBODY_ID


def _peek_exit(pid: int) -> int | None:
    """The child's return code if it has exited, without reaping it (so its pgid stays ours)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _kill_group(pid: int) -> None:
    # Only called while the leader is alive or an unreaped zombie, so the group id cannot be reused.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _warn_once(message: str, level: int = logging.WARNING) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.log(level, "sandbox: %s", message)


def _error_result(message: str, started: float) -> SandboxResult:
    return SandboxResult(
        ok=False,
        status="error",
        returncode=None,
        stdout="",
        stderr=f"cope sandbox: {message}",
        truncated=False,
        duration_s=time.monotonic() - started,
    )


def _execute(
    payload: dict,
    *,
    timeout_s: float,
    memory_mb: float,
    max_output_bytes: int,
    extra_env: Mapping[str, str],
) -> tuple[SandboxResult, list[tuple[str, list]]]:
    """Run the harness on ``payload``; return the result and the parsed marker lines."""
    started = time.monotonic()
    nonce = secrets.token_hex(16)
    is_root = os.geteuid() == 0
    drop_to = _nobody_ids() if is_root else None
    payload = {
        **payload,
        "nonce": nonce,
        "drop_to": drop_to,
        "limits": {
            "memory_bytes": int(memory_mb * 2**20),
            "cpu_s": math.ceil(timeout_s) + 1,
            "fsize": _MAX_FILE_BYTES,
            "nofile": _MAX_OPEN_FILES,
        },
    }
    try:
        workdir = tempfile.mkdtemp(prefix="cope-sandbox-")
    except OSError as exc:
        return _error_result(f"cannot create a temporary directory: {exc}", started), []
    read_fd = -1
    try:
        payload_path = os.path.join(workdir, ".cope-payload.json")
        try:
            with open(payload_path, "w", encoding="utf-8") as f:
                json.dump(payload, f)
            if drop_to is not None:
                os.chown(workdir, *drop_to)
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            return _error_result(f"cannot prepare the run: {exc}", started), []
        try:
            proc = subprocess.Popen(
                [
                    sys.executable or "python3",
                    "-I",
                    "-B",
                    "-X",
                    "utf8",
                    _CHILD,
                    payload_path,
                    str(write_fd),
                ],
                cwd=workdir,
                env=_child_env(workdir, extra_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,
                umask=0o077,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return _error_result(f"cannot start the interpreter {sys.executable!r}: {exc}", started), []
        finally:
            os.close(write_fd)
        return _supervise(proc, read_fd, nonce, started, timeout_s, max_output_bytes)
    finally:
        if read_fd >= 0:
            os.close(read_fd)
        _remove_tree(workdir)


def _supervise(
    proc: subprocess.Popen,
    marker_fd: int,
    nonce: str,
    started: float,
    timeout_s: float,
    max_output_bytes: int,
) -> tuple[SandboxResult, list[tuple[str, list]]]:
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)
    marks = _Capture(_MARKER_BYTES, keep_tail=False)
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    for fd, sink in ((proc.stdout.fileno(), out), (proc.stderr.fileno(), err), (marker_fd, marks)):
        sel.register(fd, selectors.EVENT_READ, sink)
    pidfd = -1
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, None)
    except (AttributeError, OSError):
        pidfd = -1
    poll_s = None if pidfd >= 0 else 0.05

    deadline = started + timeout_s
    timed_out = False
    returncode: int | None = None
    lost = ""
    reaped = False
    try:
        try:
            while True:
                returncode = _peek_exit(proc.pid)
                if returncode is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                wait = remaining if poll_s is None else min(remaining, poll_s)
                _read_ready(sel, wait)
        except ChildProcessError:
            lost = "the child process was reaped by someone else (a SIGCHLD handler?)"
        if not lost:
            _kill_group(proc.pid)  # stragglers of a finished run, or the whole run on timeout
        # Drain what is left in the pipes; EOF comes once every process holding them is gone.
        if pidfd >= 0:
            sel.unregister(pidfd)
        drain_until = time.monotonic() + _DRAIN_GRACE_S
        while sel.get_map() and time.monotonic() < drain_until:
            _read_ready(sel, drain_until - time.monotonic())
        try:
            proc.wait(timeout=_REAP_TIMEOUT_S)
            reaped = True
        except subprocess.TimeoutExpired:
            lost = lost or "the child did not die after SIGKILL"
        if returncode is None and not lost:
            returncode = proc.returncode
    finally:
        sel.close()
        if pidfd >= 0:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
        if not reaped and proc.returncode is None:  # an exception (e.g. KeyboardInterrupt) got us here
            if not lost:
                _kill_group(proc.pid)
            try:
                proc.wait(timeout=_REAP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
    duration = time.monotonic() - started

    parsed = _parse_marks(marks.text(), nonce)
    for kind, fields in parsed:
        if kind == "WARN" and fields:
            _warn_once(str(fields[0]))
        elif kind == "USER" and fields == ["nobody+read-all"]:
            _warn_once(
                "the interpreter is not readable by 'nobody', so sandboxed code runs as nobody with "
                "CAP_DAC_READ_SEARCH: it can read (not write) every file; see docs/sandbox.md",
                level=logging.INFO,
            )
    ready = any(kind == "READY" for kind, _ in parsed)
    stderr_text = err.text()
    out_of_memory = "MemoryError" in stderr_text
    if lost:
        status, stderr_text = "error", f"{stderr_text}\ncope sandbox: {lost}".lstrip("\n")
    elif timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif not ready:  # the harness failed before the candidate ran: not the candidate's fault
        status = "memory" if out_of_memory else "error"
    elif returncode == 0:
        status = "passed"
    elif out_of_memory:
        status = "memory"
    elif returncode is not None and returncode < 0:
        status = "killed"
    else:
        status = "failed"
    result = SandboxResult(
        ok=status == "passed",
        status=status,
        returncode=returncode,
        stdout=out.text(),
        stderr=stderr_text,
        truncated=out.truncated or err.truncated,
        duration_s=duration,
    )
    return result, parsed


def _read_ready(sel: selectors.BaseSelector, timeout: float | None) -> None:
    for key, _events in sel.select(timeout=max(timeout, 0.0) if timeout is not None else None):
        if key.data is None:  # the pidfd: the child exited; the caller's loop notices
            continue
        try:
            chunk = os.read(key.fd, _READ_CHUNK)
        except BlockingIOError:
            continue
        except OSError:
            chunk = b""
        if chunk:
            key.data.add(chunk)
        else:
            sel.unregister(key.fd)


def _parse_marks(text: str, nonce: str) -> list[tuple[str, list]]:
    """Marker lines are ``<nonce> <KIND> <json list>``; anything else on the channel is ignored."""
    parsed = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != nonce:
            continue
        try:
            fields = json.loads(parts[2])
        except ValueError:
            continue
        if isinstance(fields, list):
            parsed.append((parts[1], fields))
    return parsed


def _remove_tree(path: str) -> None:
    def retry(func, target, _exc_info):  # a read-only directory left by the candidate
        try:
            os.chmod(os.path.dirname(target) or target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def _report(
    result: SandboxResult,
    marks: list[tuple[str, list]],
    units: list[str],
    timeout_s: float,
) -> TestReport:
    n_total = len(units)
    outcome: dict[int, str | None] = {}  # test index -> None (passed) or failure description
    load_error: str | None = None
    ended = False
    for kind, fields in marks:
        if kind in ("PASS", "FAIL") and fields and type(fields[0]) is int:
            i = fields[0]
            if 0 <= i < n_total and i not in outcome:
                outcome[i] = None if kind == "PASS" else str(fields[1] if len(fields) > 1 else "failed")
        elif kind == "LOADERR" and load_error is None and len(fields) == 2:
            load_error = f"the {fields[0]} raised {fields[1]}"
        elif kind == "END":
            ended = True
    n_passed = sum(1 for v in outcome.values() if v is None)
    passed = ended and n_passed == n_total and result.ok

    first_failure: str | None = None
    if load_error is not None:
        first_failure = load_error
    else:
        for i in range(n_total):
            if i not in outcome:
                first_failure = (
                    f"test {i} ({_short(units[i])}) did not finish: {_why_unfinished(result, timeout_s)}"
                )
                break
            if outcome[i] is not None:
                first_failure = f"{_short(units[i])} -> {outcome[i]}"
                break
        if first_failure is None and not passed:
            first_failure = (
                f"all tests passed but the run did not finish cleanly: {_why_unfinished(result, timeout_s)}"
            )
    return TestReport(
        passed=passed, n_passed=n_passed, n_total=n_total, result=result, first_failure=first_failure
    )


def _short(src: str, limit: int = 200) -> str:
    one_line = " ".join(src.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _why_unfinished(result: SandboxResult, timeout_s: float) -> str:
    if result.status == "timeout":
        return f"timed out (limit {timeout_s:g}s)"
    if result.status == "memory":
        return "ran out of memory"
    if result.status == "error":
        return f"the sandbox failed: {_short(result.stderr[-300:])}"
    if result.returncode is not None and result.returncode < 0:
        return f"killed by signal {-result.returncode}"
    return f"the process exited with code {result.returncode} before the end (sys.exit or os._exit?)"
