"""Named instruction wordings a benchmark recording can ask a role in (`cope eval ... --wording ROLE=NAME`),
besides each task's own: prompt variants, recorded one per folder and compared by `evals.calibrate_variants`.
Data, not code: a wording is the signature's instructions (in a plain format, the system message)."""

from __future__ import annotations

# Qwen's own math prompt (its model card), as the 0.5B executor's instructions: 9 of 40 GSM8K problems
# against 7 of 40 in the task's plain wording (evals/README, "Plain text against the two-field format").
QWEN_MATH = "Please reason step by step, and put your final answer within \\boxed{}."
# Code's guideline in one sentence, as Math's plain wording: 65 completion tokens against 153 for Code's own
# wording on 32 HumanEval problems, 24% of a large-alone answer (evals/README, "A one-sentence guideline").
CODE_ONE_SENTENCE = (
    "You are an expert Python programmer. In one sentence, name the approach that solves the coding problem: "
    "the algorithm or data structure, and the edge case to handle. Do not write any code, steps or lists."
)

# Math's guideline as a short hint: on MATH-500 Math's plain wording ("In one sentence, name the strategy ...
# Do not calculate anything and do not give the answer.") gave guidelines of 71% of a large-alone answer's
# tokens, 9 of 11 with a \boxed{} answer (evals/README, MATH-500 in plain text); this one names the length
# and the things a guideline must not hold (evals/README, "A hint-length guideline for MATH-500").
MATH_HINT = (
    "You are a math coach. Give a hint for the problem in one sentence of at most 30 words: the method or "
    "formula to use. Do not solve the problem, do not calculate anything, and do not write or box an answer."
)

WORDINGS = {"qwen-math": QWEN_MATH, "code-one-sentence": CODE_ONE_SENTENCE, "math-hint": MATH_HINT}


def parse_wordings(items: list[str]) -> dict[str, str]:
    """`--wording guideline_planner=code-one-sentence` (repeatable) -> {role: name}; unknown roles and names
    fail with the choices."""
    from cope_dspy.role import ROLES

    out = {}
    for item in items:
        role, _, name = (part.strip() for part in item.partition("="))
        if role not in ROLES or name not in WORDINGS:
            raise SystemExit(f"cope eval: --wording {item!r}: write ROLE=NAME with ROLE one of {', '.join(ROLES)} "
                             f"and NAME one of {', '.join(WORDINGS)}")
        out[role] = name
    return out


def instructions(wordings: dict[str, str]) -> dict[str, str] | None:
    """The task's `instructions` override for {role: wording name}; None for none (the task's own)."""
    return {role: WORDINGS[name] for role, name in wordings.items()} or None
