"""Record a cascade's full traces on a dev set once (JSONL, resumable), then replay any setting of
tau1, tau2, n and stages offline: the decisions and costs the cascade would have, with no LM call."""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .consensus import Candidate, Vote, votes_needed
from .errors import CopeInputError
from .policy import check_n, check_stages, check_tau

FORMAT = "cope-dspy/records/1"
_VOTE_STAGES = (1, 2)


# ---------------------------------------------------------------------------------------------- record


def record(cascade, devset: Iterable, metric: Callable, path: str | os.PathLike, *, variant: str = "default",
           concurrency: int = 1, progress: bool = True) -> Records:
    """Run `cascade.record(**example.inputs())` on every example and append one JSON line per example to
    `path`: its id, the policy, the full trace and each candidate's score under `metric`.

    Resumable: examples already in `path` (same id and variant) are skipped, and a line half-written when
    a run was killed is dropped and recorded again. Returns every record in the file.

        records = record(cascade, devset, metric=lambda ex, pred: pred.answer == ex.answer, path="dev.jsonl")
    """
    import dspy
    from tqdm.auto import tqdm

    _check_recordable(cascade)
    devset = list(devset)
    if not devset:
        raise CopeInputError("the devset is empty: pass a list of dspy.Example with inputs set, e.g. "
                             "[dspy.Example(question=..., answer=...).with_inputs('question'), ...]")
    if not callable(metric):
        raise CopeInputError(f"metric must be a function metric(example, prediction) -> bool or float, got {metric!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise CopeInputError(f"concurrency must be an integer >= 1 (examples recorded at once), got {concurrency!r}")
    if not isinstance(variant, str) or not variant.strip():
        raise CopeInputError(f"variant must be a non-empty label such as 'default', got {variant!r}")
    pending, seen = [], {}
    for i, example in enumerate(devset):
        if not isinstance(example, dspy.Example):
            raise CopeInputError(f"devset[{i}] is a {type(example).__name__}, not a dspy.Example")
        inputs = _inputs(example, i)
        eid = str(example.get("id") or _hash_id(inputs))
        if eid in seen:
            raise CopeInputError(f"devset[{seen[eid]}] and devset[{i}] have the same id {eid!r}; give each example "
                                 "a distinct 'id' field")
        seen[eid] = i
        pending.append((eid, example, inputs))

    p = cascade.policy
    policy = {"n": p.n, "stages": list(p.stages), "task": cascade.task.name, "variant": variant}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = Records.load(path, repair=True) if path.exists() else Records([], path)
    for item in existing.items:
        old = item["policy"]
        if item["variant"] == variant and (old["n"], old["stages"], old["task"]) != (p.n, list(p.stages), policy["task"]):
            raise CopeInputError(
                f"{path} holds variant {variant!r} recorded with n={old['n']}, stages={old['stages']}, "
                f"task={old['task']!r}, but this cascade has n={p.n}, stages={list(p.stages)}, task={policy['task']!r}; "
                "record it under another variant= label or into another file")
    done = {item["id"] for item in existing.items if item["variant"] == variant}
    pending = [job for job in pending if job[0] not in done]

    bar = tqdm(total=len(devset), initial=len(devset) - len(pending), disable=not progress,
               desc=f"recording {variant}", unit="example")
    with open(path, "a", encoding="utf-8") as out:
        def write(line: dict[str, Any]) -> None:
            out.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())  # a kill loses at most the example in flight
            bar.update()

        try:
            if pending:  # the first one alone: a broken metric fails after one example's calls, not all
                write(_record_one(cascade, metric, policy, *pending[0]))
            rest = pending[1:]
            if concurrency == 1:
                for job in rest:
                    write(_record_one(cascade, metric, policy, *job))
            elif rest:
                _record_concurrently(cascade, metric, policy, rest, concurrency, write)
        finally:
            bar.close()
    return Records.load(path)


