"""LM factories and the Ollama preflight, against a faithful fake of Ollama's REST API (no real server)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import dspy
import httpx
import ollama as ollama_client
import pytest
from dspy.utils.exceptions import LMTransportError
from fixtures.fake_ollama import FakeOllama

from cope_dspy import models
from cope_dspy.errors import CopeInputError, MissingAPIKey, ModelUnavailable
from cope_dspy.models import api, local_lm, ollama, ollama_host, preflight

MODEL = "qwen2.5:0.5b"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


# -- host normalisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, "http://localhost:11434"),
        ("", "http://localhost:11434"),
        ("localhost", "http://localhost:11434"),
        ("localhost:11434", "http://localhost:11434"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        (":9999", "http://127.0.0.1:9999"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("http://gpu-box:11434", "http://gpu-box:11434"),
        ("http://gpu-box:11434/", "http://gpu-box:11434"),
        ("http://gpu-box:11434/v1", "http://gpu-box:11434"),
        ("http://gpu-box:11434/v1/", "http://gpu-box:11434"),
        ("gpu-box:11434/api", "http://gpu-box:11434"),
        ("https://ollama.example.com", "https://ollama.example.com"),
        ("https://example.com/ollama/v1", "https://example.com/ollama"),
        ("[::1]:11434", "http://[::1]:11434"),
    ],
)
def test_ollama_host_normalisation(given, expected, monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_host(given) == expected


def test_ollama_host_reads_env_var(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11500/v1")
    assert ollama_host() == "http://10.0.0.5:11500"
    assert ollama_host("other:1") == "http://other:1"  # the argument wins


def test_ollama_host_rejects_other_schemes():
    with pytest.raises(CopeInputError, match="http"):
        ollama_host("ftp://box:11434")


# -- ollama(): the request DSPy really sends --------------------------------------------------------------


def test_ollama_lm_is_native_api_chat_with_context_window(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    lm = ollama("ollama_chat/qwen2.5:1.5b", keep_alive="10m", temperature=0.3)
    assert lm.model == "ollama_chat/qwen2.5:1.5b"
    assert lm.kwargs["api_base"] == "http://localhost:11434"
    assert lm.kwargs["num_ctx"] == 8192 and lm.kwargs["keep_alive"] == "10m"
    assert lm.dump_state()["engine"] == "litellm"
    with pytest.raises(CopeInputError, match="num_ctx"):
        ollama(MODEL, num_ctx=100)
    with pytest.raises(CopeInputError, match="host="):
        ollama(MODEL, api_base="http://x:1/v1")


def test_ollama_request_matches_ollama_api_docs():
    """POST /api/chat with options.num_ctx/num_predict/temperature/seed, keep_alive and stream=false."""
    with FakeOllama(models={MODEL: 32768}, reply="hello") as server:
        lm = ollama(MODEL, host=server.url, num_ctx=16384, keep_alive="5m", cache=False)
        out = lm("Say hello", temperature=0.2, max_tokens=33, seed=11, rollout_id=1)
        assert out == ["hello"]
        chats = server.find("/api/chat")
        assert len(chats) == 1
        body = chats[0].body
        assert body["model"] == MODEL
        assert body["stream"] is False
        assert body["keep_alive"] == "5m"
        assert body["options"] == {"num_ctx": 16384, "num_predict": 33, "temperature": 0.2, "seed": 11}
        assert body["messages"][-1]["role"] == "user" and body["messages"][-1]["content"] == "Say hello"
        assert "rollout_id" not in json.dumps(body)  # a cache key for DSPy, never sent
        assert lm.history[-1]["usage"]["completion_tokens"] == 12  # Ollama's eval_count
        assert not server.find("/v1/chat/completions")


def test_ollama_lm_drives_a_dspy_predictor_and_rollout_ids_bust_the_cache():
    with FakeOllama(models={MODEL: 32768}) as server:
        lm = ollama(MODEL, host=server.url, temperature=1.0, max_tokens=64)  # DSPy cache on
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm):
            assert predict(question="2+2?").answer == "4"
            predict(question="2+2?")  # identical call: served from DSPy's cache
            for i in range(3):  # what the cascade does for n samples
                predict(question="2+2?", config={"rollout_id": i})
        assert len(server.find("/api/chat")) == 4
        system = server.find("/api/chat")[0].body["messages"][0]
        assert system["role"] == "system" and "answer" in system["content"]


def test_ollama_lm_async_calls():
    import asyncio

    with FakeOllama(models={MODEL: 32768}) as server:
        lm = ollama(MODEL, host=server.url, cache=False)
        predict = dspy.Predict("question -> answer")
        predict.set_lm(lm)

        async def many():
            return await asyncio.gather(*[predict.acall(question="2+2?") for _ in range(4)])

        assert [p.answer for p in asyncio.run(many())] == ["4"] * 4
        assert len(server.find("/api/chat")) == 4


def test_ollama_route_refuses_logprobs_and_n_instead_of_dropping_them():
    """Documented limits of the native route: LiteLLM refuses both for ollama_chat (nothing is sent)."""
    with FakeOllama(models={MODEL: 32768}) as server:
        lm = ollama(MODEL, host=server.url, cache=False)
        for extra in ({"logprobs": True, "top_logprobs": 2}, {"n": 3}):
            with pytest.raises(Exception, match="does not support parameters"):
                lm("hi", **extra)
        assert not server.find("/api/chat")


# -- the official ollama client against the fake: the fake answers as Ollama does -------------------------


def test_fake_ollama_speaks_the_official_client():
    with (
        FakeOllama(models={MODEL: 32768}, pullable=("llama3.2",)) as server,
        ollama_client.Client(host=server.url, timeout=5) as client,
    ):
        assert [m.model for m in client.list().models] == [MODEL]
        shown = client.show(MODEL)
        assert shown.modelinfo["qwen2.context_length"] == 32768
        assert shown.details.quantization_level == "Q4_K_M"
        with pytest.raises(ollama_client.ResponseError) as err:
            client.show("nope")
        assert err.value.status_code == 404 and "not found" in err.value.error
        events = list(client.pull("llama3.2", stream=True))
        assert events[0].status == "pulling manifest" and events[-1].status == "success"
        sized = [e for e in events if e.total]
        assert sized[-1].completed == sized[-1].total
        assert "llama3.2:latest" in [m.model for m in client.list().models]
        assert httpx.get(f"{server.url}/api/version").json()["version"]
        reply = client.chat(
            MODEL,
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
            top_logprobs=1,
            options={"num_ctx": 4096},
        )
        assert reply.message.content and reply.logprobs[0].token == "4"
        assert server.find("/api/chat")[-1].body["logprobs"] is True


# -- preflight ---------------------------------------------------------------------------------------------


def test_preflight_server_down_says_how_to_start_it():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ModelUnavailable) as err:
        preflight(MODEL, host=url, pull=False, timeout=2)
    message = str(err.value)
    assert f"Ollama is not running at {url}" in message and "ollama serve" in message
    assert "OLLAMA_HOST" in message


def test_preflight_reads_context_length_and_version(monkeypatch):
    with FakeOllama(models={MODEL: 32768}, version="0.12.6") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://"))
        info = preflight(MODEL, num_ctx=8192)
        assert info["context_length"] == 32768 and info["version"] == "0.12.6"
        assert info["pulled"] is False and info["host"] == server.url
        assert info["family"] == "qwen2"
        assert not server.find("/api/pull")


def test_preflight_num_ctx_beyond_the_model_is_an_error():
    with FakeOllama(models={MODEL: 4096}) as server, pytest.raises(CopeInputError, match="num_ctx <= 4096"):
        preflight(MODEL, host=server.url, num_ctx=8192)


@pytest.mark.parametrize("pull", [False, "ask"])  # "ask" without a terminal (pytest's stdin) cannot ask
def test_preflight_missing_model_names_the_pull_command(pull):
    with FakeOllama(models={}) as server:
        with pytest.raises(ModelUnavailable, match=r"`ollama pull qwen2.5:0.5b`"):
            preflight(MODEL, host=server.url, pull=pull)
        assert not server.find("/api/pull")


def test_preflight_pulls_with_a_progress_bar(capsys):
    with FakeOllama(models={}, pullable=(MODEL,), pull_total=8_000_000) as server:
        info = preflight(MODEL, host=server.url, pull=True)
        assert info["pulled"] is True and info["context_length"] == 32768
        assert server.find("/api/pull")[0].body == {"model": MODEL, "insecure": False, "stream": True}
    err = capsys.readouterr().err
    assert "pulling" in err and "100%" in err and "success" not in err.splitlines()[-1:]


def test_preflight_ask_on_a_terminal(monkeypatch):
    answers = iter(["n", "y"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    with FakeOllama(models={}, pullable=(MODEL,)) as server:
        with pytest.raises(ModelUnavailable, match="ollama pull"):
            preflight(MODEL, host=server.url, pull="ask", progress=False)
        assert preflight(MODEL, host=server.url, pull="ask", progress=False)["pulled"] is True


def test_preflight_unknown_model_pull_fails_clearly():
    with FakeOllama(models={}) as server, pytest.raises(ModelUnavailable, match="could not pull 'no-such'"):
        preflight("no-such", host=server.url, pull=True, progress=False)


def test_preflight_on_a_server_that_is_not_ollama():
    class NotOllama(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802 (llama-server and vLLM answer 404 on /api/*)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = HTTPServer(("127.0.0.1", 0), NotOllama)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ModelUnavailable, match="is not Ollama.*local_lm"):
            preflight(MODEL, host=f"127.0.0.1:{httpd.server_address[1]}", pull=False)
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- local_lm(): OpenAI-compatible servers ----------------------------------------------------------------


def test_local_lm_posts_openai_chat_completions():
    with FakeOllama(models={"smollm2-135m": 8192}, reply="hi") as server:
        lm = local_lm(server.url, "smollm2-135m", temperature=0.5, max_tokens=20, cache=False)
        assert lm.model == "openai/smollm2-135m" and lm.kwargs["api_base"] == f"{server.url}/v1"
        assert lm("x", seed=3, logprobs=True, top_logprobs=1)[0]["text"] == "hi"
        body = server.find("/v1/chat/completions")[0].body
        assert body["model"] == "smollm2-135m" and body["temperature"] == 0.5 and body["seed"] == 3
        assert body["logprobs"] is True and body["top_logprobs"] == 1
        assert body.get("max_completion_tokens", body.get("max_tokens")) == 20
    with pytest.raises(CopeInputError):
        local_lm("http://127.0.0.1:1/v1", "m", api_key="")


def test_local_lms_wait_an_hour_for_a_reply_unless_told_otherwise():
    """A long reply from a CPU-bound local server outlasts DSPy's 600 s: local LMs wait LOCAL_TIMEOUT_S, and
    a timeout the user gives reaches the transport (a reply slower than it fails)."""
    assert local_lm("http://127.0.0.1:1/v1", "m").kwargs["timeout"] == models.LOCAL_TIMEOUT_S == 3600
    assert ollama("qwen2.5:0.5b", host="127.0.0.1:1").kwargs["timeout"] == models.LOCAL_TIMEOUT_S
    assert ollama("qwen2.5:0.5b", host="127.0.0.1:1", timeout=30).kwargs["timeout"] == 30

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(1.5)
            body = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert local_lm(url, "m", cache=False, num_retries=0)("x")[0] == "late"
        with pytest.raises(LMTransportError, match="timed out"):
            local_lm(url, "m", cache=False, num_retries=0, timeout=0.5)("x")
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- api(): paid models ----------------------------------------------------------------------------------

SECRET = "sk-test-0123456789-do-not-print"


@pytest.fixture
def no_keys(monkeypatch):
    for names in models.API_KEY_ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)  # a key that is set must never show up in a message


def test_api_missing_key_names_the_variable_and_leaks_nothing(no_keys):
    with pytest.raises(MissingAPIKey) as err:
        api("openai/gpt-4o-mini")
    message = str(err.value)
    assert "OPENAI_API_KEY" in message and "export OPENAI_API_KEY=" in message
    assert SECRET not in message and "sk-" not in message
    with pytest.raises(MissingAPIKey, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        api("gemini/gemini-2.0-flash")


def test_api_with_key_present_builds_an_lm_without_storing_the_key(no_keys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    lm = api("openai/gpt-4o-mini", max_tokens=256)
    assert lm.model == "openai/gpt-4o-mini" and lm.num_retries == 5
    assert "api_key" not in lm.kwargs  # read by DSPy at call time, not copied into the LM
    assert SECRET not in json.dumps(lm.dump_state(), default=str)
    monkeypatch.setenv("GOOGLE_API_KEY", "g")
    assert api("gemini/gemini-2.0-flash").model == "gemini/gemini-2.0-flash"
    assert api("anthropic/claude-3-5-haiku-latest", num_retries=2).num_retries == 2


def test_api_key_env_reads_a_custom_variable(no_keys, monkeypatch):
    with pytest.raises(MissingAPIKey, match="WORK_OPENAI_KEY is not set") as err:
        api("openai/gpt-4o-mini", api_key_env="WORK_OPENAI_KEY")
    assert SECRET not in str(err.value)
    monkeypatch.setenv("WORK_OPENAI_KEY", SECRET)
    lm = api("openai/gpt-4o-mini", api_key_env="WORK_OPENAI_KEY")
    assert lm.kwargs["api_key"] == SECRET
    assert SECRET not in json.dumps(lm.dump_state(), default=str)


def test_api_local_providers_need_no_key(no_keys):
    assert api("hosted_vllm/qwen", api_base="http://127.0.0.1:8000/v1").model == "hosted_vllm/qwen"
