"""Billed tokens: a provider's usage object read into one split (input, cached input, cache writes, output,
reasoning), and priced by litellm's own cost calculation, which knows each provider's rules; and what DSPy's
history holds of a call (its entry, whether it was a cache hit, whether the reply was cut off).

DSPy 3.4 hands every engine's usage over in OpenAI's shape (`prompt_tokens`, `completion_tokens`,
`prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`; LiteLLM adds
Anthropic's `cache_read_input_tokens` / `cache_creation_input_tokens`). The providers' own shapes are read
too (Anthropic's `input_tokens`, Gemini's `usageMetadata` counts, Ollama's `prompt_eval_count`), so a
usage object from any client prices the same way. Input counts include cached reads and cache writes;
output counts include reasoning tokens, as OpenAI reports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Billed:
    """Tokens of one call as billed. `prompt_tokens` includes `cached_tokens` (cache reads) and
    `cache_write_tokens`; `completion_tokens` includes `reasoning_tokens`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def _plain(usage: Any) -> Mapping:
    if isinstance(usage, Mapping):
        return usage
    if hasattr(usage, "model_dump"):  # litellm.Usage, pydantic objects
        return usage.model_dump()
    return (
        {k: v for k, v in vars(usage).items() if not k.startswith("_")} if hasattr(usage, "__dict__") else {}
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _first(*values: Any) -> int | None:
    return next((v for v in map(_count, values) if v is not None), None)


def read_usage(usage: Any) -> tuple[int | None, int | None, Billed]:
    """(prompt, completion, split) from a usage object; prompt or completion is None when not reported
    (the caller estimates it), and the split then holds 0 for it."""
    u = _plain(usage) if usage is not None else {}
    details = _plain(u.get("prompt_tokens_details") or u.get("input_tokens_details") or {})
    out_details = _plain(u.get("completion_tokens_details") or u.get("output_tokens_details") or {})
    cached = _first(
        details.get("cached_tokens"), u.get("cache_read_input_tokens"), u.get("cachedContentTokenCount")
    )
    written = _first(
        details.get("cache_creation_tokens"),
        details.get("cache_write_tokens"),
        u.get("cache_creation_input_tokens"),
    )
    reasoning = _first(
        out_details.get("reasoning_tokens"), u.get("reasoning_tokens"), u.get("thoughtsTokenCount")
    )
    prompt = _first(u.get("prompt_tokens"), u.get("promptTokenCount"), u.get("prompt_eval_count"))
    if prompt is None and _count(u.get("input_tokens")) is not None:
        prompt = u["input_tokens"]
        if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:  # Anthropic: disjoint counts
            prompt += (cached or 0) + (written or 0)
    completion = _first(u.get("completion_tokens"), u.get("output_tokens"), u.get("eval_count"))
    if completion is None and _count(u.get("candidatesTokenCount")) is not None:
        completion = u["candidatesTokenCount"] + (reasoning or 0)  # Gemini counts thoughts apart
    split = Billed(prompt or 0, completion or 0, cached or 0, written or 0, reasoning or 0)
    return prompt, completion, split


def litellm_cost(name: str, billed: Billed) -> float:
    """Dollars for `billed` as litellm prices model `name` from its bundled map (cached input, cache
    writes, reasoning, long-prompt tiers): the figure `litellm.completion_cost` gives for the same usage."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the bundled map: no network
    import litellm

    usage = litellm.Usage(
        prompt_tokens=billed.prompt_tokens,
        completion_tokens=billed.completion_tokens,
        total_tokens=billed.prompt_tokens + billed.completion_tokens,
        prompt_tokens_details={
            "cached_tokens": billed.cached_tokens,
            "cache_creation_tokens": billed.cache_write_tokens,
        },
        completion_tokens_details={"reasoning_tokens": billed.reasoning_tokens},
        cache_read_input_tokens=billed.cached_tokens,
        cache_creation_input_tokens=billed.cache_write_tokens,
    )
    prompt_usd, completion_usd = litellm.cost_per_token(model=name, usage_object=usage)
    return float(prompt_usd + completion_usd)


# --------------------------------------------------------------------------- DSPy's history of a call


def history_entry(instance: Any, outputs: Any) -> dict | None:
    """The history entry DSPy wrote for this call: it is written before on_lm_end fires, and holds
    the very `outputs` object the call returned (or, for an explicit Request, the Response)."""
    if outputs is None:
        return None
    for entry in reversed(list(getattr(instance, "history", None) or [])):  # a snapshot: others append
        if isinstance(entry, dict) and (entry.get("outputs") is outputs or entry.get("response") is outputs):
            return entry
    return None


def _has_usage(response: Any) -> bool:
    usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
    if isinstance(usage, Mapping):
        return bool(usage)
    return any(getattr(usage, k, None) is not None for k in ("input_tokens", "output_tokens", "total_tokens"))


def is_cache_hit(entry: dict) -> bool:
    """DSPy 3.4 serves a cached reply with usage {} in history; the reply it stored still carries the
    original usage (native engine), or is stamped `cache_hit=True` (LiteLLM objects, TypeSafe entries)."""
    if entry.get("cache_hit") is True:
        return True
    response = entry.get("response")
    responses = response if isinstance(response, (tuple, list)) else (response,)
    for r in responses:
        if (r.get("cache_hit") if isinstance(r, Mapping) else getattr(r, "cache_hit", None)) is True:
            return True
    return not entry.get("usage") and any(_has_usage(r) for r in responses if r is not None)


def was_cut(entry: dict | None) -> bool:
    """Whether the reply stopped at max_tokens: finish_reason "length" on the native engine's Response or
    on any of LiteLLM's choices. A cut-off reply holds no final answer, even when a number can be read."""
    response = (entry or {}).get("response")
    for r in response if isinstance(response, (list, tuple)) else [response]:
        reasons = [getattr(r, "finish_reason", None)]
        reasons += [getattr(c, "finish_reason", None) for c in getattr(r, "choices", None) or []]
        if "length" in reasons:
            return True
    return False
