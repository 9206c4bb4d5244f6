"""Benchmark records: every model's samples for one problem, drawn once and stored as one JSON line.

A record holds the full COPE trace (`Cascade.record`: all n samples of stages 1 and 2, the guideline
and the stage-3 answer) and the baselines' samples (small greedy, n unplanned small samples, large
greedy), each candidate with its cost and its correctness. Every method in the report is derived from
these records, so no model is asked the same thing twice. Files are append-only and resumable.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from pathlib import Path
from typing import Any

import dspy

from cope_dspy import Cascade
from cope_dspy.consensus import Candidate
from cope_dspy.costs import CostTracker, tag
from cope_dspy.redact import redact

Correct = Callable[[dspy.Example, dict[str, Any]], bool]


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by example id; a torn last line (a run killed mid-write) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["id"]] = record
    return records


class JsonlWriter:
    """Appends one JSON object a line, fsynced, from many threads; a torn last line is ended first."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # a killed run can leave a torn last line: end it so the next record starts on its own line
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")
        self.path, self.lock = path, threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


CUT_OFF_CHECKED = "checked while recording (finish_reason)"


def solve_unplanned(cascade: Cascade, predictor, role: str, question: str, temperature: float, rollout: int | None):
    """One unplanned baseline sample, metered like the cascade's own samples."""
    tracker = CostTracker(prices=cascade.prices)  # a cut-off reply abstains, as in the cascade
    config = {"temperature": temperature, **({"rollout_id": rollout} if rollout is not None and temperature else {})}
    started = time.perf_counter()
    with dspy.context(adapter=cascade.adapter_for(role), callbacks=[*dspy.settings.callbacks, tracker]), \
            tag(stage=0, role=role):
        try:
            out = predictor(question=question, config=config)
            raw = getattr(out, "answer", "") or ""
            c = Candidate(index=rollout or 0, solution=out.solution or "",
                          answer=cascade.task.parse(out.solution or "", raw), extra={"raw_answer": raw} if raw else {})
        except Exception as exc:  # noqa: BLE001 - a failed baseline sample abstains, as in the cascade
            c = Candidate(index=rollout or 0, answer=None, error=redact(f"{type(exc).__name__}: {exc}"))
    if any(r.cut for r in tracker.records):
        c.cut_off()
    c.usage = tracker.usage().to_dict()
    c.extra["seconds"] = round(time.perf_counter() - started, 3)
    return c.to_dict()


Accept = Callable[[dspy.Example, dict[str, Any]], dict[str, Any]]


def mark_accepted(record: dict[str, Any], example: dspy.Example, accept: Accept) -> None:
    """Code: say of every candidate a stage could accept whether it passed the tests that accept (the
    example's `tests`: under the user rule not the grading ones), in place. The cascade's samples carry the
    report of its own ballot, which ran those tests; the unplanned small samples are run here."""
    record["acceptance_tests"] = len(example.tests)
    for entry in record["cope"]["trace"]:
        if entry["kind"] == "vote":
            for c in entry["candidates"]:
                c["accepted"] = ((c.get("extra") or {}).get("tests") or {}).get("status") == "passed"
    for c in (record.get("baselines") or {}).get("small_samples", []):
        c.setdefault("extra", {})["tests"] = report = accept(example, c)
        c["accepted"] = report["status"] == "passed"


def record_example(cascade: Cascade, example: dspy.Example, correct: Correct, baselines: bool = True,
                   accept: Accept | None = None) -> dict:
    inputs = example.inputs().toDict()
    started = time.perf_counter()
    cope = cascade.record(**inputs)
    cope_seconds = time.perf_counter() - started
    record: dict[str, Any] = {"id": example.id, "cope": {"trace": cope.trace, "seconds": round(cope_seconds, 3)},
                              # every reply's finish_reason was read while recording (`CallRecord.cut`), so
                              # `evals.rescore --cut-off` leaves this record alone
                              "cut_off": CUT_OFF_CHECKED}
    if baselines:
        question = inputs[cascade.task.input_field]
        # the executors' own signatures (their format, and any instructions an optimizer set) without the plan
        small = dspy.Predict(cascade.small_executor.signature.delete("plans"))
        large = dspy.Predict(cascade.large_executor.signature.delete("plans"))
        small.set_lm(cascade.small_executor.lm)
        large.set_lm(cascade.large_executor.lm)
        t = cascade.policy.temperatures
        jobs = [("small_greedy", small, "small_executor", 0.0, None)]
        jobs += [("small_samples", small, "small_executor", t.stage2_executor, i) for i in range(cascade.n)]
        jobs += [("large_greedy", large, "large_executor", 0.0, None)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [(name, pool.submit(copy_context().run, solve_unplanned, cascade, p, role, question, temp, i))
                       for name, p, role, temp, i in jobs]
            out: dict[str, Any] = {"small_samples": []}
            for name, f in futures:
                if name == "small_samples":
                    out[name].append(f.result())
                else:
                    out[name] = f.result()
        record["baselines"] = out
    if accept is not None:  # before grading: under the grading rule the grader reuses these reports
        mark_accepted(record, example, accept)
    for candidate in _candidates(record):
        candidate["correct"] = bool(candidate["answer"] is not None and correct(example, candidate))
    return record


def _candidates(record: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for entry in record["cope"]["trace"]:
        yield from entry.get("candidates", [])
    b = record.get("baselines")
    if b:
        yield b["small_greedy"]
        yield from b["small_samples"]
        yield b["large_greedy"]


def record_all(cascade: Cascade, examples: list[dspy.Example], correct: Correct, path: Path, *,
               concurrency: int = 2, progress: bool = True, baselines: bool = True,
               accept: Accept | None = None) -> dict[str, dict[str, Any]]:
    """Record every example not yet in `path`; returns all records (old and new) by id.

    Ctrl-C (KeyboardInterrupt) stops taking new problems and waits for the ones in flight, so the minutes
    already spent on them are kept; a second Ctrl-C abandons them (nothing of theirs is written). Either
    way the KeyboardInterrupt is re-raised, and rerunning resumes."""
    from tqdm import tqdm

    done = load_records(path)
    todo = [ex for ex in examples if ex.id not in done]
    writer = JsonlWriter(path)
    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=f"recording {path.parent.name}",
               disable=not progress, unit="problem")
    abandoned = threading.Event()  # set by a second interrupt: a problem finishing after it is not written

    def one(ex):
        record = record_example(cascade, ex, correct, baselines, accept)
        if abandoned.is_set():  # its calls may have failed as the servers stopped: not a measurement
            return
        writer.write(record)
        done[ex.id] = record
        bar.update(1)
        bar.set_postfix_str(f"{record['cope']['seconds']:.0f}s cope")

    pool = ThreadPoolExecutor(max_workers=concurrency)
    futures = []
    try:
        try:
            for ex in todo:
                futures.append(pool.submit(copy_context().run, one, ex))
            for f in futures:
                f.result()
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()  # the queued ones; those running cannot be cancelled
            in_flight = sum(f.running() for f in futures)
            print(f"\ninterrupted: finishing the {in_flight} problem(s) in flight so their samples are kept "
                  "(Ctrl-C again abandons them); rerun the same command to resume.", file=sys.stderr, flush=True)
            try:
                wait(futures)
            except KeyboardInterrupt:
                abandoned.set()
                print("abandoned the problems in flight; nothing of theirs was written.", file=sys.stderr, flush=True)
            raise
    finally:
        pool.shutdown(wait=not abandoned.is_set(), cancel_futures=True)
        bar.close()
    return done
