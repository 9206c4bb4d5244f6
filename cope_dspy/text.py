"""Open-ended requests (chat, writing, explanations): candidates are ranked by perplexity (the paper's
MT-Bench setting). A stage picks the candidate whose reply the small model found most likely (lowest
perplexity) and accepts it when its confidence 1/perplexity reaches the stage's tau.

    from cope_dspy import Cascade
    from cope_dspy.models import local_lm
    from cope_dspy.text import Text

    small = local_lm("http://127.0.0.1:8080/v1", "qwen2.5-1.5b-instruct")  # llama-server: returns logprobs
    cascade = Cascade(small=small, large=..., task=Text(), tau1=0.6, tau2=0.5)
    pred = cascade(question="Explain what a hash table is to a ten-year-old.")
    print(pred.answer)  # the response

The small model must return token log-probabilities. llama.cpp's `llama-server` does on
`/v1/chat/completions` (`choices[].logprobs.content[]` = {token, logprob, bytes, top_logprobs}, the OpenAI
shape), so do `cope_dspy.local.LocalServer` and `cope_dspy.models.local_lm(...)` pointed at it. Ollama
returns them from release 0.12.11 on, but LiteLLM refuses `logprobs` for `ollama_chat/` models, the route
`cope_dspy.models.ollama(...)` takes: point `local_lm` at Ollama's OpenAI-compatible endpoint instead
(`local_lm("http://localhost:11434/v1", "qwen2.5:1.5b")`) on an Ollama whose `/v1` layer forwards logprobs.
`Text()` checks this when the cascade is built (one 1-token call, see `Text.probe`), so a server that
drops them fails at construction, not with a silent always-escalating cascade.

The paper gives no perplexity threshold: calibrate tau1 / tau2 on a dev split (confidence = 1/perplexity,
in (0, 1]; it depends on the model, its temperature and the reply's length, so the vote defaults of
Cascade, 0.75 / 0.5, are only a starting point). The perplexity is taken over the whole reply the small
model wrote, DSPy's `[[ ## solution ## ]]` field markers included (the same for every candidate).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any

import dspy

from .consensus import Candidate, Decision, accepts
from .errors import CopeError, CopeInputError, ModelUnavailable
from .tasks import Task

__all__ = ["Text", "Perplexity", "PerplexityBallot", "token_logprobs", "token_entries", "mean_logprob"]

_EXECUTE = (
    "Write a helpful, accurate and well-organised response to the request, following the plan if one is given. "
    "Write the response itself, addressed to the person who asked; no preamble about the plan."
)

# Model prefixes whose route is known never to carry logprobs (checked without a call): (reason, only when
# the LM is pinned to the LiteLLM engine). DSPy's own engine sends ollama_chat/ models to Ollama's /v1
# endpoint, which may return them: the probe decides there.
_NO_LOGPROBS = {
    "ollama_chat": ("LiteLLM refuses logprobs for Ollama's native /api/chat, the route cope_dspy.models.ollama() "
                    "takes", True),
    "ollama": ("LiteLLM refuses logprobs for Ollama's native API", True),
    "anthropic": ("Anthropic's API has no token logprobs", False),
}
_ADVICE = (
    "the Text task ranks candidates by perplexity and needs the small model's token logprobs. Serve it with "
    "llama.cpp's llama-server (cope_dspy.local.LocalServer, or cope_dspy.models.local_lm(<url>/v1, name)) or "
    "with Ollama >= 0.12.11 through its OpenAI-compatible endpoint "
    "(local_lm('http://localhost:11434/v1', '<model>')), which return them; or use another task "
    "(e.g. ExactMatch). Text(probe=False) skips this check."
)


class Text(Task):
    """Open-ended requests: the lowest-perplexity candidate wins; a stage accepts when 1/perplexity >= tau.

    The executor writes only the response (in the `solution` field; the signature has no `answer` field),
    and the response is the answer. The small executor is called with `logprobs=True`; the large executor
    is not (stage 3 is final, its score unused, and some paid APIs refuse logprobs).

    Args:
        probe: when the cascade is built with a small model, check that it returns logprobs (`Text.probe`:
            one call of one token). A model whose route is known to drop them fails even with probe=False.
        instructions: per-role instruction overrides (see `Task`).
    """

    name = "text"
    input_field = "question"
    instructions = {
        "goal_planner": (
            "State the goal of the request in one sentence: what a good response must achieve for the person "
            "asking. Do not write the response."
        ),
        "guideline_planner": (
            "Explain how to respond well to the request: the approach and the key points to cover, in one or "
            "two sentences. Give only the guideline as plain text; do not write the response."
        ),
        "small_executor": _EXECUTE,
        "large_executor": _EXECUTE,
    }

    def __init__(self, probe: bool = True, instructions: dict[str, str] | None = None):
        super().__init__(instructions=instructions)
        self.probe_lms = bool(probe)

    def signature(self, role: str, format: str = "chat") -> type[dspy.Signature]:
        sig = super().signature(role, format)
        if role.endswith("executor"):
            sig = (sig.delete("answer") if "answer" in sig.output_fields else sig).with_updated_fields("solution", desc="the complete response to the request")
        return sig

    def parse(self, solution: str, answer: str = "") -> str | None:
        text = (solution or "").strip() or (answer or "").strip()
        return text or None

    def same(self, a: str, b: str) -> bool:
        return " ".join(a.split()) == " ".join(b.split())

    def consensus(self) -> Perplexity:
        return Perplexity()

    def lm_config(self, role: str) -> dict[str, Any]:
        return {"logprobs": True} if role == "small_executor" else {}

    def score(self, prediction: dspy.Prediction) -> float | None:
        """Mean token log-probability of the executor's reply (None when the reply carries no logprobs)."""
        return mean_logprob(getattr(prediction, "logprobs", None))

    def check_lms(self, small: dspy.BaseLM | None, large: dspy.BaseLM | None) -> None:
        if small is None:  # the small executor will use dspy.settings.lm: nothing to check here
            return
        _refuse_known(small)
        if self.probe_lms:
            Text.probe(small)

    @staticmethod
    def probe(lm: dspy.BaseLM) -> int:
        """Ask `lm` for one token with logprobs; return how many scored tokens came back.

        Raises CopeInputError when the model's route is known not to carry logprobs, refuses them, or
        answers without them; ModelUnavailable when the call fails for another reason (server down).
        """
        name = getattr(lm, "model", None) or repr(lm)
        _refuse_known(lm)
        try:
            with _quiet_truncation():
                outputs = lm("Reply with the single word: OK", max_tokens=1, logprobs=True, temperature=0.0,
                             cache=False)
        except CopeError:
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if "unsupported" in type(exc).__name__.lower() or "logprob" in str(exc).lower():
                raise CopeInputError(f"small model {name!r} refused logprobs ({text[:300]}); {_ADVICE}") from exc
            raise ModelUnavailable(
                f"could not check that small model {name!r} returns logprobs: its probe call failed ({text[:300]}). "
                "Start its server, or build Text(probe=False) to skip the check."
            ) from exc
        first = outputs[0] if outputs else None
        scored = token_logprobs(first.get("logprobs") if isinstance(first, Mapping) else None)
        if not scored:
            raise CopeInputError(f"small model {name!r} returned no logprobs; {_ADVICE}")
        return len(scored)

    def __repr__(self) -> str:
        return f"Text(probe={self.probe_lms})"


