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

from cope_dspy.ballot_replay import PERPLEXITY, TESTS_PASS, choose, replay_stages
from cope_dspy.consensus import Vote
from cope_dspy.records import Records, Writer, read_lines
from cope_dspy.replay import replay
from cope_dspy.tasks import Math

from .benchmarks import folder_records
from .metrics import bootstrap_mean_ci, wilson_interval

MOT_TAU = 0.75  # MoT-vote cascade: escalate when the small model's agreement is below this (as tau1)


def _usd(c: dict[str, Any]) -> float:
    return float((c.get("usage") or {}).get("usd") or 0.0)


def _calls(c: dict[str, Any]) -> int:
    return int((c.get("usage") or {}).get("calls") or 0)


def _sec(c: dict[str, Any] | None) -> float:
    """A recorded job's wall-clock seconds (NaN in records made before jobs were timed)."""
    return float(((c or {}).get("extra") or {}).get("seconds", np.nan))


def _parallel(samples: list[dict[str, Any]]) -> float:
    """Samples drawn at once last as long as the slowest."""
    return max((_sec(s) for s in samples), default=0.0)


def _vote(samples: list[dict[str, Any]], same) -> tuple[dict[str, Any] | None, float]:
    from cope_dspy.consensus import Candidate

    ballot = Vote().ballot(len(samples), 0.0, same, early_stop=False)
    ballot.add([Candidate(index=i, answer=s["answer"]) for i, s in enumerate(samples)])
    d = ballot.decision()
    return (samples[d.chosen.index] if d.chosen else None), d.confidence


def baseline_rows(records: list[dict[str, Any]], same) -> dict[str, list[dict[str, Any]]]:
    """Per method, per problem: correct, usd, calls, seconds (latency: samples in parallel)."""
    rows: dict[str, list[dict[str, Any]]] = {"small single": [], "small majority": [], "large alone": [],
                                             f"MoT-vote (tau {MOT_TAU})": []}
    for r in records:
        b = r["baselines"]
        samples_usd = sum(_usd(s) for s in b["small_samples"])
        samples_calls = sum(_calls(s) for s in b["small_samples"])
        samples_sec = _parallel(b["small_samples"])
        rows["small single"].append({"correct": b["small_greedy"]["correct"], "usd": _usd(b["small_greedy"]),
                                     "calls": _calls(b["small_greedy"]), "seconds": _sec(b["small_greedy"])})
        chosen, agreement = _vote(b["small_samples"], same)
        majority_ok = bool(chosen and chosen["correct"])
        rows["small majority"].append({"correct": majority_ok, "usd": samples_usd, "calls": samples_calls,
                                       "seconds": samples_sec})
        large = b["large_greedy"]
        rows["large alone"].append({"correct": large["correct"], "usd": _usd(large), "calls": _calls(large),
                                    "seconds": _sec(large)})
        escalate = agreement < MOT_TAU
        rows[f"MoT-vote (tau {MOT_TAU})"].append({
            "correct": large["correct"] if escalate else majority_ok,
            "usd": samples_usd + (_usd(large) if escalate else 0.0),
            "calls": samples_calls + (_calls(large) if escalate else 0), "stage": 2 if escalate else 1,
            "seconds": samples_sec + (_sec(large) if escalate else 0.0),
        })
    return rows


def code_rows(records: list[dict[str, Any]], n: int, stages=(1, 2, 3),
              stage3_plans: bool = True) -> tuple[list[dict[str, Any]], dict]:
    """COPE on code, replayed by the library's replay (`cope_dspy.ballot_replay.replay_stages`) with tau in
    (0, 1) (accept on a pass) and early decision, as `cope eval` runs it: a stage accepts when one of its
    samples passes its acceptance tests (under the user rule those are not the grading tests, so the accepted
    program may still be wrong); a problem with no acceptance test goes straight to stage 3 when stage 3
    runs. `stage3_plans=False`: stage 3 is the recorded large-alone answer."""
    rows, exits = [], {1: 0, 2: 0, 3: 0}
    for row in replay_stages(records, TESTS_PASS, 0.5, 0.5, n, tuple(stages), True, stage3_plans):
        rows.append({"correct": bool(row["correct"]), "stage": row["stage"], "usd": row["usd"], "calls": row["calls"],
                     "seconds": row["seconds"]})
        exits[row["stage"]] += 1
    return rows, exits


CODE_MOT = "small n, then large if none passes (MoT-style)"
CODE_ANY = {"grading": "small, any of n passes its tests", "user": "small n, the one its user tests pick"}


