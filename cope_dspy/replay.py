"""Replay any setting of tau1, tau2, n and stages over recorded traces (`cope_dspy.records`): the decisions
and costs the cascade would have, with no LM call."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .ballot_replay import TESTS_PASS, consensus_kind, replay_stages
from .consensus import Candidate, Vote, votes_needed
from .errors import CopeInputError
from .policy import check_n, check_stages, check_tau
from .records import Records

_VOTE_STAGES = (1, 2)

# Per Records object: its variants' prepared arrays, per (variant, same); computed once, reused by every trial.
_PREPARED: weakref.WeakKeyDictionary[Records, dict[tuple[str, Any], _Prepared]] = weakref.WeakKeyDictionary()


def prepared(records: Records, variant: str | None, same: Callable[[str, str], bool],
             unplanned_first: bool = False) -> _Prepared:
    """One variant's records as arrays for replay, cached on the records. `unplanned_first`: stage 1 read from
    the records' unplanned small samples (`unplanned_stage1`)."""
    variant = records.check_variant(variant)
    cache = _PREPARED.setdefault(records, {})
    key = (variant, same, unplanned_first)
    if key not in cache:
        items = [i for i in records.items if i["variant"] == variant]
        cache[key] = _Prepared(unplanned_stage1(items) if unplanned_first else items, same)
    return cache[key]


