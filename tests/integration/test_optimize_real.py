"""BootstrapFewShot compiles a program holding a Cascade on a real model (SmolLM2-135M on llama.cpp).

The mechanics only (SmolLM2 is weak at math): real traces become demos on the roles that produced them,
the compiled program keeps each role's model, sends the demos in its prompts, and saves and loads them.
The quality effect on the local pair is measured by examples/optimize.py (README, "Compile it").
"""

import dspy
import pytest

from cope_dspy import Cascade, Math, Prices, Temperatures

pytestmark = pytest.mark.integration


class Solver(dspy.Module):
    def __init__(self, cascade):
        super().__init__()
        self.cascade = cascade

    def forward(self, question):
        out = self.cascade(question=question)
        return dspy.Prediction(answer=out.answer or "", cost=out.cost)


def test_bootstrap_few_shot_on_a_real_model(local_server, tmp_path):
    small, large = local_server.lm(max_tokens=48), local_server.lm(max_tokens=64)  # told apart by their cap
    prices = Prices({small.model: (0.15, 0.60)})
    make = lambda: Solver(Cascade(small=small, large=large, task=Math(), n=2, tau1=1.0, tau2=1.0, prices=prices,  # noqa: E731
                                  temperatures=Temperatures(guideline=0.0)))
    trainset = [dspy.Example(question="What is 2 + 3?", answer="5").with_inputs("question")]
    compiled = dspy.BootstrapFewShot(metric=lambda ex, pred, trace=None: True, max_bootstrapped_demos=1,
                                     max_labeled_demos=0).compile(make(), trainset=trainset)

    caps = {name.split(".")[-1]: p.lm.kwargs["max_tokens"] for name, p in compiled.named_predictors()}
    assert caps == {"goal_planner": 48, "small_executor": 48, "guideline_planner": 64, "large_executor": 64}
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
    assert loaded.cascade.guideline_planner.lm.kwargs["max_tokens"] == 64
