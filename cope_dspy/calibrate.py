"""Calibrate tau1, tau2 and n on recorded traces: an Optuna study whose every trial is an offline replay.

    records = record(cascade, devset, metric, "dev.jsonl")    # the only LM calls
    cal = calibrate(records, constraint=within_points_of_large(1.0))
    cal.apply(cascade); cal.plot("pareto.png")

Workers sharing one study (any Optuna RDB URL, e.g. PostgreSQL):
    python -m cope_dspy.calibrate worker --records dev.jsonl --storage URL --study NAME --trials 100
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import sqlite3
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ballot_replay import PERPLEXITY, TESTS_PASS, consensus_kind
from .errors import CopeError, CopeInputError
from .policy import Policy, check_n, check_stages
from .records import Records, record
from .replay import ReplayResult, large_alone, replay, resolve_same, unplanned_samples_of

__all__ = [
    "record", "replay", "calibrate", "Records", "ReplayResult", "Calibration", "Constraint",
    "within_points_of_large", "max_usd_per_1k", "grid_settings", "run_worker", "load_calibration", "main",
]

PAPER_DEFAULT = {"tau1": 0.75, "tau2": 0.5}
_EPS = 1e-12


# ------------------------------------------------------------------------------------------ constraints


@dataclass(frozen=True)
class Constraint:
    """How to pick one point: `within_points_of_large(x)` or `max_usd_per_1k(y)`."""

    kind: str
    value: float

    def feasible(self, point: dict[str, Any], large_accuracy: float) -> bool:
        if self.kind == "within_points_of_large":
            return point["accuracy"] >= large_accuracy - self.value / 100.0 - _EPS
        return point["usd_per_1k"] <= self.value + _EPS

    def best(self, points: list[dict[str, Any]]) -> dict[str, Any]:
        """Among feasible points: the cheapest (then most accurate), or the most accurate (then cheapest)."""
        if self.kind == "within_points_of_large":
            return min(points, key=lambda p: (p["usd_per_1k"], -p["accuracy"], _order(p)))
        return min(points, key=lambda p: (-p["accuracy"], p["usd_per_1k"], _order(p)))

    def __str__(self) -> str:
        if self.kind == "within_points_of_large":
            unit = "point" if self.value == 1 else "points"
            return f"cheapest setting within {self.value:g} accuracy {unit} of the large model alone"
        return f"most accurate setting under ${self.value:g} per 1,000 queries"


def within_points_of_large(points: float) -> Constraint:
    """The cheapest setting whose accuracy is at least large-alone accuracy minus `points` (percentage points)."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 <= points <= 100:
        raise CopeInputError(f"within_points_of_large(points) needs accuracy points in [0, 100], got {points!r}")
    return Constraint("within_points_of_large", float(points))


def max_usd_per_1k(usd: float) -> Constraint:
    """The most accurate setting costing at most `usd` per 1,000 queries."""
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not usd >= 0:
        raise CopeInputError(f"max_usd_per_1k(usd) needs a number of dollars >= 0, got {usd!r}")
    return Constraint("max_usd_per_1k", float(usd))


def _order(point: dict[str, Any]) -> int:
    return -1 if point["trial"] is None else point["trial"]  # ties: the paper default, then earlier trials


# ------------------------------------------------------------------------------------------ the space


def grid_settings(n_max: int, stages: tuple[int, ...] = (1, 2, 3), include_n: bool = True,
                  tests_pass: bool = False) -> list[dict[str, Any]]:
    """Every distinct setting: a ballot of n samples reads tau only through the votes it needs, so per n
    the taus 0, (k - 1/2)/n for k = 1..n, and 1 cover every decision (a small, exact grid). A code stage
    (`tests_pass`) reads tau three ways: 0 (accept its best program), 0.5 (accept on a pass), 1 (escalate)."""
    check_n(n_max)
    out = []
    for n in range(1, n_max + 1) if include_n else [n_max]:
        taus = [0.0, 0.5, 1.0] if tests_pass else [0.0, *((k - 0.5) / n for k in range(1, n + 1)), 1.0]
        for tau1 in taus if 1 in stages else [PAPER_DEFAULT["tau1"]]:
            for tau2 in taus if 2 in stages else [PAPER_DEFAULT["tau2"]]:
                out.append({"tau1": tau1, "tau2": tau2, "n": n})
    return out


