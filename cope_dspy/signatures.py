"""COPE's DSPy signatures: the two planners and the executor. Docstrings are the instructions.

The defaults follow the paper's math prompts; a `Task` swaps in its own wording with
`Signature.with_instructions(...)` (see `cope_dspy.tasks`).
"""

import dspy


class PlanGoal(dspy.Signature):
    """You are a math teacher. State the goal of the problem in one sentence: what must be found or
    achieved. Do not solve the problem and do not give the answer."""

    question: str = dspy.InputField(desc="the problem")
    goal: str = dspy.OutputField(desc="one sentence: the goal of the problem")


class PlanGuideline(dspy.Signature):
    """You are a math coach. Explain how to solve the problem: the strategy and the key ideas, in one or
    two sentences. Give only the guideline as plain text; do not solve the problem and do not give the answer."""

    question: str = dspy.InputField(desc="the problem")
    guideline: str = dspy.OutputField(desc="one or two sentences: strategy and key ideas")


class Execute(dspy.Signature):
    """Solve the math problem step by step, concisely, following the plan if one is given.
    End the solution with the final answer in \\boxed{}."""

    question: str = dspy.InputField(desc="the problem")
    plans: str = dspy.InputField(desc="high-level plans for this problem (a goal and/or a guideline) to follow")
    solution: str = dspy.OutputField(desc="step-by-step solution ending with the final answer in \\boxed{}")
    answer: str = dspy.OutputField(desc="the final answer only, no words or units")


# The executor with no plan in its prompt: for baselines (small alone, large alone, majority vote).
Solve = Execute.delete("plans")


def format_plans(goal: str | None = None, guideline: str | None = None) -> str:
    """The `plans` input of `Execute`: the plans that cross stages, labelled as in the paper."""
    lines = []
    if goal:
        lines.append(f"Goal: {goal.strip()}")
    if guideline:
        lines.append(f"Guideline: {guideline.strip()}")
    return "\n".join(lines)
