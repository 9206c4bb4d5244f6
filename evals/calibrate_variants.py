"""`python -m evals.calibrate_variants`: one Optuna study chooses the prompt variant with tau1, tau2 and n.

    python -m evals.calibrate_variants chat=evals/results/gsm8k-...-n4 plain=evals/results/gsm8k-...-plain \\
        --out evals/results/variants-gsm8k

Each LABEL=FOLDER is a benchmark recording (`evals.run`) of one variant (format, wording, reply cap) with the
same models; the problems every folder holds are compared. Math: Optuna chooses tau1, tau2 and n per fold
(`cross_fitted`); code (MBPP, HumanEval; every folder under one acceptance rule): n and the stages
(`code_cross_fitted`; each folder offers n up to its own recording's, so an n = 8 recording of the same setting
is a variant that lets the study choose n = 6 or 8). `--stage3 choose` lets the study also choose stage 3 without plans. Printed and
written to <out>/variants.md (every method of every variant on the common problems, side by side) and
<out>/variants.json: each variant calibrated alone and all variants in one study, both cross-fitted
(thresholds and variant chosen on the other folds, scored on the held-out fold), large alone per variant,
which variant each fold chose, and what each variant cost to record (LM calls and recorded seconds).
The joint study is held to, and costed against, the first variant's large alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cope_dspy.records import Records
from cope_dspy.tasks import Math

from .benchmarks import folder_records
from .folders import CODE
from .report import (
    FOLDS,
    baseline_rows,
    code_baseline_rows,
    code_cross_fitted,
    code_report,
    cross_fitted,
    math_report,
    summarize,
)


def _recording_cost(records: list[dict], stage1_from: str | None = None) -> dict:
    """LM calls and recorded job seconds of the cascade's recording (baselines not included); seconds are None
    for records made before jobs were timed. A folder recorded with `--stage1-from BASE` holds BASE's stage-1
    vote in every record: those calls were made (and are counted) for BASE, not for this folder."""
    calls, seconds = 0, []
    for r in records:
        for entry in r["trace"]:
            if stage1_from and entry.get("stage") == 1:
                continue
            jobs = entry.get("candidates") or [entry]
            calls += sum((j.get("usage") or {}).get("calls", 0) for j in jobs)
            seconds += [(j.get("extra") or {}).get("seconds", j.get("seconds")) for j in jobs]
    timed = [float(s) for s in seconds if s is not None]
    return {"lm_calls": int(calls), "job_seconds": round(sum(timed)) if timed else None}


def _acceptance(runs: dict[str, dict]) -> str:
    """The one code acceptance rule every folder was scored under (a study cannot mix them)."""
    rules = {label: run.get("acceptance") or "grading" for label, run in runs.items()}
    if len(set(rules.values())) > 1:
        raise SystemExit(f"calibrate_variants: the folders accept code under different rules {rules}; compare "
                         "folders of one rule (`python -m evals.rescore FOLDER --acceptance user` re-derives one)")
    return next(iter(rules.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.calibrate_variants", description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+", metavar="LABEL=FOLDER")
    p.add_argument("--stage3", choices=["planned", "choose"], default="planned",
                   help="stage 3 as the paper's (the large model with the plans), or let the study also choose "
                        "stage 3 without them (`Cascade(stage3_plans=False)`)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    folders = {}
    for item in args.variants:
        label, _, folder = item.partition("=")
        if not folder:
            raise SystemExit(f"calibrate_variants: {item!r}: write LABEL=FOLDER")
        folders[label] = Path(folder)
    raw = {label: folder_records(folder).by_id() for label, folder in folders.items()}
    runs = {label: json.loads((folder / "run.json").read_text()) for label, folder in folders.items()}
    benchmarks = {run["benchmark"] for run in runs.values()}
    if len(benchmarks) > 1:
        raise SystemExit(f"calibrate_variants: the folders hold different benchmarks {sorted(benchmarks)}")
    if not benchmarks <= {*CODE, "gsm8k", "math500"}:
        raise SystemExit(f"calibrate_variants: {sorted(benchmarks)[0]} has no variant study (math and code only)")
    common = [pid for pid in raw[next(iter(raw))] if all(pid in r for r in raw.values())]
    if len(common) < 2 * FOLDS:
        raise SystemExit(
            f"calibrate_variants: only {len(common)} problems are in every folder; need {2 * FOLDS}"
        )
    stage3_plans = (True, False) if args.stage3 == "choose" else (True,)
    recs = {label: [raw[label][pid] for pid in common] for label in folders}
    code = benchmarks <= set(CODE)
    study = _code_study(recs, runs, stage3_plans) if code else _math_study(recs, stage3_plans)
    out: dict = {"benchmark": next(iter(benchmarks)), "problems": len(common), "folds": FOLDS,
                 "stage3": args.stage3, "variants": {}}
    if code:
        out["acceptance"] = _acceptance(runs)
    reference = next(iter(folders))  # the joint study is held to, and costed against, the first variant's large alone
    large_usd = study["large"][reference]["usd"]
    for label in folders:
        rows, exits, chosen = study["alone"][label]
        own = study["large"][label]
        out["variants"][label] = {
            "folder": str(folders[label]),
            "formats": runs[label].get("formats", {}),
            "wordings": runs[label].get("wordings", {}),
            "max_tokens": runs[label].get("max_tokens"),
            "n": runs[label].get("n"),
            "cross_fitted": summarize(f"COPE calibrated ({label})", rows, own["usd"], exits=exits),
            "chosen": chosen,
            "large_alone": summarize(f"large alone ({label})", own["rows"], own["usd"]),
            "recording": {**_recording_cost(recs[label], runs[label].get("stage1_from")),
                          "stage1_from": runs[label].get("stage1_from")},
            "methods": study["methods"][label],
        }
    rows, exits, chosen = study["joint"]
    out["joint"] = {
        "cross_fitted": summarize(
            "COPE calibrated (variant chosen too)",
            rows,
            large_usd,
            exits=exits,
            note=f"held to and costed against large alone in {reference!r}",
        ),
        "chosen": chosen,
    }
    out["command"] = "python -m evals.calibrate_variants " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variants.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = markdown(out)
    (args.out / "variants.md").write_text(md)
    print(md)
    return 0


def markdown(out: dict) -> str:
    """Every method of every variant on the common problems, side by side, then the studies."""
    labels = list(out["variants"])
    cell = lambda m: (f"{100 * m['accuracy']:.1f} ({100 * m['accuracy_ci95'][0]:.0f}-{100 * m['accuracy_ci95'][1]:.0f}), "  # noqa: E731
                      f"${m['usd_per_1k']:.4f}, {100 * m['cost_vs_large']:+.0f}%")
    lines = [f"# Variants on {out['benchmark']}: {out['problems']} problems every folder holds", "",
             f"Command: `{out['command']}`", "",
             "Each cell: accuracy (95% CI), API $ per 1k problems, cost against that variant's large alone.", "",
             "| method | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    names = list(dict.fromkeys(m["method"] for v in out["variants"].values() for m in v["methods"]))
    for name in names:
        row = [next((cell(m) for m in out["variants"][v]["methods"] if m["method"] == name), "") for v in labels]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    joint = out["joint"]["cross_fitted"]
    reference = labels[0]
    lines += ["", f"One study over all variants ({out['folds']}-fold cross-fitted, held to and costed against "
              f"large alone in {reference!r}): {cell(joint)}; per fold: {out['joint']['chosen']}.", "",
              "| variant | formats (and wordings other than the task's own) | reply cap | n recorded | recording the cascade: LM calls, job seconds (summed over jobs that "
              "ran at once: not wall time) |", "|---|---|---|---|---|"]
    for label, v in out["variants"].items():
        rec, formats = v["recording"], v["formats"]
        names = set(formats.values())
        shown = "chat" if not formats else names.pop() if len(formats) == 4 and len(names) == 1 else ", ".join(
            f"{role}={name}" for role, name in formats.items())
        shown += "".join(f"; {role} in wording {name}" for role, name in v.get("wordings", {}).items())
        shared = f" (stages 2-3 only: stage 1 is {rec['stage1_from']}'s)" if rec.get("stage1_from") else ""
        lines.append(f"| {label} | {shown} | {v['max_tokens']} | {v.get('n', '')} | {rec['lm_calls']}, {rec['job_seconds']}{shared} |")
    return "\n".join(lines) + "\n"


def _large(rows: list[dict]) -> dict:
    return {"rows": rows, "usd": sum(r["usd"] for r in rows) / len(rows)}


def _math_study(recs: dict[str, list[dict]], stage3_plans) -> dict:
    """Math: each variant's records replayed by `cross_fitted` (Optuna's calibration per fold), alone and as
    one study of all variants."""
    same = Math().same
    items = [  # each folder's records as one variant of one study
        {**r, "variant": label, "policy": {**r["policy"], "variant": label}}
        for label, records in recs.items()
        for r in records
    ]
    alone = {label: cross_fitted(Records([it for it in items if it["variant"] == label]), same,
                                 stage3_plans=stage3_plans) for label in recs}
    large = {label: _large(baseline_rows(records, same)["large alone"]) for label, records in recs.items()}
    joint = cross_fitted(Records(items), same, stage3_plans=stage3_plans)
    methods = {label: math_report(Records([it for it in items if it["variant"] == label])) for label in recs}
    return {"alone": alone, "large": large, "joint": joint, "methods": methods}


def _code_study(recs: dict[str, list[dict]], runs: dict[str, dict], stage3_plans) -> dict:
    """Code: n and the stages (tau only decides "accept on a pass"), each fold held to large alone on the
    other folds, per variant and jointly (`code_cross_fitted`)."""
    acceptance = _acceptance(runs)
    run_n = {label: int(runs[label]["n"]) for label in recs}  # each variant offers n up to its own recording's
    large = {label: _large(code_baseline_rows(records, acceptance)["large alone"]) for label, records in recs.items()}
    alone = {label: code_cross_fitted(records, run_n[label], large[label]["rows"], stage3_plans=stage3_plans)
             for label, records in recs.items()}
    reference = next(iter(recs))
    joint = code_cross_fitted(recs, run_n, large[reference]["rows"], stage3_plans=stage3_plans)
    methods = {label: code_report(records, runs[label]) for label, records in recs.items()}
    return {"alone": alone, "large": large, "joint": joint, "methods": methods}


if __name__ == "__main__":
    raise SystemExit(main())
