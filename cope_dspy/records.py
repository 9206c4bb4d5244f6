"""The one record of a cascade run: one JSON line per example (its full trace and, for benchmarks, the baselines'
samples), written by one resumable writer and read by one versioned reader; `cope_dspy.replay` replays it."""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import numbers
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .ballot_replay import PERPLEXITY, TESTS_PASS
from .consensus import Candidate, Vote
from .costs import CostTracker, tag
from .errors import CopeInputError
from .jobs import run_jobs
from .redact import redact

FORMAT = "cope-dspy/records/1"
# every reply's finish_reason was read while recording (`CallRecord.cut`), so `evals.rescore --cut-off` leaves it alone
CUT_OFF_CHECKED = "checked while recording (finish_reason)"


# ---------------------------------------------------------------------------------------------- record


def record(cascade, devset: Iterable, metric: Callable, path: str | os.PathLike, *, variant: str = "default",
           concurrency: int = 1, progress: bool = True, baselines: bool = False) -> Records:
    """Run `cascade.record(**example.inputs())` on every example and append one JSON line per example to
    `path`: its id, the policy, the full trace and each candidate's score under `metric` (with `baselines`,
    also the unplanned baselines' samples: small greedy, n small samples, large greedy).

    Resumable: examples already in `path` (same id and variant) are skipped, and a line half-written when
    a run was killed is dropped and recorded again. Returns every record in the file.

        records = record(cascade, devset, metric=lambda ex, pred: pred.answer == ex.answer, path="dev.jsonl")
    """
    import dspy

    _check_recordable(cascade)
    tests_pass = _tests_pass(cascade)
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
    jobs, seen = [], {}
    for i, example in enumerate(devset):
        if not isinstance(example, dspy.Example):
            raise CopeInputError(f"devset[{i}] is a {type(example).__name__}, not a dspy.Example")
        inputs = _inputs(example, i)
        eid = str(example.get("id") or _hash_id(inputs))
        if eid in seen:
            raise CopeInputError(f"devset[{seen[eid]}] and devset[{i}] have the same id {eid!r}; give each example "
                                 "a distinct 'id' field")
        seen[eid] = i
        jobs.append((eid, example))

    def one(job) -> dict[str, Any]:
        eid, example = job
        line = record_line(cascade, example, eid, variant, baselines=baselines)
        for c in candidates(line):
            c["correct"] = _score(metric, example, c, eid)
        if tests_pass:  # what accepted a program (the call's tests) is kept apart from what grades it (`metric`)
            mark_accepted(line)
            if baselines:
                judge_unplanned(cascade, line)
        return line

    return record_each(cascade, jobs, one, path, variant=variant, concurrency=concurrency, progress=progress,
                       desc=f"recording {variant}", unit="example")


def record_each(cascade, jobs: Sequence[tuple[str, Any]], one: Callable[[Any], dict[str, Any]],
                path: str | os.PathLike, *, variant: str = "default", concurrency: int = 1, progress: bool = True,
                desc: str = "recording", unit: str = "example") -> Records:
    """The one resumable loop: `one(job)` makes the line of each `(id, ...)` job not yet in `path` (same id and
    variant), `concurrency` at once, and each is appended as soon as it is done. The first job runs alone, so a
    broken metric fails after one example's calls, not all; an error stops starting new jobs (those running
    finish and are kept). Ctrl-C stops starting new jobs and waits for those in flight, so the minutes already
    spent on them are kept; a second Ctrl-C abandons them (nothing of theirs is written): `cope_dspy.jobs`.
    Either way the KeyboardInterrupt is re-raised, and rerunning resumes. Returns every record in the file."""
    from tqdm.auto import tqdm

    p, task = cascade.policy, cascade.task.name
    path = Path(path)
    writer = Writer(path)  # cuts a torn last line, so that it is recorded again
    done = set()
    for item in Records.load(path, task=task).items:
        old = item["policy"]
        if item["variant"] == variant and _key(old) != _key(policy_of(cascade)):
            raise CopeInputError(
                f"{path} holds variant {variant!r} recorded with n={old['n']}, stages={old['stages']}, "
                f"task={old['task']!r}, stage3_plans={old.get('stage3_plans', True)}, "
                f"stage1_plans={old.get('stage1_plans', True)}, but this cascade has n={p.n}, stages={list(p.stages)}, "
                f"task={task!r}, stage3_plans={p.stage3_plans}, stage1_plans={p.stage1_plans}; record it under another "
                "variant= label or into another file")
        if item["variant"] == variant:
            done.add(item["id"])
    todo = [job for job in jobs if job[0] not in done]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), disable=not progress, desc=desc, unit=unit)

    def keep(job, line: dict[str, Any]) -> None:
        writer.write(line)
        bar.update(1)
        if line.get("seconds") is not None:
            bar.set_postfix_str(f"{line['seconds']:.0f}s cope")

    try:
        run_jobs(one, keep, todo, concurrency=concurrency, first_alone=True, unit=unit, thread_name="cope-record")
    finally:
        bar.close()
    return Records.load(path, task=task)


