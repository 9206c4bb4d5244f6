"""Failed LM calls. Small model: a broken one stops the run before the cascade pays the large one.
Large model: a failed call ends the cascade with LargeModelError, never an unchecked answer.

A failed small-model call is one of three kinds (DSPy 3.4's exception types, checked against scripted
servers on both of its engines, the native one and LiteLLM):
- "config": the model cannot be used at all (unknown provider, model not found, endpoint missing,
  connection refused, key refused): every later call would fail the same way, so it raises SmallModelError;
- "failed": a failure that may pass (timeout, HTTP 5xx, 429, an unreadable body): the sample abstains;
  `FailureGuard` counts failed calls, and too many among the recent ones raise SmallModelFailing;
- "reply": the model answered but its reply cannot be read: the sample abstains, as a wrong answer would.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import deque
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import (
    AdapterParseError,
    LMAuthError,
    LMBillingError,
    LMConfigurationError,
    LMInvalidRequestError,
    LMUnsupportedFeatureError,
    LMUnsupportedModelError,
    is_retryable_lm_error,
)

from .costs import Tag, current_tag
from .errors import CopeError, CopeInputError, LargeModelError, SmallModelError, SmallModelFailing
from .redact import redact
from .role import LARGE_ROLES, SMALL_ROLES

# Exception types, anywhere in the chain, that mean the server was never reached: a refused connection,
# an unknown host. The native engine raises LMTransportError over ConnectError / ConnectionRefusedError;
# LiteLLM's OpenAI route raises LMServerError(status=500) over openai.APIConnectionError.
_UNREACHABLE = ("ConnectionRefusedError", "ConnectError", "APIConnectionError", "gaierror")


def classify(exc: BaseException, model: str = "") -> str:
    """The kind of a failed small-model call: "config", "failed" or "reply" (see the module docstring)."""
    if isinstance(exc, AdapterParseError):
        return "reply"
    if isinstance(
        exc,
        (
            LMAuthError,
            LMBillingError,
            LMConfigurationError,
            LMUnsupportedModelError,
            LMUnsupportedFeatureError,
        ),
    ):
        return "config"
    if isinstance(exc, LMInvalidRequestError) and getattr(exc, "status", None) == 404:
        return "config"  # the server has no such endpoint: a wrong api_base
    if isinstance(exc, LMInvalidRequestError) and _unknown_provider(model):
        return "config"
    if _unreachable(exc):
        return "config"
    return "failed"


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _unreachable(exc: BaseException) -> bool:
    return any(type(e).__name__ in _UNREACHABLE for e in _chain(exc))


def _unknown_provider(model: str) -> bool:
    """LiteLLM cannot tell which provider serves `model` (e.g. "nope", "foo/bar")."""
    if not model or model.startswith(("openai/", "ollama/", "ollama_chat/")):
        return False
    import litellm

    try:
        litellm.get_llm_provider(model)
    except Exception:  # noqa: BLE001 - LiteLLM's way of saying "no provider": BadRequestError and kin
        return True
    return False


def explain(exc: BaseException, model: str, api_base: str | None = None) -> SmallModelError:
    """The SmallModelError for a "config" failure of the small model: what is wrong and how to fix it.
    The provider's message is redacted and cut to its first line; the original is kept as `.lm_error`."""
    where = f" at {api_base}" if api_base else ""
    ollama_name = model.split("/", 1)[1] if model.startswith(("ollama/", "ollama_chat/")) else None
    if isinstance(exc, (LMAuthError, LMBillingError)):
        what = "the server refused its credentials or account"
        fix = f"check the API key of {model} and that it may use this model ({_key_hint(model)})"
    elif isinstance(exc, LMConfigurationError):
        what, fix = "it is not configured", "set what DSPy's message names"
    elif isinstance(exc, (LMUnsupportedModelError, LMUnsupportedFeatureError)):
        what = f"the server{where} does not serve it"
        fix = (
            f"pull it with `ollama pull {ollama_name}` (see `ollama list`)"
            if ollama_name
            else "check the model name against the server's or provider's model list"
        )
    elif isinstance(exc, LMInvalidRequestError) and getattr(exc, "status", None) == 404:
        what = f"the server{where} has no chat endpoint there (HTTP 404)"
        fix = (
            "for Ollama build the LM with cope_dspy.models.ollama(name); an OpenAI-compatible server's "
            "api_base ends in /v1 (cope_dspy.models.local_lm(base_url, name))"
        )
    elif _unreachable(exc):
        what = f"its server{where} is not reachable (connection refused or unknown host)"
        fix = (
            "start Ollama with `ollama serve` (or set OLLAMA_HOST to where it runs)"
            if ollama_name
            else "start the server (a packaged model: `cope serve --model NAME`) or correct its api_base"
        )
    else:
        what = "LiteLLM does not know its provider"
        fix = (
            "write the model with its provider prefix, e.g. 'ollama_chat/qwen2.5:1.5b' (Ollama), "
            "'openai/<name>' with api_base=... (an OpenAI-compatible server), or a packaged model's name "
            "(`cope models`)"
        )
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    error = SmallModelError(
        redact(
            f"the small model {model!r} cannot be used: {what} ({type(exc).__name__}: {first_line}). "
            f"Fix: {fix}. The cascade stops here rather than send every question to the large model."
        )
    )
    error.lm_error = exc  # not chained: a printed traceback would show a provider message that may echo a key
    return error