def _record_concurrently(cascade, metric, policy, jobs, concurrency, write) -> None:
    error: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cope-record")
    try:
        futures = [pool.submit(contextvars.copy_context().run, _record_one, cascade, metric, policy, *job)
                   for job in jobs]
        for future in as_completed(futures):
            if future.cancelled():
                continue
            try:
                line = future.result()
            except Exception as exc:  # stop starting examples; still write those already paid for
                if error is None:
                    error = exc
                    for f in futures:
                        f.cancel()
                continue
            write(line)
    finally:  # also on Ctrl-C: examples not yet started are never started
        pool.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        raise error


def _check_recordable(cascade) -> None:
    if not (hasattr(cascade, "record") and hasattr(cascade, "policy") and hasattr(cascade, "task")):
        raise CopeInputError(f"record() needs a cope_dspy.Cascade, got {cascade!r}")
    if not isinstance(cascade.task.consensus(), Vote):
        raise CopeInputError(
            f"calibration replays vote-based tasks (Math, ExactMatch); the {cascade.task.name!r} task decides with "
            f"{type(cascade.task.consensus()).__name__}, which replay does not reproduce yet")
    if 3 not in cascade.policy.stages:
        raise CopeInputError(
            f"record() needs stage 3 in the cascade's stages (got {cascade.policy.stages}): replay reads the large "
            "model's final answer to know what escalating costs. Record with stages=(1, 2, 3) and replay any subset.")


def _inputs(example, i: int) -> dict[str, Any]:
    try:
        return dict(example.inputs().items())
    except ValueError as exc:
        raise CopeInputError(f"devset[{i}] has no inputs set: build it with .with_inputs('question')") from exc


