"""`python -m evals.versus FOLDER`: where the paper's COPE and the MoT-style cascade part ways, problem by
problem, read from a recorded (or re-scored) code or math folder with no model call.

Both methods are replayed as the folder's table replays them (code: `evals.report.code_rows` and
`code_baseline_rows`, under the folder's acceptance rule; math: `evals.report.cope_rows` at the paper's
thresholds and `baseline_rows`' MoT-vote). Each problem falls in one case, by the stage where each method
decided: COPE's stage 1 draws n small samples, each with a small goal (none in a `--stage1 alone` folder, whose
table says so); MoT's first stage draws n unplanned small
samples; COPE's stage 2 adds the large guideline; each method's last stage is the large model (COPE's with the
guideline, MoT's alone). On code a stage decides when a program passes its acceptance tests, on math when the
samples agree enough. Per case: how many problems, and on how many only COPE or only MoT is right. The cases
where one method wins are the reasons, from the records, that it wins.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CODE_CASES = {
    (1, 1): "both accept a small program at their first stage (COPE's samples planned, MoT's not)",
    (1, 2): "COPE accepts a planned small program; MoT's unplanned samples pass nothing and it asks the large model",
    (2, 1): "COPE's planned samples pass nothing (it decides at stage 2) where MoT's unplanned ones pass",
    (3, 1): "COPE's planned samples pass nothing (it ends at the large model) where MoT's unplanned ones pass",
    (2, 2): "MoT's samples pass nothing; COPE accepts a small program written with the large guideline",
    (3, 2): "both end at the large model: COPE's answer with the guideline against large alone",
}
MATH_CASES = {
    (1, 1): "both accept the small model's majority at their first stage (COPE's samples planned, MoT's not)",
    (1, 2): "COPE accepts its planned small majority; MoT's unplanned samples agree too little and it asks the "
            "large model",
    (2, 1): "COPE's planned samples agree too little (it decides at stage 2) where MoT's unplanned ones agree",
    (3, 1): "COPE's planned samples agree too little (it ends at the large model) where MoT's unplanned ones agree",
    (2, 2): "MoT asks the large model; COPE accepts a small majority written with the large guideline",
    (3, 2): "both end at the large model: COPE's answer with the guideline against large alone",
}
CASES = CODE_CASES  # the keys every table has
# A folder recorded with `--stage1 alone` (`Cascade(stage1_plans=False)`): COPE's stage 1 asks the question alone,
# the same call as MoT's first stage, drawn separately, so "planned" describes only stage 2 and 3.
_UNPLANNED_STAGE1 = (("(COPE's samples planned, MoT's not)", "(no goals in either: two draws of the same call)"),
                     ("a planned small", "a small"), ("its planned small", "its small"),
                     ("COPE's planned samples", "COPE's samples"), ("MoT's unplanned samples", "MoT's samples"),
                     ("MoT's unplanned ones", "MoT's"))


def without_goals(texts: dict[tuple[int, int], str]) -> dict[tuple[int, int], str]:
    """The case texts for a folder whose COPE stage 1 had no goals."""
    out = {}
    for key, text in texts.items():
        for old, new in _UNPLANNED_STAGE1:
            text = text.replace(old, new)
        out[key] = text
    return out
CODE_BENCHMARKS, MATH_BENCHMARKS = ("mbpp", "humaneval"), ("gsm8k", "math500")


def part_ways(cope: Sequence[dict[str, Any]], mot: Sequence[dict[str, Any]]) -> dict[tuple[int, int], dict[str, int]]:
    """Per (COPE's deciding stage, MoT's): problems, and those only COPE / only MoT gets right. The rows are
    the replays' per-problem rows, in the same problem order (MoT's stage 2 is its large-model answer)."""
    if len(cope) != len(mot):
        raise ValueError(f"COPE has {len(cope)} rows and MoT {len(mot)}: replay both from the same records")
    cases = {key: {"problems": 0, "only_cope": 0, "only_mot": 0} for key in CASES}
    for c, m in zip(cope, mot, strict=True):
        case = cases[(c["stage"], m["stage"])]
        case["problems"] += 1
        case["only_cope"] += bool(c["correct"]) and not m["correct"]
        case["only_mot"] += bool(m["correct"]) and not c["correct"]
    return cases


def by_stage(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """Per deciding stage of one method's per-problem rows: the problems it decided there and how many right."""
    out: dict[int, dict[str, int]] = {}
    for r in rows:
        stage = out.setdefault(r["stage"], {"problems": 0, "right": 0})
        stage["problems"] += 1
        stage["right"] += bool(r["correct"])
    return dict(sorted(out.items()))


