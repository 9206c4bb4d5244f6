"""The agent benchmarks' methods, each a policy answering `policy(question=..., valid_actions=[...])` with one
action a step, as a `Cascade` with the `Act` task does: small alone, small majority, large alone, MoT-style."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any

import dspy

from cope_dspy import Cascade, LargeModelError
from cope_dspy.consensus import Candidate
from cope_dspy.costs import CostTracker, Usage, tag
from cope_dspy.redact import redact
from cope_dspy.role import unplanned

from .report import MOT_TAU

METHODS = ("small alone", "small majority", "large alone", "MoT-style", "COPE")


class Proposals:
    """Unplanned proposals from the cascade's own executors (same instructions, LMs, adapter and prices),
    each metered and read as the cascade reads its samples (a reply cut off at max_tokens abstains)."""

    def __init__(self, cascade: Cascade):
        self.cascade = cascade
        # the executors without their plans: the calls the records' baselines and Cascade(stage3_plans=False) make
        self.solvers = {role: unplanned(getattr(cascade, role)) for role in ("small_executor", "large_executor")}

    def one(self, role: str, question: str, temperature: float, index: int | None = None) -> Candidate:
        tracker = CostTracker(prices=self.cascade.prices)
        config = {
            "temperature": temperature,
            **({"rollout_id": index} if index is not None and temperature else {}),
        }
        started = time.perf_counter()
        with (
            dspy.context(adapter=self.cascade.adapter_for(role), callbacks=[*dspy.settings.callbacks, tracker]),
            tag(stage=0, role=role),
        ):
            try:
                out = self.solvers[role](question=question, config=config)
                # chat: the answer field; a plain format: the whole reply, in `solution`
                solution, answer = getattr(out, "solution", "") or "", getattr(out, "answer", "") or ""
                raw = answer or solution
                c = Candidate(
                    index=index or 0,
                    answer=self.cascade.task.parse(solution, answer),
                    extra={"raw_answer": raw} if raw else {},
                )
            except Exception as exc:  # noqa: BLE001 - a failed proposal abstains, as a cascade sample does
                c = Candidate(index=index or 0, answer=None, error=redact(f"{type(exc).__name__}: {exc}"))
        if any(r.cut for r in tracker.records):
            c.cut_off()
        c.usage = tracker.usage().to_dict()
        c.extra["seconds"] = round(time.perf_counter() - started, 3)
        return c

    def many(self, question: str, n: int) -> list[Candidate]:
        t = self.cascade.policy.temperatures.stage2_executor
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [
                pool.submit(copy_context().run, self.one, "small_executor", question, t, i) for i in range(n)
            ]
            return [f.result() for f in futures]

    def vote(self, candidates: list[Candidate], valid_actions: list[str]):
        ballot = self.cascade.task.consensus().ballot(
            len(candidates), 0.0, self.cascade.task.same, {"valid_actions": valid_actions}, early_stop=False
        )
        ballot.add(candidates)
        return ballot.decision()


def _prediction(answer, stage, confidence, candidates: list[Candidate]) -> dspy.Prediction:
    usage = sum(
        (Usage(**{k: v for k, v in (c.usage or {}).items() if k != "total_tokens"}) for c in candidates),
        Usage(),
    )
    return dspy.Prediction(
        answer=answer,
        stage=stage,
        confidence=confidence,
        cost=usage,
        trace=[{"kind": "proposals", "candidates": [c.to_dict() for c in candidates]}],
    )


def cope_step(cascade: Cascade):
    """The cascade as a step policy. A large-model failure (`LargeModelError`: an unreadable reply after its
    retry) ends the step with no action, as a failed large-alone call does, instead of the whole recording;
    the error and the cost of every call the step made are kept."""

    def step(question: str, valid_actions: list[str]) -> dspy.Prediction:
        tracker = CostTracker(prices=cascade.prices)
        with dspy.context(callbacks=[*dspy.settings.callbacks, tracker]):
            try:
                return cascade(question=question, valid_actions=valid_actions)
            except LargeModelError as exc:
                error = str(exc)
        return dspy.Prediction(
            answer=None,
            stage=3,
            confidence=None,
            cost=tracker.usage(),
            trace=[{"kind": "error", "error": error}],
        )

    return step


def policy(method: str, cascade: Cascade):
    """The step policy of `method`."""
    if method == "COPE":
        return cope_step(cascade)
    p = Proposals(cascade)
    n = cascade.n

    def small_alone(question: str, valid_actions: list[str]) -> dspy.Prediction:
        c = p.one("small_executor", question, 0.0)
        return _prediction(c.answer, None, None, [c])

    def large_alone(question: str, valid_actions: list[str]) -> dspy.Prediction:
        c = p.one("large_executor", question, 0.0)
        return _prediction(c.answer, None, None, [c])

    def small_majority(question: str, valid_actions: list[str]) -> dspy.Prediction:
        samples = p.many(question, n)
        d = p.vote(samples, valid_actions)
        return _prediction(d.answer, None, d.confidence, samples)

    def mot(question: str, valid_actions: list[str]) -> dspy.Prediction:
        """MoT-vote (Yue et al. 2023) per step: the small model's majority if its agreement reaches MOT_TAU,
        else the large model's greedy action. Stage 1 = the small vote decided, stage 3 = the large model."""
        samples = p.many(question, n)
        d = p.vote(samples, valid_actions)
        if d.confidence >= MOT_TAU:
            return _prediction(d.answer, 1, d.confidence, samples)
        large = p.one("large_executor", question, 0.0)
        return _prediction(large.answer, 3, d.confidence, [*samples, large])

    table: dict[str, Any] = {
        "small alone": small_alone,
        "large alone": large_alone,
        "small majority": small_majority,
        "MoT-style": mot,
    }
    if method not in table:
        raise ValueError(f"unknown method {method!r}; methods: {list(METHODS)}")
    return table[method]