def unplanned_stage1(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their stage-1 samples swapped for their unplanned small samples (the baseline samples
    `record(..., baselines=True)` draws: the small executor alone at the stage-2 temperature, the very call
    `Cascade(stage1_plans=False)` makes at stage 1): what a replay with `stage1_plans=False` reads. Copies;
    the records are not changed."""
    out = []
    for item in items:
        samples = unplanned_samples_of(item)
        out.append({**item, "trace": [{**e, "candidates": samples} if e["kind"] == "vote" and e["stage"] == 1 else e
                                      for e in item["trace"]]})
    return out


def unplanned_samples_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's unplanned small samples, checked to be readable as a stage 1: present, and on a code record
    each judged by the call's acceptance tests (`accepted`), as a stage's samples are."""
    samples = (item.get("baselines") or {}).get("small_samples")
    if not samples:
        raise CopeInputError(
            f"record {item['id']!r} has no unplanned small samples: stage1_plans=False replays stage 1 from the "
            "records' baseline samples; record with baselines=True (`cope eval` does), or replay stage1_plans=True")
    if consensus_kind(item.get("policy") or {}) == TESTS_PASS and not all("accepted" in c for c in samples):
        raise CopeInputError(
            f"record {item['id']!r}: its unplanned small samples were not run against the call's acceptance tests, "
            "so they cannot stand for a stage 1 that accepts on them; record with `python -m evals.run` (it runs "
            "them), or replay stage1_plans=True")
    return samples


# -------------------------------------------------------------------------------------------- prepared


class _Prepared:
    """One variant's records as arrays: per stage and sample, the vote cluster (computed once with the
    task's `same`), cumulative cost and correctness; and per (n, votes needed, early_stop) what the
    cascade's own ballot does with them, cached."""

    def __init__(self, items: list[dict[str, Any]], same):
        self.ids = [i["id"] for i in items]
        self.size = len(items)
        self.n = items[0]["policy"]["n"]
        self.stages = tuple(items[0]["policy"]["stages"])
        self.labels: dict[int, list[tuple[int, ...]]] = {}
        self.answers: dict[int, list[list[str | None]]] = {}
        self.cum_usd, self.cum_calls, self.correct = {}, {}, {}
        self.guide_usd, self.guide_calls = np.zeros(self.size), np.zeros(self.size, dtype=np.int64)
        # wall-clock seconds of each recorded job (NaN where the records predate timing)
        self.seconds: dict[int, np.ndarray] = {}
        self.guide_seconds = np.full(self.size, np.nan)
        finals: list[dict[str, Any] | None] = [None] * self.size
        for stage in _VOTE_STAGES:
            if stage in self.stages:
                self.labels[stage], self.answers[stage] = [], []
                self.cum_usd[stage] = np.zeros((self.size, self.n + 1))
                self.cum_calls[stage] = np.zeros((self.size, self.n + 1), dtype=np.int64)
                self.correct[stage] = np.zeros((self.size, self.n))
                self.seconds[stage] = np.full((self.size, self.n), np.nan)
        for e, item in enumerate(items):
            for entry in item["trace"]:
                if entry["kind"] == "vote":
                    self._vote_entry(e, item["id"], entry, same)
                elif entry["kind"] == "guideline":
                    self.guide_usd[e], self.guide_calls[e] = _usd(entry.get("usage")), _calls(entry.get("usage"))
                    self.guide_seconds[e] = entry.get("seconds", np.nan)
                elif entry["kind"] == "final":
                    (finals[e],) = entry["candidates"]
        # stage 3 as recorded (the large executor with its guideline), and the large model alone (the
        # records' large-alone baseline: stage 3 with `stage3_plans=False`, the same call); None if missing
        alone = _Final.of([(i.get("baselines") or {}).get("large_greedy") for i in items])
        if items[0]["policy"].get("stage3_plans", True):
            self.finals = {True: _Final.of(finals), False: alone}
        else:  # recorded with Cascade(stage3_plans=False): its stage 3 was the large model alone
            self.finals = {True: None, False: _Final.of(finals)}
        self._tables: dict[tuple[int, int, int, bool], _Ballots] = {}
        self.rows = np.arange(self.size)
        self.everyone, self.no_one = np.ones(self.size, dtype=bool), np.zeros(self.size, dtype=bool)

    def _vote_entry(self, e: int, eid: str, entry: dict[str, Any], same) -> None:
        stage, cands = entry["stage"], sorted(entry["candidates"], key=lambda c: c["index"])
        if len(cands) != self.n:
            raise CopeInputError(f"record {eid!r}: stage {stage} has {len(cands)} samples, not n={self.n}; "
                                 "records must come from cascade.record (every sample drawn)")
        # The cascade's own clustering, once: sample i joins the first earlier cluster `same` matches. A
        # prefix of samples clusters exactly as the first samples of the whole, so labels hold for any n.
        ballot = Vote().ballot(self.n, 1.0, same, early_stop=False)
        ballot.add([Candidate(index=c["index"], answer=c["answer"]) for c in cands])
        cluster_of = {id(c): k for k, cluster in enumerate(ballot.clusters) for c in cluster}
        self.labels[stage].append(tuple(cluster_of.get(id(c), -1) for c in ballot.candidates))
        self.answers[stage].append([c["answer"] for c in cands])
        self.cum_usd[stage][e, 1:] = np.cumsum([_usd(c.get("usage")) for c in cands])
        self.cum_calls[stage][e, 1:] = np.cumsum([_calls(c.get("usage")) for c in cands])
        self.correct[stage][e] = [c.get("correct", 0.0) for c in cands]
        self.seconds[stage][e] = [_seconds(c) for c in cands]

    def final(self, stage3_plans: bool) -> _Final:
        f = self.finals[stage3_plans]
        if f is None:
            raise CopeInputError(
                "stage3_plans=False replays stage 3 as the large model alone, read from the records' large-alone "
                "baseline, and these records have none: record with baselines (evals' `cope eval` does; "
                "records.record(..., baselines=True)), or replay stage3_plans=True" if not stage3_plans else
                "these records' stage 3 was recorded without plans (Cascade(stage3_plans=False)): replay "
                "stage3_plans=False, or record with the paper's stage 3 to replay it")
        return f

    def vote(self, stage: int, n: int, need: int, early_stop: bool) -> _Ballots:
        """What the cascade's ballot does on every example with n samples needing `need` votes. It reads
        tau only through `need` (the caller applies the acceptance test), so one representative tau per
        `need` reproduces it exactly. Examples with the same clusters share one ballot."""
        key = (stage, n, need, early_stop)
        if key not in self._tables:
            tau = 1.0 if need > n else 0.0 if need == 0 else (need - 0.5) / n
            assert votes_needed(n, tau) == need
            drawn, lead, chosen = (np.zeros(self.size, dtype=np.int64) for _ in range(3))
            seconds = np.zeros(self.size)
            groups: dict[tuple[int, ...], list[int]] = {}
            for e, labels in enumerate(self.labels[stage]):
                groups.setdefault(labels[:n], []).append(e)
            for labels, rows in groups.items():
                ballot = Vote().ballot(n, tau, _same_label, early_stop=early_stop)
                cands = [Candidate(index=i, answer=None if x < 0 else str(x)) for i, x in enumerate(labels)]
                k = 0
                while w := ballot.wave():
                    ballot.add(cands[k:k + w])
                    # a wave's samples run in parallel: it lasts as long as its slowest sample
                    seconds[rows] += self.seconds[stage][rows, k:k + w].max(axis=1)
                    k += w
                d = ballot.decision()
                drawn[rows], lead[rows], chosen[rows] = d.drawn, len(d.supporters), d.chosen.index
            self._tables[key] = _Ballots(
                agreement=lead / n, chosen=chosen, chosen_correct=self.correct[stage][self.rows, chosen],
                usd=self.cum_usd[stage][self.rows, drawn], calls=self.cum_calls[stage][self.rows, drawn],
                seconds=seconds)
        return self._tables[key]


@dataclass(frozen=True)
class _Final:
    """Per example, one recorded stage-3 call: its cost, calls, score, answer and seconds."""

    usd: np.ndarray
    calls: np.ndarray
    correct: np.ndarray
    answer: list[str | None]
    seconds: np.ndarray

    @classmethod
    def of(cls, candidates: list[dict[str, Any] | None]) -> _Final | None:
        """From one candidate per example; None unless every example has one."""
        if not candidates or any(c is None for c in candidates):
            return None
        return cls(usd=np.array([_usd(c.get("usage")) for c in candidates]),
                   calls=np.array([_calls(c.get("usage")) for c in candidates], dtype=np.int64),
                   correct=np.array([c.get("correct", 0.0) for c in candidates], dtype=float),
                   answer=[c.get("answer") for c in candidates], seconds=np.array([_seconds(c) for c in candidates]))


@dataclass(frozen=True)
class _Ballots:
    """Per example: the majority's agreement, the chosen sample and its score, what the drawn samples
    cost, and how long their waves took (NaN for records without timings)."""

    agreement: np.ndarray
    chosen: np.ndarray
    chosen_correct: np.ndarray
    usd: np.ndarray
    calls: np.ndarray
    seconds: np.ndarray


def _same_label(a: str, b: str) -> bool:
    return a == b


def _usd(usage: dict[str, Any] | None) -> float:
    return float((usage or {}).get("usd") or 0.0)


def _calls(usage: dict[str, Any] | None) -> int:
    return int((usage or {}).get("calls") or 0)


def _seconds(candidate: dict[str, Any]) -> float:
    return float((candidate.get("extra") or {}).get("seconds", np.nan))


# ---------------------------------------------------------------------------------------------- replay


class ReplayResult:
    """What the cascade does on the recorded examples with one setting: accuracy (mean metric score),
    dollars (total and per 1,000 queries), how many examples exit at each stage, LM calls made, and
    `per_example` (id, stage, answer, score, usd, calls, seconds: the recorded wall-clock time of the jobs
    this run makes, waves of samples in parallel and stages in sequence; NaN where records lack timings)."""

    def __init__(self, params: dict[str, Any], prepared: _Prepared, exits: dict[int, tuple[np.ndarray, Any]],
                 score: float, usd: float, calls: int):
        self.params = params
        self.accuracy = score / prepared.size
        self.usd_total = usd
        self.usd_per_1k = 1000.0 * usd / prepared.size
        self.exits = {s: int(np.count_nonzero(exits[s][0])) if s in exits else 0 for s in (1, 2, 3)}
        self.calls = calls
        self._detail = (prepared, exits)

    @cached_property
    def per_example(self) -> list[dict[str, Any]]:
        p, exits = self._detail
        stages, plans = self.params["stages"], self.params.get("stage3_plans", True)
        rows = []
        for e in range(p.size):
            s = next(s for s in (1, 2, 3) if s in exits and exits[s][0][e])
            usd = calls = seconds = 0
            if 1 in stages:
                b = exits[1][1]
                usd, calls, seconds = usd + b.usd[e], calls + b.calls[e], seconds + b.seconds[e]
            if s > 1 or 1 not in stages:
                if 2 in stages or (3 in stages and plans):
                    usd, calls = usd + p.guide_usd[e], calls + p.guide_calls[e]
                    seconds += p.guide_seconds[e]
                if 2 in stages:
                    b = exits[2][1]
                    usd, calls, seconds = usd + b.usd[e], calls + b.calls[e], seconds + b.seconds[e]
            if s == 3:
                f = p.final(plans)
                answer, score = f.answer[e], f.correct[e]
                usd, calls = usd + f.usd[e], calls + f.calls[e]
                seconds += f.seconds[e]
            else:
                b = exits[s][1]
                answer, score = p.answers[s][e][b.chosen[e]], b.chosen_correct[e]
            rows.append({"id": p.ids[e], "stage": s, "answer": answer, "correct": float(score),
                         "usd": float(usd), "calls": int(calls), "seconds": float(seconds)})
        return rows

    @classmethod
    def from_rows(cls, params: dict[str, Any], rows: list[dict[str, Any]]) -> ReplayResult:
        """A result from per-example rows (`cope_dspy.ballot_replay`)."""
        self = cls.__new__(cls)
        self.params = params
        self.accuracy = sum(r["correct"] for r in rows) / len(rows)
        self.usd_total = float(sum(r["usd"] for r in rows))
        self.usd_per_1k = 1000.0 * self.usd_total / len(rows)
        self.exits = {s: sum(r["stage"] == s for r in rows) for s in (1, 2, 3)}
        self.calls = int(sum(r["calls"] for r in rows))
        self.__dict__["per_example"] = rows  # the cached property, already known
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "accuracy": self.accuracy, "usd_total": self.usd_total,
                "usd_per_1k": self.usd_per_1k, "exits": self.exits, "calls": self.calls}

    def __repr__(self) -> str:
        return (f"ReplayResult(accuracy={self.accuracy:.4f}, usd_per_1k={self.usd_per_1k:.6g}, exits={self.exits}, "
                f"calls={self.calls}, params={self.params})")


