"""Opening a small + large model pair from names: local catalogue names start an embedded
llama.cpp server, `ollama_chat/<name>` goes to Ollama, anything else is a LiteLLM model string."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import dspy

from .costs import Prices
from .errors import CopeInputError

# The stand-in price of a local "large" model, when the user gives none: gpt-4o-mini's list price,
# read from litellm's bundled price map (so it is data, not a number written here).
STAND_IN = "openai/gpt-4o-mini"


@dataclass
class ModelSpec:
    name: str
    lm: dspy.BaseLM
    local: bool
    price_note: str


def parse_prices(items: list[str]) -> dict[str, tuple[float, float]]:
    """`MODEL=IN,OUT` (USD per million input / output tokens) items from the command line."""
    prices = {}
    for item in items or []:
        model, _, rates = item.partition("=")
        try:
            inp, out = (float(x) for x in rates.split(","))
        except ValueError:
            raise CopeInputError(
                f"--price {item!r}: expected MODEL=IN,OUT in USD per million tokens, e.g. "
                "--price openai/gpt-4o-mini=0.15,0.60"
            ) from None
        if not (0 <= inp < float("inf") and 0 <= out < float("inf")) or not model:
            raise CopeInputError(f"--price {item!r}: prices must be finite numbers >= 0 and the model named")
        prices[model] = (inp, out)
    return prices


def check_model_name(name: str) -> str:
    """`name` if it names a model `open_models` can open: a packaged model, `ollama_chat/<name>`, or a model
    string whose provider LiteLLM knows. Raises CopeInputError naming the accepted forms."""
    from .local import catalogue

    if name in catalogue() or name.startswith(("ollama/", "ollama_chat/", "openai/")):
        return name
    import litellm

    litellm.suppress_debug_info = True  # its "Provider List" banner is not our output
    try:
        litellm.get_llm_provider(name)
    except Exception:  # noqa: BLE001 - LiteLLM's BadRequestError and kin: no provider for this name
        raise CopeInputError(
            f"unknown model {name!r}: use a packaged model ({', '.join(sorted(catalogue()))}; see `cope models`), "
            "'ollama_chat/<name>' for Ollama, or a LiteLLM model with its provider prefix such as "
            "'openai/gpt-4o-mini' or 'anthropic/claude-haiku-4-5'"
        ) from None
    return name


def check_repeat_penalty(value: float | None) -> None:
    """None (the server's default) or a finite number > 0; raises CopeInputError otherwise."""
    if value is not None and not 0 < value < float("inf"):
        raise CopeInputError(f"repeat_penalty must be a finite number > 0 (1.0 is off), got {value}")


def open_model(stack: contextlib.ExitStack, name: str, *, max_tokens: int = 512, parallel: int = 2, threads: int = 2,
               cache: bool = True, repeat_penalty: float | None = None) -> dspy.BaseLM:
    """One model from its name: a local catalogue name starts an embedded llama.cpp server (stopped with
    `stack`; `parallel` slots, `threads` CPU threads), `ollama_chat/<name>` goes to Ollama, anything else is a
    LiteLLM model string (its API key must be set).

    repeat_penalty: the embedded server's repetition penalty on the last 64 tokens (llama-server's
    `--repeat-penalty`; None keeps llama.cpp's default, 1.0, off; Ollama's default is 1.1). Only an embedded
    server takes one here: Ollama applies its own (a Modelfile's `PARAMETER repeat_penalty`) and an API has none."""
    from .local import LocalServer, catalogue

    check_repeat_penalty(repeat_penalty)
    if repeat_penalty is not None and name not in catalogue():
        raise CopeInputError(
            f"repeat_penalty={repeat_penalty} is a setting of the embedded llama.cpp server, and {name!r} is not a "
            "packaged model (see `cope models`): Ollama applies its own (1.1 unless a Modelfile sets "
            "`PARAMETER repeat_penalty`), an API model takes none; leave repeat_penalty unset for it"
        )
    if name in catalogue():
        flags = ("--repeat-penalty", f"{repeat_penalty:g}") if repeat_penalty is not None else ()
        server = stack.enter_context(LocalServer(name, parallel=parallel, threads=threads, extra_args=flags))
        return server.lm(max_tokens=max_tokens, cache=cache)
    if name.startswith(("ollama/", "ollama_chat/")):
        from .models import ollama

        return ollama(name.split("/", 1)[1], max_tokens=max_tokens, cache=cache)
    from .models import api

    return api(name, max_tokens=max_tokens, cache=cache)


def open_models(stack: contextlib.ExitStack, small: str, large: str, prices: dict[str, tuple[float, float]],
                *, max_tokens: int = 512, parallel: int = 4, cache: bool = True,
                repeat_penalty: float | None = None) -> tuple[ModelSpec, ModelSpec, Prices]:
    """Start what needs starting (on `stack`, so servers stop on exit) and price the large model.

    cache=False: every call goes to the model (benchmark recordings, where a reply served from DSPy's cache
    would be billed at $0 and timed at ~0 s, understating both). repeat_penalty: given to each embedded server
    the pair starts (see `open_model`); a model served elsewhere (Ollama, an API) is asked as it is."""
    from .local import catalogue

    check_repeat_penalty(repeat_penalty)  # before any server starts
    local_names = set(catalogue())
    both_local = small in local_names and large in local_names
    # two servers share the 2 cores of a small machine: one thread each, or they stall each other
    specs = [ModelSpec(name, open_model(stack, name, max_tokens=max_tokens, cache=cache,
                                        parallel=parallel if role == "small" else 2, threads=1 if both_local else 2,
                                        repeat_penalty=repeat_penalty if name in local_names else None),
                       name in local_names or name.startswith(("ollama/", "ollama_chat/")), "")
             for role, name in (("small", small), ("large", large))]
    small_spec, large_spec = specs
    table = dict(prices)
    if large_spec.local and large_spec.lm.model not in table:
        rate = Prices().rate(STAND_IN)
        if rate is None:
            raise CopeInputError(f"no price for the stand-in {STAND_IN}; pass --price {large_spec.lm.model}=IN,OUT")
        table[large_spec.lm.model] = rate
        large_spec.price_note = (
            f"{large} is a local model priced as a stand-in for a paid one at {STAND_IN}'s list price "
            f"(${rate[0]:.2f} / ${rate[1]:.2f} per million input / output tokens)"
        )
    elif large_spec.lm.model in table:
        rate = table[large_spec.lm.model]
        large_spec.price_note = f"{large} priced by the user at ${rate[0]} / ${rate[1]} per million tokens"
    else:
        large_spec.price_note = f"{large} priced from litellm's price map"
    return small_spec, large_spec, Prices(table)