def code_baseline_rows(records: list[dict[str, Any]], acceptance: str = "grading") -> dict[str, list[dict[str, Any]]]:
    """The math table's baselines on code: small single, the small model's n unplanned samples (the program
    the cascade's ballot would return from them: the first that passes its acceptance tests; under the
    grading rule, correct when any of them is), large alone, and the MoT-style cascade on them (that program
    when it passed its acceptance tests, else the large model's answer; with no acceptance test, the large
    model's answer without drawing the samples, as `Cascade(stages=(1, 3), stage3_plans=False)` does)."""
    pick = CODE_ANY[acceptance]
    rows: dict[str, list[dict[str, Any]]] = {"small single": [], pick: [], "large alone": [], CODE_MOT: []}
    for r in records:
        b = r["baselines"]
        rows["small single"].append({"correct": b["small_greedy"]["correct"], "usd": _usd(b["small_greedy"]),
                                     "calls": _calls(b["small_greedy"]), "seconds": _sec(b["small_greedy"])})
        chosen, small_ok = choose(b["small_samples"])
        small = {"correct": bool(chosen and chosen.get("correct")), "usd": sum(_usd(s) for s in b["small_samples"]),
                 "calls": sum(_calls(s) for s in b["small_samples"]), "seconds": _parallel(b["small_samples"])}
        rows[pick].append(small)
        large = b["large_greedy"]
        rows["large alone"].append({"correct": large["correct"], "usd": _usd(large), "calls": _calls(large),
                                    "seconds": _sec(large)})
        drawn = small if r.get("acceptance_tests") != 0 else {"usd": 0.0, "calls": 0, "seconds": 0.0}
        rows[CODE_MOT].append({  # with no acceptance test the small samples could only escalate: not drawn
            "correct": small["correct"] if small_ok else bool(large["correct"]), "stage": 1 if small_ok else 2,
            "usd": drawn["usd"] + (0.0 if small_ok else _usd(large)),
            "calls": drawn["calls"] + (0 if small_ok else _calls(large)),
            "seconds": drawn["seconds"] + (0.0 if small_ok else _sec(large))})
    return rows


CODE_SETTINGS = [(n, stages) for stages in ((1, 2, 3), (1, 2), (2, 3), (1, 3)) for n in (1, 2, 3, 4, 6, 8)]


def code_cross_fitted(records: list[dict[str, Any]] | dict[str, list[dict[str, Any]]], run_n: int | dict,
                      large_rows: list[dict[str, Any]], stage3_plans=(True,)):
    """COPE calibrated on code without scoring a problem with a setting chosen on it: with test-pass
    confidence tau only decides "accept on a pass" (any tau in (0, 1)), so the choice is n and the stages.
    Per fold: the cheapest setting within 1 point of large alone (`large_rows`) on the other folds (else the
    most accurate), replayed on the held-out fold. `stage3_plans=(True, False)` also chooses stage 3 alone.
    `records` may map variant labels (prompt formats or wordings) to each variant's records of the same
    problems in the same order: the study then chooses the variant too, and the fold is replayed from that
    variant's records. `run_n` is the samples per stage the records hold: one number, or one per variant (a
    variant recorded at n = 8 offers n up to 8, one at n = 4 up to 4)."""
    variants = records if isinstance(records, dict) else {None: records}
    max_n = run_n if isinstance(run_n, dict) else dict.fromkeys(variants, run_n)
    first = next(iter(variants.values()))
    for label, recs in variants.items():
        if [r["id"] for r in recs] != [r["id"] for r in first]:
            raise ValueError(f"variant {label!r}: a variant study needs every variant's records of the same "
                             "problems in the same order (keep only the common ones)")
    settings = [(v, n, st, plans) for v in variants for n, st in CODE_SETTINGS if n <= max_n[v]
                for plans in stage3_plans if plans or 3 in st]
    table = {key: code_rows(variants[key[0]], *key[1:]) for key in settings}
    rows: list[dict[str, Any]] = [{}] * len(first)
    exits = {1: 0, 2: 0, 3: 0}
    chosen = []
    for fold in range(FOLDS):
        train = [i for i in range(len(first)) if i % FOLDS != fold]
        large_acc = np.mean([bool(large_rows[i]["correct"]) for i in train])

        acc = {k: np.mean([bool(table[k][0][i]["correct"]) for i in train]) for k in settings}
        usd = {k: np.mean([table[k][0][i]["usd"] for i in train]) for k in settings}
        ok = [k for k in settings if acc[k] >= large_acc - 0.01]
        best = min(ok, key=lambda k: (usd[k], -acc[k])) if ok else max(settings, key=acc.get)
        chosen.append({**({"variant": best[0]} if len(variants) > 1 else {}), "n": best[1],
                       "stages": list(best[2]), **({"stage3_plans": best[3]} if len(stage3_plans) > 1 else {})})
        for i in range(len(first)):
            if i % FOLDS == fold:
                rows[i] = table[best][0][i]
                exits[rows[i]["stage"]] += 1
    return rows, exits, chosen


def cope_rows(records: Records, same, **settings) -> tuple[list[dict[str, Any]], dict[int, int]]:
    result = replay(records, same=same, **settings)
    return ([{"correct": bool(e["correct"]), "usd": e["usd"], "calls": e["calls"], "stage": e["stage"],
              "seconds": e["seconds"]}
             for e in result.per_example], result.exits)


FOLDS = 5


