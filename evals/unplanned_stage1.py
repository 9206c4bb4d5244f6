"""`python -m evals.unplanned_stage1 FOLDER [FOLDER ...]`: COPE with its first stage answered without goals,
replayed from recorded benchmark folders (no model call). An estimate, not the paper's method.

`evals.versus` finds the MoT-style cascade's unplanned first stage beating COPE's goal-planned one on HumanEval
and COPE's guideline stage rescuing problems MoT loses. `Cascade(stage1_plans=False)` combines them: stage 1 is
n small samples of the question alone (the MoT baseline's samples, at stage 2's temperature), judged as COPE
judges its stage 1 (tau1 votes on math, the user's tests on code); then COPE's stage 2 and stage 3. This replays
it from the records at the paper's thresholds, with and without the plans at stage 3: `cope_dspy.replay.replay(
..., stage1_plans=False)` on math (`evals.report.cope_rows`), and on code the same records' stage 1 swapped for
their unplanned samples (`cope_dspy.replay.unplanned_stage1`) through `evals.report.code_rows`, the benchmark
table's own replays.

It is an estimate in one respect: the recorded stage-2 samples were asked with the stage-1 goal as well as
the guideline, and without goals at stage 1 there is no goal to give them (the same approximation as the
table's "COPE skip stage 1" row). A recording of `Cascade(stage1_plans=False)` itself removes it
(`python -m evals.run ... --stage1 alone`, into a folder of its own).

Two calibrated rows, cross-fitted as the benchmark table's (5 folds, each held to large alone on the other
folds): the table's own "stage 3 chosen" study, and the same study also choosing stage 1 with or without goals
(the two stage-1 readings as two variants of one study), with the choice each fold made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def rows(folder: Path) -> dict[str, Any]:
    """Per method: problems right, accuracy, API dollars, cost against large alone, exits per stage."""
    from cope_dspy.calibrate import PAPER_DEFAULT
    from cope_dspy.records import Records
    from cope_dspy.replay import unplanned_stage1
    from cope_dspy.tasks import Math

    from . import report
    from .benchmarks import folder_records

    run = json.loads((folder / "run.json").read_text())
    recs = folder_records(folder)
    items = [r for r in recs.items if r.get("variant", "default") == "default"]
    alone = unplanned_stage1(items)
    if run["benchmark"] in report.CODE_BENCHMARKS:
        base = report.code_baseline_rows(items, run.get("acceptance") or "grading")
        mot = base[report.CODE_MOT]

        def cope(stage1_plans, plans):
            return report.code_rows(items if stage1_plans else alone, run["n"], stage3_plans=plans)[0]

        def calibrated(variants):
            rows, _, chosen = report.code_cross_fitted(variants, run["n"], base["large alone"],
                                                       stage3_plans=(True, False))
            return rows, chosen
    else:
        same = Math().same
        base = report.baseline_rows(items, same)
        mot = base[f"MoT-vote (tau {report.MOT_TAU})"]

        def cope(stage1_plans, plans):
            settings = {**PAPER_DEFAULT, "stage3_plans": plans, "stage1_plans": stage1_plans}
            return report.cope_rows(recs, same, **settings)[0]

        def calibrated(variants):
            labelled = [{**r, "variant": label, "policy": {**r["policy"], "variant": label}}
                        for label, records in variants.items() for r in records]
            rows, _, chosen = report.cross_fitted(Records(labelled), same, stage3_plans=(True, False),
                                                  stage_sets=((1, 2, 3), (1, 2), (1, 3)))
            return rows, chosen
    methods = {
        "large alone": base["large alone"],
        "MoT-style": mot,
        "COPE (the paper's)": cope(True, True),
        "COPE, stage 3 alone": cope(True, False),
        "COPE, stage 1 without goals (estimate)": cope(False, True),
        "COPE, stage 1 without goals, stage 3 alone (estimate)": cope(False, False),
    }
    chosen = []
    if len(items) >= 2 * report.FOLDS:  # as the benchmark table: a fold needs problems to choose on
        methods["COPE calibrated, stages and stage 3 chosen (cross-fitted)"] = calibrated({"goals": items})[0]
        methods["COPE calibrated, stage 1 chosen too (cross-fitted; estimate)"], chosen = calibrated(
            {"goals": items, "alone": alone})
    large_usd = sum(r["usd"] for r in base["large alone"])
    return {
        "benchmark": run["benchmark"],
        "problems": len(items),
        "stage1_chosen_per_fold": [c.get("variant") for c in chosen],
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
    folds = result["stage1_chosen_per_fold"]
    if folds:
        lines += ["", f"Stage 1 per fold, as the last study chose it: {', '.join(folds)} "
                      f"({folds.count('alone')} of {len(folds)} without goals)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .folders import report_folders

    return report_folders(argv, "python -m evals.unplanned_stage1", __doc__, rows, markdown, "unplanned_stage1")


if __name__ == "__main__":
    raise SystemExit(main())
