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

# Code's guideline as a short hint, MATH_HINT's shape carried over to code: on MBPP's first 100 test problems
# the one-sentence wording's guidelines were still 59% of a large-alone answer's tokens, 26 of 100 writing the
# function (the 1.5B model restates the shown assert, explains, then codes: evals/README, "The one-sentence code
# guideline in the cascade: MBPP variants"); this one names the length and what a hint must not hold.
CODE_HINT = (
    "You are a programming coach. Give a hint for the coding problem in one sentence of at most 25 words: the "
    "algorithm, data structure or built-in function to use. Do not write any code, do not list steps, and do "
    "not restate the problem or its test."
)

WORDINGS = {
    "qwen-math": QWEN_MATH,
    "code-one-sentence": CODE_ONE_SENTENCE,
    "math-hint": MATH_HINT,
    "code-hint": CODE_HINT,
}
# The name of the task's own wording: `--wording guideline_planner=own` undoes a benchmark's default below. It is
# not kept in run.json (a role in its task's own wording is no entry), so folders recorded before the defaults
# existed resume with it.
OWN = "own"

# The wording a benchmark's recordings ask a role in when the command line names none for it: the variant its
# study chose (issue 16: `cope eval` uses the chosen variant by default). MATH-500: math-hint, chosen in 4 of 5
# folds of the joint variant study on the first 37 test problems and again on 40; COPE's accuracy within one
# problem of Math's own wording at about half its API cost, its guideline 28-30% of an answer's tokens against
# 68-69% (evals/README, "The hint-length guideline in the cascade"). GSM8K keeps Math's own wording: no variant
# study of it there. MBPP: code-hint, recorded in the cascade on the first 100 test problems (2026-12-03): the
# guideline 10% of an answer's tokens against 76%, COPE at 36% of large alone's cost against 53%, its 4-point
# lower accuracy (51.0 against 55.0) from stage 1, which both ask the same; chosen in 3 of 5 folds (evals/README,
# "The hint-length code guideline in the cascade: MBPP"). HumanEval: code-hint too (2026-12-04), recorded on all 131
# test problems on the stage 1 of Code's own wording's recording (`--stage1-from`, stage 1 without goals): COPE right
# on 94 against 95 (sign test p = 1.0), at 26% of large alone's cost against 40%, the guideline 11% of an answer's
# tokens against 53%; chosen in 5 of 5 folds (evals/README, "The hint-length code guideline in the cascade:
# HumanEval, paired").
DEFAULT_WORDINGS = {"math500": {"guideline_planner": "math-hint"}, "mbpp": {"guideline_planner": "code-hint"},
                    "humaneval": {"guideline_planner": "code-hint"}}


def parse_wordings(items: list[str], benchmark: str | None = None) -> dict[str, str]:
    """`--wording guideline_planner=code-one-sentence` (repeatable) -> {role: name}, on top of the benchmark's
    `DEFAULT_WORDINGS`; `ROLE=own` asks the role in the task's own wording. Unknown roles and names fail with
    the choices."""
    from cope_dspy.role import ROLES

    out = dict(DEFAULT_WORDINGS.get(benchmark, {}))
    for item in items:
        role, _, name = (part.strip() for part in item.partition("="))
        if role not in ROLES or name not in (*WORDINGS, OWN):
            raise SystemExit(f"cope eval: --wording {item!r}: write ROLE=NAME with ROLE one of {', '.join(ROLES)} "
                             f"and NAME one of {', '.join(WORDINGS)} or {OWN} (the task's own)")
        out[role] = name
    return {role: name for role, name in out.items() if name != OWN}


def instructions(wordings: dict[str, str]) -> dict[str, str] | None:
    """The task's `instructions` override for {role: wording name}; None for none (the task's own)."""
    return {role: WORDINGS[name] for role, name in wordings.items()} or None
