"""Every method's accuracy and cost, derived from one set of benchmark records, as JSON, Markdown and PNG.

Baselines come from the recorded baseline samples; COPE and its ablations are replayed from the recorded
cascade traces with `cope_dspy.calibrate.replay` (the cascade's own ballot, zero LM calls). Intervals are
95%: Wilson for accuracy, bootstrap over problems for cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cope_dspy.consensus import Vote
from cope_dspy.records import FORMAT, Records, replay
from cope_dspy.tasks import Math

from .metrics import bootstrap_mean_ci, wilson_interval
from .records import load_records

MOT_TAU = 0.75  # MoT-vote cascade: escalate when the small model's agreement is below this (as tau1)


def _usd(c: dict[str, Any]) -> float:
    return float((c.get("usage") or {}).get("usd") or 0.0)


def _calls(c: dict[str, Any]) -> int:
    return int((c.get("usage") or {}).get("calls") or 0)


def _vote(samples: list[dict[str, Any]], same) -> tuple[dict[str, Any] | None, float]:
    from cope_dspy.consensus import Candidate

    ballot = Vote().ballot(len(samples), 0.0, same, early_stop=False)
    ballot.add([Candidate(index=i, answer=s["answer"]) for i, s in enumerate(samples)])
    d = ballot.decision()
    return (samples[d.chosen.index] if d.chosen else None), d.confidence


def baseline_rows(records: list[dict[str, Any]], same) -> dict[str, list[dict[str, Any]]]:
    """Per method, per problem: correct, usd, calls."""
    rows: dict[str, list[dict[str, Any]]] = {"small single": [], "small majority": [], "large alone": [],
                                             f"MoT-vote (tau {MOT_TAU})": []}
    for r in records:
        b = r["baselines"]
        samples_usd = sum(_usd(s) for s in b["small_samples"])
        samples_calls = sum(_calls(s) for s in b["small_samples"])
        rows["small single"].append({"correct": b["small_greedy"]["correct"], "usd": _usd(b["small_greedy"]),
                                     "calls": _calls(b["small_greedy"])})
        chosen, agreement = _vote(b["small_samples"], same)
        majority_ok = bool(chosen and chosen["correct"])
        rows["small majority"].append({"correct": majority_ok, "usd": samples_usd, "calls": samples_calls})
        large = b["large_greedy"]
        rows["large alone"].append({"correct": large["correct"], "usd": _usd(large), "calls": _calls(large)})
        escalate = agreement < MOT_TAU
        rows[f"MoT-vote (tau {MOT_TAU})"].append({
            "correct": large["correct"] if escalate else majority_ok,
            "usd": samples_usd + (_usd(large) if escalate else 0.0),
            "calls": samples_calls + (_calls(large) if escalate else 0), "stage": 2 if escalate else 1,
        })
    return rows


def code_rows(records: list[dict[str, Any]], n: int, stages=(1, 2, 3)) -> tuple[list[dict[str, Any]], dict]:
    """COPE on code, replayed: a stage accepts when one of its samples passes the task's own tests. With
    early decision the cascade draws waves of ceil(n/2) samples and stops at the first wave with a pass,
    so only those samples are paid for. The last stage run answers whatever its tests say."""
    wave = -(-n // 2)
    rows, exits = [], {1: 0, 2: 0, 3: 0}
    for r in records:
        trace = r["cope"]["trace"]
        by = {(e["kind"], e["stage"]): e for e in trace}
        guideline = next((e for e in trace if e["kind"] == "guideline"), None)
        usd = calls = 0.0
        row = None
        for stage in (1, 2, 3):
            if stage not in stages:
                continue
            if stage == 2 or (stage == 3 and 2 not in stages):  # the large model writes its guideline first
                usd, calls = usd + _usd(guideline), calls + _calls(guideline)
            if stage == 3:
                final = by[("final", 3)]["candidates"][0]
                usd, calls = usd + _usd(final), calls + _calls(final)
                row = {"correct": bool(final.get("correct")), "stage": 3}
                break
            samples = by[("vote", stage)]["candidates"][:n]
            passed = False
            for start in range(0, len(samples), wave):
                drawn = samples[start:start + wave]
                usd += sum(_usd(c) for c in drawn)
                calls += sum(_calls(c) for c in drawn)
                if any(c.get("correct") for c in drawn):
                    passed = True
                    break
            if passed or stage == stages[-1]:
                row = {"correct": passed, "stage": stage}
                break
        row.update(usd=usd, calls=calls)
        exits[row["stage"]] += 1
        rows.append(row)
    return rows, exits


def code_baseline_rows(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {"small single": [], "small, any of n passes its tests": [],
                                             "large alone": []}
    for r in records:
        b = r["baselines"]
        rows["small single"].append({"correct": b["small_greedy"]["correct"], "usd": _usd(b["small_greedy"]),
                                     "calls": _calls(b["small_greedy"])})
        rows["small, any of n passes its tests"].append({
            "correct": any(s["correct"] for s in b["small_samples"]),
            "usd": sum(_usd(s) for s in b["small_samples"]), "calls": sum(_calls(s) for s in b["small_samples"])})
        large = b["large_greedy"]
        rows["large alone"].append({"correct": large["correct"], "usd": _usd(large), "calls": _calls(large)})
    return rows


def as_records(records: list[dict[str, Any]], run: dict[str, Any]) -> Records:
    """The benchmark records' cascade traces in the calibration module's record format."""
    policy = {"n": run["n"], "stages": [1, 2, 3], "task": "math", "variant": "default"}
    return Records([{"format": FORMAT, "id": r["id"], "variant": "default", "policy": policy, "inputs": {},
                     "trace": r["cope"]["trace"]} for r in records])


def cope_rows(records: Records, same, **settings) -> tuple[list[dict[str, Any]], dict[int, int]]:
    result = replay(records, same=same, **settings)
    return ([{"correct": bool(e["correct"]), "usd": e["usd"], "calls": e["calls"], "stage": e["stage"]}
             for e in result.per_example], result.exits)


FOLDS = 5


def cross_fitted(recs: Records, same) -> tuple[list[dict[str, Any]], dict[int, int], list[dict[str, Any]]]:
    """COPE calibrated without touching the problems it is scored on: each fold is replayed with the
    setting `calibrate` chose on the other folds (no separate dev recording needed)."""
    from cope_dspy.calibrate import calibrate, within_points_of_large

    items = list(recs)
    rows: list[dict[str, Any]] = [{}] * len(items)
    exits = {1: 0, 2: 0, 3: 0}
    chosen = []
    for fold in range(FOLDS):
        train = Records([it for i, it in enumerate(items) if i % FOLDS != fold])
        held = [i for i in range(len(items)) if i % FOLDS == fold]
        cal = calibrate(train, storage="memory", sampler="grid", same=same, constraint=within_points_of_large(1.0))
        p = cal.params
        chosen.append({k: (round(p[k], 3) if isinstance(p[k], float) else p[k]) for k in ("tau1", "tau2", "n")})
        fold_rows, fold_exits = cope_rows(Records([items[i] for i in held]), same, tau1=p["tau1"], tau2=p["tau2"],
                                          n=p["n"])
        for i, row in zip(held, fold_rows, strict=True):
            rows[i] = row
        for s in exits:
            exits[s] += fold_exits.get(s, 0)
    return rows, exits, chosen


def summarize(name: str, rows: list[dict[str, Any]], large_usd: float, exits=None, note: str = "") -> dict:
    k, n = sum(bool(r["correct"]) for r in rows), len(rows)
    usd = [r["usd"] for r in rows]
    lo, hi = wilson_interval(k, n)
    clo, chi = bootstrap_mean_ci(usd)
    mean = float(np.mean(usd))
    return {
        "method": name, "n": n, "accuracy": k / n, "accuracy_ci95": [lo, hi],
        "usd_per_1k": 1000 * mean, "usd_per_1k_ci95": [1000 * clo, 1000 * chi],
        "cost_vs_large": (mean / large_usd - 1) if large_usd else None,
        "calls_per_problem": float(np.mean([r["calls"] for r in rows])),
        "exits": exits or {}, "note": note,
    }


def write_report(folder: Path, examples=None) -> str:
    folder = Path(folder)
    run = json.loads((folder / "run.json").read_text())
    by_id = load_records(folder / "records.jsonl")
    records = list(by_id.values())
    if not records:
        return f"no records in {folder}"
    if run["benchmark"] in CODE_BENCHMARKS:
        return _write(folder, run, records, code_report(records, run))
    same = Math().same
    base = baseline_rows(records, same)
    large_usd = float(np.mean([r["usd"] for r in base["large alone"]]))
    table = [summarize(m, rows, large_usd,
                       exits={1: sum(r.get("stage") == 1 for r in rows), 2: sum(r.get("stage") == 2 for r in rows)}
                       if m.startswith("MoT") else None)
             for m, rows in base.items()]
    recs = as_records(records, run)
    for name, settings, note in [
        ("COPE (0.75 / 0.5)", {"tau1": 0.75, "tau2": 0.5}, "the paper's defaults"),
        ("COPE stop after stage 2", {"tau1": 0.75, "tau2": 0.5, "stages": (1, 2)}, "ablation"),
        ("COPE skip stage 1", {"tau1": 0.75, "tau2": 0.5, "stages": (2, 3)},
         "ablation; estimate: stage-2 samples were recorded with a stage-1 goal"),
    ]:
        rows, exits = cope_rows(recs, same, **settings)
        table.append(summarize(name, rows, large_usd, exits=exits, note=note))
    full_calls = replay(recs, 0.75, 0.5, same=same, early_stop=False).calls
    table[len(base)]["note"] += (f"; early decision drew {table[len(base)]['calls_per_problem']:.1f} calls per problem "
                                 f"where drawing every sample would take {full_calls / len(records):.1f}")
    if len(records) >= 2 * FOLDS:
        rows, exits, chosen = cross_fitted(recs, same)
        table.append(summarize("COPE calibrated (cross-fitted)", rows, large_usd, exits=exits,
                               note=f"{FOLDS}-fold: thresholds chosen on the other folds' records (cheapest within "
                                    f"1 point of large alone), applied to the held-out fold; settings: {chosen}"))
    return _write(folder, run, records, table)


CODE_BENCHMARKS = ("mbpp", "humaneval")


def code_report(records: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    base = code_baseline_rows(records)
    large_usd = float(np.mean([r["usd"] for r in base["large alone"]]))
    table = [summarize(m, rows, large_usd) for m, rows in base.items()]
    for name, stages, note in [("COPE", (1, 2, 3), "accept a stage when a sample passes the task's tests"),
                               ("COPE stop after stage 2", (1, 2), "ablation"),
                               ("COPE skip stage 1", (2, 3), "ablation; estimate: stage-2 samples had a goal")]:
        rows, exits = code_rows(records, run["n"], stages)
        table.append(summarize(name, rows, large_usd, exits=exits, note=note))
    return table


def _write(folder: Path, run: dict[str, Any], records: list[dict[str, Any]], table: list[dict[str, Any]]) -> str:
    seconds = [r["cope"]["seconds"] for r in records]
    summary = {"run": run, "problems": len(records), "methods": table,
               "recording_seconds_per_problem": float(np.mean(seconds))}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (folder / "table.md").write_text(md)
    plot(summary, folder / "plot.png")
    return md


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    lines = [
        f"# {run['benchmark']} ({run['split']} split, {summary['problems']} problems): "
        f"small = {run['small']}, large = {run['large']}, n = {run['n']}",
        "",
        f"Command: `{run['command']}`",
        "",
    ]
    if run.get("price_note"):
        lines += [f"Prices: {run['price_note']}.", ""]
    lines += [
        "| method | accuracy (95% CI) | API $ per 1k problems (95% CI) | cost vs large alone | calls / problem | exits at stage 1 / 2 / 3 |",
        "|---|---|---|---|---|---|",
    ]
    for m in summary["methods"]:
        lo, hi = m["accuracy_ci95"]
        clo, chi = m["usd_per_1k_ci95"]
        vs = "" if m["cost_vs_large"] is None else f"{100 * m['cost_vs_large']:+.0f}%"
        exits = " / ".join(str(m["exits"].get(s, m["exits"].get(str(s), 0))) for s in (1, 2, 3)) if m["exits"] else ""
        lines.append(f"| {m['method']} | {100 * m['accuracy']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | "
                     f"{m['usd_per_1k']:.4f} ({clo:.4f}-{chi:.4f}) | {vs} | {m['calls_per_problem']:.1f} | {exits} |")
    notes = [f"- {m['method']}: {m['note']}" for m in summary["methods"] if m["note"]]
    lines += ["", *notes,
              f"- Recording every model's samples took {summary['recording_seconds_per_problem']:.0f} s per problem "
              "for the cascade part (all stages in full, 2 CPU cores, both models local).", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in summary["methods"]:
        x, y = m["usd_per_1k"], 100 * m["accuracy"]
        lo, hi = (100 * v for v in m["accuracy_ci95"])
        marker = "*" if m["method"].startswith("COPE") else "o"
        ax.errorbar(x, y, yerr=[[y - lo], [hi - y]], fmt=marker, capsize=3, markersize=9 if marker == "*" else 6,
                    label=m["method"])
    run = summary["run"]
    ax.set_xlabel("API cost, USD per 1,000 problems")
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_title(f"{run['benchmark']}: {run['small']} + {run['large']} ({summary['problems']} problems)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
