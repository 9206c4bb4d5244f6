"""The cascade behind an OpenAI-compatible endpoint: the OpenAI client and dspy.LM against it (scripted
backends, a real socket on 127.0.0.1), its errors, its bearer token, and `cope serve --cascade`'s flags."""

import json
import logging

import dspy
import openai
import pytest
from fakes import math_model
from fixtures.serving import CALL_USD, serving, sums_cascade
from starlette.testclient import TestClient

from cope_dspy import Budget, Cascade, CopeInputError, Math
from cope_dspy.cli import main
from cope_dspy.server import check_bind, create_app

KEY = "test-server-token-5f1c9a"


@pytest.fixture
def served():
    cascade, small, large = sums_cascade()
    with serving(create_app(cascade, api_key=KEY)) as url:
        yield url, small, large


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def ask(question: str, **body) -> dict:
    return {"model": "cope", "messages": [{"role": "user", "content": question}], **body}


@pytest.mark.parametrize("level, stage", [("easy", 1), ("medium", 2), ("hard", 3)])
def test_openai_client_gets_the_decided_answer_with_usage_and_cost_of_every_call(served, level, stage):
    url, small, large = served
    raw = client(url).chat.completions.with_raw_response.create(
        model="cope", messages=[{"role": "user", "content": f"What is 17 + 25? ({level})"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "42" and reply.choices[0].finish_reason == "stop"
    calls = small.calls + large.calls
    assert reply.usage.prompt_tokens == 100 * len(calls) and reply.usage.completion_tokens == 20 * len(calls)
    cope = reply.model_extra["cope"]
    assert cope["stage"] == stage and cope["calls"] == len(calls)
    assert cope["cost_usd"] == pytest.approx(len(large.calls) * CALL_USD["scripted/large"])
    assert float(raw.headers["x-cope-cost-usd"]) == pytest.approx(cope["cost_usd"], abs=1e-12)
    assert cope["cost_by_model"]["scripted/small"] == {
        "calls": len(small.calls),
        "prompt_tokens": 100 * len(small.calls),
        "completion_tokens": 20 * len(small.calls),
        "usd": 0.0,
    }
    assert ("guideline" in cope["plans"]) == (stage > 1) and "goal" in cope["plans"]
    assert (len(large.calls), cope["confidence"] is None) == ({1: 0, 2: 1, 3: 2}[stage], stage == 3)


def test_streaming_sends_the_decided_answer_as_chunks_then_done(served):
    url, small, large = served
    stream = client(url).chat.completions.create(
        model="cope",
        messages=[{"role": "user", "content": "What is 2 + 3? (hard)"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "5"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == 120 * (len(small.calls) + len(large.calls))
    (finish,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish.model_extra["cope"]["stage"] == 3


def test_streamed_bytes_end_with_done():
    with TestClient(create_app(sums_cascade()[0])) as local:
        text = local.post("/v1/chat/completions", json=ask("What is 1 + 1? (easy)", stream=True)).text
    events = [line for line in text.splitlines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert "usage" not in json.loads(events[-2][6:])  # usage only when stream_options asks for it


def test_dspy_lm_uses_the_server_as_a_model(served):
    url, small, _ = served
    lm = dspy.LM("openai/cope", api_base=f"{url}/v1", api_key=KEY, cache=False)
    assert lm("What is 40 + 2? (medium)") == ["42"]
    assert lm.history[-1]["usage"]["prompt_tokens"] == 100 * (len(small.calls) + 1)  # + the one guideline


def test_earlier_turns_are_context_every_planner_and_executor_sees(served):
    url, small, large = served
    client(url).chat.completions.create(
        model="cope",
        messages=[
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": "I have two numbers."},
            {"role": "assistant", "content": "Go on."},
            {"role": "user", "content": [{"type": "text", "text": "What is 5 + 6? (hard)"}]},
        ],
    )
    for call in small.calls + large.calls:
        assert call.question.startswith(
            "Context (earlier turns of the conversation):\nsystem: Answer with a number."
            "\nuser: I have two numbers.\nassistant: Go on.\n\nQuestion: What is 5 + 6?"
        )
    assert {c.role for c in small.calls + large.calls} == {"goal", "guideline", "execute"}


def test_models_and_health(served):
    url, _, _ = served
    (model,) = client(url).models.list().data
    assert model.id == "cope" and model.model_extra["cope"]["small"] == "scripted/small"
    assert model.model_extra["cope"]["n"] == 4
    with TestClient(create_app(sums_cascade()[0], api_key=KEY)) as local:
        assert local.get("/health").json() == {"status": "ok"}  # open without the key, and says nothing more


BAD = [
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "model: is required"),
    ({"model": "cope"}, 400, "messages", "messages: is required"),
    ({"model": "cope", "messages": []}, 400, "messages", "at least one message"),
    ({"model": "cope", "messages": "What is 1 + 1?"}, 400, "messages", "valid array"),
    (
        ask("hi", model="gpt-4o"),
        404,
        "model",
        "the model 'gpt-4o' does not exist here; this server serves 'cope'",
    ),
    (
        {"model": "cope", "messages": [{"role": "system", "content": "hi"}]},
        400,
        "messages",
        "no user message",
    ),
    (
        {"model": "cope", "messages": [{"role": "user", "content": 7}]},
        400,
        "messages[0].content",
        "a list of text parts",
    ),
    (
        {
            "model": "cope",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        },
        400,
        "messages[0].content",
        "images, audio and files are not supported",
    ),
    ({"model": "cope", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "'user'"),
    (
        {"model": "cope", "messages": [{"role": "user", "content": "  "}]},
        400,
        "messages[0].content",
        "is empty",
    ),
    (
        {
            "model": "cope",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
        },
        400,
        "messages",
        "messages after it (assistant)",
    ),
    (ask("hi", stream="yes"), 400, "stream", "valid boolean"),
    (ask("hi", n=3), 400, "n", "n must be 1"),
    (ask("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools", "not supported"),
    (ask("hi", response_format={"type": "json_object"}), 400, "response_format", "not supported"),
    (ask("hi", cope={"question": "other"}), 400, "cope.question", "the question is the last user message"),
]


@pytest.mark.parametrize("body, status, param, words", BAD, ids=[w for *_, w in BAD])
def test_bad_requests_get_openai_errors_and_nothing_runs(body, status, param, words):
    cascade, small, large = sums_cascade()
    with TestClient(create_app(cascade)) as local:
        r = local.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert words in error["message"] and error["param"] == param
    assert small.calls == large.calls == []


def test_a_body_that_is_not_json_too_large_or_sent_to_an_unknown_path_gets_an_openai_error():
    with TestClient(create_app(sums_cascade()[0])) as local:
        r = local.post("/v1/chat/completions", content=b"{model: cope")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = local.get("/v1/chat/completions")
        assert r.status_code == 405 and "Method Not Allowed" in r.json()["error"]["message"]
        assert local.get("/v1/embeddings").json()["error"]["code"] == "404"
    with TestClient(create_app(sums_cascade()[0], max_body_bytes=1000)) as local:
        r = local.post("/v1/chat/completions", json=ask("What is 1 + 1?" + " " * 2000))
        assert (
            r.status_code == 413
            and "larger than this server accepts (1,000 bytes)" in r.json()["error"]["message"]
        )


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {KEY}", "Bearer"])
def test_a_missing_or_wrong_token_gets_401_and_nothing_runs(header):
    cascade, small, large = sums_cascade()
    headers = {"authorization": header} if header else {}
    with TestClient(create_app(cascade, api_key=KEY)) as local:
        for r in (
            local.post("/v1/chat/completions", json=ask("What is 1 + 1? (hard)"), headers=headers),
            local.get("/v1/models", headers=headers),
        ):
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert KEY not in r.text
        assert (
            local.post(
                "/v1/chat/completions",
                json=ask("What is 1 + 1? (easy)"),
                headers={"authorization": f"Bearer {KEY}"},
            ).status_code
            == 200
        )
    assert large.calls == [] and all("1 + 1? (easy)" in c.question for c in small.calls)


def test_keys_never_appear_in_logs_or_replies(caplog):
    """A large model whose error echoes the server's token: the 502 says what failed, without the token."""
    cascade, _, _ = sums_cascade()
    leaky = RuntimeError(f"upstream said: your token {KEY} is odd")
    cascade.large_executor.set_lm(math_model("scripted/large", lambda call: leaky).lm)
    caplog.set_level(logging.DEBUG)
    with serving(create_app(cascade, api_key=KEY), log_level="debug") as url:
        with pytest.raises(openai.APIStatusError) as raised:
            client(url).chat.completions.create(
                model="cope", messages=[{"role": "user", "content": "What is 1 + 2? (hard)"}]
            )
        with pytest.raises(openai.AuthenticationError):
            client(url, key=KEY + "x").chat.completions.create(
                model="cope", messages=[{"role": "user", "content": "hi"}]
            )
    assert raised.value.status_code == 502 and raised.value.response.headers["x-should-retry"] == "false"
    body = raised.value.response.json()["error"]
    assert (
        body["code"] == "large_model_error"
        and "large_executor" in body["message"]
        and "***" in body["message"]
    )
    assert KEY not in raised.value.response.text
    assert "POST /v1/chat/completions" in caplog.text  # the access log ran, and holds no key
    assert KEY not in caplog.text


def test_budget_refusal_is_a_429_that_clients_do_not_retry():
    cascade, small, large = sums_cascade(budget=Budget(usd=1e-6))
    with TestClient(create_app(cascade)) as local:
        r = local.post("/v1/chat/completions", json=ask("What is 3 + 4? (medium)"))
        assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == r.json()["error"]["code"] == "insufficient_quota"
        assert (
            "Budget exceeded" in r.json()["error"]["message"] and float(r.headers["x-cope-cost-usd"]) == 0.0
        )
        assert large.calls == [] and small.calls  # stage 1 ran (free); the paid guideline was refused
        easy = local.post("/v1/chat/completions", json=ask("What is 3 + 4? (easy)"))
        assert easy.status_code == 200  # settled in stage 1, no paid call


def test_a_small_model_that_cannot_be_used_is_a_503_and_the_large_model_is_not_asked():
    from dspy.utils.exceptions import LMUnsupportedModelError

    cascade, _, large = sums_cascade()
    missing = LMUnsupportedModelError("model 'qwen:0.5b' not found", status=404)
    broken = math_model("ollama_chat/qwen:0.5b", str)
    broken.respond = lambda call: missing
    cascade.goal_planner.set_lm(broken.lm)
    cascade.small_executor.set_lm(broken.lm)
    with TestClient(create_app(cascade)) as local:
        r = local.post("/v1/chat/completions", json=ask("What is 3 + 4? (easy)"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "small_model_error"
    assert "ollama pull qwen:0.5b" in r.json()["error"]["message"] and large.calls == []


def test_budget_fallback_answers_from_the_last_stage_flagged():
    cascade, _, large = sums_cascade(budget=Budget(usd=1e-6, on_exceed="fallback"))
    with TestClient(create_app(cascade)) as local:
        reply = local.post("/v1/chat/completions", json=ask("What is 3 + 4? (medium)")).json()
    assert (
        reply["cope"]["budget_limited"] is True
        and reply["cope"]["stage"] == 1
        and not reply["cope"]["accepted"]
    )
    assert large.calls == []


def test_code_task_inputs_come_in_the_cope_object():
    from cope_dspy import Code

    cascade, _, _ = sums_cascade()
    cascade.task = Code()
    with TestClient(create_app(cascade)) as local:
        r = local.post("/v1/chat/completions", json=ask("Write f."))
    assert r.status_code == 400 and "missing input field 'tests'" in r.json()["error"]["message"]


def test_non_loopback_binds_need_a_key():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(CopeInputError, match="without an API key"):
            check_bind(host, None)
        check_bind(host, KEY)


# -------------------------------------------------------------------------- cope serve --cascade


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--cascade", "--model", "x"], "--model: not a flag of `cope serve` with --cascade"),
        (["--budget-usd", "1"], "--budget-usd: not a flag of `cope serve` with no --cascade"),
        (["--cascade", "--on-exceed", "fallback"], "give --budget-usd too"),
        (["--cascade", "--host", "0.0.0.0"], "refusing to serve on '0.0.0.0' without an API key"),
        (
            ["--cascade", "--api-key-env", "COPE_TEST_UNSET_VARIABLE"],
            "COPE_TEST_UNSET_VARIABLE: that environment variable",
        ),
        (["--cascade", "--tau1", "2"], "tau1 must be a number in [0, 1]"),
        (["--cascade", "--calibration", "missing.json"], "cannot read the calibration"),
    ],
    ids=["model", "budget", "on-exceed", "host", "key-env", "tau1", "calibration"],
)
def test_serve_flags_are_checked_before_any_model_starts(argv, words, capsys):
    assert main(["serve", *argv]) == 1
    assert words in capsys.readouterr().err


def test_a_calibration_or_saved_program_sets_the_thresholds_and_flags_override(tmp_path):
    from cope_dspy.cli import build_parser, cascade_from_args, serve_mode

    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"params": {"n": 4, "tau1": 0.6, "tau2": 0.9, "stages": [1, 2, 3]}}))
    Cascade(task=Math(), n=6, tau1=0.3, tau2=0.4).save(str(tmp_path / "program.json"))
    _, small, large = sums_cascade()

    def build(*flags):
        args = serve_mode(build_parser().parse_args(["serve", "--cascade", *flags]))
        return cascade_from_args(args, small.lm, large.lm)

    cascade = build("--calibration", str(cal))
    assert (cascade.n, cascade.tau1, cascade.tau2, cascade.stage3_plans) == (4, 0.6, 0.9, True)
    alone = tmp_path / "alone.json"
    alone.write_text(json.dumps({"params": {"n": 4, "tau1": 0.6, "tau2": 0.9, "stage3_plans": False}}))
    assert build("--calibration", str(alone)).stage3_plans is False
    staged = tmp_path / "staged.json"  # a calibration that chose the stages (calibrate(stages=[...]))
    staged.write_text(json.dumps({"params": {"n": 4, "tau1": 0.5, "tau2": 0.5, "stages": [1, 3]}}))
    assert build("--calibration", str(staged)).stages == (1, 3) and cascade.stages == (1, 2, 3)
    assert (
        build("--calibration", str(cal), "--tau2", "0.1").tau2,
        build("--load", str(tmp_path / "program.json")).n,
    ) == (0.1, 6)
    loaded = build("--load", str(tmp_path / "program.json"))
    assert (loaded.tau1, loaded.tau2) == (0.3, 0.4) and loaded.large_executor.lm is large.lm
    with TestClient(create_app(cascade)) as local:
        assert local.get("/v1/models").json()["data"][0]["cope"]["tau1"] == 0.6
    with pytest.raises(CopeInputError, match="is not a calibration"):
        build("--calibration", str(tmp_path / "program.json"))