@dataclass
class _Space:
    """What a trial may set, stored on the study so every worker searches the same space."""

    variants: list[str]
    n_max: int
    include_n: bool
    stages: list[int]
    early_stop: bool
    fingerprint: str
    stage3_plans: list[bool] = field(default_factory=lambda: [True])  # spaces stored before it: the paper's
    stage1_plans: list[bool] = field(default_factory=lambda: [True])  # the same

    def suggest(self, trial) -> dict[str, Any]:
        params = {
            "tau1": trial.suggest_float("tau1", 0.0, 1.0) if 1 in self.stages else PAPER_DEFAULT["tau1"],
            "tau2": trial.suggest_float("tau2", 0.0, 1.0) if 2 in self.stages else PAPER_DEFAULT["tau2"],
            "n": trial.suggest_int("n", 1, self.n_max) if self.include_n else self.n_max,
        }
        params["variant"] = (trial.suggest_categorical("variant", self.variants) if len(self.variants) > 1
                             else self.variants[0])
        params["stage3_plans"] = (trial.suggest_categorical("stage3_plans", self.stage3_plans)
                                  if len(self.stage3_plans) > 1 else self.stage3_plans[0])
        params["stage1_plans"] = (trial.suggest_categorical("stage1_plans", self.stage1_plans)
                                  if len(self.stage1_plans) > 1 else self.stage1_plans[0])
        return params

    def params(self, trial) -> dict[str, Any]:
        p = trial.params
        return {"tau1": p.get("tau1", PAPER_DEFAULT["tau1"]), "tau2": p.get("tau2", PAPER_DEFAULT["tau2"]),
                "n": p.get("n", self.n_max), "variant": p.get("variant", self.variants[0]),
                "stage3_plans": p.get("stage3_plans", self.stage3_plans[0]),
                "stage1_plans": p.get("stage1_plans", self.stage1_plans[0])}

    def enqueue_form(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        if 1 in self.stages:
            out["tau1"] = params["tau1"]
        if 2 in self.stages:
            out["tau2"] = params["tau2"]
        if self.include_n:
            out["n"] = params["n"]
        if len(self.variants) > 1:
            out["variant"] = params["variant"]
        if len(self.stage3_plans) > 1:
            out["stage3_plans"] = params["stage3_plans"]
        if len(self.stage1_plans) > 1:
            out["stage1_plans"] = params["stage1_plans"]
        return out


class _Objective:
    def __init__(self, records: Records, space: _Space, same):
        self.records, self.space, self.same = records, space, same

    def evaluate(self, params: dict[str, Any]) -> ReplayResult:
        return replay(self.records, params["tau1"], params["tau2"], params["n"], tuple(self.space.stages),
                      self.space.early_stop, variant=params["variant"], same=self.same,
                      stage3_plans=params["stage3_plans"], stage1_plans=params["stage1_plans"])

    def __call__(self, trial) -> tuple[float, float]:
        r = self.evaluate(self.space.suggest(trial))
        return r.accuracy, r.usd_per_1k


def _sampler(sampler, seed: int | None):
    import optuna

    if not isinstance(sampler, str):
        return sampler
    if sampler == "grid":  # every setting is enqueued; the sampler never runs
        return optuna.samplers.TPESampler(seed=seed)
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if sampler == "tpe":
        # constant_liar: workers sharing a study do not all sample next to the same running trial
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    raise CopeInputError(f"sampler must be 'nsga2', 'tpe', 'grid' or an optuna sampler, got {sampler!r}")


def _open_study(records: Records, storage: str | None, study_name: str, sampler, space: _Space | None):
    """Create or load the study. A new study stores its search space; a loaded one must have been made
    from the same records (fingerprint), and its stored space wins."""

    study = _create_study(storage=_storage_url(storage), study_name=study_name, sampler=sampler,
                          directions=["maximize", "minimize"], load_if_exists=True)
    if len(study.directions) != 2:
        raise CopeInputError(f"study {study_name!r} is not a two-objective (accuracy, cost) study; use another name")
    stored = study.user_attrs.get("space")
    if stored is None:
        if space is None:
            raise CopeInputError(f"study {study_name!r} has no search space stored")
        study.set_user_attr("space", space.__dict__)
        return study, space
    found = _Space(**stored)
    if found.fingerprint != records.fingerprint():
        raise CopeInputError(
            f"study {study_name!r} was made from other records (fingerprint {found.fingerprint}, these are "
            f"{records.fingerprint()}): its trials would not match. Use another study name, or the same records file.")
    return study, found


def _create_study(**kwargs):
    import optuna
    import sqlalchemy.exc

    for attempt in range(6):
        try:
            return optuna.create_study(**kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, optuna.exceptions.DuplicatedStudyError):
            # workers started together race to create the tables (PostgreSQL: "duplicate key ...
            # pg_type_typname_nsp_index") or the study; the loser finds them made on a retry
            if attempt == 5:
                raise
            time.sleep(0.1 * (attempt + 1) + random.random() * 0.2)


def _space(records: Records, variants, include_n: bool, stages, early_stop: bool,
           stage3_plans=(True,), stage1_plans=None) -> _Space:
    variants = list(records.variants if variants is None else variants)
    if not variants or any(v not in records.variants for v in variants):
        raise CopeInputError(f"variants must be a non-empty subset of the recorded ones {records.variants}, "
                             f"got {variants!r}")
    recorded = [records.stages(v) for v in variants]
    stages = recorded[0] if stages is None else check_stages(stages)
    for v, rec in zip(variants, recorded, strict=True):
        if not set(stages) <= set(rec):
            raise CopeInputError(f"stages {stages}: variant {v!r} was recorded with stages {rec}")
    options = list(dict.fromkeys(stage3_plans)) if isinstance(stage3_plans, (tuple, list)) else []
    if not options or any(not isinstance(o, bool) for o in options):
        raise CopeInputError(f"stage3_plans must be a non-empty tuple of True (the paper's stage 3) and/or False "
                             f"(the large model alone), e.g. (True, False), got {stage3_plans!r}")
    planned = all(records.policies[v].get("stage3_plans", True) for v in variants)
    if True in options and not planned:
        raise CopeInputError("these records were made with Cascade(stage3_plans=False), so their stage 3 had no "
                             "plans: calibrate stage3_plans=(False,) (CLI --stage3 alone)")
    if False in options and planned and not all(it.get("baselines") for it in records if it["variant"] in variants):
        raise CopeInputError("stage3_plans=False replays stage 3 from the records' large-alone baseline, and some "
                             "of these records have none: record with baselines=True, or calibrate "
                             "stage3_plans=(True,)")
    return _Space(variants=variants, n_max=min(records.policies[v]["n"] for v in variants),
                  include_n=bool(include_n), stages=list(stages), early_stop=bool(early_stop),
                  fingerprint=records.fingerprint(), stage3_plans=options,
                  stage1_plans=_stage1_options(records, variants, stage1_plans))


def _stage1_options(records: Records, variants: list[str], stage1_plans) -> list[bool]:
    """The stage-1 settings a study may choose: `stage1_plans` checked against the records (None: the
    records' own stage 1, goals or not)."""
    goals = {records.policies[v].get("stage1_plans", True) for v in variants}
    if stage1_plans is None:
        if len(goals) > 1:
            raise CopeInputError("these variants were recorded with and without goals at stage 1: calibrate "
                                 "stage1_plans=(False,) (CLI --stage1 alone), which every one of them can replay")
        return list(goals)
    options = list(dict.fromkeys(stage1_plans)) if isinstance(stage1_plans, (tuple, list)) else []
    if not options or any(not isinstance(o, bool) for o in options):
        raise CopeInputError(f"stage1_plans must be a non-empty tuple of True (the paper's stage 1: goals) and/or "
                             f"False (the small model alone), e.g. (True, False), got {stage1_plans!r}")
    if True in options and False in goals:
        raise CopeInputError("these records were made with Cascade(stage1_plans=False), so their stage 1 had no "
                             "goals: calibrate stage1_plans=(False,) (CLI --stage1 alone)")
    if False in options and True in goals:
        for it in records:  # stage 1 read from the unplanned samples: each record must have them, judged
            if it["variant"] in variants:
                unplanned_samples_of(it)
    return options


def default_storage(records: Records) -> str:
    return f"sqlite:///{records.path}.optuna.db" if records.path is not None else "memory"


def _storage_url(storage: str) -> str | None:
    """An Optuna storage argument: "memory" -> in-memory (None); a SQLite file is switched to WAL mode
    first (once, it persists), which makes each trial's commits several times cheaper and lets workers
    read while one writes."""
    if not isinstance(storage, str) or not storage:
        raise CopeInputError(f"storage must be an Optuna storage URL (sqlite:///file.db, postgresql+psycopg://...) "
                             f"or 'memory', got {storage!r}")
    if storage in ("memory", ":memory:"):
        return None
    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    if not scheme.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
        raise CopeInputError(f"storage {storage!r} is not an Optuna RDB URL: use 'sqlite:///study.db', "
                             "'postgresql+psycopg://user@host/db' (pip install 'psycopg[binary]') or 'memory'")
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("PRAGMA journal_mode=WAL")
    return storage


def default_study_name(records: Records) -> str:
    stem = records.path.stem if records.path is not None else "records"
    return f"cope-{stem}-{records.fingerprint()[:8]}"


def _quiet_optuna():
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return lambda: optuna.logging.set_verbosity(level)


# ------------------------------------------------------------------------------------------ calibrate


@dataclass
class Calibration:
    """The outcome of `calibrate`: the chosen setting and its replay, the Pareto front, the paper default
    and the large model alone on the same records, and every trial (for plots)."""

    params: dict[str, Any]
    result: ReplayResult
    pareto: list[dict[str, Any]]
    default: ReplayResult
    large_alone: dict[str, Any]
    constraint: str
    constraint_met: bool
    trials: list[dict[str, Any]] = field(repr=False)
    study_name: str = ""
    storage: str | None = None
    # with several stage sets (`calibrate(stages=[(1, 2, 3), (1, 3)])`): each set's chosen point, in order
    stage_sets: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, cascade) -> None:
        """Set the chosen stages, tau1, tau2, n, stage3_plans and stage1_plans on `cascade` (kept by `cascade.save`): the
        thresholds were chosen for those stages."""
        if list(cascade.stages) != list(self.params["stages"]):
            warnings.warn(f"the cascade ran stages {tuple(cascade.stages)}; it now runs the calibrated "
                          f"{tuple(self.params['stages'])}", UserWarning, stacklevel=2)
        cascade.stages = tuple(self.params["stages"])
        cascade.n, cascade.tau1, cascade.tau2 = self.params["n"], self.params["tau1"], self.params["tau2"]
        cascade.stage3_plans = self.params.get("stage3_plans", True)
        cascade.stage1_plans = self.params.get("stage1_plans", True)

    def average_accuracy(self, usd_per_1k_max: float | None = None) -> dict[str, float]:
        """The whole cost-accuracy curve as one number (RouterBench's AIQ, the area RouterArena asks for):
        the mean accuracy of the non-decreasing upper convex hull of every trial and the large model alone
        (choosing between two settings at random per query reaches any point on the line between them), over
        costs from the cheapest trial to `usd_per_1k_max` (default: the large model alone's cost).
        {"accuracy", "usd_per_1k_from", "usd_per_1k_to"}."""
        big = self.large_alone
        points = [(t["usd_per_1k"], t["accuracy"]) for t in self.trials] + [(big["usd_per_1k"], big["accuracy"])]
        hi = big["usd_per_1k"] if usd_per_1k_max is None else float(usd_per_1k_max)
        lo = min(usd for usd, _ in points)
        xs, ys = _upper_hull(points)
        if hi <= lo:
            return {"accuracy": float(np.interp(lo, xs, ys)), "usd_per_1k_from": lo, "usd_per_1k_to": lo}
        inside = [x for x in xs if lo < x < hi]
        grid = np.array([lo, *inside, hi])
        area = np.trapezoid(np.interp(grid, xs, ys), grid)
        return {"accuracy": float(area / (hi - lo)), "usd_per_1k_from": lo, "usd_per_1k_to": hi}

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "result": self.result.to_dict(), "constraint": self.constraint,
                "constraint_met": self.constraint_met, "large_alone": self.large_alone,
                "default": self.default.to_dict(), "pareto": self.pareto, "trials": len(self.trials),
                "study_name": self.study_name, "storage": self.storage, "stage_sets": self.stage_sets,
                "average_accuracy": self.average_accuracy() if self.trials else None}

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def summary(self) -> str:
        r, d, big = self.result, self.default, self.large_alone
        p = self.params
        alone = ("" if p.get("stage3_plans", True) else " stage3_plans=False") + (
            "" if p.get("stage1_plans", True) else " stage1_plans=False")
        staged = f" stages={tuple(p['stages'])}" if self.stage_sets else ""
        return (f"chosen: tau1={p['tau1']:.3g} tau2={p['tau2']:.3g} n={p['n']}{staged} variant={p['variant']}{alone}: accuracy "
                f"{r.accuracy:.1%}, ${r.usd_per_1k:.4g} per 1k queries, exits {r.exits} ({self.constraint}"
                f"{'' if self.constraint_met else ': NOT MET, most accurate point instead'})\n"
                f"paper default (0.75, 0.5, n={d.params['n']}): accuracy {d.accuracy:.1%}, ${d.usd_per_1k:.4g} per 1k\n"
                f"large alone: accuracy {big['accuracy']:.1%}, ${big['usd_per_1k']:.4g} per 1k ({big['source']})\n"
                f"{len(self.trials)} trials, {len(self.pareto)} on the Pareto front"
                + (f"; the curve's mean accuracy from ${auc['usd_per_1k_from']:.4g} to ${auc['usd_per_1k_to']:.4g} per 1k "
                   f"(large alone's cost): {auc['accuracy']:.1%}" if self.trials and (auc := self.average_accuracy()) else "")
                + "".join(f"\nstages {tuple(c['stages'])}: accuracy {c['accuracy']:.1%}, ${c['usd_per_1k']:.4g} per 1k"
                          f"{'' if c['constraint_met'] else ' (constraint not met)'}" for c in self.stage_sets))

    def plot(self, path: str | os.PathLike) -> Path:
        """Accuracy against USD per 1,000 queries: every trial, the Pareto front, the chosen point, the
        paper default and the large model alone. Needs matplotlib (`pip install cope-dspy[plot]`)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise CopeError("plot() needs matplotlib: pip install 'cope-dspy[plot]'") from exc
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter([t["usd_per_1k"] for t in self.trials], [100 * t["accuracy"] for t in self.trials],
                   s=10, alpha=0.2, color="grey", label=f"trials ({len(self.trials)})")
        front = sorted(self.pareto, key=lambda p: p["usd_per_1k"])
        ax.plot([p["usd_per_1k"] for p in front], [100 * p["accuracy"] for p in front], "-o", markersize=3,
                color="tab:blue", label="Pareto front")
        for label, usd, acc, style in (
            ("large alone", self.large_alone["usd_per_1k"], self.large_alone["accuracy"], dict(marker="s", color="black")),
            ("paper default (0.75, 0.5)", self.default.usd_per_1k, self.default.accuracy, dict(marker="D", color="tab:orange")),
            ("chosen", self.result.usd_per_1k, self.result.accuracy, dict(marker="*", color="tab:red", s=220)),
        ):
            ax.scatter([usd], [100 * acc], label=label, zorder=3, **{"s": 70, **style})
        ax.set_xlabel("USD per 1,000 queries")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(self.constraint, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return Path(path)


def _upper_hull(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of (cost, accuracy) points, as vertex arrays sorted by cost."""
    hull: list[tuple[float, float]] = []
    for x, y in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if hull and x == hull[-1][0]:
            continue  # the same cost: the more accurate point came first
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (y - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0])) >= 0:
            hull.pop()  # hull[-1] lies on or under the line from hull[-2] to (x, y)
        hull.append((x, y))
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))  # accuracy never falls as cost grows
    xs, ys = zip(*hull[: top + 1], strict=True)
    return np.array(xs), np.array(ys)