_default_tasks: dict[str, Any] = {}


def resolve_same(records: Records, same=None, task=None) -> Callable[[str, str], bool]:
    """The answer-equality a replay votes with: `same`, else `task.same`, else the recorded task's (None for
    records of a code or text cascade, whose stages do not vote)."""
    if same is not None:
        return same
    if records.items and all(consensus_kind(p) for p in records.policies.values()):
        return None
    if task is not None:
        if not isinstance(task.consensus(), Vote):
            raise CopeInputError(f"replay votes with a task's answer equality, and {task!r} decides with "
                                 f"{type(task.consensus()).__name__}: records of a Code or Text cascade replay "
                                 "without one (pass no task=); these records were made by a voting task")
        return task.same
    from .tasks import ExactMatch, Math

    known = {"math": Math, "qa": ExactMatch}
    name = records.task if records.items else "math"
    if name not in known:
        raise CopeInputError(f"records were made with task {name!r}: pass task= (the cascade's task) or same= "
                             "so replay judges agreement as the cascade does")
    if name not in _default_tasks:  # one instance, so the prepared arrays are cached across calls
        _default_tasks[name] = known[name]()
    return _default_tasks[name].same


def replay(records: Records | str | os.PathLike, tau1: float = 0.75, tau2: float = 0.5, n: int | None = None,
           stages: tuple[int, ...] | None = None, early_stop: bool = True, *, variant: str | None = None,
           same: Callable[[str, str], bool] | None = None, task=None, stage3_plans: bool = True,
           stage1_plans: bool | None = None) -> ReplayResult:
    """What the cascade with these settings decides and spends on the recorded examples, with no LM call.

    Each example's first `n` recorded samples go through the cascade's own ballot (`Vote`, with early
    decision when `early_stop`), so the stage it exits at, its answer and the samples it draws are the
    live run's; cost is the recorded cost of exactly those samples, plus the guideline and the final call
    when the example gets that far. `stages` defaults to the recorded stages. Records of a `Code` cascade (a
    stage accepts when a sample passes the call's tests) or a `Text` one (the most likely reply, on its
    perplexity) replay the same way with their own ballot (`cope_dspy.ballot_replay`); `same` and `task` are
    not read there.

    One approximation: stage-2 samples were recorded with g_S, the goal behind the majority of all
    recorded stage-1 samples. With a smaller n, with early decision, or with stage 1 skipped, a live run
    may pass on another goal (or none), so stage-2 figures are then estimates. Everything else is exact.

    `stage3_plans=False` replays `Cascade(stage3_plans=False)`: stage 3 is the recorded large-alone answer (the
    same call), and with stages (1, 3) no guideline is paid for. `stage1_plans=False` replays
    `Cascade(stage1_plans=False)`: on records of the paper's stage 1, stage 1 is read from their unplanned small
    samples (the same calls), and its stage-2 figures are estimates, since the recorded stage-2 samples were asked
    with a stage-1 goal too. None (the default): the records' own stage 1.
    """
    if not isinstance(records, Records):
        records = Records.load(records)
    tau1, tau2 = check_tau("tau1", tau1), check_tau("tau2", tau2)
    variant = records.check_variant(variant)
    recorded = records.stages(variant)
    stages = recorded if stages is None else check_stages(stages)
    if not set(stages) <= set(recorded):
        raise CopeInputError(f"stages {stages} need records of every stage in them; these were recorded with "
                             f"stages {recorded}")
    recorded_n = records.policies[variant]["n"]
    n = recorded_n if n is None else check_n(n)
    if n > recorded_n:
        raise CopeInputError(f"n={n} is more samples than were recorded (n={recorded_n}); replay any n <= "
                             f"{recorded_n}, or record again with a larger n")
    if not isinstance(stage3_plans, bool):
        raise CopeInputError(f"stage3_plans must be True or False, got {stage3_plans!r}")
    if stage1_plans is None:
        stage1_plans = bool(records.policies[variant].get("stage1_plans", True))
    if not isinstance(stage1_plans, bool):
        raise CopeInputError(f"stage1_plans must be True, False or None (the records' own), got {stage1_plans!r}")
    if stage1_plans and not records.policies[variant].get("stage1_plans", True) and 1 in stages:
        raise CopeInputError("these records' stage 1 was recorded without goals (Cascade(stage1_plans=False)): "
                             "replay stage1_plans=False, or record with the paper's stage 1 to replay it")
    # stage 1 read from the unplanned baseline samples, where the records' stage 1 had goals
    swap = not stage1_plans and 1 in stages and records.policies[variant].get("stage1_plans", True)
    kind = consensus_kind(records.policies[variant])
    if kind:  # code (passed tests) or text (perplexity): nothing to vote on
        params = {"tau1": tau1, "tau2": tau2, "n": n, "stages": list(stages), "early_stop": bool(early_stop),
                  "variant": variant, "stage3_plans": stage3_plans, "stage1_plans": stage1_plans}
        items = [i for i in records.items if i["variant"] == variant]
        items = unplanned_stage1(items) if swap else items
        try:
            rows = replay_stages(items, kind, tau1, tau2, n, stages, bool(early_stop), stage3_plans)
        except ValueError as exc:
            raise CopeInputError(str(exc)) from exc
        return ReplayResult.from_rows(params, rows)
    p = prepared(records, variant, resolve_same(records, same, task), unplanned_first=bool(swap))
    return _replay(p, tau1, tau2, n, stages, bool(early_stop), variant, stage3_plans, stage1_plans)


