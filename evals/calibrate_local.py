"""Calibrate tau1 / tau2 / n on a benchmark recording and measure what calibration costs.

    python -m evals.calibrate_local evals/results/<run>/records.jsonl --out evals/results/calibration-<run>

Prints and writes (stats.json, calibration.json, pareto.png): the LM calls the recording took, the LM
calls during the Optuna phase (none: there is no LM in it), trials per second, and replay speed on 500
synthetic records (same format, random votes) for a size the local recording does not reach.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from cope_dspy.calibrate import calibrate, within_points_of_large
from cope_dspy.records import FORMAT, Records
from cope_dspy.replay import replay
from cope_dspy.tasks import Math

from .benchmarks import folder_records


def synthetic(size: int = 500, n: int = 8, seed: int = 0) -> Records:
    rng = random.Random(seed)

    def cand(i, p, usd, calls):
        r = rng.random()
        answer = "7" if r < p else (None if r > 0.93 else str(rng.randint(0, 3)))
        return {"index": i, "answer": answer, "usage": {"calls": calls, "usd": usd}, "correct": answer == "7"}

    items = []
    for e in range(size):
        p = rng.random()
        trace = [{"kind": "vote", "stage": 1, "candidates": [cand(i, p, 0.0, 2) for i in range(n)]},
                 {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "usd": 0.0001}},
                 {"kind": "vote", "stage": 2, "candidates": [cand(i, min(1, p + 0.3), 0.0, 1) for i in range(n)]},
                 {"kind": "final", "stage": 3, "candidates": [cand(0, 0.8, 0.0004, 1)]}]
        items.append({"format": FORMAT, "id": f"s{e}", "variant": "default", "trace": trace,
                      "policy": {"n": n, "stages": [1, 2, 3], "task": "math", "variant": "default"}})
    return Records(items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("records", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--trials", type=int, default=500)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    records = folder_records(args.records.parent)
    raw = records.items
    same = Math().same
    recording_calls = sum(
        (c.get("usage") or {}).get("calls", 0) for r in raw for e in r["trace"] for c in e.get("candidates", [])
    ) + sum((e.get("usage") or {}).get("calls", 0) for r in raw for e in r["trace"] if e["kind"] == "guideline")

    import dspy

    calls_before = len(dspy.clients.base_lm.GLOBAL_HISTORY)
    storage = f"sqlite:///{args.out / 'study.db'}"
    started = time.perf_counter()
    cal = calibrate(records, n_trials=args.trials, storage=storage, study_name="gsm8k-local", same=same,
                    constraint=within_points_of_large(1.0), seed=0)
    seconds = time.perf_counter() - started
    optuna_calls = len(dspy.clients.base_lm.GLOBAL_HISTORY) - calls_before
    cal.to_json(args.out / "calibration.json")
    cal.plot(args.out / "pareto.png")

    big = synthetic()
    equal = str.__eq__  # one function object: replay caches its prepared arrays per (records, same)
    replay(big, 0.75, 0.5, 8, same=equal)  # warm the prepared arrays
    rng = random.Random(1)
    settings = [(rng.random(), rng.random(), rng.randint(1, 8)) for _ in range(2000)]
    t0 = time.perf_counter()
    for t1, t2, n in settings:
        replay(big, t1, t2, n, same=equal)
    replay_per_s = len(settings) / (time.perf_counter() - t0)

    stats = {
        "records": str(args.records), "problems": len(raw), "recorded_n": records.n,
        "lm_calls_recording": int(recording_calls), "lm_calls_optuna_phase": optuna_calls,
        "optuna_trials": len(cal.trials), "optuna_seconds": round(seconds, 2),
        "trials_per_second_sqlite": round(len(cal.trials) / seconds, 1),
        "replay_settings_per_second_500_synthetic_n8": round(replay_per_s),
        "chosen": cal.params, "chosen_accuracy": cal.result.accuracy, "chosen_usd_per_1k": cal.result.usd_per_1k,
        "paper_default_accuracy": cal.default.accuracy, "paper_default_usd_per_1k": cal.default.usd_per_1k,
        "large_alone": cal.large_alone, "constraint": cal.constraint, "constraint_met": cal.constraint_met,
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
    print(json.dumps(stats, indent=2, default=str))
    print(cal.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