def load_calibration(path: str | os.PathLike) -> dict[str, Any]:
    """The chosen setting of a calibration written by `Calibration.to_json` (`cope calibrate run --json`):
    {"n", "tau1", "tau2", "stages", ...}, checked; `cascade.n, cascade.tau1, cascade.tau2 = ...` applies it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CopeInputError(f"cannot read the calibration {str(path)!r}: {exc}") from exc
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(params, dict) or not {"n", "tau1", "tau2"} <= set(params):
        raise CopeInputError(f"{str(path)!r} is not a calibration: it has no params with n, tau1 and tau2 (write one "
                             "with `cope calibrate run --json FILE`; a saved cascade is loaded with --load)")
    Policy(n=params["n"], tau1=params["tau1"], tau2=params["tau2"], stages=tuple(params.get("stages", (1, 2, 3))),
           stage3_plans=params.get("stage3_plans", True), stage1_plans=params.get("stage1_plans", True))
    return params


def calibrate(records: Records | str | os.PathLike, *, n_trials: int = 200, storage: str | None = None,
              study_name: str | None = None, objective: str = "pareto", constraint: Constraint | None = None,
              seed: int | None = 0, include_n: bool = True, variants: list[str] | None = None,
              stages: tuple[int, ...] | list[tuple[int, ...]] | None = None, early_stop: bool = True, sampler="tpe",
              same=None, task=None, stage3_plans: tuple[bool, ...] = (True,),
              stage1_plans: tuple[bool, ...] | None = None) -> Calibration:
    """Search tau1, tau2, n (and the prompt variant) with Optuna, every trial a replay of the records:
    no LM call. Two objectives (accuracy up, USD per 1k queries down) give a Pareto front; `constraint`
    picks one point (default: the cheapest within 1 point of the large model alone).

    The study lives in `storage`: any Optuna RDB URL, "memory", or by default SQLite next to the records
    file (`<records>.optuna.db`). It resumes: trials run
    until the study holds `n_trials` complete ones. Workers may add trials to the same study at once
    (`run_worker`). `sampler` (seeded with `seed`): "tpe" (multi-objective TPE), "nsga2", "grid" (every
    distinct setting, see `grid_settings`: exact, ~380 trials for n = 8; `n_trials` is then ignored) or
    an optuna sampler. `stage3_plans=(True, False)` lets the study also choose stage 3 without plans (the
    large model alone, `Cascade(stage3_plans=False)`), read from the records' large-alone baseline;
    `stage1_plans=(True, False)` stage 1 without goals (`Cascade(stage1_plans=False)`), read from the records'
    unplanned small samples (its stage-2 figures are then estimates: `replay`). Default: the records' own stage 1.
    `stages` several sets, e.g. `[(1, 2, 3), (1, 3), (1, 2)]`: one study per set (its name suffixed with the
    set), and the choice is the best of their chosen points under `constraint` (the cheapest that meets it,
    else the most accurate); `Calibration.stage_sets` lists each set's point and `apply` sets the stages.
    Records of a `Code` cascade calibrate the same way: there tau = 0 stops at that stage, tau = 1 passes it by
    (drawing one small sample) and any tau between accepts on a passed test, so the study chooses n and which
    stages run (the grid: 3 taus a stage).
    """
    import optuna

    if objective != "pareto":
        raise CopeInputError(f"objective must be 'pareto' (accuracy up, USD per 1k down), got {objective!r}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0:
        raise CopeInputError(f"n_trials must be an integer >= 0, got {n_trials!r}")
    if constraint is None:
        constraint = within_points_of_large(1.0)
    if not isinstance(constraint, Constraint):
        raise CopeInputError("constraint must be within_points_of_large(x) or max_usd_per_1k(y), "
                             f"got {constraint!r}")
    if not isinstance(records, Records):
        records = Records.load(records)
    if not len(records):
        raise CopeInputError("no records to calibrate on: record a devset first with record(...)")
    sets = _stage_sets(stages)
    if sets is not None:
        name = study_name or default_study_name(records)
        cals = [calibrate(records, n_trials=n_trials, storage=storage, study_name=f"{name}-stages{''.join(map(str, s))}",
                          constraint=constraint, seed=seed, include_n=include_n, variants=variants, stages=s,
                          early_stop=early_stop, sampler=sampler, same=same, task=task, stage3_plans=stage3_plans,
                          stage1_plans=stage1_plans)
                for s in sets]
        met = [c for c in cals if c.constraint_met]
        if met and constraint.kind == "within_points_of_large":
            best = min(met, key=lambda c: (c.result.usd_per_1k, -c.result.accuracy))
        else:
            best = min(met or cals, key=lambda c: (-c.result.accuracy, c.result.usd_per_1k))
        paper = [c for s, c in zip(sets, cals, strict=True) if s == (1, 2, 3)]
        if paper:  # the paper default is the paper's stages, whichever set won
            best.default = paper[0].default
        best.stage_sets = [{"stages": list(s), "accuracy": c.result.accuracy, "usd_per_1k": c.result.usd_per_1k,
                            "constraint_met": c.constraint_met, "params": c.params} for s, c in zip(sets, cals, strict=True)]
        return best
    same = resolve_same(records, same, task)
    space = _space(records, variants, include_n, stages, early_stop, stage3_plans, stage1_plans)
    if sampler == "grid" and any(consensus_kind(records.policies[v]) == PERPLEXITY for v in space.variants):
        raise CopeInputError("sampler='grid' enumerates every distinct decision of a vote or a test pass; a Text "
                             "cascade's confidence (1/perplexity) is continuous: use sampler='tpe' or 'nsga2'")
    storage = default_storage(records) if storage is None else storage
    study_name = study_name or default_study_name(records)
    restore = _quiet_optuna()
    try:
        study, space = _open_study(records, storage, study_name, _sampler(sampler, seed), space)
        run = _Objective(records, space, same)
        if sampler == "grid":
            tests_pass = all(consensus_kind(records.policies[v]) == TESTS_PASS for v in space.variants)
            todo = _enqueue_missing(study, space, grid_settings(space.n_max, tuple(space.stages), space.include_n,
                                                                tests_pass))
        else:
            if not study.trials:  # the paper default, evaluated first
                for v in space.variants:
                    study.enqueue_trial(space.enqueue_form({**PAPER_DEFAULT, "n": space.n_max, "variant": v,
                                                            "stage3_plans": space.stage3_plans[0],
                                                            "stage1_plans": space.stage1_plans[0]}))
            done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
            todo = max(0, n_trials - done)
        if todo:
            study.optimize(run, n_trials=todo)
        return _summarize(study, space, run, records, constraint, storage)
    finally:
        restore()


def _stage_sets(stages) -> list[tuple[int, ...]] | None:
    """Several stage sets (a list of tuples) checked, or None when `stages` is one set (or None)."""
    if not (isinstance(stages, (list, tuple)) and stages and all(isinstance(x, (list, tuple)) for x in stages)):
        return None
    sets = [check_stages(x) for x in stages]
    if len(set(sets)) != len(sets):
        raise CopeInputError(f"stages: each stage set once, got {stages!r}")
    return sets


def _enqueue_missing(study, space: _Space, grid: list[dict[str, Any]]) -> int:
    import optuna

    # complete trials by their params; waiting (enqueued) ones by the params they were enqueued with
    have = {tuple(sorted(t.params.items()))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    have |= {tuple(sorted(t.system_attrs.get("fixed_params", {}).items()))
             for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    for v in space.variants:
        for plans in space.stage3_plans:
            for goals in space.stage1_plans:
                for params in grid:
                    form = space.enqueue_form({**params, "variant": v, "stage3_plans": plans, "stage1_plans": goals})
                    if tuple(sorted(form.items())) not in have:
                        study.enqueue_trial(form)
                        have.add(tuple(sorted(form.items())))
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _summarize(study, space: _Space, run: _Objective, records: Records, constraint: Constraint,
               storage: str | None) -> Calibration:
    import optuna

    def point(params, values, number):
        return {**params, "stages": space.stages, "accuracy": values[0], "usd_per_1k": values[1], "trial": number}

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    trials = [point(space.params(t), t.values, t.number) for t in complete]
    pareto = sorted((point(space.params(t), t.values, t.number) for t in study.best_trials) if complete else [],
                    key=lambda p: p["usd_per_1k"])
    defaults = {}
    for v in space.variants:  # the paper's setting, stage 3 included
        params = {**PAPER_DEFAULT, "n": space.n_max, "variant": v, "stage3_plans": True in space.stage3_plans,
                  "stage1_plans": True in space.stage1_plans}
        r = run.evaluate(params)
        defaults[v] = (r, point(params, (r.accuracy, r.usd_per_1k), None))
    larges = {v: large_alone(records, v) for v in space.variants}
    # several variants: compare against the best large-alone accuracy among them (the stricter bar)
    big = max(larges.values(), key=lambda x: (x["accuracy"], -x["usd_per_1k"]))
    # the paper default is a candidate where the space holds it (stage 3 with plans)
    candidates = trials + ([p for _, p in defaults.values()] if True in space.stage3_plans else [])
    feasible = [p for p in candidates if constraint.feasible(p, big["accuracy"])]
    best = constraint.best(feasible) if feasible else min(candidates, key=lambda p: (-p["accuracy"], p["usd_per_1k"]))
    params = {k: best[k] for k in ("tau1", "tau2", "n", "variant", "stage3_plans", "stage1_plans")}
    result = run.evaluate(params)
    return Calibration(
        params={**params, "stages": space.stages, "early_stop": space.early_stop}, result=result, pareto=pareto,
        default=defaults[params["variant"]][0], large_alone=big, constraint=str(constraint),
        constraint_met=bool(feasible), trials=trials, study_name=study.study_name, storage=storage)


# ------------------------------------------------------------------------------------------ workers


def run_worker(records: Records | str | os.PathLike, storage: str, study_name: str, n_trials: int, *,
               seed: int | None = None, sampler="tpe", same=None, task=None, include_n: bool = True,
               stages: tuple[int, ...] | None = None, early_stop: bool = True,
               stage3_plans: tuple[bool, ...] = (True,), stage1_plans: tuple[bool, ...] | None = None) -> int:
    """Add `n_trials` trials to a shared study (creating it if needed); returns the trials it ran. Run
    several at once, on one machine or many, against the same RDB storage and records file."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise CopeInputError(f"n_trials must be an integer >= 1 (trials this worker adds), got {n_trials!r}")
    if not isinstance(records, Records):
        records = Records.load(records)
    same = resolve_same(records, same, task)
    restore = _quiet_optuna()
    try:
        study, space = _open_study(records, storage, study_name, _sampler(sampler, seed),
                                   _space(records, None, include_n, stages, early_stop, stage3_plans, stage1_plans))
        study.optimize(_Objective(records, space, same), n_trials=n_trials)
        return n_trials
    finally:
        restore()


