"""Acting in a text game, one step at a time: the `Act` task and `ActionVote`, the vote over valid actions.

A step's state (the game's task, the last steps, the current observation and the valid actions) is one
question; the cascade answers it with one action. Proposals vote by exact match on a valid action
(case and surrounding whitespace, quotes and a final full stop aside); a proposal that is not a valid
action abstains. `cope_dspy.episode.play` runs a whole game with any policy, a `Cascade` among them.

    from cope_dspy import Cascade
    from cope_dspy.agent import Act, render_state

    cascade = Cascade(small=..., large=..., task=Act())
    valid = ["open fridge", "move north", "take apple"]
    pred = cascade(question=render_state("Put the apple in the fridge.", [], "You are in the kitchen.", valid),
                   valid_actions=valid)
    pred.answer  # one of `valid`, or (stage 3 only) the large model's reply as written
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from .consensus import Candidate, Vote, VoteBallot
from .errors import CopeInputError
from .tasks import Task

_PLAYER = "You are playing a text game."
_ACT = (
    f"{_PLAYER} Choose the next action, following the plan if one is given. Reply with exactly one action "
    "copied word for word from the list of valid actions, and nothing else."
)


def match_action(text: str | None, valid_actions: Sequence[str]) -> str | None:
    """The valid action `text` names, as the game spells it, or None. Exact match after dropping case,
    surrounding whitespace and quotes, and a final full stop: "Take apple." names "take apple";
    "take the apple" names nothing."""
    if text is None:
        return None
    key = _normal(text)
    for action in valid_actions:
        if _normal(action) == key:
            return action
    return None


def _normal(text: str) -> str:
    return " ".join(text.strip().strip("`'\"").rstrip(".").split()).lower()


def render_state(
    task: str,
    history: Sequence[tuple[str, str]],
    observation: str,
    valid_actions: Sequence[str],
    *,
    omitted: int = 0,
    details: str = "",
) -> str:
    """The question a step asks: the game's task, the steps shown (action, what the game answered), the
    current observation (and `details` such as the room and inventory) and the valid actions. `omitted`
    earlier steps are left out, and the text says so."""
    lines = [f"Task: {task.strip()}", ""]
    if omitted:
        lines += [
            f"({omitted} earlier step{'s' if omitted > 1 else ''} omitted; the last {len(history)} shown.)"
        ]
    if history:
        lines += ["Steps so far:"]
        first = omitted + 1
        lines += [f"{first + i}. > {action}\n{reply.strip()}" for i, (action, reply) in enumerate(history)]
        lines += [""]
    lines += [f"Current observation: {observation.strip()}", ""]
    if details.strip():
        lines += [details.strip(), ""]
    lines += ["Valid actions:"]
    lines += [f"- {a}" for a in valid_actions]
    return "\n".join(lines)


class Act(Task):
    """One action of a text-game agent. Call fields: `question` (the step's state, e.g. from `render_state`;
    it must list the valid actions: the models see only it) and `valid_actions` (the list the votes match).

    Plans are per step, as the paper runs the whole collaboration at every action step: the small model's
    goal says what the next action should achieve, the large model's guideline how to make progress.
    """

    name = "act"
    context_fields = ("valid_actions",)
    instructions = {
        "goal_planner": (
            f"{_PLAYER} State the goal of the next step in one sentence: what the next action should achieve "
            "towards the task. Do not name the action."
        ),
        "guideline_planner": (
            f"{_PLAYER} Explain how to make progress on the task from here: the strategy and what to do next, "
            "in one or two sentences. Give only the guideline as plain text."
        ),
        "small_executor": _ACT,
        "large_executor": _ACT,
    }

    def signature(self, role: str, format: str = "chat") -> type[dspy.Signature]:
        sig = (
            super()
            .signature(role, format)
            .with_updated_fields(
                "question",
                desc="the game's task, the steps so far, the current observation and the valid actions",
            )
        )
        action = "exactly one action from the valid actions, copied word for word"
        if role.endswith("executor") and "answer" in sig.output_fields:  # chat: one short field, a short reply
            sig = sig.delete("solution").with_updated_fields("answer", desc=action)
        elif role.endswith("executor"):  # a plain format: the whole reply is the action
            sig = sig.with_updated_fields("solution", desc=action)
        return sig

    def parse(self, solution: str, answer: str = "") -> str | None:
        """The action as written (the answer field, or a plain reply's first line); `ActionVote` matches it
        to a valid action (it sees the valid actions)."""
        text = (answer or "").strip() or (solution or "").strip()
        return text.splitlines()[0].strip() if text else None

    def consensus(self) -> ActionVote:
        return ActionVote()

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        super().check_inputs(inputs)
        valid = inputs["valid_actions"]
        if (
            isinstance(valid, str)
            or not isinstance(valid, Sequence)
            or not valid
            or not all(isinstance(a, str) and a.strip() for a in valid)
        ):
            raise CopeInputError(f"valid_actions must be a non-empty list of action strings, got {valid!r}")


class ActionVote(Vote):
    """`Vote` over actions: each proposal is first matched to a valid action (`match_action`); one that
    matches none abstains, its text kept in the trace (`extra["invalid_action"]`). It is not an `error`:
    the call worked, the model chose badly."""

    def ballot(
        self, n: int, tau: float, same, example: dict[str, Any] | None = None, early_stop: bool = True
    ):
        return ActionBallot(n, tau, same, early_stop, (example or {}).get("valid_actions") or ())


class ActionBallot(VoteBallot):
    def __init__(self, n: int, tau: float, same, early_stop: bool, valid_actions: Sequence[str]):
        super().__init__(n, tau, same, early_stop)
        self.valid_actions = list(valid_actions)

    def add(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            if c.answer is None:
                continue
            action = match_action(c.answer, self.valid_actions)
            if action is None:
                c.extra["invalid_action"] = c.answer
            c.answer = action
        super().add(candidates)