def _replay(p: _Prepared, tau1: float, tau2: float, n: int, stages: tuple[int, ...], early_stop: bool,
            variant: str, stage3_plans: bool = True, stage1_plans: bool = True) -> ReplayResult:
    # Totals as dot products with "still escalating" masks: the hot path of every Optuna trial.
    last, open_ = stages[-1], p.everyone
    usd = score = 0.0
    calls = 0
    exits: dict[int, tuple[np.ndarray, Any]] = {}
    for s, tau in ((1, tau1), (2, tau2)):
        if s not in stages:
            continue
        if s == 2:  # the guideline is planned once, before stage 2 (or before stage 3 without stage 2)
            usd += p.guide_usd @ open_
            calls += p.guide_calls @ open_
        b = p.vote(s, n, votes_needed(n, tau), early_stop)
        usd += b.usd @ open_
        calls += b.calls @ open_
        if last == s:
            done = open_
        elif tau < 1.0:  # consensus.accepts, element-wise
            done = open_ & (b.agreement >= tau)
        else:
            done = p.no_one
        score += b.chosen_correct @ done
        exits[s] = (done, b)
        open_ = open_ & ~done
    if 3 in stages:
        if 2 not in stages and stage3_plans:
            usd += p.guide_usd @ open_
            calls += p.guide_calls @ open_
        f = p.final(stage3_plans)
        usd += f.usd @ open_
        calls += f.calls @ open_
        score += f.correct @ open_
        exits[3] = (open_, None)
    params = {"tau1": tau1, "tau2": tau2, "n": n, "stages": list(stages), "early_stop": early_stop, "variant": variant,
              "stage3_plans": stage3_plans, "stage1_plans": stage1_plans}
    return ReplayResult(params, p, exits, float(score), float(usd), int(calls))


def large_alone(records: Records, variant: str | None = None) -> dict[str, Any]:
    """The large model answering alone, read from the records: its recorded large-alone baseline where every
    example has one (`record(..., baselines=True)`); else the stage-3 answer, whose prompt held the large
    model's guideline (the guideline call itself not counted). `source` says which."""
    v = records.check_variant(variant)
    items = [i for i in records.items if i["variant"] == v]
    alone = [(i.get("baselines") or {}).get("large_greedy") for i in items]
    if all(alone):
        finals, source = alone, "its recorded answer alone"
    else:
        finals = [next(e for e in i["trace"] if e["kind"] == "final")["candidates"][0] for i in items]
        source = ("the stage-3 call only; its prompt held the guideline (no large-alone baseline recorded)"
                  if records.policies[v].get("stage3_plans", True) else "the stage-3 call: the large model alone")
    usd = sum(_usd(c.get("usage")) for c in finals)
    return {"variant": v, "accuracy": float(np.mean([c.get("correct", 0.0) for c in finals])),
            "usd_per_1k": 1000.0 * usd / len(finals), "calls": sum(_calls(c.get("usage")) for c in finals),
            "source": source}
