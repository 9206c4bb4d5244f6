"""Unit tests of cope_dspy.costs with scripted LMs: no network, no real model."""

import os

# litellm's bundled price map, never the network
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import contextvars
import json
import subprocess
import sys
import threading
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart
from dspy.lm15 import Usage as LMUsage

from cope_dspy.costs import (
    Budget,
    CostTracker,
    Prices,
    Tag,
    UnknownPriceWarning,
    Usage,
    count_tokens,
    current_tag,
    estimate_prompt_tokens,
    is_local,
    savings,
    tag,
)
from cope_dspy.errors import BudgetExceeded, CopeInputError

REPO = Path(__file__).resolve().parents[2]
PAID = "openai/gpt-4o-mini"
PRICES = {PAID: (0.15, 0.60)}
SECRET = "sk-test-SECRET-123"


def usd(prompt, completion, rate=PRICES[PAID]):
    return (prompt * rate[0] + completion * rate[1]) / 1e6


class ScriptedEngine:
    """An lm15 engine answering `text` with a fixed reported usage (None: the provider reports none)."""

    def __init__(self, usage=(11, 7), text="hello world", fail=None):
        self.usage, self.text, self.fail = usage, text, fail
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request):
        with self._lock:
            self.calls += 1
        if self.fail is not None:
            raise self.fail
        usage = LMUsage(input_tokens=self.usage[0], output_tokens=self.usage[1]) if self.usage else LMUsage()
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(self.text)]),
            finish_reason="stop",
            usage=usage,
        )


class AsyncScriptedEngine:
    def __init__(self, sync):
        self.sync = sync

    async def complete(self, request):
        await asyncio.sleep(0)
        return self.sync.complete(request)


def scripted_lm(model=PAID, usage=(11, 7), text="hello world", cache=False, fail=None):
    engine = ScriptedEngine(usage, text, fail)
    lm = dspy.LM(model, engine=engine, async_engine=AsyncScriptedEngine(engine), cache=cache, num_retries=0)
    lm.scripted = engine  # for tests that count what reached the "provider"
    return lm


@pytest.fixture
def fresh_cache(tmp_path):
    """DSPy's real cache (memory + disk) in a temporary directory, restored afterwards."""
    previous = vars(dspy).get("cache")
    dspy.configure_cache(
        enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(tmp_path / "cache")
    )
    yield dspy.cache
    dspy.cache.disk_cache.close()
    if previous is None:
        vars(dspy).pop("cache", None)
    else:
        dspy.cache = previous


class _FakeOpenAI(BaseHTTPRequestHandler):
    """OpenAI-compatible /chat/completions on 127.0.0.1; model 'reject' answers 401 quoting the key."""

    seen_auth: list = []
    hits = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization"))
        type(self).hits += 1
        if "reject" in body["model"]:
            status, out = (
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {SECRET}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        else:
            status, out = (
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "four"},
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
                },
            )
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_openai():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------------------- Usage


def test_usage_adds_sums_and_serializes():
    a = Usage(calls=1, prompt_tokens=10, completion_tokens=5, usd=0.5, cached_calls=1)
    b = Usage(calls=2, prompt_tokens=1, completion_tokens=2, usd=0.25, estimated_calls=1)
    total = a + b
    assert total == Usage(
        calls=3, prompt_tokens=11, completion_tokens=7, usd=0.75, cached_calls=1, estimated_calls=1
    )
    assert sum([a, b]) == total
    assert total.total_tokens == 18
    assert total.to_dict()["total_tokens"] == 18 and total.to_dict()["usd"] == 0.75
    with pytest.raises(TypeError):
        a + 1  # noqa: B018


# ------------------------------------------------------------------------------------- counting


def test_exact_counts_and_usd_from_reported_usage():
    paid, local = scripted_lm(PAID, usage=(11, 7)), scripted_lm("ollama_chat/qwen2.5:1.5b", usage=(100, 50))
    tracker = CostTracker(prices=PRICES)
    with tracker:
        for i in range(3):
            paid(f"question {i}")
        local("a")
        local("b")
    total = tracker.usage()
    assert (total.calls, total.prompt_tokens, total.completion_tokens) == (5, 3 * 11 + 200, 3 * 7 + 100)
    assert total.usd == pytest.approx(3 * (11 * 0.15 + 7 * 0.60) / 1e6, rel=1e-12)
    assert total.estimated_calls == total.cached_calls == total.unpriced_calls == 0
    by_model = tracker.by_model()
    assert by_model[PAID] == Usage(calls=3, prompt_tokens=33, completion_tokens=21, usd=by_model[PAID].usd)
    assert by_model["ollama_chat/qwen2.5:1.5b"].usd == 0.0
    assert all(r.priced and not r.estimated and r.error is None for r in tracker.records)


