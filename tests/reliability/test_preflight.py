"""Ollama preflight failures: each is a CopeError whose message says how to fix it (fake Ollama, no server)."""

from __future__ import annotations

import socket
import time

import pytest
from fault_server import closed_port_url
from fixtures.fake_ollama import FakeOllama

from cope_dspy.errors import CopeError, CopeInputError, ModelUnavailable
from cope_dspy.models import ollama, preflight

MODEL = "qwen2.5:0.5b"


def _message(call) -> tuple[type, str]:
    with pytest.raises(CopeError) as err:
        call()
    return type(err.value), str(err.value)


def test_server_not_running_says_to_start_it():
    url = closed_port_url().removesuffix("/v1")
    kind, message = _message(lambda: preflight(MODEL, host=url, pull=False, timeout=2))
    assert kind is ModelUnavailable
    assert f"Ollama is not running at {url}" in message and "`ollama serve`" in message and "OLLAMA_HOST" in message


def test_server_that_accepts_but_never_answers_is_not_called_down():
    """A hung (or busy) Ollama is up: the message must not tell the user to start it, but say it timed out."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # connections complete in the backlog; nothing ever reads or answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        started = time.monotonic()
        kind, message = _message(lambda: preflight(MODEL, host=url, pull=False, timeout=0.5))
    assert time.monotonic() - started < 10
    assert kind is ModelUnavailable
    assert "did not answer within 0.5 s" in message and "timeout=" in message
    assert "not running" not in message


@pytest.mark.parametrize("pull", [False, "ask"])
def test_model_not_pulled_names_the_pull_command(pull):
    with FakeOllama(models={"llama3.2:1b": 131072}) as server:
        kind, message = _message(lambda: preflight(MODEL, host=server.url, pull=pull))
        assert not server.find("/api/pull")  # nothing downloaded without consent
    assert kind is ModelUnavailable
    assert f"Model '{MODEL}' is not pulled" in message
    assert f"`ollama pull {MODEL}`" in message and "pull=True" in message


def test_unknown_model_cannot_be_pulled_points_to_the_library():
    with FakeOllama(models={}) as server:
        kind, message = _message(lambda: preflight("no-such-model", host=server.url, pull=True, progress=False))
    assert kind is ModelUnavailable and "could not pull 'no-such-model'" in message
    assert "https://ollama.com/library" in message


def test_context_window_smaller_than_needed_says_what_fits():
    with FakeOllama(models={MODEL: 4096}) as server:
        kind, message = _message(lambda: preflight(MODEL, host=server.url, num_ctx=8192))
    assert kind is CopeInputError
    assert "num_ctx=8192 is larger than the context length" in message and "(4096 tokens)" in message
    assert "use num_ctx <= 4096" in message


def test_a_server_that_is_not_ollama_points_to_local_lm(serve):
    server = serve()  # the OpenAI-compatible fake: GET /api/tags is not a route there
    kind, message = _message(lambda: preflight(MODEL, host=server.url, pull=False, timeout=2))
    assert kind is ModelUnavailable and "is not Ollama" in message and "local_lm(base_url, model_name)" in message


@pytest.mark.parametrize("num_ctx", [0, 100, 255, "8192", 8192.0, None])
def test_ollama_factory_refuses_a_context_window_it_cannot_use(num_ctx):
    kind, message = _message(lambda: ollama(MODEL, num_ctx=num_ctx))
    assert kind is CopeInputError and "num_ctx must be an integer >= 256" in message