# -------------------------------------------------------------------- logprobs, in the shapes DSPy gives them

def _items(logprobs: Any) -> list[Any]:
    """The per-token entries of `logprobs`, whatever shape it came in (see `token_logprobs`)."""
    if logprobs is None:
        return []
    if isinstance(logprobs, Mapping):
        if "content" in logprobs:
            return list(logprobs["content"] or ())
        return list(logprobs.get("token_logprobs") or ())
    if isinstance(logprobs, list | tuple):
        return list(logprobs)
    if hasattr(logprobs, "content"):
        return list(logprobs.content or ())
    return list(getattr(logprobs, "token_logprobs", None) or ())


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def token_logprobs(logprobs: Any) -> list[float]:
    """The per-token log-probabilities in `logprobs`, whatever shape it came in (empty when none).

    DSPy 3.4 puts on `prediction.logprobs` the OpenAI chat shape `{"content": [{"token", "logprob", "bytes",
    "top_logprobs"}, ...]}`: as an AttributeDict on its native engine (built from the lm15 Response's
    `TokenLogprob`s), or LiteLLM's `ChoiceLogprobs` object (`.content[i].logprob`) on the LiteLLM engine.
    Also read: a bare list of such entries or of lm15 `TokenLogprob`s (Ollama's native API), and the legacy
    completions shape `{"token_logprobs": [...]}`. Entries without a number (e.g. a null first token) are
    skipped.
    """
    values = []
    for item in _items(logprobs):
        value = _number(item if isinstance(item, int | float) else _field(item, "logprob"))
        if value is not None:
            values.append(value)
    return values


