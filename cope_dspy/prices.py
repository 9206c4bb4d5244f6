"""Prices (USD per million tokens, as data) and offline token counting with tiktoken.

`Prices` reads litellm's bundled price map offline plus your overrides; local models cost 0 unless you
price them; an unknown paid model warns instead of silently costing $0.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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


def _parse_rate(model: Any, value: Any, where: str = "") -> tuple[float, float]:
    if not isinstance(model, str) or not model:
        raise CopeInputError(
            f"{where}price keys must be model names such as 'openai/gpt-4o-mini', got {model!r}"
        )
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"input", "output"})
        if unknown:
            raise CopeInputError(
                f"{where}price of {model!r}: unknown key(s) {unknown}; use 'input' and 'output' "
                "(USD per million tokens)"
            )
        missing = sorted({"input", "output"} - set(value))
        if missing:
            raise CopeInputError(
                f"{where}price of {model!r}: missing {missing}; give both 'input' and 'output' "
                "(USD per million tokens)"
            )
        pair = (value["input"], value["output"])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise CopeInputError(
            f"{where}price of {model!r} must be (input, output) or {{'input': .., 'output': ..}} "
            f"in USD per million tokens, got {value!r}"
        )
    return (_check_price(pair[0], model, "input", where), _check_price(pair[1], model, "output", where))


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

    Defaults come from litellm's bundled price map (read offline); `overrides` win. Local models cost 0
    unless overridden.

        prices = Prices({"openai/gpt-4o-mini": (0.15, 0.60), "my/model": {"input": 1.0, "output": 2.0}})
        prices.cost("openai/gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)   # 0.00027
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None):
        if overrides is not None and not isinstance(overrides, Mapping):
            raise CopeInputError(
                f"Prices(overrides=...) must be a mapping of model name to price, got {overrides!r}"
            )
        self.overrides: dict[str, tuple[float, float]] = {
            m: _parse_rate(m, v) for m, v in (overrides or {}).items()
        }

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Prices:
        """Read overrides from a TOML or JSON file of the same shape as `overrides`.

        TOML:  ["openai/gpt-4o-mini"]        JSON: {"openai/gpt-4o-mini": {"input": 0.15, "output": 0.6}}
               input = 0.15
               output = 0.6
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
        prices.overrides = {m: _parse_rate(m, v, where) for m, v in data.items()}
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
        self, model: str, prompt_tokens: int, completion_tokens: int, api_base: str | None = None
    ) -> float:
        """Dollars for these tokens. An unknown paid model warns once (UnknownPriceWarning) and counts 0."""
        if prompt_tokens == 0 and completion_tokens == 0:
            return 0.0
        rate = self.rate(model, api_base)
        if rate is None:
            _warn_unknown(str(model))
            return 0.0
        return (prompt_tokens * rate[0] + completion_tokens * rate[1]) / 1e6

    def __repr__(self) -> str:
        return f"Prices(overrides={self.overrides!r})"


def _warn_unknown(model: str) -> None:
    with _warned_lock:
        if model in _warned_models:
            return
        _warned_models.add(model)
    warnings.warn(
        f"No price is known for model {model!r}: its calls are recorded with priced=False and count $0 in "
        f"totals. Add its price (USD per million tokens) in code: Prices({{{model!r}: (input, output)}}), or in "
        f'a file loaded with Prices.from_file("prices.toml") containing: ["{model}"] input = ... output = ...',
        UnknownPriceWarning,
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------------------- tokens

_encodings: dict[str, Any] = {}
_encodings_lock = threading.Lock()


def _encoding(model: str | None):
    """tiktoken encoding for `model`: its own where tiktoken knows it, else o200k_base. Never downloads."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec and spec.submodule_search_locations:
            bundled = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
            os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)  # litellm ships cl100k_base and o200k_base
    import tiktoken

    name = "o200k_base"
    for candidate in _names(model) if model else []:
        try:
            # Only the two encodings litellm bundles: older ones map to cl100k_base, the closest.
            name = (
                "o200k_base" if tiktoken.encoding_name_for_model(candidate) == "o200k_base" else "cl100k_base"
            )
            break
        except KeyError:
            continue
    with _encodings_lock:
        if name not in _encodings:
            _encodings[name] = tiktoken.get_encoding(name)
        return _encodings[name]


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` with tiktoken (offline), using the model's encoding where known."""
    if not text:
        return 0
    return len(_encoding(model).encode(str(text), disallowed_special=()))


# OpenAI's accounting for chat messages: a few tokens of framing per message and for the reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_FOR_REPLY = 3
_TOKENS_PER_IMAGE = 85


def _content_tokens(content: Any, model: str | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content, model)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += count_tokens(part, model)
            elif isinstance(part, Mapping):
                if part.get("type") in ("image_url", "image", "input_image"):
                    total += _TOKENS_PER_IMAGE
                else:
                    total += count_tokens(str(part.get("text") or ""), model)
        return total
    return count_tokens(str(content), model)


def estimate_prompt_tokens(messages: Any, model: str | None = None) -> int:
    """Prompt tokens of chat `messages` (list of {"role", "content"}) or of a plain prompt string."""
    if messages is None:
        return 0
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    total = _TOKENS_FOR_REPLY
    for message in messages:
        if not isinstance(message, Mapping):
            total += _TOKENS_PER_MESSAGE + count_tokens(str(message), model)
            continue
        total += _TOKENS_PER_MESSAGE + count_tokens(str(message.get("role") or ""), model)
        total += _content_tokens(message.get("content"), model)
        if message.get("name"):
            total += 1 + count_tokens(str(message["name"]), model)
        if message.get("tool_calls"):
            total += count_tokens(json.dumps(message["tool_calls"], default=str), model)
    return total


def _estimate_completion_tokens(outputs: Any, model: str | None) -> int:
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
