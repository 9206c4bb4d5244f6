"""A benchmark's result folder: where it goes, one setting per folder (the formats asked in among them), and
stopping a recording with SIGTERM."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# What must match for new records to join a folder's old ones (limit and concurrency may change).
SETTINGS = (
    "benchmark",
    "split",
    "small",
    "large",
    "n",
    "max_tokens",
    "role_max_tokens",
    "acceptance",
    "user_tests",
    "formats",
    "wordings",
    "stage1_plans",
    "stage1_from",
    "repeat_penalty",
    "prices",
)
CODE = ("mbpp", "humaneval")
# What the user acceptance rule runs, per code benchmark, recorded in run.json: a folder never mixes two versions.
# HumanEval's gained the docstring's example lines ("f(2) == 4") on 2026-12-01; folders recorded before read as
# `OLD_USER_TESTS` and are re-derived with `python -m evals.rescore FOLDER --acceptance user --out NEW`.
USER_TESTS = {"mbpp": "the first assert", "humaneval": "docstring doctests, else example lines"}
OLD_USER_TESTS = {"mbpp": "the first assert", "humaneval": "docstring doctests"}
AGENT_GAMES = ("twc", "cookingworld")  # text games: evals/agent_run.py plays them
# ... and what must match for a text game's episodes to join (the seeds and methods played may grow)
AGENT_SETTINGS = (
    "benchmark", "params", "fold", "small", "large", "n", "max_tokens", "max_steps", "history", "formats", "prices",
)


# The format each role is asked in when the command line gives none (see `Cascade(formats=...)`): plain text,
# the paper's prompt style. In the two-field chat format the 0.5B small model scored 5% alone on GSM8K and its
# "large" partner's guideline cost ~200 tokens, as much as an answer (evals/README, "Plain-text format").
DEFAULT_FORMATS = "plain"
# ... and on code the executors' replies end where their code block closes ("block"): asked to end with the
# code, the 1.5B model went on with usage examples and an explanation, 40% of its characters and about a third
# of large alone's dollars on plain HumanEval, which the task never reads. The stop leaves the text before it as
# it was (same prompt, same sampling), so only what is paid and waited for changes (evals/README, "HumanEval:
# plain text against block").
CODE_FORMATS = "goal_planner=plain,guideline_planner=plain,small_executor=block,large_executor=block"


def parse_formats(spec: str | None, benchmark: str | None = None) -> dict[str, str]:
    """`--format plain` or `--format small_executor=plain,goal_planner=paragraph` -> the roles not in "chat";
    None: the benchmark's default (`CODE_FORMATS` on code, else `DEFAULT_FORMATS`)."""
    from cope_dspy.plain import check_formats
    from cope_dspy.role import ROLES

    if spec is None:
        spec = CODE_FORMATS if benchmark in CODE else DEFAULT_FORMATS
    formats: str | dict[str, str] = spec.strip()
    if "=" in spec:
        formats = {}
        for item in spec.split(","):
            role, _, name = item.partition("=")
            formats[role.strip()] = name.strip()
    try:
        return check_formats(formats, ROLES)
    except ValueError as exc:
        raise SystemExit(f"cope eval: --format {spec!r}: {exc}") from None


def user_tests(benchmark: str, acceptance: str | None) -> str | None:
    """What the acceptance rule runs today, for run.json: `USER_TESTS` under the user rule, else None."""
    return USER_TESTS.get(benchmark) if acceptance == "user" else None


def with_defaults(run: dict) -> dict:
    """A folder's run.json with the settings that runs recorded before a setting existed lacked."""
    # no caps, the chat format, each task's wording, the paper's stage 1, recorded in full, llama.cpp's penalty (off)
    run = {"role_max_tokens": {}, "formats": {}, "wordings": {}, "stage1_plans": True, "stage1_from": None,
           "repeat_penalty": 1.0, **run}
    # code runs recorded before the flag existed accepted on the grading tests; other benchmarks have no rule
    run.setdefault("acceptance", "grading" if run.get("benchmark") in CODE else None)
    run.setdefault("user_tests", OLD_USER_TESTS.get(run.get("benchmark")) if run["acceptance"] == "user" else None)
    return run


def check_same_settings(folder: Path, meta: dict, keys=SETTINGS) -> None:
    """Refuse to add records to a folder whose records were made with other settings (one table, one setting)."""
    old_path = folder / "run.json"
    records = folder / "records.jsonl"
    if not old_path.exists() or not records.exists() or records.stat().st_size == 0:
        return
    old = with_defaults(json.loads(old_path.read_text()))
    meta = {"acceptance": "grading" if meta.get("benchmark") in CODE else None, "formats": {}, "wordings": {},
            "user_tests": None, "stage1_plans": True, "stage1_from": None,
            "repeat_penalty": 1.0, **meta}
    diff = [k for k in keys if k in old and old[k] != meta[k]]
    if diff:
        was = ", ".join(f"{k}={old[k]!r}" for k in diff)
        now = ", ".join(f"{k}={meta[k]!r}" for k in diff)
        raise SystemExit(
            f"cope eval: {records} holds records made with {was}; this run asks {now}. One report over two "
            f"settings would mix them: rerun with the recorded settings ({old.get('command', 'see run.json')}) "
            f"or give --out a new folder."
        )


@contextlib.contextmanager
def sigterm_as_interrupt():
    """`kill PID` stops a recording the way Ctrl-C does (in-flight problems are finished and kept)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_folders(argv: list[str] | None, prog: str, doc: str, read, markdown, stem: str) -> int:
    """The command line of a command that reads recorded folders with no model call (`evals.oracle`,
    `evals.unplanned_stage1`): `prog FOLDER [FOLDER ...] [--out DIR]`. `read(folder)` on each, printed as
    `markdown(name, result)`; with --out, also written there as `<stem>.md` and `<stem>.json` (results by
    folder name). A folder without run.json is refused."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="recorded benchmark folders (evals.run --out)")
    p.add_argument("--out", type=Path, help=f"also write {stem}.md and {stem}.json here")
    args = p.parse_args(argv)
    results, parts = {}, []
    for folder in args.folders:
        if not (folder / "run.json").is_file():
            raise SystemExit(f"{folder} has no run.json: give a folder `python -m evals.run ... --out FOLDER` wrote")
        results[folder.name] = read(folder)
        parts.append(markdown(folder.name, results[folder.name]))
    text = "\n".join(parts)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.md").write_text(text)
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0
