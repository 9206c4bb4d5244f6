"""Cost-aware metrics: let a DSPy optimizer trade answer quality against the API dollars a prediction cost."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from .errors import CopeInputError


def cost_aware(
    metric: Callable[..., Any], *, weight: float = 0.0, budget_usd: float | None = None
) -> Callable[..., Any]:
    """Wrap `metric(example, pred, trace=None)` so that paid spend counts against a prediction.

    In evaluation (`trace is None`) the score is `metric - weight * pred.cost.usd`, and 0 when a
    `budget_usd` is given and the prediction cost more: `weight=1000` makes $0.001 of API spend on a
    problem cost as much as one wrong answer. While an optimizer bootstraps demos (`trace` is not None)
    it returns whether the example passes: the metric's verdict, and within the budget if one is set,
    so only demos that were right and affordable are kept.

    The prediction must carry the cascade's `cost` (a `cope_dspy.Usage`): a program that wraps a
    `Cascade` passes it on, e.g. `dspy.Prediction(answer=..., cost=out.cost)`. Example::

        metric = cost_aware(lambda ex, pred, trace=None: ex.answer == pred.answer, weight=1000)
        compiled = dspy.BootstrapFewShot(metric=metric).compile(program, trainset=trainset)
    """
    if not callable(metric):
        raise CopeInputError(f"metric must be callable as metric(example, pred, trace=None), got {metric!r}")
    for name, value in (("weight", weight), ("budget_usd", budget_usd)):
        if value is not None and (
            not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0
        ):
            raise CopeInputError(f"{name} must be a number >= 0, got {value!r}")

    def scored(example, pred, trace=None, *args, **kwargs):
        quality = metric(example, pred, trace, *args, **kwargs)
        usd = spent(pred)
        within = budget_usd is None or usd <= budget_usd
        if trace is not None:
            return bool(quality) and within
        return float(quality) - weight * usd if within else 0.0

    scored.__name__ = f"cost_aware_{getattr(metric, '__name__', 'metric')}"
    return scored


def spent(pred) -> float:
    """The API dollars a prediction reports in `pred.cost` (a Usage or a dict with 'usd')."""
    cost = getattr(pred, "cost", None) if not isinstance(pred, dict) else pred.get("cost")
    usd = cost.get("usd") if isinstance(cost, dict) else getattr(cost, "usd", None)
    if not isinstance(usd, numbers.Real):
        raise CopeInputError(
            "a cost-aware metric needs the prediction's cost: return the cascade's cost from your program's "
            "forward, e.g. dspy.Prediction(answer=out.answer, cost=out.cost), where out = self.cascade(...)"
        )
    return float(usd)
