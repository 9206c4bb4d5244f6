"""Shared pieces of the reliability suite: the outcome tally and cascades wired to fake servers."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import dspy
from fault_server import FaultServer

from cope_dspy import Cascade, Math, Prices
from cope_dspy.answers import math_equal
from cope_dspy.errors import CopeError
from cope_dspy.models import local_lm

TRUTH = "7"
Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
LARGE_PRICE = (1.0, 2.0)  # USD per million tokens: the fake large model is "paid"
PRICES = Prices({"openai/fault-large": LARGE_PRICE})


class Tally:
    def __init__(self):
        self.servers: list[FaultServer] = []
        self.refused = 0  # connection attempts to a closed port (the server cannot count those)
        self.outcomes: Counter[str] = Counter()
        self.crash_details: list[str] = []
        self.wrong_details: list[str] = []

    @property
    def faults(self) -> int:
        return sum(s.injected for s in self.servers) + self.refused

    def run(self, call: Callable[[], Any], truth: str | None = TRUTH, quiet: bool = True) -> Any:
        """Run one public call; returns its prediction or the CopeError it raised (never raises those).
        quiet: silence the warnings expected under faults ("every sample of stage 1 failed")."""
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            try:
                pred = call()
            except CopeError as exc:
                self.outcomes["clear error"] += 1
                return exc
            except Exception as exc:
                self.outcomes["crash"] += 1
                self.crash_details.append(f"{type(exc).__name__}: {exc}"[:300])
                raise
        self.judge(pred, truth)
        return pred

    async def arun(self, call: Callable[[], Any], truth: str | None = TRUTH) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pred = await call()
            except CopeError as exc:
                self.outcomes["clear error"] += 1
                return exc
            except Exception as exc:
                self.outcomes["crash"] += 1
                self.crash_details.append(f"{type(exc).__name__}: {exc}"[:300])
                raise
        self.judge(pred, truth)
        return pred

    def judge(self, pred: dspy.Prediction, truth: str | None) -> None:
        if not pred.accepted:
            self.outcomes["not accepted"] += 1
        elif truth is not None and (pred.answer is None or not math_equal(str(pred.answer), truth)):
            self.outcomes["silent wrong"] += 1
            self.wrong_details.append(f"stage {pred.stage}: {str(pred.answer)[:80]!r} (truth {truth!r})")
        else:
            self.outcomes["answer"] += 1


TALLY = Tally()
BAD_INPUTS: list[str] = []  # every bad input the suite tries (test_bad_input.py), for the summary


def lm(url: str, name: str, *, retries: int = 0, timeout: float = 2.0, **kwargs) -> dspy.LM:
    """An LM on a fake server, uncached (every call reaches the server)."""
    return local_lm(url, name, timeout=timeout, num_retries=retries, cache=False, **kwargs)


def cascade(small_url: str, large_url: str, *, small_retries: int = 0, large_retries: int = 2,
            timeout: float = 2.0, n: int = 4, api_key: str = "local", **kwargs) -> Cascade:
    """A Math cascade whose small and large LMs are the fake servers at these URLs."""
    small = lm(small_url, "fault-small", retries=small_retries, timeout=timeout, api_key=api_key)
    large = lm(large_url, "fault-large", retries=large_retries, timeout=timeout, api_key=api_key)
    return Cascade(small=small, large=large, task=Math(), n=n, prices=kwargs.pop("prices", PRICES), **kwargs)


def scattered(req) -> str:
    """Small-model answers that never agree (each request a different number, never 7)."""
    return str(100 + req.index)
