"""BootstrapFewShot compiles a program holding a Cascade on the local pair (Qwen2.5-Coder 0.5B small, 1.5B
"large", each on its own llama.cpp server).

The mechanics only, with short replies: real traces become demos on the roles that produced them, the
compiled program keeps each role's model, sends the demos in its prompts, and saves and loads them. The
quality effect is measured by examples/optimize.py (README, "Compile it").
"""

import contextlib

import dspy
import pytest

from cope_dspy import Cascade, Math, Temperatures
from cope_dspy.pair import open_models

pytestmark = pytest.mark.integration


class Solver(dspy.Module):
    def __init__(self, cascade):
        super().__init__()
        self.cascade = cascade

    def forward(self, question):
        out = self.cascade(question=question)
        return dspy.Prediction(answer=out.answer or "", cost=out.cost)


def test_bootstrap_few_shot_on_the_local_pair(tmp_path):
    with contextlib.ExitStack() as stack:
        small_spec, large_spec, prices = open_models(stack, "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", {},
                                                     max_tokens=64, parallel=2, cache=False)
        compile_and_check(small_spec.lm, large_spec.lm, prices, tmp_path)


def compile_and_check(small, large, prices, tmp_path):
    make = lambda: Solver(Cascade(small=small, large=large, task=Math(), n=2, tau1=1.0, tau2=1.0, prices=prices,  # noqa: E731
                                  temperatures=Temperatures(guideline=0.0)))
    trainset = [dspy.Example(question="What is 2 + 3?", answer="5").with_inputs("question")]
    compiled = dspy.BootstrapFewShot(metric=lambda ex, pred, trace=None: True, max_bootstrapped_demos=1,
                                     max_labeled_demos=0).compile(make(), trainset=trainset)

    models = {name.split(".")[-1]: p.lm.model for name, p in compiled.named_predictors()}
    assert models == {"goal_planner": small.model, "small_executor": small.model,
                      "guideline_planner": large.model, "large_executor": large.model} and small.model != large.model
    demos = {name.split(".")[-1]: p.demos for name, p in compiled.named_predictors()}
    assert all(d and d[0]["question"] == "What is 2 + 3?" for d in demos.values())  # tau 1.0: every stage ran
    assert "goal" in demos["goal_planner"][0] and "guideline" in demos["guideline_planner"][0]

    lm = compiled.cascade.goal_planner.lm
    before = len(lm.history)
    compiled(question="What is 4 + 4?")
    sent = [entry["messages"] for entry in lm.history[before:]]
    assert any("What is 2 + 3?" in str(messages) for messages in sent)  # the demo is in the goal planner's prompt

    compiled.save(str(tmp_path / "compiled.json"))
    loaded = make()
    loaded.load(str(tmp_path / "compiled.json"))
    assert {n: len(p.demos) for n, p in loaded.named_predictors()} == {n: 1 for n, _ in compiled.named_predictors()}
    assert loaded.cascade.guideline_planner.lm.model == large.model
