"""The sandbox's child side, run by path as ``python -I -B -X utf8 sandbox_child.py <payload> <fd>``.

:mod:`cope_dspy.sandbox` starts it in a fresh interpreter. It imports the standard library only (never
``cope_dspy``, so nothing heavy runs before the limits do): it reads its payload, drops root, sets
``resource`` limits, disables destructive functions, then runs the candidate and reports each test on the
marker pipe ``fd``. ``-I`` keeps this file's directory off ``sys.path``, so a candidate's ``import code``
finds the standard library's module, not a sibling. See ``docs/sandbox.md``.

The candidate is compiled with ``dont_inherit=True``, and this file has no ``from __future__`` import: a
candidate must run as its own file would (``def f(x: List[int])`` without ``List`` imported fails).
"""

import builtins
import faulthandler
import json
import os
import posix
import resource
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable

# evalplus's reliability_guard, less `getcwd` (harmless) and plus the id and session setters.
DISABLED_OS = (
    "kill", "killpg", "system", "popen", "putenv", "unsetenv", "remove", "removedirs", "rmdir",
    "unlink", "rename", "renames", "replace", "truncate", "chdir", "fchdir", "chroot", "chmod",
    "fchmod", "lchmod", "chown", "fchown", "lchown", "lchflags", "fork", "forkpty", "register_at_fork",
    "posix_spawn", "posix_spawnp", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve",
    "spawnvp", "spawnvpe", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp",
    "execvpe", "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid",
    "setresgid", "setgroups", "setsid", "setpgid", "setpgrp",
)  # fmt: skip
BLOCKED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter", "_posixsubprocess")
CAP_DAC_READ_SEARCH = 1 << 2
_PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS, _CAPABILITY_VERSION_3 = 8, 38, 0x20080522

Mark = Callable[..., None]


def main(argv: list[str]) -> None:
    """Prepare the process, then run the payload's candidate; exits with the candidate's status."""
    path, fd = argv[1], int(argv[2])
    payload = read_payload(path)
    mark = Marker(payload["nonce"], fd)
    if payload["drop_to"] is not None and os.geteuid() == 0:
        try:
            mark("USER", drop_root(*payload["drop_to"]))
        except Exception as exc:  # reported to the parent, which logs it; the run goes on as root
            mark("WARN", "could not drop root, the code runs as root: " + describe(exc))
    set_limits(payload["limits"], mark)
    reliability_guard()
    sys.argv = ["candidate"]
    mark("READY")
    if payload["mode"] == "script":
        run_script(payload["code"])
    else:
        run_program_and_tests(payload, mark)


def read_payload(path: str) -> dict:
    """The job the parent wrote; the file is removed at once so the candidate cannot read the nonce."""
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    os.unlink(path)
    return payload


def marker_line(nonce: str, kind: str, fields: list) -> bytes:
    """``<nonce> <KIND> <json list>``: the line ``cope_dspy.sandbox`` parses back."""
    return (nonce + " " + kind + " " + json.dumps(fields) + "\n").encode("utf-8", "replace")


class Marker:
    """Writes marker lines to the result pipe with the functions it held before the candidate ran."""

    def __init__(self, nonce: str, fd: int) -> None:
        self.nonce, self.fd, self.write, self.line = nonce, fd, os.write, marker_line

    def __call__(self, kind: str, *fields: object) -> None:
        try:
            self.write(self.fd, self.line(self.nonce, kind, list(fields)))
        except OSError:  # the parent keeps 4 MiB of markers; a lost one counts there as a failure
            pass


