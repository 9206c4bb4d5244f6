"""Prices (USD per million tokens, as data) and offline token counting with `litellm.token_counter`.

`Prices` prices a call with litellm's own cost calculation from its bundled map (offline), or with your
overrides; local models cost 0 unless you price them; an unknown paid model warns instead of costing $0.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cope_dspy.billing import Billed, litellm_cost
from cope_dspy.errors import CopeInputError

LOCAL_PREFIXES = ("ollama/", "ollama_chat/", "local/")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


# ---------------------------------------------------------------------------------------------- prices


class UnknownPriceWarning(UserWarning):
    """A paid model has no known price: its calls count 0 USD and are marked priced=False."""


_warned_models: set[str] = set()
_warned_lock = threading.Lock()


def is_local(model: str, api_base: str | None = None) -> bool:
    """True for models served on this machine: `ollama/`, `ollama_chat/`, `local/`, or a loopback api_base."""
    if str(model).startswith(LOCAL_PREFIXES):
        return True
    if api_base:
        host = urlparse(api_base if "://" in api_base else f"http://{api_base}").hostname or ""
        return host in LOCAL_HOSTS or host.startswith("127.")
    return False


def _check_price(value: Any, model: str, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CopeInputError(
            f"{where}price of {model!r}: {field} must be a number of USD per million tokens, got {value!r}"
        )
    if value < 0:
        raise CopeInputError(
            f"{where}price of {model!r}: {field} must be >= 0 USD per million tokens, got {value}"
        )
    return float(value)


_KEYS = ("input", "output", "cached_input")


def _parse_rate(model: Any, value: Any, where: str = "") -> tuple[float, float, float | None]:
    """(input, output, cached input or None) USD per million tokens from (in, out), (in, out, cached) or
    {"input": .., "output": .., "cached_input": ..}."""
    if not isinstance(model, str) or not model:
        raise CopeInputError(
            f"{where}price keys must be model names such as 'openai/gpt-4o-mini', got {model!r}"
        )
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise CopeInputError(
                f"{where}price of {model!r}: unknown key(s) {unknown}; use 'input', 'output' and optionally "
                "'cached_input' (USD per million tokens)"
            )
        missing = sorted({"input", "output"} - set(value))
        if missing:
            raise CopeInputError(
                f"{where}price of {model!r}: missing {missing}; give both 'input' and 'output' "
                "(USD per million tokens)"
            )
        rates = tuple(value[k] for k in _KEYS if k in value)
    elif isinstance(value, (tuple, list)) and len(value) in (2, 3):
        rates = tuple(value)
    else:
        raise CopeInputError(
            f"{where}price of {model!r} must be (input, output), (input, output, cached_input) or "
            f"{{'input': .., 'output': .., 'cached_input': ..}} in USD per million tokens, got {value!r}"
        )
    checked = [_check_price(v, model, k, where) for k, v in zip(_KEYS, rates, strict=False)]
    return checked[0], checked[1], (checked[2] if len(checked) == 3 else None)


def _litellm_rate(name: str) -> tuple[float, float] | None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the bundled map: no network
    import litellm

    entry = litellm.model_cost.get(name)
    if not isinstance(entry, Mapping):
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if not isinstance(inp, (int, float)) or not isinstance(out, (int, float)):
        return None
    return (round(inp * 1e6, 10), round(out * 1e6, 10))


def _names(model: str) -> list[str]:
    """The model name as given, then without its provider prefix ('openai/gpt-4o-mini' -> 'gpt-4o-mini')."""
    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])
    return names


class Prices:
    """USD per million input / output tokens, per model name.

    A model in litellm's bundled price map (read offline) is priced by litellm's own cost calculation from
    the call's usage: cached input, cache writes, reasoning and long-prompt tiers as the provider bills
    them. `overrides` win, with our own arithmetic: input, output and optionally a cached-input rate
    (cache reads; without it they cost the input rate, as do cache writes); reasoning tokens are output
    tokens. Local models cost 0 unless overridden.

        prices = Prices({"openai/gpt-4o-mini": (0.15, 0.60), "my/model": {"input": 1.0, "output": 2.0},
                         "my/cached": (1.0, 2.0, 0.25)})
        prices.cost("openai/gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)   # 0.00027
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None):
        if overrides is not None and not isinstance(overrides, Mapping):
            raise CopeInputError(
                f"Prices(overrides=...) must be a mapping of model name to price, got {overrides!r}"
            )
        self._set_overrides({m: _parse_rate(m, v) for m, v in (overrides or {}).items()})

    def _set_overrides(self, parsed: Mapping[str, tuple[float, float, float | None]]) -> None:
        self.overrides: dict[str, tuple[float, float]] = {m: (r[0], r[1]) for m, r in parsed.items()}
        self.cached_input: dict[str, float] = {m: r[2] for m, r in parsed.items() if r[2] is not None}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Prices:
        """Read overrides from a TOML or JSON file of the same shape as `overrides`.

        TOML:  ["openai/gpt-4o-mini"]        JSON: {"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6}}
               input = 0.15
               output = 0.6
               cached_input = 0.075      (optional)
        """
        if not isinstance(path, (str, os.PathLike)):
            raise CopeInputError(f"Prices.from_file(path) needs the path of a .toml or .json file, got {path!r}")
        path = Path(path)
        where = f"{path}: "
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CopeInputError(f"cannot read the prices file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                raise CopeInputError(f"prices file {path} must end in .toml or .json")
        except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            if isinstance(exc, CopeInputError):
                raise
            raise CopeInputError(f"{where}not valid {suffix[1:].upper()}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise CopeInputError(f"{where}expected a table of model name -> price, got {type(data).__name__}")
        prices = cls()
        prices._set_overrides({m: _parse_rate(m, v, where) for m, v in data.items()})
        return prices

    def rate(self, model: str, api_base: str | None = None) -> tuple[float, float] | None:
        """(input, output) USD per million tokens, or None when the price is unknown."""
        names = _names(str(model))
        for name in names:
            if name in self.overrides:
                return self.overrides[name]
        if is_local(model, api_base):
            return (0.0, 0.0)
        for name in names:
            if (found := _litellm_rate(name)) is not None:
                return found
        return None

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        api_base: str | None = None,
        *,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float:
        """Dollars for these tokens (`prompt_tokens` includes the cached and cache-write ones,
        `completion_tokens` the reasoning ones). An unknown paid model warns once and counts 0."""
        if prompt_tokens == 0 and completion_tokens == 0:
            return 0.0
        names = _names(str(model))
        override = next((n for n in names if n in self.overrides), None)
        if override is not None:
            inp, out = self.overrides[override]
            cached = min(cached_tokens, prompt_tokens)
            return ((prompt_tokens - cached) * inp + cached * self.cached_input.get(override, inp)
                    + completion_tokens * out) / 1e6
        if is_local(model, api_base):
            return 0.0
        mapped = next((n for n in names if _litellm_rate(n) is not None), None)
        if mapped is None:
            _warn_unknown(str(model))
            return 0.0
        billed = Billed(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens)
        try:
            return litellm_cost(mapped, billed)
        except Exception as exc:  # noqa: BLE001 - litellm's calculator failing for one model: say so, use list rates
            inp, out = _litellm_rate(mapped)
            _warn_once(mapped, f"litellm could not price {mapped!r} ({type(exc).__name__}: {exc}); its calls are "
                               "priced at its list input / output rates, without cache or tier discounts.")
            return (prompt_tokens * inp + completion_tokens * out) / 1e6

    def __repr__(self) -> str:
        cached = f", cached_input={self.cached_input!r}" if self.cached_input else ""
        return f"Prices(overrides={self.overrides!r}{cached})"


def _warn_once(model: str, message: str) -> None:
    with _warned_lock:
        if model in _warned_models:
            return
        _warned_models.add(model)
    warnings.warn(message, UnknownPriceWarning, stacklevel=4)


def _warn_unknown(model: str) -> None:
    _warn_once(
        model,
        f"No price is known for model {model!r}: its calls are recorded with priced=False and count $0 in "
        f"totals. Add its price (USD per million tokens) in code: Prices({{{model!r}: (input, output)}}), or in "
        f'a file loaded with Prices.from_file("prices.toml") containing: ["{model}"] input = ... output = ...',
    )


# ---------------------------------------------------------------------------------------------- tokens


def _token_counter(**what: Any) -> int:
    """`litellm.token_counter` (its chat framing, its tiktoken encoding for OpenAI models), offline: the
    `openai_tokenizer` route never fetches a Hugging Face tokenizer, and images count litellm's default."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the bundled map: no network
    import litellm

    # litellm picks an OpenAI model's own encoding; any other model is counted with cl100k_base.
    tokenizer = {"type": "openai_tokenizer", "tokenizer": litellm.encoding}
    return litellm.token_counter(custom_tokenizer=tokenizer, **what)


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` (offline), with the model's encoding where known, else cl100k_base."""
    return _token_counter(model=model or "", text=str(text)) if text else 0


def estimate_prompt_tokens(messages: Any, model: str | None = None) -> int:
    """Prompt tokens of chat `messages` (list of {"role", "content"}) or of a plain prompt string, framing
    included, as `litellm.token_counter` counts them."""
    if messages is None:
        return 0
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    messages = [m if isinstance(m, Mapping) else {"role": "user", "content": str(m)} for m in messages]
    return _token_counter(model=model or "", messages=messages, use_default_image_token_count=True)


def estimate_completion_tokens(outputs: Any, model: str | None = None) -> int:
    """Completion tokens of an LM's outputs (strings, or dicts with text, reasoning and tool calls)."""
    total = 0
    for out in outputs if isinstance(outputs, list) else []:
        if isinstance(out, str):
            total += count_tokens(out, model)
        elif isinstance(out, Mapping):
            total += count_tokens(str(out.get("text") or ""), model)
            total += count_tokens(str(out.get("reasoning_content") or ""), model)
            if out.get("tool_calls"):
                total += count_tokens(json.dumps(out["tool_calls"], default=str), model)
    return total