def test_stage_and_role_attribution_with_tags():
    small, large = scripted_lm("ollama_chat/small", usage=(5, 1)), scripted_lm(PAID, usage=(20, 10))
    tracker = CostTracker(prices=PRICES)
    with tracker:
        with tag(stage=1, role="goal_planner"):
            small("plan")
            with tag(role="small_executor"):  # inherits stage 1
                assert current_tag.get() == Tag(1, "small_executor")
                small("solve")
                small("solve again")
        with tag(stage=2, role="guideline_planner"):
            large("guide")
        with tag(stage=3, role="large_executor"):
            large("answer")
        small("untagged")
    assert current_tag.get() is None
    by_stage, by_role = tracker.by_stage(), tracker.by_role()
    assert {k: u.calls for k, u in by_stage.items()} == {1: 3, 2: 1, 3: 1, None: 1}
    assert by_stage[1].prompt_tokens == 15 and by_stage[2].usd == pytest.approx(usd(20, 10), rel=1e-12)
    assert {k: u.calls for k, u in by_role.items()} == {
        "goal_planner": 1,
        "small_executor": 2,
        "guideline_planner": 1,
        "large_executor": 1,
        None: 1,
    }
    assert by_role["large_executor"].usd == pytest.approx(usd(20, 10), rel=1e-12)
    with pytest.raises(CopeInputError, match="stage"):
        with tag(stage="one"):
            pass


def test_cache_hit_is_counted_but_not_billed(fresh_cache):
    lm = scripted_lm(PAID, usage=(11, 7), cache=True)
    tracker = CostTracker(prices=PRICES)
    with tracker:
        first, second = lm("same prompt"), lm("same prompt")
    assert first == second and lm.scripted.calls == 1
    fresh, cached = tracker.records
    assert not fresh.cached and fresh.usd == pytest.approx(usd(11, 7), rel=1e-12)
    assert cached.cached and cached.usd == 0.0 and cached.prompt_tokens == cached.completion_tokens == 0
    assert not cached.estimated
    total = tracker.usage()
    assert (total.calls, total.cached_calls, total.total_tokens) == (2, 1, 18)


def test_cache_hit_through_litellm_engine_is_not_billed(fresh_cache, fake_openai):
    lm = dspy.LM(
        "openai/fake-paid",
        engine="litellm",
        api_base=fake_openai,
        api_key="sk-x-123456",
        cache=True,
        num_retries=0,
    )
    tracker = CostTracker(prices={"openai/fake-paid": (1.0, 2.0)})
    hits_before = _FakeOpenAI.hits
    with tracker:
        lm("what is 2+2?")
        lm("what is 2+2?")
    assert _FakeOpenAI.hits - hits_before == 1
    fresh, cached = tracker.records
    assert (fresh.prompt_tokens, fresh.completion_tokens, fresh.cached) == (12, 4, False)
    assert fresh.usd == pytest.approx(usd(12, 4, (1.0, 2.0)), rel=1e-12)
    assert cached.cached and cached.usd == 0.0


def test_estimated_tokens_when_provider_reports_no_usage():
    import tiktoken

    lm = scripted_lm(PAID, usage=None, text="The answer is 42.")
    tracker = CostTracker(prices=PRICES)
    with tracker:
        lm("What is six times seven?")
    (record,) = tracker.records
    enc = tiktoken.get_encoding("o200k_base")  # gpt-4o-mini's encoding
    expected_prompt = 3 + 3 + len(enc.encode("user")) + len(enc.encode("What is six times seven?"))
    assert record.estimated and record.priced
    assert record.prompt_tokens == expected_prompt
    assert record.completion_tokens == len(enc.encode("The answer is 42."))
    assert record.usd == pytest.approx(usd(record.prompt_tokens, record.completion_tokens), rel=1e-12)
    assert tracker.usage().estimated_calls == 1