def describe(exc: BaseException) -> str:
    """One line for the parent's ``first_failure``; never raises, even for an unprintable exception."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the code exited before the tests finished"
    try:
        msg = str(exc)
    except BaseException:
        msg = "<unprintable>"
    name = type(exc).__name__
    return (name + ": " + msg if msg else name)[:500]


def show(exc: BaseException, skip_frame: bool = True) -> None:
    """Print the candidate's traceback to stderr, without the harness's own frame."""
    tb = exc.__traceback__.tb_next if skip_frame and exc.__traceback__ is not None else None
    try:
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:  # stderr closed or a hostile __str__: the marker still reports the failure
        pass


def drop_root(uid: int, gid: int) -> str:
    """setuid to ``nobody``; keep CAP_DAC_READ_SEARCH only if nobody could not read the interpreter."""
    import ctypes  # only as root: a non-root child never needs it

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, what + ": " + os.strerror(err))

    needed = [d for d in sys.path if d and os.path.isdir(d)] + [os.getcwd()]
    check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # effective capabilities are now empty; permitted ones kept for capset
    keep = 0 if all(os.access(d, os.R_OK | os.X_OK) for d in needed) else CAP_DAC_READ_SEARCH

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    data = (Data * 2)()
    data[0].effective = data[0].permitted = keep
    check(libc.capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), data), "capset")
    check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    return "nobody+read-all" if keep else "nobody"


def rlimits(limits: dict) -> list[tuple[str, int]]:
    """The ``resource`` limits a run gets, from the payload's ``limits``."""
    return [
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_NPROC", 0),  # no fork, no threads (for a non-root child)
        ("RLIMIT_FSIZE", limits["fsize"]),
        ("RLIMIT_NOFILE", limits["nofile"]),
        ("RLIMIT_CORE", 0),
    ]


def soft_and_hard(name: str, value: int, hard: int) -> tuple[int, int]:
    """The (soft, hard) pair to set: never above the current hard limit (an unprivileged child cannot
    raise it); the CPU limit keeps one more second of hard limit so SIGXCPU comes before SIGKILL."""
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    return value, value + 1 if name == "RLIMIT_CPU" and hard == resource.RLIM_INFINITY else value


def set_limits(limits: dict, mark: Mark) -> None:
    for name, value in rlimits(limits):
        which = getattr(resource, name)
        try:
            _soft, hard = resource.getrlimit(which)
            resource.setrlimit(which, soft_and_hard(name, value, hard))
        except (ValueError, OSError) as exc:
            mark("WARN", f"could not set {name}: {describe(exc)}")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing


def disable(module: object, names: tuple[str, ...]) -> None:
    """Set each of ``names`` that ``module`` has to None, so calling it raises TypeError."""
    for name in names:
        if hasattr(module, name):
            setattr(module, name, None)


def reliability_guard() -> None:
    """evalplus / human-eval's guard: destructive functions become None, some modules unimportable."""
    faulthandler.disable()
    disable(os, DISABLED_OS)
    disable(posix, DISABLED_OS)
    disable(shutil, ("rmtree", "move", "chown"))
    disable(subprocess, ("Popen",))
    disable(builtins, ("help",))
    for name in BLOCKED_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  (None makes `import name` fail)


def run_script(code: str) -> None:
    """Run ``code`` as ``__main__``; an exception prints its traceback and exits 1."""
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        compiled = compile(code, "<candidate>", "exec", dont_inherit=True)
    except BaseException as exc:
        show(exc, skip_frame=False)
        raise SystemExit(1) from None
    try:
        exec(compiled, g)
    except SystemExit:
        raise
    except BaseException as exc:
        show(exc)
        raise SystemExit(1) from None


def run_program_and_tests(payload: dict, mark: Mark) -> None:
    """Setup, program and test definitions in one namespace, then each test in its own ``try``; marks
    PASS/FAIL per test and END, and exits 0 only if every test passed."""
    g = {"__name__": "__cope_candidate__", "__builtins__": builtins}
    for label in ("setup", "program", "test_defs"):
        src = payload[label]
        if not src.strip():
            continue
        name = "test code" if label == "test_defs" else label
        try:
            exec(compile(src, "<" + name + ">", "exec", dont_inherit=True), g)
        except BaseException as exc:
            show(exc)
            mark("LOADERR", name, describe(exc))
            raise SystemExit(1) from None
    n_ok = 0
    for i, src in enumerate(payload["tests"]):
        try:
            exec(compile(src, f"<test {i}>", "exec", dont_inherit=True), g)
        except BaseException as exc:
            print(f"test {i} failed:", file=sys.stderr)
            show(exc)
            mark("FAIL", i, describe(exc))
        else:
            n_ok += 1
            mark("PASS", i)
    mark("END", n_ok)
    raise SystemExit(0 if n_ok == len(payload["tests"]) else 1)


if __name__ == "__main__":
    main(sys.argv)
