"""evals.bench_stage1 times stage 1 with every sample drawn: n goals and n solutions, no other call. Times are
printed, never asserted."""

from __future__ import annotations

from fakes import math_model

from evals.bench_stage1 import stage1_seconds


def test_stage1_draws_every_sample_and_nothing_else():
    small = math_model("scripted/small", lambda call: "7")  # unanimous: early decision would stop sooner
    for n in (1, 4):
        seconds, calls = stage1_seconds(small.lm, n, "What is 3 + 4?")
        assert seconds > 0 and calls == 2 * n
    assert len(small.calls) == 2 * 1 + 2 * 4  # every call reached the model: no cache, no stage 2 or 3
