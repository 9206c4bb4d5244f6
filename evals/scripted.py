"""Instant scripted LMs for the harness's offline measurements (no model, no network, no tests/ import).

`scripted_lm(name, respond)` is a real `dspy.LM` whose engine answers at once with `respond(call)`, where
`call` says which cascade role asked (goal / guideline / execute), the plans it saw and its rollout id.
`math_replies(answer)` scripts a math cascade: fixed plans, executions answering `answer(call)`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils.callback import BaseCallback

USAGE = Usage(input_tokens=100, output_tokens=20, total_tokens=120)  # what every scripted reply reports
_config: ContextVar[dict | None] = ContextVar("scripted_config", default=None)


@dataclass(frozen=True)
class Call:
    role: str  # "goal", "guideline" or "execute", read from the signature's instructions
    plans: str
    rollout_id: Any


class _SeeConfig(BaseCallback):
    """DSPy gives the rollout id to an LM's callbacks, not to its engine: keep it for the engine."""

    def on_lm_start(self, call_id, instance, inputs):
        _config.set(dict(inputs.get("kwargs") or {}))


class ScriptedEngine:
    """A DSPy engine (`complete(Request) -> Response`) that answers from a function and counts its calls."""

    def __init__(self, name: str, respond: Callable[[Call], str]):
        self.name, self.respond, self.calls = name, respond, 0
        self.lock = threading.Lock()

    def complete(self, request) -> Response:
        user = "\n".join(m.text or "" for m in request.messages if m.role == "user")
        system = request.system if isinstance(request.system, str) else ""
        role = "goal" if "`goal`" in system else "guideline" if "`guideline`" in system else "execute"
        plans = re.search(r"\[\[ ## plans ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", user, re.S)
        text = self.respond(
            Call(role, plans.group(1) if plans else "", (_config.get() or {}).get("rollout_id"))
        )
        with self.lock:
            self.calls += 1
        return Response(
            id=None,
            model=self.name,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=USAGE,
        )


class AsyncScriptedEngine:
    def __init__(self, sync: ScriptedEngine):
        self.sync = sync

    async def complete(self, request) -> Response:
        return self.sync.complete(request)


def scripted_lm(
    name: str, respond: Callable[[Call], str], *, rollout_ids: bool = False
) -> tuple[dspy.LM, ScriptedEngine]:
    """A `dspy.LM` answering with `respond`, and its engine (for `engine.calls`). `rollout_ids=True` adds the
    callback that lets `respond` see each call's rollout id (a per-call cost the overhead bench leaves out)."""
    engine = ScriptedEngine(name, respond)
    callbacks = [_SeeConfig()] if rollout_ids else []
    lm = dspy.LM(
        name, engine=engine, async_engine=AsyncScriptedEngine(engine), cache=False, callbacks=callbacks
    )
    return lm, engine


def reply(**fields: str) -> str:
    """A reply in DSPy's chat format: reply(solution="...", answer="42")."""
    return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items()) + "[[ ## completed ## ]]"


def math_replies(answer: Callable[[Call], str]) -> Callable[[Call], str]:
    """Fixed goal and guideline; every execution answers `answer(call)` (a number, as text)."""

    def respond(call: Call) -> str:
        if call.role == "goal":
            return reply(goal=f"Find the number. #{call.rollout_id}")
        if call.role == "guideline":
            return reply(guideline="Add the parts carefully.")
        a = answer(call)
        return reply(solution=f"Working... so the answer is \\boxed{{{a}}}.", answer=a)

    return respond
