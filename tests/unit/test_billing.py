"""Prices from the provider's usage object: cached input, cache writes, reasoning, tiers, as litellm bills
them; recorded usage payloads in each provider's shape, no network."""

import sqlite3
from types import SimpleNamespace

import litellm
import pytest

from cope_dspy import CostTracker, Prices
from cope_dspy.billing import Billed, read_usage
from cope_dspy.ledger import Ledger

# The usage DSPy 3.4 writes into lm.history, recorded against a scripted server answering in each
# provider's wire format (OpenAI chat, Anthropic messages, Gemini generateContent, Ollama /api/chat).
OPENAI = {  # native engine; the LiteLLM engine adds null detail fields
    "prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0},
}
ANTHROPIC_VIA_LITELLM = {  # wire: input_tokens 400, cache_read_input_tokens 1536, cache_creation_input_tokens 64
    "completion_tokens": 300, "prompt_tokens": 2000, "total_tokens": 2300,
    "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": 300},
    "prompt_tokens_details": {"cache_write_tokens": 64, "cached_tokens": 1536, "text_tokens": 400,
                              "cache_creation_tokens": 64},
    "cache_creation_input_tokens": 64, "cache_read_input_tokens": 1536,
}
GEMINI_VIA_LITELLM = {  # wire: promptTokenCount 2000, candidatesTokenCount 100, thoughtsTokenCount 200, cached 1536
    "completion_tokens": 300, "prompt_tokens": 2000, "total_tokens": 2300,
    "completion_tokens_details": {"reasoning_tokens": 200, "text_tokens": 100},
    "prompt_tokens_details": {"cached_tokens": 1536}, "cache_read_input_tokens": 1536,
}
OLLAMA_VIA_LITELLM = {"completion_tokens": 300, "prompt_tokens": 2000, "total_tokens": 2300}
# The providers' own shapes, as another client hands them over.
ANTHROPIC_NATIVE = {"input_tokens": 400, "output_tokens": 300, "cache_read_input_tokens": 1536,
                    "cache_creation_input_tokens": 64}
GEMINI_NATIVE = {"promptTokenCount": 2000, "candidatesTokenCount": 100, "totalTokenCount": 2300,
                 "cachedContentTokenCount": 1536, "thoughtsTokenCount": 200}
OLLAMA_NATIVE = {"prompt_eval_count": 2000, "eval_count": 300}

CASES = [  # (model, usage, the split it holds)
    ("openai/gpt-4o-mini", OPENAI, Billed(2000, 300, 1536, 0, 200)),
    ("anthropic/claude-haiku-4-5", ANTHROPIC_VIA_LITELLM, Billed(2000, 300, 1536, 64, 0)),
    ("anthropic/claude-haiku-4-5", ANTHROPIC_NATIVE, Billed(2000, 300, 1536, 64, 0)),
    ("gemini/gemini-2.5-flash", GEMINI_VIA_LITELLM, Billed(2000, 300, 1536, 0, 200)),
    ("gemini/gemini-2.5-flash", GEMINI_NATIVE, Billed(2000, 300, 1536, 0, 200)),
    ("ollama_chat/qwen2.5:1.5b", OLLAMA_VIA_LITELLM, Billed(2000, 300)),
    ("ollama_chat/qwen2.5:1.5b", OLLAMA_NATIVE, Billed(2000, 300)),
]


def litellm_figure(model: str, split: Billed) -> float:
    """What litellm.completion_cost says for a response with this usage (OpenAI's shape, which it reads)."""
    usage = litellm.Usage(
        prompt_tokens=split.prompt_tokens, completion_tokens=split.completion_tokens,
        total_tokens=split.prompt_tokens + split.completion_tokens,
        prompt_tokens_details={"cached_tokens": split.cached_tokens, "cache_creation_tokens": split.cache_write_tokens},
        completion_tokens_details={"reasoning_tokens": split.reasoning_tokens},
        cache_read_input_tokens=split.cached_tokens, cache_creation_input_tokens=split.cache_write_tokens,
    )
    return litellm.completion_cost(completion_response=litellm.ModelResponse(model=model, usage=usage), model=model)


def _tracked(model: str, usage: dict, prices: Prices | None = None):
    """One call through CostTracker, its history entry holding `usage` as DSPy writes it."""
    outputs = ["[[ ## answer ## ]]\n4"]
    lm = SimpleNamespace(model=model, kwargs={}, history=[{"outputs": outputs, "usage": usage}])
    tracker = CostTracker(prices=prices)
    tracker.on_lm_start("call-1", lm, {"messages": [{"role": "user", "content": "hi"}], "kwargs": {}})
    tracker.on_lm_end("call-1", outputs)
    return tracker.records[0]