def record_line(cascade, example, eid: str, variant: str = "default", *, baselines: bool = False) -> dict[str, Any]:
    """One example's record, not yet scored: the cascade's full trace (`cascade.record`) and, with `baselines`,
    the unplanned baselines' samples."""
    inputs = _inputs(example, eid)
    policy = {**policy_of(cascade), "variant": variant}
    started = time.perf_counter()
    pred = cascade.record(**inputs)
    line = {"format": FORMAT, "id": eid, "variant": variant, "policy": policy, "inputs": inputs,
            "answer": pred.answer, "stage": pred.stage, "trace": _plain(pred.trace),
            "seconds": round(time.perf_counter() - started, 3), "cut_off": CUT_OFF_CHECKED}
    if baselines:
        line["baselines"] = _plain(unplanned_samples(cascade, inputs[cascade.task.input_field]))
    return line


def mark_accepted(line: dict[str, Any]) -> None:
    """A code record's acceptance, as its cascade saw it: each stage sample's `accepted` (it passed every test
    of the call) and the record's `acceptance_tests` (how many the call had; 0: it could never accept)."""
    line["acceptance_tests"] = len(line["inputs"].get("tests") or [])
    for entry in line["trace"]:
        if entry["kind"] == "vote":
            for c in entry.get("candidates", []):
                c["accepted"] = ((c.get("extra") or {}).get("tests") or {}).get("status") == "passed"


def judge_unplanned(cascade, line: dict[str, Any]) -> None:
    """Code: run the call's acceptance tests on the record's unplanned small samples, as a stage's ballot runs them
    on its own samples (each gets `extra.tests` and `accepted`), so that they can stand for a stage 1 without goals
    (`replay(..., stage1_plans=False)`), and the MoT-style baseline accepts on the same tests."""
    from .consensus import Candidate

    samples = (line.get("baselines") or {}).get("small_samples") or []
    ballot = cascade.task.consensus().ballot(len(samples), 0.5, cascade.task.same, line["inputs"], early_stop=False)
    drawn = [Candidate(index=c["index"], answer=c.get("answer")) for c in samples]
    ballot.add(drawn)
    for c, judged in zip(samples, drawn, strict=True):
        c.setdefault("extra", {})["tests"] = judged.extra["tests"]
        c["accepted"] = judged.extra["tests"]["status"] == "passed"


def policy_of(cascade) -> dict[str, Any]:
    """What a record says of the cascade that made it: n, stages, task, and stage3_plans / stage1_plans when not
    the paper's (so records of the default policy read as before)."""
    p = cascade.policy
    return {"n": p.n, "stages": list(p.stages), "task": cascade.task.name,
            **({} if p.stage3_plans else {"stage3_plans": False}),
            **({} if p.stage1_plans else {"stage1_plans": False}),
            **({"consensus": kind} if (kind := _replayed_as(cascade)) else {})}


def _replayed_as(cascade) -> str | None:
    """TESTS_PASS (Code), PERPLEXITY (Text) or None (a vote, or a consensus replay does not know)."""
    from .code import TestsPass  # the sandbox and logprob readers: only when a cascade is recorded
    from .text import Perplexity

    consensus = cascade.task.consensus()
    return TESTS_PASS if isinstance(consensus, TestsPass) else PERPLEXITY if isinstance(consensus, Perplexity) else None


def _tests_pass(cascade) -> bool:
    return _replayed_as(cascade) == TESTS_PASS


def _key(policy: dict[str, Any]) -> tuple:
    return (policy["n"], list(policy["stages"]), policy["task"], policy.get("stage3_plans", True),
            policy.get("stage1_plans", True))


