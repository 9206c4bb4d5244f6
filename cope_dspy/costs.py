"""What every LM call costs: `CostTracker` (a DSPy callback), `Tag` (which stage, role and sample a call
serves), `Budget` (a hard cap) and `savings`.

Tokens come from the provider's reported usage, split as billed (input, cached input, cache writes,
output, reasoning); where it reports none they are counted offline with `litellm.token_counter` and the
call is marked `estimated`. Dollars come from `Prices` (litellm's cost calculation, or the user's
overrides), never from DSPy's own figure, so user prices apply. A local model costs 0; a paid model with
no known price is never a silent 0. Records and their summaries live in `usage`, prices in `prices`.
"""

import contextvars
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dspy.utils.callback import BaseCallback

from cope_dspy.billing import history_entry, is_cache_hit, read_usage, was_cut
from cope_dspy.errors import BudgetExceeded, CopeInputError
from cope_dspy.ledger import Ledger
from cope_dspy.prices import (  # noqa: F401  (re-exported: `from cope_dspy.costs import Prices` keeps working)
    LOCAL_HOSTS,
    LOCAL_PREFIXES,
    Prices,
    UnknownPriceWarning,
    count_tokens,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    is_local,
)
from cope_dspy.redact import redact
from cope_dspy.role import ROLES
from cope_dspy.usage import (  # noqa: F401  (re-exported: `from cope_dspy.costs import Usage` keeps working)
    CallRecord,
    Usage,
    format_summary,
    group_usage,
    summarize_records,
)

# Completion tokens assumed by `Budget` when a call sets no max_tokens (the provider's limit is unknown).
DEFAULT_COMPLETION_ESTIMATE = 1024
# Float sums of per-call dollars may differ from the cap in the last bits; a billionth of a dollar is noise.
_USD_EPSILON = 1e-9


# ------------------------------------------------------------------------------------------------ tags


@dataclass(frozen=True)
class Tag:
    """Which cascade stage, role and sample an LM call belongs to."""

    stage: int | None = None
    role: str | None = None
    sample: int | None = None


current_tag: contextvars.ContextVar[Tag | None] = contextvars.ContextVar("cope_dspy_tag", default=None)


@contextmanager
def tag(stage: int | None = None, role: str | None = None, sample: int | None = None):
    """Attribute the LM calls made inside the block to `stage`, `role` and `sample`.

    Fields left as None are inherited from an enclosing `tag`. The tag is a contextvar: asyncio tasks
    and `contextvars.copy_context().run` see it; a plain new thread does not (set it inside the thread).
    """
    if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int)):
        raise CopeInputError(f"tag(stage=...) must be an int or None, got {stage!r}")
    if role is not None and not isinstance(role, str):
        raise CopeInputError(f"tag(role=...) must be a string such as {ROLES[0]!r}, got {role!r}")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
        raise CopeInputError(f"tag(sample=...) must be an int or None, got {sample!r}")
    outer = current_tag.get() or Tag()
    token = current_tag.set(Tag(*(new if new is not None else old for new, old in
                                  ((stage, outer.stage), (role, outer.role), (sample, outer.sample)))))
    try:
        yield
    finally:
        current_tag.reset(token)


# --------------------------------------------------------------------------------------------- tracker


