"""A Task says how to ask (instructions per role), how to read an answer, and how to judge consensus."""

from __future__ import annotations

from typing import Any

import dspy

from .answers import answer_line, extract_math_answer, math_equal, normalize_text
from .consensus import Consensus, Vote
from .errors import CopeInputError
from .role import ROLES
from .signatures import Execute, PlanGoal, PlanGuideline

_BASE = {"goal_planner": PlanGoal, "guideline_planner": PlanGuideline, "small_executor": Execute, "large_executor": Execute}


class Task:
    """Base class. Subclasses set `instructions` (role -> text) and override `parse` / `same`.

    `input_field` names the call argument that holds the problem (`cascade(question=...)`);
    `context_fields` are further arguments the task reads (e.g. a code task's tests) and the LMs never see.
    """

    name = "task"
    input_field = "question"
    context_fields: tuple[str, ...] = ()
    instructions: dict[str, str] = {}
    plain_instructions: dict[str, str] = {}  # per role, in a plain format (the reply is the solution)

    def __init__(self, instructions: dict[str, str] | None = None):
        unknown = set(instructions or {}) - set(ROLES)
        if unknown:
            raise CopeInputError(f"instructions: unknown role(s) {sorted(unknown)}; roles are {list(ROLES)}")
        self.instructions = {**type(self).instructions, **(instructions or {})}
        self.overrides = dict(instructions or {})  # the caller's wording wins in every format

    def signature(self, role: str, format: str = "chat") -> type[dspy.Signature]:
        """The role's signature. In a plain format (any but "chat") an executor has one output,
        `solution`, the whole reply, and `plain_instructions` (if the task has them) replace `instructions`."""
        sig = _BASE[role]
        plain = format != "chat"
        text = (self.overrides.get(role) or (plain and self.plain_instructions.get(role))
                or self.instructions.get(role))
        sig = sig.with_instructions(text) if text else sig
        if plain and "answer" in sig.output_fields:
            sig = sig.delete("answer")
        return sig

    def parse(self, solution: str, answer: str = "") -> str | None:
        """The answer a vote counts, or None to abstain."""
        text = (answer or "").strip() or (solution or "").strip()
        return text or None

    def same(self, a: str, b: str) -> bool:
        return a == b

    def consensus(self) -> Consensus:
        return Vote()

    def can_accept(self, inputs: dict[str, Any]) -> bool:
        """Whether a vote stage could accept anything for this call. False when the call holds nothing to
        judge a candidate on (a code problem with no tests): a cascade whose last stage is 3 then goes to
        stage 3 at once, since stages 1 and 2 could only escalate."""
        return True

    def lm_config(self, role: str) -> dict[str, Any]:
        """Extra per-call LM settings for a role (e.g. logprobs for a perplexity judge)."""
        return {}

    def score(self, prediction: dspy.Prediction) -> float | None:
        """A number the consensus reads from an executor's raw prediction (e.g. mean log-likelihood)."""
        return None

    def check_lms(self, small: dspy.BaseLM | None, large: dspy.BaseLM | None) -> None:
        """Fail at construction when the models cannot serve this task (e.g. no logprobs)."""

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Raise CopeInputError naming the field when a call is missing what this task needs."""
        for name in (self.input_field, *self.context_fields):
            if name not in inputs:
                raise CopeInputError(
                    f"missing input field {name!r}: call the cascade as cascade({name}=...) "
                    f"(the {self.name} task reads {[self.input_field, *self.context_fields]})"
                )
        value = inputs[self.input_field]
        if not isinstance(value, str) or not value.strip():
            raise CopeInputError(f"{self.input_field!r} must be a non-empty string, got {value!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Math(Task):
    """Math word problems and competition math: answers from `\\boxed{}` or the answer field, compared
    symbolically with math-verify so that 0.5, 1/2 and \\frac{1}{2} vote together."""

    name = "math"
    # In a plain format the guideline is asked for in one sentence with no calculation: asked for "one or two
    # sentences", the 1.5B stand-in wrote a worked solution that stated the answer (evals/README, "Plain text").
    plain_instructions = {
        "guideline_planner": (
            "You are a math coach. In one sentence, name the strategy that solves the problem: which quantities "
            "to find and in what order. Do not calculate anything and do not give the answer."
        )
    }

    def parse(self, solution: str, answer: str = "") -> str | None:
        return extract_math_answer(solution, answer)

    def same(self, a: str, b: str) -> bool:
        return math_equal(a, b)


class ExactMatch(Task):
    """Short-answer QA and classification: answers vote together when equal after normalisation
    (case, punctuation, articles). With `choices`, an answer outside them abstains."""

    name = "qa"
    instructions = {
        "goal_planner": "State the goal of the question in one sentence: what must be found. Do not answer it.",
        "guideline_planner": (
            "Explain how to answer the question: the strategy and key facts to use, in one or two sentences. "
            "Give only the guideline as plain text; do not answer it."
        ),
        "small_executor": "Answer the question, reasoning briefly first and following the plan if one is given.",
        "large_executor": "Answer the question, reasoning briefly first and following the plan if one is given.",
    }
    plain_instructions = {
        role: "Answer the question, reasoning briefly first and following the plan if one is given. End with a "
              "last line of the form 'Answer: <the short answer>'."
        for role in ("small_executor", "large_executor")
    }

    def __init__(self, choices: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.choices = {normalize_text(c): c for c in choices} if choices else None

    def signature(self, role: str, format: str = "chat") -> type[dspy.Signature]:
        sig = super().signature(role, format)
        if role.endswith("executor") and "answer" in sig.output_fields:
            sig = sig.with_updated_fields("solution", desc="brief reasoning").with_updated_fields(
                "answer", desc="the short final answer only" + (f", one of {list(self.choices.values())}" if self.choices else "")
            )
        return sig

    def parse(self, solution: str, answer: str = "") -> str | None:
        text = (answer or "").strip() or answer_line(solution) or ""
        if not text:
            return None
        key = normalize_text(text)
        if self.choices is not None:
            return self.choices.get(key)
        return text if key else None

    def same(self, a: str, b: str) -> bool:
        return normalize_text(a) == normalize_text(b)