def _hash_id(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record_one(cascade, metric, policy, eid, example, inputs) -> dict[str, Any]:
    pred = cascade.record(**inputs)
    trace = json.loads(json.dumps(pred.trace, default=str))
    candidates = [c for entry in trace if entry["kind"] in ("vote", "final") for c in entry["candidates"]]
    for c in candidates:
        c["correct"] = _score(metric, example, c, eid)
    return {"format": FORMAT, "id": eid, "variant": policy["variant"], "policy": policy,
            "inputs": inputs, "answer": pred.answer, "stage": pred.stage, "trace": trace}


def _score(metric, example, candidate: dict[str, Any], eid: str) -> float:
    import dspy

    name = getattr(metric, "__qualname__", None) or repr(metric)
    try:
        value = metric(example, dspy.Prediction(answer=candidate["answer"], solution=candidate["solution"]))
    except Exception as exc:
        raise CopeInputError(
            f"the metric {name} raised on example {eid!r} ({type(exc).__name__}: {exc}). It is called as "
            "metric(example, dspy.Prediction(answer=..., solution=...)), and answer is None when a sample "
            "abstained; make it return False (or 0.0) there") from exc
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    raise CopeInputError(f"the metric {name} returned {value!r} on example {eid!r}; it must return a bool or a "
                         "finite number (1 = correct)")


# --------------------------------------------------------------------------------------------- records


class Records:
    """The recorded traces of a JSONL file: one dict per (variant, example id).

    `.n` is the number of samples recorded per stage (the smallest over variants), `.variants` the
    variant labels in first-recorded order.
    """

    def __init__(self, items: list[dict[str, Any]], path: str | os.PathLike | None = None):
        self.items = items
        self.path = Path(path) if path is not None else None
        self._prepared: dict[tuple[str, Any], _Prepared] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        for item in items:
            pol = self.policies.setdefault(item["variant"], item["policy"])
            if (pol["n"], pol["stages"], pol["task"]) != (item["policy"]["n"], item["policy"]["stages"],
                                                          item["policy"]["task"]):
                raise CopeInputError(f"variant {item['variant']!r} mixes records of different policies "
                                     f"({pol} and {item['policy']}); record each policy as its own variant")

    @classmethod
    def load(cls, path: str | os.PathLike, *, repair: bool = False) -> Records:
        """Read a records file. A last line without its newline (a run killed mid-write) is ignored, and
        with `repair` cut from the file so that recording can append after it."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CopeInputError(f"cannot read records file {path}: {exc.strerror or exc}") from exc
        end = data.rfind(b"\n") + 1
        if end < len(data) and repair:
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        items, seen = [], set()
        for number, raw in enumerate(data[:end].decode("utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CopeInputError(f"{path}, line {number}: not valid JSON ({exc}); delete that line to "
                                     "record its example again") from exc
            if not isinstance(item, dict) or item.get("format") != FORMAT:
                raise CopeInputError(f"{path}, line {number}: not a cope-dspy record (format {FORMAT!r})")
            key = (item["variant"], item["id"])
            if key not in seen:
                seen.add(key)
                items.append(item)
        return cls(items, path)

    @property
    def variants(self) -> list[str]:
        return list(self.policies)

    @property
    def n(self) -> int:
        if not self.policies:
            raise CopeInputError("no records: record a devset first with record(...)")
        return min(p["n"] for p in self.policies.values())

    @property
    def task(self) -> str:
        names = {p["task"] for p in self.policies.values()}
        return names.pop() if len(names) == 1 else ",".join(sorted(names))

    def stages(self, variant: str | None = None) -> tuple[int, ...]:
        return tuple(self.policies[self._variant(variant)]["stages"])

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Records({len(self)} examples, variants={self.variants}, path={str(self.path)!r})"

    def fingerprint(self) -> str:
        """A digest of what replay reads (ids, variants, policies); a study is only valid for one."""
        keys = sorted((i["variant"], i["id"]) for i in self.items)
        blob = json.dumps([keys, self.policies], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _variant(self, variant: str | None) -> str:
        if not self.items:
            raise CopeInputError("no records: record a devset first with record(...)")
        if variant is None:
            if len(self.policies) > 1:
                raise CopeInputError(f"these records hold several variants {self.variants}: pass variant=...")
            return self.variants[0]
        if variant not in self.policies:
            raise CopeInputError(f"no records of variant {variant!r}; recorded variants: {self.variants}")
        return variant

    def prepared(self, variant: str | None, same: Callable[[str, str], bool]) -> _Prepared:
        variant = self._variant(variant)
        key = (variant, same)
        if key not in self._prepared:
            self._prepared[key] = _Prepared([i for i in self.items if i["variant"] == variant], same)
        return self._prepared[key]


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
        self.final_usd, self.final_calls = np.zeros(self.size), np.zeros(self.size, dtype=np.int64)
        self.final_correct = np.zeros(self.size)
        # wall-clock seconds of each recorded job (NaN where the records predate timing)
        self.seconds: dict[int, np.ndarray] = {}
        self.guide_seconds, self.final_seconds = np.full(self.size, np.nan), np.full(self.size, np.nan)
        self.final_answer: list[str | None] = [None] * self.size
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
                    (c,) = entry["candidates"]
                    self.final_usd[e], self.final_calls[e] = _usd(c.get("usage")), _calls(c.get("usage"))
                    self.final_correct[e], self.final_answer[e] = c.get("correct", 0.0), c["answer"]
                    self.final_seconds[e] = _seconds(c)
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
        stages = self.params["stages"]
        rows = []
        for e in range(p.size):
            s = next(s for s in (1, 2, 3) if s in exits and exits[s][0][e])
            usd = calls = seconds = 0
            if 1 in stages:
                b = exits[1][1]
                usd, calls, seconds = usd + b.usd[e], calls + b.calls[e], seconds + b.seconds[e]
            if s > 1 or 1 not in stages:
                if 2 in stages or 3 in stages:
                    usd, calls = usd + p.guide_usd[e], calls + p.guide_calls[e]
                    seconds += p.guide_seconds[e]
                if 2 in stages:
                    b = exits[2][1]
                    usd, calls, seconds = usd + b.usd[e], calls + b.calls[e], seconds + b.seconds[e]
            if s == 3:
                answer, score = p.final_answer[e], p.final_correct[e]
                usd, calls = usd + p.final_usd[e], calls + p.final_calls[e]
                seconds += p.final_seconds[e]
            else:
                b = exits[s][1]
                answer, score = p.answers[s][e][b.chosen[e]], b.chosen_correct[e]
            rows.append({"id": p.ids[e], "stage": s, "answer": answer, "correct": float(score),
                         "usd": float(usd), "calls": int(calls), "seconds": float(seconds)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "accuracy": self.accuracy, "usd_total": self.usd_total,
                "usd_per_1k": self.usd_per_1k, "exits": self.exits, "calls": self.calls}

    def __repr__(self) -> str:
        return (f"ReplayResult(accuracy={self.accuracy:.4f}, usd_per_1k={self.usd_per_1k:.6g}, exits={self.exits}, "
                f"calls={self.calls}, params={self.params})")


_default_tasks: dict[str, Any] = {}


def resolve_same(records: Records, same=None, task=None) -> Callable[[str, str], bool]:
    """The answer-equality a replay votes with: `same`, else `task.same`, else the recorded task's."""
    if same is not None:
        return same
    if task is not None:
        if not isinstance(task.consensus(), Vote):
            raise CopeInputError(f"replay reproduces vote-based tasks (Math, ExactMatch), not {task!r}, which "
                                 f"decides with {type(task.consensus()).__name__}")
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
           same: Callable[[str, str], bool] | None = None, task=None) -> ReplayResult:
    """What the cascade with these settings decides and spends on the recorded examples, with no LM call.

    Each example's first `n` recorded samples go through the cascade's own ballot (`Vote`, with early
    decision when `early_stop`), so the stage it exits at, its answer and the samples it draws are the
    live run's; cost is the recorded cost of exactly those samples, plus the guideline and the final call
    when the example gets that far. `stages` defaults to the recorded stages.

    One approximation: stage-2 samples were recorded with g_S, the goal behind the majority of all
    recorded stage-1 samples. With a smaller n, with early decision, or with stage 1 skipped, a live run
    may pass on another goal (or none), so stage-2 figures are then estimates. Everything else is exact.
    """
    if not isinstance(records, Records):
        records = Records.load(records)
    tau1, tau2 = check_tau("tau1", tau1), check_tau("tau2", tau2)
    variant = records._variant(variant)
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
    p = records.prepared(variant, resolve_same(records, same, task))
    return _replay(p, tau1, tau2, n, stages, bool(early_stop), variant)


