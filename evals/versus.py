"""`python -m evals.versus FOLDER`: where the paper's COPE and the MoT-style cascade part ways on code, problem
by problem, read from a recorded (or re-scored) code folder with no model call.

Both methods are replayed as the folder's table replays them (`evals.report.code_rows` and
`code_baseline_rows`, under the folder's acceptance rule). Each problem falls in one case, by the stage where
each method decided: COPE's stage 1 draws n small samples, each with a small goal; MoT's first stage draws n
unplanned small samples; COPE's stage 2 adds the large guideline; each method's last stage is the large model
(COPE's with the guideline, MoT's alone). Per case: how many problems, and on how many only COPE or only MoT
is right. The cases where one method wins are the reasons, from the records, that it wins.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CASES = {
    (1, 1): "both accept a small program at their first stage (COPE's samples planned, MoT's not)",
    (1, 2): "COPE accepts a planned small program; MoT's unplanned samples pass nothing and it asks the large model",
    (2, 1): "COPE's planned samples pass nothing (it decides at stage 2) where MoT's unplanned ones pass",
    (3, 1): "COPE's planned samples pass nothing (it ends at the large model) where MoT's unplanned ones pass",
    (2, 2): "MoT's samples pass nothing; COPE accepts a small program written with the large guideline",
    (3, 2): "both end at the large model: COPE's answer with the guideline against large alone",
}


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


def markdown(cases: dict[tuple[int, int], dict[str, int]], folder_name: str) -> str:
    total = {k: sum(c[k] for c in cases.values()) for k in ("problems", "only_cope", "only_mot")}
    lines = [
        f"COPE against the MoT-style cascade, {folder_name} ({total['problems']} problems): only COPE right on "
        f"{total['only_cope']}, only MoT on {total['only_mot']}.",
        "",
        "| case (COPE's stage, MoT's) | problems | only COPE right | only MoT right |",
        "|---|---|---|---|",
    ]
    for key, text in CASES.items():
        c = cases[key]
        lines.append(f"| {text} ({key[0]}, {key[1]}) | {c['problems']} | {c['only_cope']} | {c['only_mot']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .report import CODE_MOT, code_baseline_rows, code_rows, folder_records

    p = argparse.ArgumentParser(prog="python -m evals.versus", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a code result folder (MBPP or HumanEval), recorded or re-scored")
    args = p.parse_args(argv)
    run = json.loads((args.folder / "run.json").read_text())
    if run.get("benchmark") not in {"mbpp", "humaneval"}:
        raise SystemExit(f"python -m evals.versus: {args.folder} is a {run.get('benchmark')} folder; give a code "
                         "(mbpp or humaneval) folder")
    records = folder_records(args.folder).items  # as the table reads them (older record layouts too)
    cope, _ = code_rows(records, run["n"])
    mot = code_baseline_rows(records, run.get("acceptance") or "grading")[CODE_MOT]  # older runs lack it
    print(markdown(part_ways(cope, mot), str(args.folder)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