def _key_hint(model: str) -> str:
    from .models import API_KEY_ENV

    names = API_KEY_ENV.get(model.split("/", 1)[0]) if "/" in model else None
    return f"set {' or '.join(names)}" if names else "a local server wants api_key='local' or its own key"


class FailureGuard(BaseCallback):
    """Stops a run whose small model keeps failing, instead of escalating every question to the large one.

        cascade = Cascade(small, large, guard=FailureGuard(window=8, max_failure_rate=0.5))   # the default

    As a DSPy callback of the cascade it sees every small-model call (goal planner, small executor) end,
    with a reply (readable or not) or with an error (timeout, 5xx, 429, an unreadable body). When more than
    `max_failure_rate` of the last `window` calls have failed (5 of 8 by default), the failing sample raises
    SmallModelFailing
    before its stage escalates. The window spans questions: a small server that dies mid-run stops the
    run within a few calls. `reset()` forgets the history.
    """

    def __init__(self, window: int = 8, max_failure_rate: float = 0.5):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise CopeInputError(f"FailureGuard(window=...) must be an integer >= 1, got {window!r}")
        if (
            isinstance(max_failure_rate, bool)
            or not isinstance(max_failure_rate, (int, float))
            or not (0 <= max_failure_rate < 1)
        ):
            raise CopeInputError(
                f"FailureGuard(max_failure_rate=...) must be a number in [0, 1), got {max_failure_rate!r}"
            )
        self.window, self.max_failure_rate = window, float(max_failure_rate)
        self._lock = threading.Lock()
        self._recent: deque[bool] = deque(maxlen=window)  # True = failed
        self._pending: set[str] = set()

    # -- DSPy callback hooks: small-model calls only (the cascade tags each call with its role)
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if (current_tag.get() or Tag()).role in SMALL_ROLES:
            with self._lock:
                self._pending.add(call_id)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        with self._lock:
            if call_id in self._pending:
                self._pending.discard(call_id)
                self._recent.append(exception is not None)

    def check(self, exc: BaseException, model: str) -> None:
        """Raise SmallModelFailing (for the failure `exc`) when the recent failures cross the limit."""
        with self._lock:
            failures, calls = sum(self._recent), len(self._recent)
        if failures > self.max_failure_rate * self.window:
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            error = SmallModelFailing(
                redact(
                    f"the small model {model!r} failed on {failures} of its last {calls} calls (latest: "
                    f"{type(exc).__name__}: {first_line}). The cascade stops here rather than send every "
                    "question to the large model. Check the small model's server; to allow more failures "
                    "pass Cascade(guard=FailureGuard(window=..., max_failure_rate=...)) (guard=False turns "
                    "the guard off); guard.reset() starts a new window."
                )
            )
            error.lm_error = exc
            raise error from None  # as in `explain`: no provider message in a printed traceback

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()

    def __getstate__(self) -> dict[str, Any]:  # deepcopy and pickle: a lock cannot be copied
        return {
            "window": self.window,
            "max_failure_rate": self.max_failure_rate,
            "recent": list(self._recent),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.window, self.max_failure_rate = state["window"], state["max_failure_rate"]
        self._lock = threading.Lock()
        self._recent = deque(state["recent"], maxlen=self.window)
        self._pending = set()

    def __repr__(self) -> str:
        return f"FailureGuard(window={self.window}, max_failure_rate={self.max_failure_rate})"


def check_guard(guard: Any) -> FailureGuard | None:
    """Cascade(guard=...): True (the default guard), False or None (off), or a FailureGuard."""
    if guard is True:
        return FailureGuard()
    if guard is False or guard is None:
        return None
    if not isinstance(guard, FailureGuard):
        raise CopeInputError(f"guard must be True, False or a cope_dspy.FailureGuard, got {guard!r}")
    return guard


def small_model_failed(exc: BaseException, lm: Any, guard: FailureGuard | None) -> None:
    """Called by the cascade for a failed small-model sample: raises SmallModelError for a "config"
    failure, counts a "failed" one in `guard` (which may raise), and lets an unreadable reply abstain."""
    model = str(getattr(lm, "model", "") or "")
    kind = classify(exc, model)
    if kind == "config":  # `from None`: the failed call's message (a key it may echo) stays out of tracebacks
        raise explain(exc, model, (getattr(lm, "kwargs", None) or {}).get("api_base")) from None
    if kind == "failed" and guard is not None:
        guard.check(exc, model)


# ------------------------------------------------------------------------------------ the large model


@contextlib.contextmanager
def large_model_errors(role: str, predictor=None):
    """A failed large-model call ends the cascade with LargeModelError: never an unchecked answer.
    The message is redacted (a provider's error may echo the key) and cut to its first line; the original
    exception is kept as `.lm_error`, not chained, so a printed traceback cannot show an echoed key."""
    try:
        yield
    except CopeError:
        raise
    except Exception as exc:
        if role not in LARGE_ROLES:
            raise
        retries = getattr(getattr(predictor, "lm", None) or dspy.settings.lm, "num_retries", None)
        error = LargeModelError(redact(
            f"the large model failed in its {role} call ({type(exc).__name__}: {describe_lm_error(exc)})"
            + (f" after {retries} retries" if retries and is_retryable_lm_error(exc) else "")
            + ". The cascade returns no answer rather than "
            "an unchecked one; retries with backoff for transient errors are set on the LM "
            "(dspy.LM(..., num_retries=..., timeout=...))."
        ))
        error.lm_error = exc
        raise error from None


def ask_again_or_raise(exc: LargeModelError, temperature: float) -> None:
    """Re-raise `exc` unless it is an unreadable sampled reply, which is worth one fresh sample."""
    if not isinstance(getattr(exc, "lm_error", None), AdapterParseError) or temperature <= 0:
        raise exc
    warnings.warn(redact(f"the large model's guideline reply was unreadable ({describe_lm_error(exc.lm_error)}); asking "
                         f"once more (a fresh sample at temperature {temperature}, both calls counted)."),
                  RuntimeWarning, stacklevel=3)


_SHOWN = 200  # characters of an unreadable reply quoted in the error


def describe_lm_error(exc: Exception) -> str:
    """The first line of an LM error; for a reply the adapter could not read, what the reply was."""
    if isinstance(exc, AdapterParseError):
        reply = str(exc.lm_response or "")
        shown = "the reply " + repr(reply[:_SHOWN]) + (
            f" (its first {_SHOWN} of {len(reply)} characters; all of it is in error.lm_error.lm_response)"
            if len(reply) > _SHOWN else "")
        fields = ", ".join(exc.signature.output_fields)
        return f"its reply was empty, no {fields}" if not reply.strip() else f"no {fields} could be read from {shown}"
    return (str(exc).strip().splitlines() or [""])[0][:500]