def test_reported_usage_is_not_replaced_by_estimates():
    lm = scripted_lm(PAID, usage=(1000, 1), text="a long answer " * 50)
    tracker = CostTracker(prices=PRICES)
    with tracker:
        lm("hi")
    (record,) = tracker.records
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (1000, 1, False)


def test_count_tokens_works_with_no_network(tmp_path):
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from cope_dspy.costs import count_tokens, estimate_prompt_tokens\n"
        "print(count_tokens('The quick brown fox jumps over the lazy dog.', 'gpt-4o'),"
        " count_tokens('The quick brown fox jumps over the lazy dog.', 'gpt-4'),"
        " estimate_prompt_tokens([{'role': 'user', 'content': 'hi'}], 'ollama_chat/qwen'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10", "10", str(3 + 3 + 1 + 1)]
    assert count_tokens("") == 0


@pytest.mark.parametrize("model", [PAID, "ollama_chat/qwen2.5:1.5b", "acme/large"])
def test_prompt_estimate_of_chat_messages_is_what_litellm_token_counter_says(model):
    import litellm

    messages = [
        {"role": "system", "content": "You solve math problems. Reply with `Answer: <number>`."},
        {"role": "user", "content": "Q: naïve café — 東京 has 12 apples; 5 are eaten. How many are left?"},
        {"role": "assistant", "content": "Answer: 7", "name": "tutor"},
        {"role": "user", "content": [{"type": "text", "text": "Now double it."}]},
    ]
    expected = litellm.token_counter(model=model, messages=messages)
    assert abs(estimate_prompt_tokens(messages, model) - expected) <= 3
    assert estimate_prompt_tokens(messages, model) > estimate_prompt_tokens(messages[:1], model) > 0


def test_failed_call_is_recorded_with_error_and_no_tokens():
    lm = scripted_lm(PAID, fail=ValueError(f"refused: key {SECRET} is wrong"))
    tracker = CostTracker(prices=PRICES)
    with tracker, pytest.raises(Exception, match="refused"):
        lm("hi")
    (record,) = tracker.records
    assert record.error and "refused" in record.error and SECRET not in record.error
    assert (record.prompt_tokens, record.completion_tokens, record.usd) == (0, 0, 0.0)
    assert tracker.usage().failed_calls == 1


# ------------------------------------------------------------------------------------------ Prices


def test_prices_overrides_defaults_and_local_models():
    prices = Prices(
        {"my/model": {"input": 1.5, "output": 3}, "gpt-4o-mini": (9.0, 9.0), "ollama_chat/big": (2, 4)}
    )
    assert prices.rate("my/model") == (1.5, 3.0)
    assert prices.rate("openai/gpt-4o-mini") == (9.0, 9.0)  # an override without the provider prefix applies
    assert prices.cost("my/model", 1_000_000, 500_000) == pytest.approx(1.5 + 1.5, rel=1e-12)
    assert prices.rate("ollama_chat/big") == (2.0, 4.0)  # a local model a user priced is priced
    defaults = Prices()
    assert defaults.rate("openai/gpt-4o-mini") == (0.15, 0.6)  # litellm's bundled map, prefix stripped
    assert defaults.rate("gpt-4o-mini") == (0.15, 0.6)
    assert defaults.rate("ollama_chat/qwen2.5:7b") == (0.0, 0.0)
    assert defaults.rate("openai/qwen", api_base="http://127.0.0.1:8080/v1") == (0.0, 0.0)
    assert defaults.rate("no-such-provider/no-such-model") is None
    assert is_local("ollama/llama3") and is_local("local/x") and is_local("x", "http://localhost:11434")
    assert not is_local("openai/gpt-4o-mini") and not is_local("openai/x", "https://api.openai.com/v1")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"m": (-1, 2)}, "'m'.*input.*>= 0"),
        ({"m": ("cheap", 2)}, "'m'.*input.*number"),
        ({"m": {"input": 1, "output": 2, "cached": 0.5}}, "'m'.*unknown key.*cached"),
        ({"m": {"input": 1}}, "'m'.*missing.*output"),
        ({"m": (1, 2, 3, 4)}, "'m'"),
        ({"m": (1, True)}, "'m'.*output"),
    ],
)
def test_prices_reject_bad_overrides(bad, message):
    with pytest.raises(CopeInputError, match=message):
        Prices(bad)