def _load_task(spec: str | None):
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError) as exc:
        raise CopeInputError(f"--task {spec!r}: expected module:TaskClass, e.g. cope_dspy.tasks:Math ({exc})") from exc


def _parse_stage_sets(values: list[str] | None):
    if not values:
        return None
    try:
        sets = [tuple(int(x) for x in v.split(",")) for v in values]
    except ValueError:
        raise CopeInputError(f"--stages: each set is stage numbers joined by commas, e.g. 1,2,3 or 1,3; got "
                             f"{' '.join(values)!r}") from None
    return sets if len(sets) > 1 else sets[0]


STAGE3_CHOICES = {"planned": (True,), "alone": (False,), "choose": (True, False)}
STAGE1_CHOICES = {"goals": (True,), "alone": (False,), "choose": (True, False)}
STAGE1_HELP = ("stage 1: 'goals' (the paper: a small goal per sample), 'alone' (the small samples answer alone: "
               "Cascade(stage1_plans=False)) or 'choose' (the study picks; 'alone' and 'choose' read the records' "
               "unplanned baseline samples); default: the records' own")
STAGE3_HELP = ("stage 3: 'planned' (the paper: the large model executes its guideline), 'alone' (it answers alone: "
               "Cascade(stage3_plans=False)) or 'choose' (the study picks); 'alone' and 'choose' need records with "
               "baselines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cope_dspy.calibrate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="add trials to a shared study (run several at once)")
    w.add_argument("--records", required=True, help="records file (JSONL) made by record()")
    w.add_argument("--storage", required=True, help="Optuna storage URL, e.g. postgresql+psycopg://u@host/db")
    w.add_argument("--study", required=True, help="study name (the same for every worker)")
    w.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    w.add_argument("--seed", type=int, default=None, help="sampler seed (default: random, so workers differ)")
    w.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2"])
    w.add_argument("--task", default=None, help="task for answer equality, module:Class (default: recorded task)")
    w.add_argument("--stage3", default="planned", choices=sorted(STAGE3_CHOICES), help=STAGE3_HELP)
    w.add_argument("--stage1", default=None, choices=sorted(STAGE1_CHOICES), help=STAGE1_HELP)
    r = sub.add_parser("run", help="calibrate: run the study, pick a point, print it")
    r.add_argument("--records", required=True)
    r.add_argument("--trials", type=int, default=200)
    r.add_argument("--storage", default=None, help="default: sqlite:///<records>.optuna.db")
    r.add_argument("--study", default=None)
    r.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "grid"])
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--task", default=None)
    r.add_argument("--stage3", default="planned", choices=sorted(STAGE3_CHOICES), help=STAGE3_HELP)
    r.add_argument("--stage1", default=None, choices=sorted(STAGE1_CHOICES), help=STAGE1_HELP)
    r.add_argument("--stages", nargs="+", default=None, metavar="SET",
                   help="stage set(s) to calibrate, e.g. 1,2,3 (default: the recorded ones); several (1,2,3 1,3 1,2) "
                        "run one study each and choose among them")
    pick = r.add_mutually_exclusive_group()
    pick.add_argument("--within-points", type=float, default=None, help="cheapest within X points of large alone")
    pick.add_argument("--max-usd-per-1k", type=float, default=None, help="most accurate under $Y per 1k queries")
    r.add_argument("--json", default=None, help="write the calibration here")
    r.add_argument("--plot", default=None, help="write the accuracy/cost plot (PNG) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        task = _load_task(args.task)
        if args.command == "worker":
            run_worker(args.records, args.storage, args.study, args.trials, seed=args.seed, sampler=args.sampler,
                       task=task, stage3_plans=STAGE3_CHOICES[args.stage3],
                       stage1_plans=STAGE1_CHOICES.get(args.stage1))
            print(f"worker: ran {args.trials} trials on study {args.study!r}")
            return 0
        constraint = (max_usd_per_1k(args.max_usd_per_1k) if args.max_usd_per_1k is not None
                      else within_points_of_large(1.0 if args.within_points is None else args.within_points))
        cal = calibrate(args.records, n_trials=args.trials, storage=args.storage, study_name=args.study,
                        constraint=constraint, seed=args.seed, sampler=args.sampler, task=task,
                        stage3_plans=STAGE3_CHOICES[args.stage3], stages=_parse_stage_sets(args.stages),
                        stage1_plans=STAGE1_CHOICES.get(args.stage1))
        print(cal.summary())
        if args.json:
            cal.to_json(args.json)
        if args.plot:
            cal.plot(args.plot)
        return 0
    except CopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
