"""Small-model failures: which raise before a paid call, which the guard counts, which abstain."""

import copy
import pickle

import pytest
from dspy.utils.exceptions import (
    AdapterParseError,
    LMAuthError,
    LMInvalidRequestError,
    LMNotConfiguredError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    LMUnsupportedModelError,
)
from fakes import math_model

from cope_dspy import Cascade, CopeInputError, FailureGuard, Math, SmallModelError, SmallModelFailing
from cope_dspy.failures import classify, explain

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


class APIConnectionError(Exception):
    """Stands in for openai.APIConnectionError, which LiteLLM's OpenAI route wraps in LMServerError."""


def _caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc, model, kind",
    [
        (LMAuthError("bad key", status=401), "openai/x", "config"),
        (LMAuthError("not allowed", status=403), "openai/x", "config"),
        (LMUnsupportedModelError("model 'q' not found", status=404), "ollama_chat/q", "config"),
        (LMInvalidRequestError("404 page not found", status=404), "openai/x", "config"),
        (LMInvalidRequestError("LLM Provider NOT provided", status=400), "nope", "config"),
        (LMNotConfiguredError("no API key found"), "openai/gpt-4o-mini", "config"),
        (
            _caused(LMTransportError("failed to connect"), ConnectionRefusedError(111, "refused")),
            "openai/x",
            "config",
        ),
        (_caused(LMServerError("Connection error.", status=500), APIConnectionError()), "openai/x", "config"),
        (LMInvalidRequestError("bad request", status=400), "openai/x", "failed"),
        (LMServerError("boom", status=500), "openai/x", "failed"),
        (LMTimeoutError("timed out"), "openai/x", "failed"),
        (LMTransportError("read timed out"), "openai/x", "failed"),
        (RuntimeError("connection reset"), "openai/x", "failed"),
        (AdapterParseError("ChatAdapter", Math().signature("small_executor"), "prose"), "openai/x", "reply"),
    ],
)
def test_classify(exc, model, kind):
    assert classify(exc, model) == kind


@pytest.mark.parametrize(
    "exc, model, words",
    [
        (
            LMUnsupportedModelError("model 'qwen:0.5b' not found", status=404),
            "ollama_chat/qwen:0.5b",
            "`ollama pull qwen:0.5b`",
        ),
        (
            _caused(LMTransportError("failed to connect"), ConnectionRefusedError()),
            "ollama_chat/qwen:0.5b",
            "`ollama serve`",
        ),
        (LMAuthError("bad key", status=401), "openai/gpt-4o-mini", "OPENAI_API_KEY"),
        (LMInvalidRequestError("LLM Provider NOT provided", status=400), "nope", "provider prefix"),
    ],
)
def test_the_error_names_the_model_and_the_fix(exc, model, words):
    err = explain(exc, model, "http://127.0.0.1:11434")
    assert isinstance(err, SmallModelError) and repr(model) in str(err) and words in str(err)
    assert err.lm_error is exc and err.__cause__ is None


def _pair(small_answer, failing=None):
    """A scripted small model (answers per execution; `failing(call)` may fail any call) and large one."""
    small = math_model("ollama_chat/qwen:0.5b", small_answer)
    if failing is not None:
        healthy = small.respond
        small.respond = lambda call: failing(call) or healthy(call)
    large = math_model("scripted/large", lambda call: "7")
    return small, large


def test_a_small_model_that_is_not_pulled_raises_before_the_large_model_is_asked():
    small, large = _pair(str, lambda call: LMUnsupportedModelError("model 'qwen:0.5b' not found", status=404))
    with pytest.raises(SmallModelError, match="ollama pull qwen:0.5b"):
        Cascade(small=small.lm, large=large.lm)(question=Q)
    assert large.calls == []


def test_the_guard_stops_a_failing_small_model_and_can_be_turned_off():
    small, large = _pair(str, lambda call: RuntimeError("connection reset"))
    with pytest.raises(SmallModelFailing, match="failed on 5 of its last 5 calls"):
        Cascade(small=small.lm, large=large.lm, early_stop=False, max_concurrency=1)(question=Q)
    assert large.calls == []
    pred = Cascade(small=small.lm, large=large.lm, guard=False)(question=Q)  # the old way: escalate
    assert (pred.answer, pred.stage) == ("7", 3)


def test_the_guard_spans_questions_and_unreadable_replies_do_not_count():
    calls = []

    def failing(call):
        calls.append(call)
        return RuntimeError("connection reset") if len(calls) > 16 else None

    small, large = _pair(lambda call: "7", failing)
    cascade = Cascade(small=small.lm, large=large.lm, max_concurrency=1)
    assert cascade(question=Q).stage == 1  # healthy: 8 goals + 8 executions
    with pytest.raises(SmallModelFailing):
        cascade(question=Q + " ")
    # stage 1 stops early after 4 failed samples (tau1 is out of reach), 4 of 8 is not more than half: the
    # guideline is paid for, then stage 2's first failure trips the guard; stage 3 never runs
    assert [c.role for c in large.calls] == ["guideline"]
    cascade.guard.reset()
    unreadable, large2 = _pair(lambda call: "")  # replies arrive but hold no answer: abstain, escalate
    pred = Cascade(small=unreadable.lm, large=large2.lm)(question=Q)
    assert (pred.answer, pred.stage) == ("7", 3)


def test_guard_arguments_are_checked_and_a_cascade_with_a_guard_copies():
    with pytest.raises(CopeInputError, match="window"):
        FailureGuard(window=0)
    with pytest.raises(CopeInputError, match="max_failure_rate"):
        FailureGuard(max_failure_rate=1.5)
    with pytest.raises(CopeInputError, match="guard must be"):
        Cascade(guard="on")
    cascade = Cascade(guard=FailureGuard(window=4, max_failure_rate=0.25))
    twin = copy.deepcopy(cascade)  # as DSPy's optimizers copy a program (a lock cannot be copied)
    assert (
        repr(twin.guard) == "FailureGuard(window=4, max_failure_rate=0.25)"
        and twin.guard is not cascade.guard
    )
    assert repr(pickle.loads(pickle.dumps(cascade.guard))) == repr(cascade.guard)
