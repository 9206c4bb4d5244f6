"""`python -m evals.calibrate_variants`: one Optuna study chooses the prompt variant with tau1, tau2 and n.

    python -m evals.calibrate_variants chat=evals/results/gsm8k-...-n4 plain=evals/results/gsm8k-...-plain \\
        --out evals/results/variants-gsm8k

Each LABEL=FOLDER is a benchmark recording (`evals.run`) of one variant (format, wording) with the same
models, n and reply cap; the problems every folder holds are compared. Printed and written to
<out>/variants.json: each variant calibrated alone and all variants in one study, both cross-fitted
(thresholds and variant chosen on the other folds, scored on the held-out fold), large alone per variant,
which variant each fold chose, and what each variant cost to record (LM calls and recorded seconds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cope_dspy.records import Records
from cope_dspy.tasks import Math

from .benchmarks import folder_records
from .report import FOLDS, baseline_rows, cross_fitted, summarize


def _recording_cost(records: list[dict]) -> dict:
    """LM calls and recorded job seconds of the cascade's full recording (baselines not included); seconds
    are None for records made before jobs were timed."""
    calls, seconds = 0, []
    for r in records:
        for entry in r["trace"]:
            jobs = entry.get("candidates") or [entry]
            calls += sum((j.get("usage") or {}).get("calls", 0) for j in jobs)
            seconds += [(j.get("extra") or {}).get("seconds", j.get("seconds")) for j in jobs]
    timed = [float(s) for s in seconds if s is not None]
    return {"lm_calls": int(calls), "job_seconds": round(sum(timed)) if timed else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.calibrate_variants", description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="+", metavar="LABEL=FOLDER")
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
    common = [pid for pid in raw[next(iter(raw))] if all(pid in r for r in raw.values())]
    if len(common) < 2 * FOLDS:
        raise SystemExit(
            f"calibrate_variants: only {len(common)} problems are in every folder; need {2 * FOLDS}"
        )
    same = Math().same
    items = [  # each folder's records as one variant of one study
        {**raw[label][pid], "variant": label, "policy": {**raw[label][pid]["policy"], "variant": label}}
        for label in folders
        for pid in common
    ]
    out: dict = {"problems": len(common), "folds": FOLDS, "variants": {}}
    for label in folders:
        alone = Records([it for it in items if it["variant"] == label])
        rows, exits, chosen = cross_fitted(alone, same)
        large = baseline_rows([raw[label][pid] for pid in common], same)["large alone"]
        large_usd = sum(r["usd"] for r in large) / len(large)
        out["variants"][label] = {
            "folder": str(folders[label]),
            "formats": runs[label].get("formats", {}),
            "cross_fitted": summarize(f"COPE calibrated ({label})", rows, large_usd, exits=exits),
            "chosen": chosen,
            "large_alone": summarize(f"large alone ({label})", large, large_usd),
            "recording": _recording_cost([raw[label][pid] for pid in common]),
        }
    rows, exits, chosen = cross_fitted(Records(items), same)
    reference = next(iter(folders))  # costs are compared with the first variant's large alone
    large_usd = out["variants"][reference]["large_alone"]["usd_per_1k"] / 1000
    out["joint"] = {
        "cross_fitted": summarize(
            "COPE calibrated (variant chosen too)",
            rows,
            large_usd,
            exits=exits,
            note=f"cost_vs_large against large alone in {reference!r}",
        ),
        "chosen": chosen,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variants.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
