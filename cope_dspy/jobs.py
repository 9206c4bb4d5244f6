"""Runs a batch of long, paid jobs on threads so that Ctrl-C loses nothing already paid for: the one loop
behind recordings (`records.record_each`), agent episodes and judgments (in `evals`).

Each job is split in two: `work(job)` makes its calls and returns a result; `keep(job, result)` stores it
(appends a line to a file). The first Ctrl-C (or whatever the caller turns into KeyboardInterrupt, such as
SIGTERM) starts no new job and waits for those in flight, so what they paid for is kept; a second abandons
them, and a job finishing after that is not kept (its calls may have failed as the servers stopped: not a
measurement). Either way the KeyboardInterrupt is re-raised, and a rerun resumes from what was kept.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any


def run_jobs(work: Callable[[Any], Any], keep: Callable[[Any, Any], None], jobs: Sequence[Any], *,
             concurrency: int = 1, first_alone: bool = False, unit: str = "job",
             resume: str | Callable[[], str] = "rerun the same command to resume.",
             thread_name: str = "cope-jobs") -> None:
    """Run `work` then `keep` for every job, `concurrency` at once. first_alone: the first job runs before any
    other starts, so a broken setup fails after one job's calls, not all of them. An error stops starting new
    jobs (those running finish and are kept) and is raised. unit: what a job is called in the messages;
    resume: how to go on after an interrupt (a function is called at the interrupt, to count what is kept)."""
    abandoned = threading.Event()

    def one(job: Any) -> None:
        result = work(job)
        if not abandoned.is_set():
            keep(job, result)

    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs))), thread_name_prefix=thread_name)
    futures = []
    try:
        try:
            for k, job in enumerate(jobs):
                futures.append(pool.submit(contextvars.copy_context().run, one, job))
                if first_alone and k == 0:
                    futures[0].result()
            for f in futures:
                f.result()
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()  # the queued ones; those running cannot be cancelled
            hint = resume() if callable(resume) else resume
            print(f"\ninterrupted: finishing the {sum(f.running() for f in futures)} {unit}(s) in flight so what "
                  f"they paid for is kept (Ctrl-C again abandons them); {hint}", file=sys.stderr, flush=True)
            try:
                wait(futures)
            except KeyboardInterrupt:
                abandoned.set()
                print(f"abandoned the {unit}s in flight; nothing of theirs was kept.", file=sys.stderr, flush=True)
            raise
    finally:  # also on an error: jobs not yet started are never started, those running are kept
        pool.shutdown(wait=not abandoned.is_set(), cancel_futures=True)