@pytest.mark.parametrize("model, usage, split", CASES)
def test_each_provider_shape_is_read_into_the_same_split(model, usage, split):
    prompt, completion, got = read_usage(usage)
    assert (prompt, completion, got) == (split.prompt_tokens, split.completion_tokens, split)


@pytest.mark.parametrize("model, usage, split", [c for c in CASES if not c[0].startswith("ollama")])
def test_dollars_equal_litellms_figure_for_the_same_usage(model, usage, split):
    record = _tracked(model, usage)
    expected = litellm_figure(model, split)
    assert expected > 0 and record.usd == pytest.approx(expected, rel=1e-12)
    assert (record.prompt_tokens, record.completion_tokens) == (split.prompt_tokens, split.completion_tokens)
    assert (record.cached_prompt_tokens, record.cache_write_tokens, record.reasoning_tokens) == (
        split.cached_tokens, split.cache_write_tokens, split.reasoning_tokens)
    if model.startswith("openai/"):  # the shape litellm itself reads: the very dict, priced by litellm
        response = litellm.ModelResponse(model=model, usage=litellm.Usage(**usage))
        assert record.usd == pytest.approx(litellm.completion_cost(completion_response=response), rel=1e-12)


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash"])
def test_a_cached_call_costs_less_than_an_uncached_one(model):
    prices = Prices()
    uncached = prices.cost(model, 2000, 300)
    cached = prices.cost(model, 2000, 300, cached_tokens=1536)
    assert 0 < cached < uncached
    assert uncached == pytest.approx(litellm_figure(model, Billed(2000, 300)), rel=1e-12)


def test_long_prompts_are_priced_at_the_providers_tier():
    model = "gemini/gemini-2.5-pro"  # a higher rate above 200k prompt tokens
    short, long = Prices().cost(model, 100_000, 1000), Prices().cost(model, 300_000, 1000)
    assert long > 3 * short and long == pytest.approx(litellm_figure(model, Billed(300_000, 1000)), rel=1e-12)


def test_overrides_price_cached_input_at_their_own_rate():
    prices = Prices({"acme/large": (1.0, 4.0, 0.25), "acme/plain": {"input": 1.0, "output": 4.0}})
    assert prices.cost("acme/large", 2000, 300, cached_tokens=1536) == pytest.approx(
        (464 * 1.0 + 1536 * 0.25 + 300 * 4.0) / 1e6, rel=1e-12)
    assert prices.cost("acme/plain", 2000, 300, cached_tokens=1536) == pytest.approx(
        (2000 * 1.0 + 300 * 4.0) / 1e6, rel=1e-12)  # no cached-input rate: cache reads cost the input rate
    assert Prices({"acme/x": {"input": 1, "output": 2, "cached_input": 0.5}}).cached_input == {"acme/x": 0.5}
    # an override wins over litellm's map, local models stay free, and the split is recorded either way
    record = _tracked("openai/gpt-4o-mini", OPENAI, Prices({"openai/gpt-4o-mini": (1.0, 2.0, 0.5)}))
    assert record.usd == pytest.approx((464 * 1.0 + 1536 * 0.5 + 300 * 2.0) / 1e6, rel=1e-12)
    local = _tracked("ollama_chat/qwen2.5:1.5b", OLLAMA_NATIVE)
    assert (local.usd, local.prompt_tokens, local.completion_tokens) == (0.0, 2000, 300)


def test_the_split_adds_up_and_survives_the_ledger_including_an_old_one(tmp_path):
    record = _tracked("openai/gpt-4o-mini", OPENAI)
    usage = record.usage() + record.usage()
    assert (usage.cached_prompt_tokens, usage.reasoning_tokens, usage.prompt_tokens) == (3072, 400, 4000)
    old = tmp_path / "v1.sqlite"  # a ledger written before the split existed
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, time REAL NOT NULL, "
                     "model TEXT NOT NULL, stage INTEGER, role TEXT, prompt_tokens INTEGER NOT NULL, "
                     "completion_tokens INTEGER NOT NULL, usd REAL NOT NULL, cached INTEGER NOT NULL, "
                     "estimated INTEGER NOT NULL, priced INTEGER NOT NULL, error TEXT)")
        conn.execute("INSERT INTO calls VALUES (1, 'r0', 1.0, 'm', 1, 'goal_planner', 10, 2, 0.5, 0, 0, 1, NULL)")
    with Ledger(old, run_id="r1") as ledger:
        ledger.write(record)
        back = ledger.records()
    assert back[0].cached_prompt_tokens == 0 and back[1] == record