def _replay(p: _Prepared, tau1: float, tau2: float, n: int, stages: tuple[int, ...], early_stop: bool,
            variant: str) -> ReplayResult:
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
        if 2 not in stages:
            usd += p.guide_usd @ open_
            calls += p.guide_calls @ open_
        usd += p.final_usd @ open_
        calls += p.final_calls @ open_
        score += p.final_correct @ open_
        exits[3] = (open_, None)
    params = {"tau1": tau1, "tau2": tau2, "n": n, "stages": list(stages), "early_stop": early_stop, "variant": variant}
    return ReplayResult(params, p, exits, float(score), float(usd), int(calls))


def large_alone(records: Records, variant: str | None = None) -> dict[str, Any]:
    """The large model answering alone, read from the records: the stage-3 answer's score on every example
    and the cost of that one call. Its prompt held the large model's guideline, which the paper's
    large-alone baseline lacks; the guideline call itself is not counted."""
    v = records._variant(variant)
    items = [i for i in records.items if i["variant"] == v]
    finals = [next(e for e in i["trace"] if e["kind"] == "final")["candidates"][0] for i in items]
    usd = sum(_usd(c.get("usage")) for c in finals)
    return {"variant": v, "accuracy": float(np.mean([c.get("correct", 0.0) for c in finals])),
            "usd_per_1k": 1000.0 * usd / len(finals), "calls": sum(_calls(c.get("usage")) for c in finals)}
