"""Runs a cascade: the only module that knows threads (`run`, for `forward`) from asyncio (`arun`, for
`aforward`).

The cascade is written as plain generators over data. Its *protocol* yields waves (lists of jobs) and
receives each wave's results; a *job* (one sample, or one plan) yields `Call`s and receives each call's
output, or has the call's exception thrown into it. `prepare` turns a `Call` into the predictor, its
keyword arguments and the context to call it in; the runner calls it, synchronously or with `acall`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One LM call of a cascade, as data: which role, for which stage and sample, with what inputs."""

    role: str
    stage: int
    sample: int | None  # the sample's index in its stage; None for a plan
    temperature: float
    inputs: dict[str, Any] = field(default_factory=dict)
    rollout: int | None = None  # a distinct cache entry per sample (DSPy's rollout_id)


Job = Generator[Call, Any, Any]
Protocol = Generator[list[Job], list[Any], Any]
Prepare = Callable[[Call], tuple[Any, dict[str, Any], AbstractContextManager]]


def run(protocol: Protocol, prepare: Prepare, limit: int | None = None) -> Any:
    """Drive `protocol` to its return value; a wave's jobs run on threads, at most `limit` at once
    (default: the whole wave). One pool serves every wave of the run; a one-job wave runs inline."""
    with ThreadPoolExecutor(max_workers=limit or 1024, thread_name_prefix="cope") as pool:

        def wave(jobs: list[Job]) -> list[Any]:
            if len(jobs) == 1:
                return [_job(jobs[0], prepare)]
            futures = [pool.submit(contextvars.copy_context().run, _job, job, prepare) for job in jobs]
            wait(futures)  # a failed job does not end its wave early: the others' calls are paid for too
            return [f.result() for f in futures]

        jobs, value = _feed(protocol, None)
        while jobs is not None:
            try:
                outcome = wave(jobs)
            except Exception as exc:  # noqa: BLE001 - thrown into the protocol, which re-raises what it cannot handle
                outcome = exc
            jobs, value = _feed(protocol, outcome)
        return value


async def arun(protocol: Protocol, prepare: Prepare, limit: int | None = None) -> Any:
    """`run` on the running event loop: a wave's jobs are tasks, at most `limit` in flight."""
    gate = asyncio.Semaphore(limit) if limit else None

    async def gated(job: Job) -> Any:
        if gate is None:
            return await _ajob(job, prepare)
        async with gate:
            return await _ajob(job, prepare)

    jobs, value = _feed(protocol, None)
    while jobs is not None:
        try:
            results = await asyncio.gather(*(gated(job) for job in jobs), return_exceptions=True)
            outcome = next((r for r in results if isinstance(r, BaseException)), results)
        except Exception as exc:  # noqa: BLE001 - as in `run`
            outcome = exc
        jobs, value = _feed(protocol, outcome)
    return value


def _job(job: Job, prepare: Prepare) -> Any:
    call, value = _feed(job, None)
    while call is not None:
        predictor, kwargs, context = prepare(call)
        try:
            with context:
                outcome = predictor(**kwargs)
        except Exception as exc:  # noqa: BLE001 - thrown into the job, which decides (abstain or raise)
            outcome = exc
        call, value = _feed(job, outcome)
    return value


async def _ajob(job: Job, prepare: Prepare) -> Any:
    call, value = _feed(job, None)
    while call is not None:
        predictor, kwargs, context = prepare(call)
        try:
            with context:
                outcome = await predictor.acall(**kwargs)
        except Exception as exc:  # noqa: BLE001 - as in `_job`
            outcome = exc
        call, value = _feed(job, outcome)
    return value


def _feed(generator: Generator, outcome: Any) -> tuple[Any, Any]:
    """Send `outcome` into the generator (throw it, if it is an exception): (what it yields next, None),
    or (None, what it returned) once it is done."""
    try:
        if isinstance(outcome, BaseException):
            return generator.throw(outcome), None
        return generator.send(outcome), None
    except StopIteration as stop:
        return None, stop.value