def candidates(line: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every candidate of a record: the cascade's (every stage) and the baselines'."""
    for entry in line["trace"]:
        yield from entry.get("candidates", [])
    b = line.get("baselines")
    if b:
        yield b["small_greedy"]
        yield from b["small_samples"]
        yield b["large_greedy"]


def unplanned_samples(cascade, question: str) -> dict[str, Any]:
    """The baselines' samples: the executors' own signatures (their format, and any instructions an optimizer
    set) without the plan: small greedy, n small samples at the stage-2 temperature, large greedy."""
    from .role import unplanned  # dspy: only when recording

    small, large = unplanned(cascade.small_executor), unplanned(cascade.large_executor)
    t = cascade.policy.temperatures
    jobs = [("small_greedy", small, "small_executor", 0.0, None)]
    jobs += [("small_samples", small, "small_executor", t.stage2_executor, i) for i in range(cascade.n)]
    jobs += [("large_greedy", large, "large_executor", 0.0, None)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [(name, pool.submit(contextvars.copy_context().run, solve_unplanned, cascade, p, role, question,
                                      temp, i)) for name, p, role, temp, i in jobs]
        out: dict[str, Any] = {"small_samples": []}
        for name, f in futures:
            if name == "small_samples":
                out[name].append(f.result())
            else:
                out[name] = f.result()
    return out


def solve_unplanned(cascade, predictor, role: str, question: str, temperature: float, rollout: int | None):
    """One unplanned baseline sample, metered like the cascade's own samples."""
    return solve(cascade, predictor, role, {"question": question}, temperature, rollout)


def solve(cascade, predictor, role: str, inputs: dict[str, Any], temperature: float, rollout: int | None):
    """One executor sample on `inputs` (the question, and the plans when the predictor takes them), metered like
    the cascade's own samples, as a candidate dict."""
    import dspy

    tracker = CostTracker(prices=cascade.prices)
    config = {**cascade.task.lm_config(role), "temperature": temperature,
              **({"max_tokens": cascade.role_max_tokens[role]} if role in cascade.role_max_tokens else {}),
              **({"rollout_id": rollout} if rollout is not None and temperature else {})}
    started = time.perf_counter()
    with dspy.context(adapter=cascade.adapter_for(role), callbacks=[*dspy.settings.callbacks, tracker]), \
            tag(stage=0, role=role):
        try:
            out = predictor(**inputs, config=config)
            raw = getattr(out, "answer", "") or ""
            c = Candidate(index=rollout or 0, solution=out.solution or "",
                          answer=cascade.task.parse(out.solution or "", raw), extra={"raw_answer": raw} if raw else {})
        except Exception as exc:  # noqa: BLE001 - a failed baseline sample abstains, as in the cascade
            c = Candidate(index=rollout or 0, answer=None, error=redact(f"{type(exc).__name__}: {exc}"))
    if any(r.cut for r in tracker.records):  # a cut-off reply abstains, as in the cascade
        c.cut_off()
    c.usage = tracker.usage().to_dict()
    c.extra["seconds"] = round(time.perf_counter() - started, 3)
    return c.to_dict()


def _check_recordable(cascade) -> None:
    if not (hasattr(cascade, "record") and hasattr(cascade, "policy") and hasattr(cascade, "task")):
        raise CopeInputError(f"record() needs a cope_dspy.Cascade, got {cascade!r}")
    if not (isinstance(cascade.task.consensus(), Vote) or _replayed_as(cascade)):
        raise CopeInputError(
            f"calibration replays vote-based tasks (Math, ExactMatch, Act), Code and Text; the {cascade.task.name!r} "
            f"task decides with {type(cascade.task.consensus()).__name__}, which replay does not reproduce yet")
    if 3 not in cascade.policy.stages:
        raise CopeInputError(
            f"record() needs stage 3 in the cascade's stages (got {cascade.policy.stages}): replay reads the large "
            "model's final answer to know what escalating costs. Record with stages=(1, 2, 3) and replay any subset.")


def _inputs(example, where) -> dict[str, Any]:
    try:
        return dict(example.inputs().items())
    except ValueError as exc:
        where = f"devset[{where}]" if isinstance(where, int) else f"example {where!r}"
        raise CopeInputError(f"{where} has no inputs set: build it with .with_inputs('question')") from exc


def _hash_id(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value):
    """As JSON reads it back: the record in memory is the record on disk."""
    return json.loads(json.dumps(value, default=str))


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


# ---------------------------------------------------------------------------------------- write, read


class Writer:
    """Appends one JSON object a line to `path`, fsynced (a kill loses at most the lines in flight), from many
    threads. Opening it cuts a torn last line (a run killed mid-write), so that line is written again."""

    def __init__(self, path: str | os.PathLike):
        self.path, self.lock = Path(path), threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        read_lines(self.path, repair=True)

    def write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False, default=str) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def read_lines(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Every JSON line of `path` ([] when it does not exist). A torn last line (no newline: a run killed
    mid-write) is dropped, and with `repair` cut from the file; a line that is not JSON before the last is an
    error naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
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
    lines = []
    for number, raw in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise CopeInputError(f"{path}, line {number}: not valid JSON ({exc}); only a last line can be torn by a "
                                 "kill: delete that line to record its example again") from exc
    return lines


def upgrade(line: Any, *, task: str | None = None, where: str = "record") -> dict[str, Any]:
    """A record line in the current layout. Lines without `format` are the first benchmark records
    (`{"id", "cope": {"trace", "seconds"}, "baselines", ...}`); they name no policy: n is read from the
    trace, the stages are 1-3 (each recorded in full), the task is `task` ("unknown" when not given)."""
    if isinstance(line, dict) and line.get("format") == FORMAT:
        return line
    if not (isinstance(line, dict) and "format" not in line and isinstance(line.get("cope"), dict)):
        raise CopeInputError(f"{where}: not a cope-dspy record (format {FORMAT!r}, or a benchmark record of "
                             "before it)")
    rest = {k: v for k, v in line.items() if k not in ("id", "cope")}
    trace = line["cope"]["trace"]
    votes = [e for e in trace if e["kind"] == "vote"]
    policy = {"n": len(votes[0]["candidates"]) if votes else 0, "stages": [1, 2, 3], "task": task or "unknown",
              "variant": "default"}
    return {"format": FORMAT, "id": line["id"], "variant": "default", "policy": policy, "inputs": {},
            "trace": trace, "seconds": line["cope"].get("seconds"), **rest}


# --------------------------------------------------------------------------------------------- records


class Records:
    """The records of a JSONL file: one dict per (variant, example id).

    `.n` is the number of samples recorded per stage (the smallest over variants), `.variants` the
    variant labels in first-recorded order.
    """

    def __init__(self, items: list[dict[str, Any]], path: str | os.PathLike | None = None):
        self.items = items
        self.path = Path(path) if path is not None else None
        self.policies: dict[str, dict[str, Any]] = {}
        for item in items:
            pol = self.policies.setdefault(item["variant"], item["policy"])
            if _key(pol) != _key(item["policy"]):
                raise CopeInputError(f"variant {item['variant']!r} mixes records of different policies "
                                     f"({pol} and {item['policy']}); record each policy as its own variant")

    @classmethod
    def load(cls, path: str | os.PathLike, *, repair: bool = False, task: str | None = None) -> Records:
        """Read a records file (`read_lines`: a torn last line is ignored, and with `repair` cut from the file).
        Benchmark records made before the `format` field are read too (`upgrade`), with task `task`."""
        path = Path(path)
        if not path.exists():
            raise CopeInputError(f"cannot read records file {path}: no such file")
        items, seen = [], set()
        for number, line in enumerate(read_lines(path, repair=repair), 1):
            item = upgrade(line, task=task, where=f"{path}, record {number}")
            key = (item["variant"], item["id"])
            if key not in seen:
                seen.add(key)
                items.append(item)
        return cls(items, path)

    def by_id(self, variant: str | None = None) -> dict[str, dict[str, Any]]:
        """One variant's records by example id, in recorded order."""
        if not self.items:
            return {}
        v = self.check_variant(variant)
        return {i["id"]: i for i in self.items if i["variant"] == v}

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
        return tuple(self.policies[self.check_variant(variant)]["stages"])

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

    def check_variant(self, variant: str | None) -> str:
        """`variant`, checked against the recorded ones; None means the only one."""
        if not self.items:
            raise CopeInputError("no records: record a devset first with record(...)")
        if variant is None:
            if len(self.policies) > 1:
                raise CopeInputError(f"these records hold several variants {self.variants}: pass variant=...")
            return self.variants[0]
        if variant not in self.policies:
            raise CopeInputError(f"no records of variant {variant!r}; recorded variants: {self.variants}")
        return variant
