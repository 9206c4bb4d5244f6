"""Record a cascade's stages 2 and 3 on the stage 1 another folder recorded (`cope eval ... --stage1-from BASE`):
a paired comparison of a guideline setting.

Two recordings of the cascade in two guideline wordings differ in their stage-1 draws as much as in their
guidelines: on MBPP's 100 problems the code-hint recording's stage 1 (asked identically) passed 6 fewer problems
than Code's own (evals/README), more than the wording's own effect. Here the new recording asks only what the
guideline setting changes: the guideline, stage 2's small samples following it, stage 3's large answer. Each record
takes stage 1 and the unplanned baselines from BASE's record of the same problem, so both folders' COPE rows
share their stage 1 and their large-alone and MoT rows are the same samples.

This is exact only when stage 2 does not depend on stage 1's draw: with `--stage1 alone` (stage 2's samples get
the guideline and no goal). Under the paper's stage 1 they follow the goal behind stage 1's ballot, so BASE must
have been recorded with `--stage1 alone`. Only the guideline planner's settings (wording, format, reply cap) may
differ from BASE's; everything else must match, or the shared rows would not be the same method's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .folders import SETTINGS, with_defaults

# The one role whose settings may differ from BASE's: it is asked only in stages 2 and 3.
FREE_ROLE = "guideline_planner"
# Per-role settings (role -> value); the others must be equal as they are.
PER_ROLE = ("formats", "wordings", "role_max_tokens")


def base_records(base: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """BASE's records by problem id, after checking that BASE was recorded as `settings` ask, the guideline
    planner's settings apart. Raises SystemExit naming what differs."""
    from .benchmarks import folder_records

    base = Path(base)
    if not (base / "run.json").is_file() or not (base / "records.jsonl").is_file():
        raise SystemExit(f"cope eval: --stage1-from {base}: not a result folder (no run.json or records.jsonl); "
                         "give a folder `python -m evals.run ... --stage1 alone --out FOLDER` recorded")
    old = with_defaults({"prices": {}, **json.loads((base / "run.json").read_text())})
    if old.get("stage1_from"):
        raise SystemExit(f"cope eval: --stage1-from {base}: that folder's stage 1 is itself {old['stage1_from']}'s; "
                         "give that folder instead")
    if old["stage1_plans"]:
        raise SystemExit(f"cope eval: --stage1-from {base}: it was recorded with the paper's stage 1 (goals), where "
                         "stage 2's samples follow the goal behind stage 1's ballot, so its stage 1 cannot be paired "
                         "with new stages 2-3; give a folder recorded with --stage1 alone")
    diff = []
    for key in SETTINGS:
        if key in ("prices", "stage1_from"):  # prices: checked against the folder once the servers give theirs
            continue
        was, now = old.get(key), settings.get(key)
        if key in PER_ROLE:
            was = {r: v for r, v in (was or {}).items() if r != FREE_ROLE}
            now = {r: v for r, v in (now or {}).items() if r != FREE_ROLE}
        if was != now:
            diff.append(f"{key}: {was!r} there, {now!r} here")
    if diff:
        raise SystemExit(f"cope eval: --stage1-from {base}: only the guideline planner's settings may differ from the "
                         f"folder's, and these do: {'; '.join(diff)}. Rerun with its settings ({old.get('command')}).")
    return folder_records(base).by_id("default")


def merge(base_line: dict[str, Any], new_line: dict[str, Any], base: str) -> dict[str, Any]:
    """One problem's record: BASE's stage 1 and baselines, the new stages 2 and 3. The answer a live run gives at
    the recorded thresholds is stage 1's when BASE's stage 1 accepted, else the new stages'. `seconds` is the new
    stages' recording time."""
    stage1 = [e for e in base_line["trace"] if e.get("stage") == 1 and e["kind"] == "vote"]
    if len(stage1) != 1 or any(e.get("stage") == 1 for e in new_line["trace"]):
        raise ValueError(f"{new_line['id']}: expected one recorded stage-1 vote in {base} and none in the new "
                         "recording")
    line = {**new_line, "policy": base_line["policy"], "trace": stage1 + new_line["trace"],
            "baselines": base_line["baselines"], "stage1_from": base}
    if stage1[0]["accepted"]:
        line["answer"], line["stage"] = base_line["answer"], 1
    return line


def record_on(base_lines: dict[str, dict[str, Any]], base: str, full_cascade, later_cascade, examples, correct,
              path: Path, *, accept=None, concurrency: int = 2, progress: bool = True) -> list[str]:
    """Record `later_cascade` (stages 2 and 3) on every example BASE holds and not yet in `path`, each line merged
    with BASE's (`merge`); resumable as `record_all`, whose policy check reads `full_cascade` (the whole cascade the
    merged lines describe). Returns the ids of the examples BASE does not hold (not recorded)."""
    from cope_dspy.records import record_each

    from .benchmarks import record_example

    missing = [ex.id for ex in examples if ex.id not in base_lines]
    jobs = [(ex.id, ex) for ex in examples if ex.id in base_lines]
    if jobs:
        record_each(full_cascade, jobs,
                    lambda job: merge(base_lines[job[0]], record_example(later_cascade, job[1], correct, False, accept),
                                      base),
                    path, concurrency=concurrency, progress=progress, desc=f"recording {path.parent.name}",
                    unit="problem")
    return missing