def test_prices_from_toml_and_json(tmp_path):
    toml = tmp_path / "prices.toml"
    toml.write_text('"my/model" = [1, 2]\n\n["openai/gpt-4o-mini"]\ninput = 0.2\noutput = 0.8\n')
    prices = Prices.from_file(toml)
    assert prices.rate("openai/gpt-4o-mini") == (0.2, 0.8) and prices.rate("my/model") == (1.0, 2.0)
    js = tmp_path / "prices.json"
    js.write_text(json.dumps({"my/model": {"input": 0.5, "output": 1.25}}))
    assert Prices.from_file(js).rate("my/model") == (0.5, 1.25)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("neg.toml", '["m/x"]\ninput = -0.1\noutput = 1\n', r"neg\.toml.*'m/x'.*input.*>= 0"),
        ("str.json", '{"m/x": {"input": "free", "output": 1}}', r"str\.json.*'m/x'.*input.*number"),
        (
            "key.toml",
            '["m/x"]\ninput = 1\noutput = 1\nbatch = 0.5\n',
            r"key\.toml.*'m/x'.*unknown key.*batch",
        ),
        ("syntax.toml", '["m/x"\ninput = 1\n', r"syntax\.toml.*not valid TOML"),
        ("syntax.json", '{"m/x": ', r"syntax\.json.*not valid JSON"),
        ("list.json", "[1, 2]", r"list\.json.*table"),
        ("prices.yaml", "m: 1", r"prices\.yaml.*\.toml or \.json"),
    ],
)
def test_prices_from_bad_files_name_file_model_and_field(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CopeInputError, match=message):
        Prices.from_file(path)
    with pytest.raises(CopeInputError, match="missing.toml"):
        Prices.from_file(tmp_path / "missing.toml")


def test_unknown_paid_model_warns_once_and_is_marked_unpriced():
    model = f"acme/unknown-{uuid.uuid4().hex[:8]}"
    lm = scripted_lm(model, usage=(10, 10))
    tracker = CostTracker()
    with tracker, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm("one")
        lm("two")
    ours = [w for w in caught if issubclass(w.category, UnknownPriceWarning)]
    assert len(ours) == 1
    assert (
        model in str(ours[0].message)
        and "Prices(" in str(ours[0].message)
        and "from_file" in str(ours[0].message)
    )
    assert all(not r.priced and r.usd == 0.0 for r in tracker.records)
    assert tracker.usage().unpriced_calls == 2
    report = tracker.report()
    assert "no price" in report and model in report
    with pytest.raises(CopeInputError, match="no known price"):
        savings(tracker, Usage())


# ------------------------------------------------------------------------------------- concurrency


def test_32_threads_lose_no_tokens_or_dollars():
    lm = scripted_lm(PAID, usage=(13, 5))
    tracker, per_thread, roles = (
        CostTracker(prices=PRICES),
        4,
        ["goal_planner", "small_executor", "large_executor"],
    )

    def work(i):
        with tag(stage=i % 3 + 1, role=roles[i % 3]):
            for j in range(per_thread):
                lm(f"thread {i} call {j}")

    with tracker, ThreadPoolExecutor(max_workers=32) as pool:
        # Threads see the tracker (a DSPy setting) through a copy of the caller's context, taken in the caller.
        futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(32)]
        for future in futures:
            future.result()
    n = 32 * per_thread
    total = tracker.usage()
    assert (total.calls, total.prompt_tokens, total.completion_tokens) == (n, 13 * n, 5 * n)
    assert total.usd == pytest.approx(n * usd(13, 5), rel=1e-9)
    assert sum(u.calls for u in tracker.by_stage().values()) == n
    assert tracker.by_role()["goal_planner"].calls == 11 * per_thread


def test_32_asyncio_tasks_lose_no_tokens_or_dollars():
    lm = scripted_lm(PAID, usage=(17, 3))
    tracker = CostTracker(prices=PRICES)

    async def one(i):
        with tag(stage=i % 2 + 1, role="small_executor" if i % 2 else "large_executor"):
            await lm.acall(f"task {i}")

    async def main():
        with tracker:
            await asyncio.gather(*(one(i) for i in range(32)))

    asyncio.run(main())
    total = tracker.usage()
    assert (total.calls, total.prompt_tokens, total.completion_tokens) == (32, 17 * 32, 3 * 32)
    assert total.usd == pytest.approx(32 * usd(17, 3), rel=1e-9)
    assert tracker.by_stage()[1].calls == tracker.by_stage()[2].calls == 16