def cross_fitted(recs: Records, same, stage3_plans=(True,), stage_sets=(None,)
                 ) -> tuple[list[dict[str, Any]], dict[int, int], list[dict[str, Any]]]:
    """COPE calibrated without touching the problems it is scored on: each fold is replayed with the
    setting `calibrate` chose on the other folds (no separate dev recording needed). Records of several
    variants (prompt formats or wordings, each recorded on the same problems) are one study: each fold's
    setting names its variant too, and the fold is replayed from that variant's records. With
    `stage3_plans=(True, False)` the study also chooses stage 3 alone; with several `stage_sets` (e.g.
    (1, 2, 3), (1, 2), (1, 3)) one study runs per set and the fold takes the cheapest setting that meets the
    constraint among them (else the most accurate), as the code calibration does. Rows follow the
    problems' first-recorded order."""
    from cope_dspy.calibrate import calibrate, within_points_of_large

    ids = list(dict.fromkeys(it["id"] for it in recs))
    fold_of = {pid: i % FOLDS for i, pid in enumerate(ids)}
    position = {pid: i for i, pid in enumerate(ids)}
    several = len(recs.variants) > 1
    for v in recs.variants:
        have = {it["id"] for it in recs if it["variant"] == v}
        if len(have) != len(ids):
            raise ValueError(f"variant {v!r} holds {len(have)} of the {len(ids)} problems: a variant study needs "
                             "every variant recorded on the same problems (keep only the common ones)")
    rows: list[dict[str, Any]] = [{}] * len(ids)
    exits = {1: 0, 2: 0, 3: 0}
    chosen = []
    for fold in range(FOLDS):
        train = Records([it for it in recs if fold_of[it["id"]] != fold])
        cal = calibrate(train, storage="memory", sampler="grid", same=same,
                        stages=list(stage_sets) if len(stage_sets) > 1 else stage_sets[0],
                        constraint=within_points_of_large(1.0), stage3_plans=stage3_plans)
        p = cal.params
        keys = ("tau1", "tau2", "n", *(("stages",) if len(stage_sets) > 1 else ()), *(("variant",) if several else ()),
                *(("stage3_plans",) if len(stage3_plans) > 1 else ()))
        chosen.append({k: (round(p[k], 3) if isinstance(p[k], float) else p[k]) for k in keys})
        held = [it for it in recs if fold_of[it["id"]] == fold and it["variant"] == p["variant"]]
        fold_rows, fold_exits = cope_rows(Records(held), same, tau1=p["tau1"], tau2=p["tau2"], n=p["n"],
                                          stages=tuple(p["stages"]), variant=p["variant"],
                                          stage3_plans=p["stage3_plans"])
        for it, row in zip(held, fold_rows, strict=True):
            rows[position[it["id"]]] = row
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
        # what a right answer costs (RouterArena's "cost per correct answer"); None when none is right
        "usd_per_1k_correct": 1000 * float(np.sum(usd)) / k if k else None,
        "calls_per_problem": float(np.mean([r["calls"] for r in rows])),
        **_latency(rows),
        "exits": exits or {}, "note": note,
    }


