"""LM calls an early-decided vote saves, on instant scripted LMs (`evals/scripted.py`; no model needed).

    python -m evals.early_decision

Each row runs the same cascade (n=8, tau1=0.75, tau2=0.5) with and without early decision on scripted
answers and prints the calls made, the stage and the answer (which must be the same both ways).
"""

import os
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from cope_dspy import Cascade  # noqa: E402

from .scripted import math_replies, scripted_lm  # noqa: E402

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CASES = [
    ("8 of 8 agree", ["7"] * 8, ["7"] * 8),
    ("6 of 8 agree", ["7"] * 6 + ["1", "2"], ["7"] * 8),
    ("4 different answers first", list("1234") + ["5"] * 4, ["7"] * 8),
    ("5 of 8, then 4 of 8", ["7"] * 5 + list("123"), ["7"] * 4 + list("1234")),
]


def run(stage1, stage2, early):
    small, small_engine = scripted_lm(
        "scripted/small",
        math_replies(lambda c: (stage2 if "Guideline:" in c.plans else stage1)[c.rollout_id]),
        rollout_ids=True,
    )
    large, large_engine = scripted_lm("scripted/large", math_replies(lambda c: "7"))
    pred = Cascade(small=small, large=large, early_stop=early)(question=Q)
    return small_engine.calls + large_engine.calls, pred.stage, pred.answer


def main() -> None:
    warnings.simplefilter("ignore")
    saved = total = 0
    for name, s1, s2 in CASES:
        (a, sa, xa), (b, sb, xb) = run(s1, s2, True), run(s1, s2, False)
        assert (sa, xa) == (sb, xb), "early decision changed the outcome"
        saved, total = saved + b - a, total + b
        print(
            f"{name:<28} early decision: {a:>2} calls   all samples: {b:>2} calls   stage {sa}, answer {xa}"
        )
    print(f"saved {saved} of {total} calls ({100 * saved / total:.0f}%), same stage and answer in every case")


if __name__ == "__main__":
    main()