def _describe_error(exc: BaseException, instance: Any, call_kwargs: Mapping) -> str:
    """Exception type and first line of its message, with anything that looks like a credential removed."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    keys = [call_kwargs.get("api_key"), (getattr(instance, "kwargs", None) or {}).get("api_key")]
    return redact(text, keys)[:300]


@dataclass
class _Pending:
    instance: Any
    model: str
    api_base: str | None
    tag: Tag | None
    prompt: Any
    messages: Any
    kwargs: Mapping


class CostTracker(BaseCallback):
    """Counts every LM call by model, stage and role, as a DSPy callback.

        tracker = CostTracker(prices=Prices({"openai/gpt-4o-mini": (0.15, 0.60)}))
        with tracker:                        # or dspy.context(callbacks=[tracker]), or lm.callbacks
            program(question="...")
        print(tracker.report())

    Provider usage is read from the LM's history entry (DSPy's history must be on, the default);
    cache hits are counted but not billed; calls without reported usage are counted offline
    (`litellm.token_counter`) and marked estimated. With `ledger=` (a `Ledger`, or the path of one) every
    call is also written to SQLite; with `budget=` every call's spend is charged to the budget.
    """

    def __init__(
        self,
        prices: "Prices | Mapping | None" = None,
        ledger: "Ledger | str | os.PathLike | None" = None,
        budget: "Budget | None" = None,
    ):
        self.prices = prices if isinstance(prices, Prices) else Prices(prices)
        if ledger is not None and not hasattr(ledger, "write"):
            ledger = Ledger(ledger)
        self.ledger = ledger
        if budget is not None and not isinstance(budget, Budget):
            raise CopeInputError(f"CostTracker(budget=...) must be a Budget, got {budget!r}")
        if budget is not None and budget.prices is None:
            budget.prices = self.prices
        self.budget = budget
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._records: list[CallRecord] = []
        self._contexts: list[Any] = []

    # -- DSPy callback hooks
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        kwargs = inputs.get("kwargs") or {}
        lm_kwargs = getattr(instance, "kwargs", None) or {}
        api_base = next(
            (src.get(k) for src in (kwargs, lm_kwargs) for k in ("api_base", "base_url") if src.get(k)), None
        )
        pending = _Pending(
            instance,
            str(getattr(instance, "model", "unknown")),
            api_base,
            current_tag.get(),
            inputs.get("prompt"),
            inputs.get("messages"),
            kwargs,
        )
        with self._lock:
            self._pending.setdefault(call_id, pending)  # registered twice (global + LM) counts once

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        with self._lock:
            pending = self._pending.pop(call_id, None)
        if pending is None:
            return
        record, paid_tokens = self._measure(pending, outputs, exception)
        with self._lock:
            self._records.append(record)
        if self.budget is not None:
            self.budget.charge(record.usd, paid_tokens)
        if self.ledger is not None:
            self.ledger.write(record)

    def _measure(self, p: _Pending, outputs: Any, exception: BaseException | None) -> tuple[CallRecord, int]:
        tag_ = p.tag or Tag()
        entry = history_entry(p.instance, outputs)
        base = dict(time=time.time(), model=p.model, stage=tag_.stage, role=tag_.role, sample=tag_.sample,
                    cut=was_cut(entry))
        if entry is not None and is_cache_hit(entry):
            return CallRecord(**base, cached=True), 0
        prompt, completion, split = read_usage(entry.get("usage") if entry else None)
        error = _describe_error(exception, p.instance, p.kwargs) if exception is not None else None
        estimated = False
        if error is None and (prompt is None or completion is None):
            estimated = True
            if prompt is None:
                messages = (entry or {}).get("messages") or p.messages
                text = messages if messages is not None else (entry or {}).get("prompt", p.prompt)
                prompt = estimate_prompt_tokens(text if isinstance(text, (str, list)) else None, p.model)
            if completion is None:
                completion = estimate_completion_tokens((entry or {}).get("outputs", outputs), p.model)
        prompt, completion = prompt or 0, completion or 0
        rate = self.prices.rate(p.model, p.api_base)
        priced = rate is not None or prompt + completion == 0
        parts = dict(
            cached_tokens=split.cached_tokens,
            cache_write_tokens=split.cache_write_tokens,
            reasoning_tokens=split.reasoning_tokens,
        )
        usd = self.prices.cost(p.model, prompt, completion, p.api_base, **parts)
        paid_tokens = 0 if rate is not None and rate == (0.0, 0.0) else prompt + completion
        return CallRecord(
            **base,
            prompt_tokens=prompt,
            completion_tokens=completion,
            usd=usd,
            estimated=estimated,
            priced=priced,
            error=error,
            cached_prompt_tokens=split.cached_tokens,
            cache_write_tokens=split.cache_write_tokens,
            reasoning_tokens=split.reasoning_tokens,
        ), paid_tokens

    # -- registration for a block
    def __enter__(self) -> "CostTracker":
        import dspy

        callbacks = list(dspy.settings.get("callbacks", None) or [])
        context = dspy.settings.context(callbacks=callbacks if self in callbacks else [*callbacks, self])
        context.__enter__()
        self._contexts.append(context)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._contexts.pop().__exit__(*exc_info)

    # -- results
    @property
    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    def usage(self, **where: Any) -> Usage:
        """All calls' usage, or only the calls whose record fields equal `where`, e.g.
        `usage(stage=1, sample=2)`: what one sample of stage 1 cost."""
        return Usage.from_records(self.select(**where))

    def select(self, **where: Any) -> list[CallRecord]:
        """The records whose fields equal `where` (all of them when empty)."""
        return [r for r in self.records if all(getattr(r, k) == v for k, v in where.items())]

    def by_model(self) -> dict[str, Usage]:
        return group_usage(self.records, "model")

    def by_stage(self) -> dict[int | None, Usage]:
        return group_usage(self.records, "stage")

    def by_role(self) -> dict[str | None, Usage]:
        return group_usage(self.records, "role")

    def to_dict(self) -> dict[str, Any]:
        records = self.records
        return {**summarize_records(records), "records": [r.to_dict() for r in records]}

    def report(self, fmt: str = "table") -> str:
        """A readable table per model and per stage/role with totals, or the same figures as JSON."""
        if fmt not in ("table", "json"):
            raise CopeInputError(f"report(fmt=...) must be 'table' or 'json', got {fmt!r}")
        summary = summarize_records(self.records)
        return json.dumps(summary, indent=2) if fmt == "json" else format_summary(summary)


# ---------------------------------------------------------------------------------------------- budget


def _check_cap(value: Any, name: str, integer: bool = False) -> Any:
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise CopeInputError(
            f"Budget({name}=...) must be {'an integer' if integer else 'a number'} or None, got {value!r}"
        )
    if value < 0:
        raise CopeInputError(f"Budget({name}=...) must be >= 0, got {value}")
    return value


class Budget:
    """A hard cap on what a run pays: dollars, and/or tokens sent to paid models.

        budget = Budget(usd=0.50)                       # fed actual spend by CostTracker(budget=budget)
        budget.check("openai/gpt-4o-mini", messages, max_tokens=512)   # raises BudgetExceeded if it would cross

    Local and free (price 0) models are never refused. `on_exceed` says what the cascade does when a call
    is refused: "raise" the `BudgetExceeded`, or "fallback" to the answer of the last confident stage.
    """

    def __init__(
        self,
        usd: float | None = None,
        tokens: int | None = None,
        on_exceed: str = "raise",
        prices: Prices | None = None,
    ):
        self.usd = _check_cap(usd, "usd")
        self.tokens = _check_cap(tokens, "tokens", integer=True)
        if on_exceed not in ("raise", "fallback"):
            raise CopeInputError(f"Budget(on_exceed=...) must be 'raise' or 'fallback', got {on_exceed!r}")
        if prices is not None and not isinstance(prices, Prices):
            raise CopeInputError(f"Budget(prices=...) must be a Prices, got {prices!r}")
        self.on_exceed = on_exceed
        self.prices = prices
        self._lock = threading.Lock()
        self._spent_usd = 0.0
        self._spent_tokens = 0
        self._reserved_usd = 0.0
        self._reserved_tokens = 0

    @property
    def spent_usd(self) -> float:
        return self._spent_usd

    @property
    def spent_tokens(self) -> int:
        return self._spent_tokens

    def charge(self, usd: float, tokens: int = 0) -> None:
        """Add actual spend (called by CostTracker for every recorded call)."""
        with self._lock:
            self._spent_usd += usd
            self._spent_tokens += tokens

    def estimate(
        self, model: str, messages: Any, max_tokens: int | None, api_base: str | None = None
    ) -> tuple[int, float]:
        """(paid tokens, USD) this call may cost at most: prompt tokens counted, plus max_tokens."""
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0
        ):
            raise CopeInputError(f"max_tokens must be a non-negative integer or None, got {max_tokens!r}")
        completion = DEFAULT_COMPLETION_ESTIMATE if max_tokens is None else max_tokens
        prices = self.prices or Prices()
        rate = prices.rate(model, api_base)
        if rate == (0.0, 0.0):
            return 0, 0.0
        prompt = estimate_prompt_tokens(messages, model)
        if rate is None:
            if self.usd is not None:
                raise CopeInputError(
                    f"a USD budget cannot be enforced for {model!r}: its price is unknown. Add it: "
                    f"Prices({{{model!r}: (input, output)}}) in USD per million tokens."
                )
            return prompt + completion, 0.0
        return prompt + completion, (prompt * rate[0] + completion * rate[1]) / 1e6

    def _refuse_if_crossing(self, model: str, tokens: int, usd: float, max_tokens: int | None) -> None:
        spent_usd, spent_tokens = (
            self._spent_usd + self._reserved_usd,
            self._spent_tokens + self._reserved_tokens,
        )
        how = (
            "Raise the cap (Budget(usd=..., tokens=...)), lower max_tokens, or pass on_exceed='fallback' "
            "to answer from the last confident stage instead."
        )
        if self.usd is not None and usd > 0 and spent_usd + usd > self.usd + _USD_EPSILON:
            raise BudgetExceeded(
                f"Budget exceeded: a call to {model!r} may cost ${usd:.6f} (prompt + max_tokens={max_tokens}); "
                f"${spent_usd:.6f} is already spent or in flight, and the cap is ${self.usd:.6f}. {how}"
            )
        if self.tokens is not None and tokens > 0 and spent_tokens + tokens > self.tokens:
            raise BudgetExceeded(
                f"Budget exceeded: a call to {model!r} may use {tokens:,} paid tokens (prompt + "
                f"max_tokens={max_tokens}); {spent_tokens:,} are already spent or in flight, and the cap is "
                f"{self.tokens:,} tokens. {how}"
            )

    def check(self, model: str, messages: Any, max_tokens: int | None, api_base: str | None = None) -> None:
        """Raise BudgetExceeded if this call could take spend past the cap; a call that fits is never refused."""
        tokens, usd = self.estimate(model, messages, max_tokens, api_base)
        with self._lock:
            self._refuse_if_crossing(model, tokens, usd, max_tokens)

    @contextmanager
    def reserve(self, model: str, messages: Any, max_tokens: int | None, api_base: str | None = None):
        """`check` that also holds the estimate while the call runs, so concurrent calls cannot all pass
        the check and then cross the cap together. Wrap the LM call: `with budget.reserve(...): lm(...)`."""
        tokens, usd = self.estimate(model, messages, max_tokens, api_base)
        with self._lock:
            self._refuse_if_crossing(model, tokens, usd, max_tokens)
            self._reserved_usd += usd
            self._reserved_tokens += tokens
        try:
            yield tokens, usd
        finally:
            with self._lock:
                self._reserved_usd -= usd
                self._reserved_tokens -= tokens

    def __repr__(self) -> str:
        return (
            f"Budget(usd={self.usd}, tokens={self.tokens}, on_exceed={self.on_exceed!r}; "
            f"spent ${self._spent_usd:.6f}, {self._spent_tokens} tokens)"
        )


# --------------------------------------------------------------------------------------------- savings


def _as_usage(value: Any, name: str) -> Usage:
    if isinstance(value, Usage):
        return value
    if isinstance(value, CostTracker):
        return value.usage()
    raise CopeInputError(f"savings({name}=...) must be a CostTracker or a Usage, got {type(value).__name__}")


def savings(baseline: "CostTracker | Usage", candidate: "CostTracker | Usage") -> dict[str, Any]:
    """What `candidate` saves against `baseline`, both measured on the same examples."""
    b, c = _as_usage(baseline, "baseline"), _as_usage(candidate, "candidate")
    for name, u in (("baseline", b), ("candidate", c)):
        if u.unpriced_calls:
            raise CopeInputError(
                f"the {name} has {u.unpriced_calls} calls with no known price, so its dollars "
                "are incomplete; add the missing prices with Prices({model: (input, output)})."
            )
    if b.usd <= 0:
        raise CopeInputError(
            "the baseline cost $0, so a saving relative to it is undefined: measure the baseline "
            "with a paid (or user-priced) model, e.g. Prices({'my/large-model': (input, output)})."
        )
    return {
        "baseline_usd": b.usd,
        "candidate_usd": c.usd,
        "saved_usd": b.usd - c.usd,
        "saved_fraction": (b.usd - c.usd) / b.usd,
        "baseline_tokens": b.total_tokens,
        "candidate_tokens": c.total_tokens,
        "saved_tokens": b.total_tokens - c.total_tokens,
        "baseline_calls": b.calls,
        "candidate_calls": c.calls,
    }