def _latency(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median seconds per problem over the problems whose jobs were all timed."""
    sec = np.array([r.get("seconds", np.nan) for r in rows], dtype=float)
    sec = sec[~np.isnan(sec)]
    if not len(sec):
        return {"seconds_mean": None, "seconds_median": None, "timed": 0}
    return {"seconds_mean": float(sec.mean()), "seconds_median": float(np.median(sec)), "timed": int(len(sec))}


def _same_timed_problems(records: list[dict[str, Any]], method_rows) -> None:
    """Latencies compare only on the same problems: a problem counts for every method or for none (records
    from before jobs were timed have baseline timings but no cascade timings)."""
    timed = [all(not np.isnan(row.get("seconds", np.nan)) for row in per_problem)
             for per_problem in zip(*method_rows, strict=True)]
    for rows in method_rows:
        for row, ok in zip(rows, timed, strict=True):
            if not ok:
                row["seconds"] = np.nan


def write_report(folder: Path, examples=None, judge=None, judge_name: str | None = None,
                 judge_max_tokens: int | None = None, judge_logprobs: bool = False) -> str:
    """Derive every method from the records in `folder` and write summary.json, table.md and plot.png.

    MT-Bench only: `judge` is the judge LM (or a zero-argument function that opens it, called only when a
    judgment is not yet in judgments.jsonl), `judge_name` the name its judgments are cached under and
    `judge_max_tokens` its reply cap (default: the LM's own, else `evals.judge.JUDGE_MAX_TOKENS`);
    `judge_logprobs` asks for the verdict's probabilities too (`text_report`)."""
    folder = Path(folder)
    run = json.loads((folder / "run.json").read_text())
    recs = folder_records(folder)
    records = recs.items
    if not records:
        return f"no records in {folder}"
    if run["benchmark"] in TEXT_BENCHMARKS:
        table, extra = text_report(records, run, judge, examples=examples, cache=folder / "judgments.jsonl",
                                   judge_name=judge_name, judge_max_tokens=judge_max_tokens,
                                   judge_logprobs=judge_logprobs)
        return _write(folder, run, records, table, extra)
    if run["benchmark"] in CODE_BENCHMARKS:
        return _write(folder, run, records, code_report(records, run))
    return _write(folder, run, records, math_report(recs))


def math_report(recs: Records) -> list[dict[str, Any]]:
    """Every method on math records (GSM8K, MATH-500): the baselines, COPE and its ablations replayed, and
    calibration cross-fitted."""
    records = recs.items
    same = Math().same
    base = baseline_rows(records, same)
    large_usd = float(np.mean([r["usd"] for r in base["large alone"]]))
    methods = [(m, rows, {1: sum(r.get("stage") == 1 for r in rows), 2: sum(r.get("stage") == 2 for r in rows)}
                if m.startswith("MoT") else None, "") for m, rows in base.items()]
    for name, settings, note in [
        ("COPE (0.75 / 0.5)", {"tau1": 0.75, "tau2": 0.5}, "the paper's defaults"),
        ("COPE stop after stage 2", {"tau1": 0.75, "tau2": 0.5, "stages": (1, 2)}, "ablation"),
        ("COPE skip stage 1", {"tau1": 0.75, "tau2": 0.5, "stages": (2, 3)},
         SKIP_STAGE1_NOTE[all(p.get("stage1_plans", True) for p in recs.policies.values())]),
        (STAGE3_ALONE + " (0.75 / 0.5)", {"tau1": 0.75, "tau2": 0.5, "stage3_plans": False}, STAGE3_ALONE_NOTE),
    ]:
        rows, exits = cope_rows(recs, same, **settings)
        if name.startswith("COPE (0.75"):
            drew = np.mean([r["calls"] for r in rows])
            full_calls = replay(recs, 0.75, 0.5, same=same, early_stop=False).calls
            note += (f"; early decision drew {drew:.1f} calls per problem where drawing every sample would take "
                     f"{full_calls / len(records):.1f}")
        methods.append((name, rows, exits, note))
    if len(records) >= 2 * FOLDS:
        rows, exits, chosen = cross_fitted(recs, same)
        methods.append(("COPE calibrated (cross-fitted)", rows, exits,
                        f"{FOLDS}-fold: thresholds chosen on the other folds' records (cheapest within 1 point of "
                        f"large alone), applied to the held-out fold; settings: {chosen}"))
        rows, exits, chosen = cross_fitted(recs, same, stage3_plans=(True, False),
                                           stage_sets=((1, 2, 3), (1, 2), (1, 3)))
        methods.append((CALIBRATED_CHOOSING, rows, exits,
                        f"{FOLDS}-fold, as above, the study also choosing the stages ((1, 2, 3), (1, 2) or (1, 3), as "
                        f"on code) and stage 3 with or without plans; settings: {chosen}"))
    _same_timed_problems(records, [rows for _, rows, _, _ in methods])
    return [summarize(name, rows, large_usd, exits=exits, note=note) for name, rows, exits, note in methods]


# skipping stage 1 replays the recorded stage-2 samples, which saw the stage-1 goal unless stage 1 had none
SKIP_STAGE1_NOTE = {True: "ablation; estimate: stage-2 samples were recorded with a stage-1 goal",
                    False: "ablation; exact: stage 1 had no goals, so stage 2's samples saw the guideline only"}
STAGE3_ALONE = "COPE, stage 3 alone"
STAGE3_ALONE_NOTE = ("not the paper's: stage 3 is the large model answering alone (Cascade(stage3_plans=False)), "
                     "read from the recorded large-alone answer, the same call")
CALIBRATED_CHOOSING = "COPE calibrated, stage 3 chosen (cross-fitted)"


CODE_BENCHMARKS = ("mbpp", "humaneval")


ACCEPTANCE_NOTE = {
    "grading": ("accept a stage when a sample passes the task's tests. As in the paper, those are the grading "
                "tests (MBPP's test_list, HumanEval's check), so an accepted stage-1/2 program is correct by "
                "construction: COPE, the MoT-style cascade and 'any of n' check against the answer key, small "
                "single and large alone do not"),
    "user": ("accept a stage when a sample passes the tests a user has (MBPP: the first assert, shown in the "
             "prompt; HumanEval: the docstring's examples as doctests, and in folders recorded or re-derived from "
             "2026-12-01 on, else its example lines such as `f(2) == 4`); {untested} of these {problems} problems "
             "have none, so no stage can accept them and they go straight to stage 3; graded on every test of "
             "the benchmark, which acceptance never runs"),
}


ACCEPTANCE_RULE = {
    "grading": "a stage accepts a program that passes every grading test; recorded before the user rule existed",
    "user": "a stage accepts a program that passes the tests a user has; every grading test only grades",
}


def code_report(records: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    acceptance = run.get("acceptance") or "grading"  # runs recorded before the setting existed
    base = code_baseline_rows(records, acceptance)
    large_usd = float(np.mean([r["usd"] for r in base["large alone"]]))
    methods = [(m, rows, {1: sum(r.get("stage") == 1 for r in rows), 2: sum(r.get("stage") == 2 for r in rows)}
                if m == CODE_MOT else None, "") for m, rows in base.items()]
    untested = sum(r.get("acceptance_tests") == 0 for r in records)
    for name, stages, note in [("COPE", (1, 2, 3), ACCEPTANCE_NOTE[acceptance].format(untested=untested,
                                                                                       problems=len(records))),
                               ("COPE stop after stage 2", (1, 2), "ablation"),
                               ("COPE skip stage 1", (2, 3), SKIP_STAGE1_NOTE[run.get("stage1_plans", True)])]:
        rows, exits = code_rows(records, run["n"], stages)
        methods.append((name, rows, exits, note))
    rows, exits = code_rows(records, run["n"], (1, 2, 3), stage3_plans=False)
    methods.append((STAGE3_ALONE, rows, exits, STAGE3_ALONE_NOTE))
    if len(records) >= 2 * FOLDS:
        rows, exits, chosen = code_cross_fitted(records, run["n"], base["large alone"])
        methods.append(("COPE calibrated (cross-fitted)", rows, exits,
                        f"{FOLDS}-fold: n and stages chosen on the other folds' records (cheapest within 1 point of "
                        f"large alone), applied to the held-out fold; settings: {chosen}"))
        rows, exits, chosen = code_cross_fitted(records, run["n"], base["large alone"], stage3_plans=(True, False))
        methods.append((CALIBRATED_CHOOSING, rows, exits,
                        f"{FOLDS}-fold, as above, the study also choosing stage 3 with or without plans; "
                        f"settings: {chosen}"))
    _same_timed_problems(records, [rows for _, rows, _, _ in methods])
    return [summarize(name, rows, large_usd, exits=exits, note=note) for name, rows, exits, note in methods]


# ---------------------------------------------------------------- open-ended text (MT-Bench, first turn)

TEXT_BENCHMARKS = ("mtbench",)
# The paper gives no perplexity threshold for open-ended tasks. Ours: tau1 = tau2 = 0.5, i.e. a stage accepts
# its lowest-perplexity reply when that perplexity is <= 2 (mean token log-probability >= -ln 2). The report
# prints the median best-reply confidence of each stage so the threshold can be calibrated on a dev split.
TEXT_TAU = (0.5, 0.5)
JUDGE_CONCURRENCY = 4


def _response(c: dict[str, Any] | None) -> str:
    """What a user would read: the parsed answer, else the raw reply (a reply cut off at max_tokens has no
    answer in the cascade's trace but is still a response; the baselines keep theirs as the answer)."""
    if not c:
        return ""
    return str(c.get("answer") or c.get("solution") or "").strip()


def _best_reply(samples: list[dict[str, Any]], tau: float) -> tuple[dict[str, Any] | None, Any]:
    """The cascade's own Perplexity ballot over one recorded stage: highest mean logprob wins (the earliest
    on ties), accepted when exp(score) >= tau; samples without an answer or a score abstain."""
    from cope_dspy.consensus import Candidate
    from cope_dspy.text import Perplexity

    ballot = Perplexity().ballot(len(samples), tau, early_stop=False)
    ballot.add([Candidate(index=i, answer=s.get("answer"), score=s.get("score")) for i, s in enumerate(samples)])
    d = ballot.decision()
    return (samples[d.chosen.index] if d.chosen else None), d


def text_rows(records: list[dict[str, Any]], n: int, tau1: float, tau2: float,
              stages=(1, 2, 3)) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """COPE on open-ended requests, replayed by the library (`cope_dspy.ballot_replay.replay_stages`, the live
    `PerplexityBallot` on the recorded scores): per problem the response it returns, its confidence, cost and
    exit stage. A stage draws all n samples (the lowest perplexity of n is known only once all are in; one when
    tau = 1), plus the guideline and the stage-3 answer when reached."""
    rows, exits = [], {1: 0, 2: 0, 3: 0}
    for row in replay_stages(records, PERPLEXITY, tau1, tau2, n, tuple(stages), True, True, detail=True):
        rows.append({"response": _response(row["chosen"]), "stage": row["stage"], "confidence": row["confidence"],
                     "usd": row["usd"], "calls": row["calls"], "seconds": row["seconds"]})
        exits[row["stage"]] += 1
    return rows, exits


def _stage_confidences(records: list[dict[str, Any]], stage: int, n: int) -> list[float]:
    out = []
    for r in records:
        entry = next((e for e in r["trace"] if e["kind"] == "vote" and e["stage"] == stage), None)
        if entry:
            out.append(_best_reply(entry["candidates"][:n], 1.0)[1].confidence)
    return out


def _judgment_key(judge_name: str, setup: str, pid: str, a: str, b: str, reference: str | None) -> str:
    import hashlib

    blob = json.dumps([judge_name, setup, pid, a, b, reference or ""], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _load_judgments(path: Path | None) -> dict[str, dict[str, Any]]:
    return {j["key"]: j for j in read_lines(path)} if path is not None else {}  # a torn last line is dropped


def _judge_all(pending: dict[str, dict[str, Any]], judge_lm, prices, path: Path | None, concurrency: int,
               logprobs: bool = False) -> dict:
    """Judge every pending pair (method response = a, large-alone response = b), appending each judgment
    to `path` as soon as it is in, so a killed report resumes where it stopped.

    The first Ctrl-C (or SIGTERM) starts no new judgment and waits for the ones in flight, which are kept
    (a paid judge has been paid for them); a second abandons them, and a judgment finishing after that is not
    written (`cope_dspy.jobs`). Either way KeyboardInterrupt is raised."""
    from cope_dspy.jobs import run_jobs

    from .folders import sigterm_as_interrupt
    from .judge import judge
    writer = Writer(path) if path is not None else None
    done: dict[str, dict[str, Any]] = {}

    def work(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        key, job = item
        j = judge(judge_lm, job["question"], job["a"], job["b"], reference=job["reference"], prices=prices,
                  logprobs=logprobs)
        return {"key": key, "judge": job["judge"], "setup": job["setup"], "id": job["id"], "verdict": j.verdict,
                "first": j.first, "second": j.second, "cut": j.cut, "p_first": j.p_first, "p_second": j.p_second,
                "usage": j.usage}

    def keep(item: tuple[str, dict[str, Any]], line: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(line)
        done[line["key"]] = line

    with sigterm_as_interrupt():
        run_jobs(work, keep, list(pending.items()), concurrency=concurrency, unit="judgment",
                 resume=lambda: f"{len(done)} judged so far are kept in {path}.", thread_name="cope-judge")
    return done


def _examples_by_id(records: list[dict[str, Any]], examples) -> dict[str, Any]:
    by_id = {ex.id: ex for ex in examples or []}
    if any(r["id"] not in by_id for r in records):
        from .loaders import load

        by_id.update({ex.id: ex for ex in load("mtbench", split="all", source="local") if ex.id not in by_id})
    return by_id


def summarize_text(name: str, rows: list[dict[str, Any]], large_usd: float, exits=None, note: str = "") -> dict:
    """As `summarize`, with the win rate against large alone, (wins + ties / 2) / n, in place of accuracy;
    its 95% interval is a bootstrap over problems."""
    scores = [r["score"] for r in rows]
    out = summarize(name, [{**r, "correct": False} for r in rows], large_usd, exits=exits, note=note)
    lo, hi = bootstrap_mean_ci(scores)
    out.update(accuracy=float(np.mean(scores)), accuracy_ci95=[lo, hi], win_rate=float(np.mean(scores)),
               wins=sum(s == 1.0 for s in scores), ties=sum(s == 0.5 for s in scores),
               losses=sum(s == 0.0 for s in scores))
    p_scores = [r.get("p_score") for r in rows]
    if rows and all(p is not None for p in p_scores):  # the judge's verdict probabilities, every problem
        plo, phi = bootstrap_mean_ci(p_scores)
        out.update(win_rate_p=float(np.mean(p_scores)), win_rate_p_ci95=[plo, phi])
    return out


_SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}


def text_report(records: list[dict[str, Any]], run: dict[str, Any], judge_lm, *, examples=None,
                cache: Path | None = None, judge_name: str | None = None, judge_max_tokens: int | None = None,
                judge_logprobs: bool = False, tau: tuple[float, float] = TEXT_TAU,
                concurrency: int = JUDGE_CONCURRENCY) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """MT-Bench (first turn): every method's response judged pairwise against large alone's.

    Methods: small single, large alone (the reference, 50% by construction), COPE with `tau`, COPE stopped
    after stage 2. judge_lm: a `dspy.BaseLM`, or a function opening one (called only when a judgment is
    missing from `cache`), or None (every judgment must be cached). Judgments are cached under the judge's
    name and `evals.judge.judge_setup` (prompts, format, reply cap), so changing any of them judges again.
    judge_logprobs: also ask for the verdict's probabilities and report the win rate they give
    (`evals.judge.preference`, position bias cancelled) beside the swap rule's.
    Identical responses tie without a call; an empty response loses to a non-empty one. Returns the table
    and the summary's extra keys."""
    from .judge import JUDGE_MAX_TOKENS, judge_setup, preference, reference_for

    by_id = _examples_by_id(records, examples)
    name = judge_name or getattr(judge_lm, "model", None) or run.get("judge") or "judge"
    lm_cap = (getattr(judge_lm, "kwargs", None) or {}).get("max_tokens") if hasattr(judge_lm, "model") else None
    setup = judge_setup(judge_max_tokens or lm_cap or JUDGE_MAX_TOKENS, judge_logprobs)
    base = {"small single": [], "large alone": []}
    large_text: dict[str, str] = {}
    for r in records:
        b = r["baselines"]
        large_text[r["id"]] = _response(b["large_greedy"])
        for method, c in (("small single", b["small_greedy"]), ("large alone", b["large_greedy"])):
            base[method].append({"response": _response(c), "usd": _usd(c), "calls": _calls(c), "seconds": _sec(c)})
    tau1, tau2 = tau
    cope = {f"COPE (tau {tau1} / {tau2})": text_rows(records, run["n"], tau1, tau2),
            "COPE stop after stage 2": text_rows(records, run["n"], tau1, tau2, stages=(1, 2))}

    # what needs a judge
    cached = _load_judgments(cache)
    pending: dict[str, dict[str, Any]] = {}
    method_rows = {**{m: rows for m, rows in base.items()}, **{m: rows for m, (rows, _) in cope.items()}}
    _same_timed_problems(records, list(method_rows.values()))
    identical = 0
    for method, rows in method_rows.items():
        for r, row in zip(records, rows, strict=True):
            pid, a, b = r["id"], row["response"], large_text[r["id"]]
            if method == "large alone":
                row.update(outcome="tie", how="reference")
            elif " ".join(a.split()) == " ".join(b.split()):
                row.update(outcome="tie", how="identical")
                identical += 1
            elif not a or not b:
                row.update(outcome="b" if not a else "a", how="empty response")
            else:
                ex = by_id[pid]
                reference = reference_for(ex)
                key = _judgment_key(name, setup, pid, a, b, reference)
                row.update(key=key, how="judge")
                if key not in cached and key not in pending:
                    pending[key] = {"judge": name, "setup": setup, "id": pid, "question": ex.question, "a": a,
                                    "b": b, "reference": reference}
    new = {}
    if pending:
        lm = judge_lm() if callable(judge_lm) and not hasattr(judge_lm, "model") else judge_lm
        if lm is None:
            raise RuntimeError(f"{len(pending)} judgments are not in {cache}: name a judge LM (--judge) to make them")
        from cope_dspy.costs import Prices

        new = _judge_all(pending, lm, Prices(run.get("prices") or {}), cache, concurrency, judge_logprobs)
    judgments = {**cached, **new}

    used: dict[str, dict[str, Any]] = {}
    for rows in method_rows.values():
        for row in rows:
            if row.get("how") == "judge":
                used[row["key"]] = j = judgments[row["key"]]
                row["outcome"] = j["verdict"]
            row["score"] = _SCORE[row["outcome"]]
            if judge_logprobs and row.get("how") == "judge":  # a pair without them scores as a tie, counted
                p_score = preference(j.get("p_first"), j.get("p_second"))
                row["p_score"] = 0.5 if p_score is None else p_score
            elif judge_logprobs:  # decided without the judge: the outcome is certain
                row["p_score"] = row["score"]

    large_usd = float(np.mean([r["usd"] for r in base["large alone"]]))
    notes = {"small single": "the small model alone, greedy, no plan",
             "large alone": "the reference every method is judged against: 50% by construction"}
    table = [summarize_text(m, rows, large_usd, note=notes[m]) for m, rows in base.items()]
    conf = {s: _stage_confidences(records, s, run["n"]) for s in (1, 2)}
    median = {s: (f"{float(np.median(v)):.2f}" if v else "n/a") for s, v in conf.items()}
    for i, (method, (rows, exits)) in enumerate(cope.items()):
        note = (f"a stage accepts its lowest-perplexity reply when 1/perplexity >= tau (tau1 = {tau1}, tau2 = {tau2}: "
                f"perplexity <= {1 / tau1:.3g} / {1 / tau2:.3g}; the paper gives no threshold for open-ended tasks); "
                f"every sample of a stage reached is paid for; median best-reply confidence: stage 1 {median[1]}, "
                f"stage 2 {median[2]}") if i == 0 else "ablation"
        table.append(summarize_text(method, rows, large_usd, exits=exits, note=note))
    judge_usage = [j.get("usage") or {} for j in used.values()]
    extra = {
        "metric": "win rate vs large alone",
        "tau": list(tau),
        "judge": {
            "model": name, "setup": setup, "judgments": len(used), "new": len(new), "identical": identical,
            "calls": int(sum(u.get("calls") or 0 for u in judge_usage)),
            "usd": float(sum(u.get("usd") or 0.0 for u in judge_usage)),
            "unparseable": sum((j["first"] is None) + (j["second"] is None) for j in used.values()),
            "cut": sum(j.get("cut") or 0 for j in used.values()),
            **({"without_probabilities": sum(preference(j.get("p_first"), j.get("p_second")) is None
                                             for j in used.values())} if judge_logprobs else {}),
            "inconsistent": sum(_inconsistent(j) for j in used.values()),
        },
    }
    return table, extra


def _inconsistent(j: dict[str, Any]) -> bool:
    """Both orders gave a readable verdict, naming different winners (or one a winner, the other a tie)."""
    from .judge import Judgment

    readable = j["first"] is not None and j["second"] is not None
    return readable and not Judgment(j["verdict"], j["first"], j["second"]).consistent


def _write(folder: Path, run: dict[str, Any], records: list[dict[str, Any]], table: list[dict[str, Any]],
           extra: dict[str, Any] | None = None) -> str:
    seconds = [r["seconds"] for r in records]
    summary = {"run": run, "problems": len(records), "methods": table,
               "recording_seconds_per_problem": float(np.mean(seconds)),
               "records_with_cached_calls": sum(_cached_calls(r) > 0 for r in records), **(extra or {})}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (folder / "table.md").write_text(md)
    plot(summary, folder / "plot.png")
    return md


def _cached_calls(obj: Any) -> int:
    """Calls answered from DSPy's cache anywhere in a record (every usage dict counts them)."""
    if isinstance(obj, dict):
        return int(obj.get("cached_calls") or 0) + sum(_cached_calls(v) for k, v in obj.items() if k != "cached_calls")
    if isinstance(obj, list):
        return sum(_cached_calls(v) for v in obj)
    return 0


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
    if run.get("stage1_plans") is False:
        lines += ["Stage 1 without goals (`--stage1 alone`: `Cascade(stage1_plans=False)`, not the paper's): every "
                  "COPE row's stage 1 is n small samples of the question alone.", ""]
    if run.get("stage1_from"):
        lines += [f"Stages 2 and 3 recorded on `{run['stage1_from']}`'s stage 1 (`--stage1-from`, evals/restage.py): "
                  "each problem's stage-1 samples and the baselines (small, large alone, MoT) are that folder's "
                  "records, so only the guideline setting differs between the two folders' COPE rows.", ""]
    if run["benchmark"] in CODE_BENCHMARKS:
        rule = run.get("acceptance") or "grading"
        lines += [f"Code acceptance: **{rule}** ({ACCEPTANCE_RULE[rule]})."
                  + (f" Derived from the records in `{run['derived_from']}` with no model call." if run.get(
                      "derived_from") else ""), ""]
    if summary.get("judge"):
        j = summary["judge"]
        lines += [f"Judge: {j['model']} ({j.get('setup', 'setup not recorded')}), MT-Bench's pairwise prompt asked "
                  f"twice with the positions swapped (a win only when both orders agree, anything else a tie); "
                  f"{j['judgments']} judgments, {j['calls']} calls, ${j['usd']:.4f} (not in the methods' cost); "
                  f"{j['inconsistent']} position-inconsistent pairs and {j['unparseable']} unparseable verdicts "
                  f"counted as ties; {j.get('cut', 0)} replies cut at the judge's reply cap; "
                  + (f"{j['without_probabilities']} judgments without verdict probabilities in both orders; "
                     if "without_probabilities" in j else "")
                  + f"{j['new']} judged for this report, the rest read from judgments.jsonl.", ""]
    metric = summary.get("metric", "accuracy")
    lines += [
        f"| method | {metric} (95% CI) | API $ per 1k problems (95% CI) | cost vs large alone | calls / problem | "
        "latency s, mean / median | exits at stage 1 / 2 / 3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in summary["methods"]:
        lo, hi = m["accuracy_ci95"]
        clo, chi = m["usd_per_1k_ci95"]
        vs = "" if m["cost_vs_large"] is None else f"{100 * m['cost_vs_large']:+.0f}%"
        exits = " / ".join(str(m["exits"].get(s, m["exits"].get(str(s), 0))) for s in (1, 2, 3)) if m["exits"] else ""
        lines.append(f"| {m['method']} | {100 * m['accuracy']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | "
                     f"{m['usd_per_1k']:.4f} ({clo:.4f}-{chi:.4f}) | {vs} | {m['calls_per_problem']:.1f} | "
                     f"{_latency_cell(m)} | {exits} |")
    lines += _probability_table(summary["methods"])
    notes = [f"- {m['method']}: {m['note']}" for m in summary["methods"] if m["note"]]
    if summary.get("records_with_cached_calls"):
        notes.append(f"- Warning: {summary['records_with_cached_calls']} problems hold replies served from DSPy's "
                     "cache, billed $0 and timed ~0 s: their cost and latency are understated. Delete them from "
                     "records.jsonl and record them again (`evals.run` records without the cache).")
    timed = max((m.get("timed") or 0 for m in summary["methods"]), default=0)
    if timed:
        notes.append(
            f"- Latency: seconds per problem rebuilt from each recorded job's wall-clock time (a wave of samples in "
            f"parallel lasts as long as its slowest, stages in sequence; test runs and the report's own work not "
            f"counted), on the {timed} of {summary['problems']} problems whose jobs were all timed. A problem's "
            "jobs shared the 2 CPU cores with the other problems in flight (`--concurrency` in the command) and "
            "with anything else running then (evals/README says which recordings had the machine to themselves), "
            "so compare methods with each other, not with a machine that serves one request at a time.")
        notes.append(_latency_multiples(summary["methods"]))
    if metric == "accuracy":
        notes.append(_per_correct(summary["methods"]))
    lines += ["", *notes,
              f"- Recording every model's samples took {summary['recording_seconds_per_problem']:.0f} s per problem "
              + ("for stages 2 and 3 (in full; stage 1 and the baselines are the base folder's), "
                 if run.get("stage1_from") else "for the cascade part (all stages in full, ")
              + "2 CPU cores, both models local).", ""]
    return "\n".join(lines)


def _probability_table(methods: list[dict[str, Any]]) -> list[str]:
    """MT-Bench with the judge's verdict probabilities: the win rate they give, as a second table."""
    rows = [m for m in methods if m.get("win_rate_p") is not None]
    if not rows:
        return []
    lines = ["", "The same judgments read by the judge's verdict probabilities: a pair scores P(named better) + "
             "P(tie) / 2 in each order, averaged over the two orders, so a judge that always names position A "
             "scores 0.5 (its position bias cancels); pairs decided without the judge (identical or empty "
             "responses) score 1, 0.5 or 0; a judgment with no verdict letter to read in either order scores 0.5 "
             "(the judge line counts them).", "", "| method | win rate vs large alone, by probabilities (95% CI) |",
             "|---|---|"]
    for m in rows:
        lo, hi = m["win_rate_p_ci95"]
        lines.append(f"| {m['method']} | {100 * m['win_rate_p']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) |")
    return lines


def _latency_multiples(methods: list[dict[str, Any]]) -> str:
    """One note line: each method's mean latency as a multiple of large alone's (the paper reports COPE's)."""
    large = next((m for m in methods if m["method"] == "large alone" and m.get("timed")), None)
    if large is None or not large["seconds_mean"]:
        return "- Latency as a multiple of large alone's: n/a (large alone is not timed here)."
    parts = [f"{m['method']} {m['seconds_mean'] / large['seconds_mean']:.1f}x" for m in methods
             if m.get("timed") and m is not large]
    return "- Mean latency as a multiple of large alone's: " + ", ".join(parts) + "."


def _per_correct(methods: list[dict[str, Any]]) -> str:
    """One note line: what each paid method spends per correct answer (total API $ over the problems it got
    right), which ranks methods on cost and accuracy at once."""
    parts = [f"{m['method']} {m['usd_per_1k_correct']:.4f}" for m in methods
             if m.get("usd_per_1k_correct") and m["usd_per_1k"] > 0]
    if not parts:
        return "- API $ per 1k correct answers: n/a (no paid method got one right)."
    return "- API $ per 1k correct answers (the paid methods): " + ", ".join(parts) + "."


def _latency_cell(m: dict[str, Any]) -> str:
    if not m.get("timed"):
        return "n/a"
    return f"{m['seconds_mean']:.0f} / {m['seconds_median']:.0f}"


def plot(summary: dict[str, Any], path: Path, *, x_key: str = "usd_per_1k", y_key: str = "accuracy",
         xlabel: str = "API cost, USD per 1,000 problems", title: str | None = None) -> None:
    """Each method's score (`y_key`, with its `<y_key>_ci95`) against its cost (`x_key`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in summary["methods"]:
        x, y = m[x_key], 100 * m[y_key]
        lo, hi = (100 * v for v in m[f"{y_key}_ci95"])
        marker = "*" if m["method"].startswith("COPE") else "o"
        ax.errorbar(x, y, yerr=[[y - lo], [hi - y]], fmt=marker, capsize=3, markersize=9 if marker == "*" else 6,
                    label=m["method"])
    run = summary["run"]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{summary.get('metric', 'accuracy')} (%), 95% CI")
    ax.set_title(title or f"{run['benchmark']}: {run['small']} + {run['large']} ({summary['problems']} problems)",
                 fontsize=9 if title else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