def test_lm_level_callback_counts_plain_threads_and_never_twice():
    lm = scripted_lm(PAID, usage=(2, 1))
    tracker = CostTracker(prices=PRICES)
    lm.callbacks.append(tracker)  # seen from any thread, no context needed
    threads = [threading.Thread(target=lm, args=(f"p{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with tracker:  # registered globally too: still one record per call
        lm("both")
    assert tracker.usage().calls == 9 and tracker.usage().prompt_tokens == 18


def test_context_manager_registers_only_inside_the_block():
    lm = scripted_lm(PAID)
    outer, inner = CostTracker(prices=PRICES), CostTracker(prices=PRICES)
    before = list(dspy.settings.get("callbacks") or [])
    with outer:
        lm("a")
        with inner:
            lm("b")
        lm("c")
    lm("d")
    assert (outer.usage().calls, inner.usage().calls) == (3, 1)
    assert list(dspy.settings.get("callbacks") or []) == before
    with dspy.context(callbacks=[inner]):  # the plain DSPy way works too
        lm("e")
    assert inner.usage().calls == 2


# ------------------------------------------------------------------------------------------ Budget


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"usd": -1}, "usd.*>= 0"),
        ({"tokens": -5}, "tokens.*>= 0"),
        ({"tokens": 1.5}, "tokens.*integer"),
        ({"usd": "10"}, "usd.*number"),
        ({"on_exceed": "ignore"}, "on_exceed.*'raise' or 'fallback'"),
    ],
)
def test_budget_validates_arguments(kwargs, message):
    with pytest.raises(CopeInputError, match=message):
        Budget(**kwargs)


def _run_until_refused(budget, tracker, lm, messages, max_tokens):
    for i in range(20):
        try:
            budget.check(lm.model, messages, max_tokens=max_tokens)
        except BudgetExceeded as exc:
            return i, str(exc)
        lm(messages)
    raise AssertionError("the budget never refused a call")


def test_budget_refuses_exactly_the_call_that_would_cross_the_usd_cap():
    rate = (1.0, 2.0)
    messages = "Solve 12 * 12."
    lm = scripted_lm("acme/large", usage=(100, 50))
    prices = Prices({"acme/large": rate})
    estimate = usd(estimate_prompt_tokens(messages, "acme/large"), 64, rate)
    actual = usd(100, 50, rate)
    # Three calls spent, then a fourth whose estimate lands exactly on the cap: allowed. The fifth crosses it.
    budget = Budget(usd=3 * actual + estimate)
    tracker = CostTracker(prices=prices, budget=budget)
    with tracker:
        refused_at, message = _run_until_refused(budget, tracker, lm, messages, 64)
    assert refused_at == 4 and tracker.usage().calls == 4
    assert budget.spent_usd == pytest.approx(4 * actual, rel=1e-12)
    assert "spent" in message and "cap" in message and "Budget(usd=" in message and "acme/large" in message


def test_budget_refuses_exactly_the_call_that_would_cross_the_token_cap():
    messages = "Name a prime."
    lm = scripted_lm("acme/large", usage=(100, 50))
    estimate = estimate_prompt_tokens(messages, "acme/large") + 32
    budget = Budget(tokens=2 * 150 + estimate, on_exceed="fallback")
    tracker = CostTracker(prices={"acme/large": (1.0, 2.0)}, budget=budget)
    with tracker:
        refused_at, message = _run_until_refused(budget, tracker, lm, messages, 32)
    assert refused_at == 3 and budget.spent_tokens == 3 * 150
    assert "tokens" in message and budget.on_exceed == "fallback"


def test_budget_never_refuses_local_or_free_models_on_usd():
    budget = Budget(usd=0.0)
    budget.check("ollama_chat/qwen2.5:7b", "a long prompt " * 100, max_tokens=4096)
    budget.check("openai/served-here", "prompt", max_tokens=4096, api_base="http://127.0.0.1:8080/v1")
    with pytest.raises(BudgetExceeded):
        Budget(usd=0.0, prices=Prices(PRICES)).check(PAID, "prompt", max_tokens=1)
    with pytest.raises(CopeInputError, match="price is unknown"):
        Budget(usd=1.0).check(f"acme/unknown-{uuid.uuid4().hex[:6]}", "prompt", max_tokens=1)