def token_entries(logprobs: Any) -> list[tuple[str, float | None, list[tuple[str, float]]]]:
    """Each reply token as (token, logprob, [(alternative, logprob), ...] from its `top_logprobs`), in the
    shapes `token_logprobs` reads; shapes without token text (bare numbers) give nothing."""
    out = []
    for item in _items(logprobs):
        token = _field(item, "token") if not isinstance(item, int | float) else None
        if not isinstance(token, str):
            continue
        top = [(t, lp) for t, lp in ((_field(x, "token"), _number(_field(x, "logprob")))
                                     for x in _field(item, "top_logprobs") or ()) if isinstance(t, str) and lp is not None]
        out.append((token, _number(_field(item, "logprob")), top))
    return out


def mean_logprob(logprobs: Any) -> float | None:
    """Mean token log-probability (log of 1/perplexity), or None when there are no scored tokens."""
    values = token_logprobs(logprobs)
    if not values:
        return None
    return min(0.0, sum(values) / len(values))  # a log-probability above 0 is a server rounding artefact


# -------------------------------------------------------------------- the consensus

class Perplexity:
    """Consensus for open-ended replies: choose the candidate with the highest mean token log-probability
    (lowest perplexity); confidence = exp(mean logprob) = 1/perplexity; accepted when confidence >= tau.

    Candidates without a score (no logprobs, unparseable reply, failed call) abstain. All n samples are
    drawn at once: the best of n cannot be known earlier. With early stop and tau = 1 (the stage never
    accepts) a single sample is drawn, as a vote does.
    """

    def ballot(self, n: int, tau: float, same=None, example: dict[str, Any] | None = None,
               early_stop: bool = True) -> PerplexityBallot:
        return PerplexityBallot(n, tau, early_stop)


class PerplexityBallot:
    def __init__(self, n: int, tau: float, early_stop: bool = True):
        self.n, self.tau, self.early_stop = n, tau, early_stop
        self.candidates: list[Candidate] = []

    def wave(self) -> int:
        drawn = len(self.candidates)
        if drawn >= self.n:
            return 0
        if self.early_stop and self.tau >= 1.0:
            return 0 if drawn else 1
        return self.n - drawn

    def add(self, candidates: list[Candidate]) -> None:
        for c in sorted(candidates, key=lambda c: c.index):
            if c.answer is None or c.score is None:
                c.score = None
            else:
                c.extra["perplexity"] = math.exp(-c.score) if c.score > -700 else math.inf
            self.candidates.append(c)

    def decision(self) -> Decision:
        scored = [c for c in self.candidates if c.answer is not None and c.score is not None]
        if not scored:
            chosen = self.candidates[0] if self.candidates else None
            return Decision(accepts(0.0, self.tau), 0.0, chosen, [], len(self.candidates), list(self.candidates))
        best = max(scored, key=lambda c: (c.score, -c.index))  # the earliest on ties
        confidence = min(1.0, math.exp(best.score))
        return Decision(
            accepted=accepts(confidence, self.tau), confidence=confidence, chosen=best, supporters=[best],
            drawn=len(self.candidates), candidates=list(self.candidates),
        )


@contextlib.contextmanager
def _quiet_truncation():
    """Hide DSPy's "LM response was truncated" warning for the probe's deliberate 1-token reply."""
    logger = logging.getLogger("dspy.clients.lm")

    def drop(record: logging.LogRecord) -> bool:
        return "truncated" not in record.getMessage()

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _refuse_known(lm: dspy.BaseLM) -> None:
    model = str(getattr(lm, "model", "") or "")
    prefix = model.split("/", 1)[0].lower() if "/" in model else ""
    if prefix not in _NO_LOGPROBS:
        return
    reason, litellm_only = _NO_LOGPROBS[prefix]
    if litellm_only and getattr(lm, "_engine_spec", None) != "litellm":
        return
    raise CopeInputError(f"small model {model!r} cannot return logprobs ({reason}); {_ADVICE}")
