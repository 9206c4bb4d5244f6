"""Scripted LMs for unit tests: real `dspy.LM`s whose engine answers from a Python function.

Each call is recorded with the role it served (goal / guideline / execute, read from the prompt), the
plans it saw, its temperature and rollout id, so tests can assert who was asked what.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, TokenLogprob, Usage
from dspy.utils.callback import BaseCallback

_call_kwargs: ContextVar[dict | None] = ContextVar("scripted_call_kwargs", default=None)


@dataclass
class Call:
    lm: str
    role: str  # "goal", "guideline" or "execute"
    question: str
    plans: str
    temperature: float | None
    rollout_id: Any
    system: str
    user: str
    extra: dict = field(default_factory=dict)
    max_tokens: int | None = None  # the reply cap this call was sent with
    prefill: str | None = None  # a final assistant message: the start of the reply, to be continued


class cut(str):  # noqa: N801 - reads as a marker: return cut(reply(...)) from a scripted model
    """A reply the server cut off at max_tokens (finish_reason "length")."""


def reply(**fields: str) -> str:
    """A reply in DSPy's chat format: reply(solution="...", answer="42")."""
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


def _section(text: str, name: str) -> str:
    # a section ends at the next field, or at the chat adapter's closing request when it is the last input
    m = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with the corresponding output|\Z)",
                  text, re.S)
    return m.group(1).strip() if m else ""


class _Capture(BaseCallback):
    def on_lm_start(self, call_id, instance, inputs):
        _call_kwargs.set(dict(inputs.get("kwargs") or {}))


class _Engine:
    def __init__(self, owner: ScriptedLM):
        self.owner = owner

    def __deepcopy__(self, memo):  # a copied LM (optimizers copy programs) still answers from the same script
        return self

    def dump_state(self):  # saved programs name the script; loading pins a scripted LM again
        return {"scripted": self.owner.name}

    @classmethod
    def load_state(cls, state):
        raise NotImplementedError("a scripted LM cannot be rebuilt from a file: pin it again after loading")

    def complete(self, request):
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system or ())
        user = "\n".join(m.text or "" for m in request.messages if m.role == "user")
        kwargs = _call_kwargs.get() or {}
        role = "goal" if "`goal`" in system else "guideline" if "`guideline`" in system else "execute"
        call = Call(
            lm=self.owner.name, role=role, question=_section(user, "question"), plans=_section(user, "plans"),
            temperature=kwargs.get("temperature", getattr(getattr(request, "config", None), "temperature", None)),
            rollout_id=kwargs.get("rollout_id"), system=system, user=user,
            max_tokens=getattr(getattr(request, "config", None), "max_tokens", None),
            prefill=request.messages[-1].text if request.messages and request.messages[-1].role == "assistant" else None,
        )
        with self.owner.lock:
            self.owner.calls.append(call)
        text = self.owner.respond(call)
        if isinstance(text, BaseException):
            raise text
        usage = self.owner.usage
        return Response(
            id=None, model=self.owner.name, message=Message.assistant([TextPart(text)]),
            finish_reason="length" if isinstance(text, cut) else "stop",
            usage=Usage(input_tokens=usage[0], output_tokens=usage[1], total_tokens=sum(usage)) if usage else None,
        )


class _AsyncEngine:
    def __init__(self, sync: _Engine):
        self.sync = sync

    def __deepcopy__(self, memo):
        return self

    def dump_state(self):
        return self.sync.dump_state()

    load_state = _Engine.load_state

    async def complete(self, request):
        return self.sync.complete(request)


class ScriptedLM:
    """Builds a `dspy.LM` named `name` that answers with `respond(call) -> str` (or an exception to raise)."""

    def __init__(self, name: str, respond: Callable[[Call], str], usage: tuple[int, int] | None = (100, 20),
                 cache: bool = False, max_tokens: int | None = None):
        self.name, self.respond, self.usage = name, respond, usage
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        engine = _Engine(self)
        self.lm = dspy.LM(name, engine=engine, async_engine=_AsyncEngine(engine), cache=cache, callbacks=[_Capture()],
                          max_tokens=max_tokens)

    def by_role(self, role: str) -> list[Call]:
        return [c for c in self.calls if c.role == role]