def test_budget_reserve_holds_in_flight_estimates():
    prices = Prices({"acme/large": (1000.0, 1000.0)})
    one_call = Budget(prices=prices).estimate("acme/large", "hi", 10)[1]
    budget = Budget(usd=1.5 * one_call, prices=prices)
    with budget.reserve("acme/large", "hi", 10):
        with pytest.raises(BudgetExceeded, match="in flight"):
            budget.check("acme/large", "hi", 10)
    budget.check("acme/large", "hi", 10)  # released on exit


# ----------------------------------------------------------------------------------------- savings


def test_savings_against_a_baseline():
    baseline = Usage(calls=10, prompt_tokens=1000, completion_tokens=500, usd=0.02)
    candidate = Usage(calls=30, prompt_tokens=700, completion_tokens=200, usd=0.005)
    s = savings(baseline, candidate)
    assert s["baseline_usd"] == 0.02 and s["candidate_usd"] == 0.005
    assert s["saved_usd"] == pytest.approx(0.015) and s["saved_fraction"] == pytest.approx(0.75)
    assert (s["baseline_tokens"], s["candidate_tokens"], s["saved_tokens"]) == (1500, 900, 600)
    with pytest.raises(CopeInputError, match="baseline cost \\$0"):
        savings(Usage(calls=3), candidate)
    with pytest.raises(CopeInputError, match="CostTracker or a Usage"):
        savings({"usd": 1}, candidate)


# ----------------------------------------------------------------------------------- report, secrets


def test_report_table_and_json():
    tracker = CostTracker(prices=PRICES)
    with tracker:
        with tag(stage=1, role="goal_planner"):
            scripted_lm("ollama_chat/small", usage=(5, 1))("x")
        with tag(stage=3, role="large_executor"):
            scripted_lm(PAID, usage=(1000, 100))("y")
    table = tracker.report()
    assert "openai/gpt-4o-mini" in table and "goal_planner" in table and "large_executor" in table
    assert f"${usd(1000, 100):,.6f}" in table
    header = next(line for line in table.splitlines() if line.startswith("model"))
    total = [line for line in table.splitlines() if line.startswith("total")][0]
    assert header.index("USD") + 3 == len(total)  # the figures column lines up under its header
    data = json.loads(tracker.report("json"))
    assert data["usage"]["calls"] == 2 and data["by_stage"]["3"]["usd"] == pytest.approx(usd(1000, 100))
    assert data == {k: v for k, v in tracker.to_dict().items() if k != "records"}
    with pytest.raises(CopeInputError):
        tracker.report("xml")


def test_api_key_never_reaches_ledger_or_report(tmp_path, monkeypatch, fake_openai):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ledger_path = tmp_path / "ledger.sqlite"
    tracker = CostTracker(
        prices={"openai/fake-paid": (1.0, 2.0), "openai/reject": (1.0, 2.0)}, ledger=ledger_path
    )
    good = dspy.LM("openai/fake-paid", api_base=fake_openai, api_key=SECRET, cache=False, num_retries=0)
    bad = dspy.LM("openai/reject", api_base=fake_openai, api_key=SECRET, cache=False, num_retries=0)
    with tracker:
        with tag(stage=3, role="large_executor"):
            good("What is 2+2?")
        with pytest.raises(Exception, match="Incorrect API key"):
            bad("What is 2+2?")
    assert f"Bearer {SECRET}" in _FakeOpenAI.seen_auth  # the key really was sent
    ok, failed = tracker.records
    assert (ok.prompt_tokens, ok.completion_tokens, ok.priced) == (12, 4, True)  # local api_base, user price
    assert ok.usd == pytest.approx(usd(12, 4, (1.0, 2.0)))
    assert failed.error and "Incorrect API key" in failed.error
    tracker.ledger.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ledger.sqlite"))
    assert b"SECRET" not in stored and b"What is 2+2" not in stored
    texts = [tracker.report(), tracker.report("json"), json.dumps(tracker.to_dict()), repr(tracker.records)]
    assert all("SECRET" not in text for text in texts)