def markdown(cases: dict[tuple[int, int], dict[str, int]], folder_name: str, texts: dict = CODE_CASES,
             stages: dict[str, dict[int, dict[str, int]]] | None = None) -> str:
    """The cases as a table; `stages` ({method: `by_stage(rows)`}) adds a line per method: right of decided, by stage."""
    total = {k: sum(c[k] for c in cases.values()) for k in ("problems", "only_cope", "only_mot")}
    lines = [
        f"COPE against the MoT-style cascade, {folder_name} ({total['problems']} problems): only COPE right on "
        f"{total['only_cope']}, only MoT on {total['only_mot']}.",
        "",
    ]
    for method, per_stage in (stages or {}).items():
        lines.append(f"{method} by the stage that decided: " + "; ".join(
            f"stage {k} right on {v['right']} of {v['problems']}" for k, v in per_stage.items()) + ".")
    if stages:
        lines.append("")
    lines += [
        "| case (COPE's stage, MoT's) | problems | only COPE right | only MoT right |",
        "|---|---|---|---|",
    ]
    for key, text in texts.items():
        c = cases[key]
        lines.append(f"| {text} ({key[0]}, {key[1]}) | {c['problems']} | {c['only_cope']} | {c['only_mot']} |")
    return "\n".join(lines) + "\n"


def folder_rows(folder: Path, ids: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict]:
    """COPE's and MoT's per-problem rows from a code or math folder, and the case texts for its kind. `ids`: only
    those problems, in that order (two folders' rows side by side)."""
    from cope_dspy.records import Records

    from .report import (
        CODE_MOT,
        MOT_TAU,
        baseline_rows,
        code_baseline_rows,
        code_rows,
        cope_rows,
        folder_records,
    )

    if not (folder / "run.json").is_file():
        raise SystemExit(f"python -m evals.versus: {folder} has no run.json; give a folder `python -m evals.run "
                         "... --out FOLDER` wrote")
    run = json.loads((folder / "run.json").read_text())
    benchmark = run.get("benchmark")
    if benchmark not in CODE_BENCHMARKS + MATH_BENCHMARKS:
        raise SystemExit(f"python -m evals.versus: {folder} is a {benchmark} folder; give a code "
                         f"({' or '.join(CODE_BENCHMARKS)}) or math ({' or '.join(MATH_BENCHMARKS)}) folder")
    records = folder_records(folder)  # as the table reads them (older record layouts too)
    if ids is not None:
        by_id = records.by_id()
        records = Records([by_id[i] for i in ids], records.path)
    said = (lambda texts: texts) if run.get("stage1_plans", True) else without_goals  # noqa: E731
    if benchmark in CODE_BENCHMARKS:
        cope, _ = code_rows(records.items, run["n"])
        mot = code_baseline_rows(records.items, run.get("acceptance") or "grading")[CODE_MOT]  # older runs lack it
        return cope, mot, said(CODE_CASES)
    from cope_dspy.calibrate import PAPER_DEFAULT
    from cope_dspy.tasks import Math

    same = Math().same
    cope, _ = cope_rows(records, same, **PAPER_DEFAULT)
    return cope, baseline_rows(records.items, same)[f"MoT-vote (tau {MOT_TAU})"], said(MATH_CASES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.versus", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a code (MBPP, HumanEval) or math (GSM8K, MATH-500) result folder")
    args = p.parse_args(argv)
    cope, mot, texts = folder_rows(args.folder)
    stages = {"COPE": by_stage(cope), "MoT": by_stage(mot)}
    print(markdown(part_ways(cope, mot), str(args.folder), texts, stages), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