def math_model(name: str, answers: Callable[[Call], str], goal: str = "Find the number.",
               guideline: str = "Add the parts carefully.", **kwargs) -> ScriptedLM:
    """A scripted model for math cascades: plans are fixed text, executions answer `answers(call)`."""

    def respond(call: Call) -> str:
        if call.role == "goal":
            return reply(goal=f"{goal} #{call.rollout_id}")
        if call.role == "guideline":
            return reply(guideline=guideline)
        a = answers(call)
        if isinstance(a, BaseException):
            return a
        text = reply(solution=f"Working... so the answer is \\boxed{{{a}}}.", answer=a)
        return cut(text) if isinstance(a, cut) else text  # answers may return cut("42"): a cut-off reply

    return ScriptedLM(name, respond, **kwargs)


# ---------------------------------------------------------------- replies with token logprobs (Text)


class LogprobLM:
    """A scripted `dspy.LM` whose replies carry token logprobs when asked for them.

    `respond(call) -> str` writes the reply (as `fakes.ScriptedLM`); `logprob(text) -> float | None` is the
    per-token logprob of that reply (None: the server sends none). `refuse=True` raises when logprobs are
    requested (an API without them, e.g. Anthropic)."""

    def __init__(self, name, respond, logprob=lambda text: -0.1, refuse=False):
        self.scripted = ScriptedLM(name, respond)
        self.calls = self.scripted.calls
        self.logprob, self.refuse = logprob, refuse
        self.requested = []  # config.logprobs of each request
        inner = _Engine(self.scripted)
        outer = self

        class Engine:
            def complete(self, request):
                outer.requested.append(request.config.logprobs)
                if request.config.logprobs is not None and outer.refuse:
                    raise RuntimeError("this API does not support logprobs")
                response = inner.complete(request)
                if request.config.logprobs is None:
                    return response
                lp = outer.logprob(response.message.parts[0].text)
                if lp is None:
                    return response
                tokens = tuple(TokenLogprob(token=t, logprob=lp) for t in ("The", " sky", " is", " blue"))
                return dataclasses.replace(response, logprobs=tokens)

        class AsyncEngine:
            async def complete(self, request):
                return Engine().complete(request)

        self.lm = dspy.LM(name, engine=Engine(), async_engine=AsyncEngine(), cache=False,
                          callbacks=[_Capture()])

    def by_role(self, role):
        return self.scripted.by_role(role)


def writer(name, responses, guideline="Mention Rayleigh scattering.", **kwargs):
    """A scripted writer for `Text` cascades. Goals and guidelines are fixed; executions answer responses(call); the probe gets 'OK'."""

    def respond(call):
        if call.role == "goal":
            return reply(goal=f"Explain the colour #{call.rollout_id}")
        if call.role == "guideline":
            return reply(guideline=guideline)
        if "[[ ## question ## ]]" not in call.user:  # the probe's bare prompt
            return "OK"
        return reply(solution=responses(call))

    return LogprobLM(name, respond, **kwargs)


def by_text(table, default=-3.0):
    """Per-token logprob by a marker in the reply (e.g. 'R3' -> table['R3'])."""
    return lambda text: next((v for k, v in table.items() if k in text), default)


# ------------------------------------------------------------------ recorded math folders (evals)


def recorded_candidate(i, answer, truth="7"):
    """One recorded math sample, as `cope_dspy.records` keeps it."""
    return {"index": i, "solution": "", "answer": answer, "plans": {}, "error": None, "score": None,
            "usage": {"calls": 1, "usd": 0.001}, "correct": float(answer == truth)}


def math_record(pid, stage1, stage2, final, unplanned, large):
    trace = [{"kind": "vote", "stage": 1, "candidates": [recorded_candidate(i, a) for i, a in enumerate(stage1)]},
             {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "usd": 0.001}},
             {"kind": "vote", "stage": 2, "candidates": [recorded_candidate(i, a) for i, a in enumerate(stage2)]},
             {"kind": "final", "stage": 3, "candidates": [recorded_candidate(0, final)]}]
    return {"format": "cope-dspy/records/1", "id": pid, "variant": "default",
            "policy": {"n": 4, "stages": [1, 2, 3], "task": "math", "variant": "default"},
            "inputs": {"question": pid}, "answer": "7", "stage": 3, "trace": trace,
            "baselines": {"small_greedy": recorded_candidate(0, unplanned[0]), "large_greedy": recorded_candidate(0, large),
                          "small_samples": [recorded_candidate(i, a) for i, a in enumerate(unplanned)]}}
