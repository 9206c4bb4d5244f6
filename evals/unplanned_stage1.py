"""`python -m evals.unplanned_stage1 FOLDER [FOLDER ...]`: COPE with its first stage answered without goals,
replayed from recorded benchmark folders (no model call). An estimate, not the paper's method.

`evals.versus` finds the MoT-style cascade's unplanned first stage beating COPE's goal-planned one on HumanEval
and COPE's guideline stage rescuing problems MoT loses. This replays the combination: stage 1 is the n
unplanned small samples the records hold for the MoT baseline (the small executor asked the question alone, at
stage 2's temperature), judged as COPE judges its stage 1 (tau1 votes on math, the user's tests on code); then
COPE's stage 2 and stage 3 as recorded, with or without the plans at stage 3. The replay runs on copies of the
records whose stage-1 samples are swapped for the unplanned ones, through the same replay as the benchmark
table (`evals.report.cope_rows` at the paper's thresholds, `evals.report.code_rows` on code).

It is an estimate in one respect: the recorded stage-2 samples were asked with the stage-1 goal as well as
the guideline, and without goals at stage 1 there is no goal to give them (the same approximation as the
table's "COPE skip stage 1" row). `Cascade` has no switch for this variant; the numbers say whether one is
worth adding.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def unplanned_stage1(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records whose stage-1 samples are the records' unplanned small samples (MoT's first stage)."""
    out = []
    for item in items:
        samples = (item.get("baselines") or {}).get("small_samples")
        if not samples:
            raise SystemExit(f"record {item['id']} has no unplanned small samples (baselines): record it with "
                             "`python -m evals.run`, which draws them for the MoT-style baseline")
        item = copy.deepcopy(item)
        for entry in item["trace"]:
            if entry["kind"] == "vote" and entry["stage"] == 1:
                entry["candidates"] = copy.deepcopy(samples)
        out.append(item)
    return out


def rows(folder: Path) -> dict[str, Any]:
    """Per method: problems right, accuracy, API dollars, cost against large alone, exits per stage."""
    from cope_dspy.calibrate import PAPER_DEFAULT
    from cope_dspy.records import Records
    from cope_dspy.tasks import Math

    from . import report
    from .benchmarks import folder_records

    run = json.loads((folder / "run.json").read_text())
    recs = folder_records(folder)
    items = [r for r in recs.items if r.get("variant", "default") == "default"]
    swapped = unplanned_stage1(items)
    if run["benchmark"] in report.CODE_BENCHMARKS:
        base = report.code_baseline_rows(items, run.get("acceptance") or "grading")
        mot = base[report.CODE_MOT]

        def cope(records, plans):
            return report.code_rows(records, run["n"], stage3_plans=plans)[0]
    else:
        same = Math().same
        base = report.baseline_rows(items, same)
        mot = base[f"MoT-vote (tau {report.MOT_TAU})"]

        def cope(records, plans):
            return report.cope_rows(Records(records, recs.path), same, **{**PAPER_DEFAULT, "stage3_plans": plans})[0]
    methods = {
        "large alone": base["large alone"],
        "MoT-style": mot,
        "COPE (the paper's)": cope(items, True),
        "COPE, stage 3 alone": cope(items, False),
        "COPE, stage 1 without goals (estimate)": cope(swapped, True),
        "COPE, stage 1 without goals, stage 3 alone (estimate)": cope(swapped, False),
    }
    large_usd = sum(r["usd"] for r in base["large alone"])
    return {
        "benchmark": run["benchmark"],
        "problems": len(items),
        "methods": {
            name: {
                "correct": sum(bool(r["correct"]) for r in rs),
                "accuracy": sum(bool(r["correct"]) for r in rs) / len(rs),
                "usd": sum(r["usd"] for r in rs),
                "cost_vs_large": sum(r["usd"] for r in rs) / large_usd - 1 if large_usd else None,
                "exits": [sum(r.get("stage") == s for r in rs) for s in (1, 2, 3)],
            }
            for name, rs in methods.items()
        },
    }


def markdown(name: str, result: dict[str, Any]) -> str:
    lines = [f"### {name}: {result['problems']} problems", "",
             "| method | accuracy | cost vs large alone | exits at stage 1 / 2 / 3 |", "|---|---|---|---|"]
    for method, m in result["methods"].items():
        exits = " / ".join(map(str, m["exits"])) if method != "large alone" else ""
        lines.append(f"| {method} | {m['accuracy']:.1%} | {m['cost_vs_large']:+.0%} | {exits} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .folders import report_folders

    return report_folders(argv, "python -m evals.unplanned_stage1", __doc__, rows, markdown, "unplanned_stage1")


if __name__ == "__main__":
    raise SystemExit(main())
