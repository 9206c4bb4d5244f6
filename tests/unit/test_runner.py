"""The runner drives a protocol of jobs over Call data, the same way on threads and on asyncio."""

import asyncio
import contextlib
import threading
import time

import pytest

from cope_dspy import runner
from cope_dspy.runner import Call


class Echo:
    """A predictor stand-in: returns its inputs, fails on request, and counts calls in flight."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.lock = delay, threading.Lock()
        self.in_flight = self.most_in_flight = self.calls = 0

    def _enter(self):
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _leave(self):
        with self.lock:
            self.in_flight -= 1

    def __call__(self, **kwargs):
        self._enter()
        try:
            time.sleep(self.delay)
            if kwargs.get("fail"):
                raise ValueError(f"failed: {kwargs['x']}")
            return kwargs
        finally:
            self._leave()

    async def acall(self, **kwargs):
        self._enter()
        try:
            await asyncio.sleep(self.delay)
            if kwargs.get("fail"):
                raise ValueError(f"failed: {kwargs['x']}")
            return kwargs
        finally:
            self._leave()


def prepare_with(echo, entered=None):
    def prepare(call: Call):
        @contextlib.contextmanager
        def context():
            if entered is not None:
                entered.append((call.role, call.stage, call.sample))
            yield

        return echo, dict(call.inputs), context()

    return prepare


def two_calls(i, fail_second=False):
    """A job of two dependent calls: the second's input is the first's output."""
    first = yield Call("goal_planner", 1, i, 0.7, {"x": i})
    try:
        second = yield Call("small_executor", 1, i, 0.7, {"x": first["x"] * 10, "fail": fail_second})
    except ValueError as exc:
        return f"abstain({exc})"
    return second["x"]


def protocol(n, fail=()):
    results = yield [two_calls(i, fail_second=i in fail) for i in range(n)]
    (plan,) = yield [two_calls(100)]
    return results, plan


def drive(mode, gen, echo, entered=None, limit=None):
    if mode == "threads":
        return runner.run(gen, prepare_with(echo, entered), limit)
    return asyncio.run(runner.arun(gen, prepare_with(echo, entered), limit))


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_jobs_receive_outputs_and_the_protocol_receives_results_in_job_order(mode):
    echo, entered = Echo(), []
    results, plan = drive(mode, protocol(4, fail={2}), echo, entered)
    assert results == [0, 10, "abstain(failed: 20)", 30] and plan == 1000
    assert echo.calls == 10
    assert sorted(entered) == sorted([("goal_planner", 1, i) for i in (0, 1, 2, 3, 100)]
                                     + [("small_executor", 1, i) for i in (0, 1, 2, 3, 100)])


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_wave_runs_its_jobs_at_once_up_to_the_limit(mode):
    echo = Echo(delay=0.05)
    drive(mode, protocol(6), echo)
    assert echo.most_in_flight == 6
    echo = Echo(delay=0.05)
    drive(mode, protocol(6), echo, limit=2)
    assert echo.most_in_flight == 2


def failing_job():
    yield Call("large_executor", 3, 0, 0.0, {"x": 1, "fail": True})  # not caught: the job fails


def slow_job(done):
    out = yield Call("small_executor", 2, 1, 0.7, {"x": 2})
    done.append(out["x"])
    return out["x"]


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_failed_job_is_thrown_into_the_protocol_after_its_wave_ends(mode):
    done, seen = [], []

    def handling():
        try:
            yield [failing_job(), slow_job(done)]
        except ValueError as exc:
            seen.append((str(exc), list(done)))  # the sibling had finished before the protocol heard of it
            return "handled"

    assert drive(mode, handling(), Echo(delay=0.05)) == "handled"
    assert seen == [("failed: 1", [2])]


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_an_error_the_protocol_does_not_handle_propagates(mode):
    def unhandled():
        yield [failing_job()]

    with pytest.raises(ValueError, match="failed: 1"):
        drive(mode, unhandled(), Echo())


def test_calls_in_threads_see_the_callers_context_variables():
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class Reader(Echo):
        def __call__(self, **kwargs):
            seen.append(var.get())
            return kwargs

    token = var.set("caller")
    try:
        runner.run(protocol(3), prepare_with(Reader()))
    finally:
        var.reset(token)
    assert seen and set(seen) == {"caller"}
