"""A program holding a Cascade, compiled, copied, saved and loaded the way DSPy's optimizers do it."""

import asyncio
import copy
import json
import pickle
import re

import cloudpickle
import dspy
import pytest
from fakes import ScriptedLM, math_model, reply

from cope_dspy import Cascade, CopeError, CopeInputError, Math, Prices
from cope_dspy.objective import cost_aware

KEY = "sk-test-not-a-real-key-7f3a"
PRICES = Prices({"scripted/small": (0.0, 0.0), "scripted/large": (1.0, 2.0)})
ROLE_MODEL = {
    "goal_planner": "scripted/small",
    "small_executor": "scripted/small",
    "guideline_planner": "scripted/large",
    "large_executor": "scripted/large",
}


def pair():
    """Samples 0 and 1 answer 7, the others 8: stage 1 rejects at n=4, stage 2 accepts (2 of 4 at tau2 0.5)."""
    small = math_model("scripted/small", lambda call: "7" if call.rollout_id in (0, 1) else "8")
    large = math_model("scripted/large", lambda call: "7", guideline="Add the two numbers.")
    large.lm.kwargs["api_key"] = KEY
    return small, large


class Program(dspy.Module):
    """What a user writes: call a cascade, tidy its answer, pass its cost on."""

    def __init__(self, small=None, large=None, **policy):
        super().__init__()
        self.solve = Cascade(small=small, large=large, task=Math(), prices=PRICES, **{"n": 4, **policy})

    def forward(self, question):
        return self.tidy(self.solve(question=question))

    async def aforward(self, question):
        return self.tidy(await self.solve.acall(question=question))

    @staticmethod
    def tidy(out):
        return dspy.Prediction(answer=(out.answer or "").strip(), cost=out.cost, stage=out.stage)


TRAIN = [
    dspy.Example(question=f"What is 3 + 4? (variant {i})", answer="7").with_inputs("question")
    for i in range(4)
]


def exact(example, pred, trace=None, *args, **kwargs):
    return example.answer == pred.answer


def assert_pinned(program):
    for name, predictor in program.named_predictors():
        assert predictor.lm.model == ROLE_MODEL[name.split(".")[-1]], name


def assert_routed(program, small, large):
    """Each role's predictor is pinned to its model, and a stage-2 question reaches each as it should."""
    assert_pinned(program)
    small.calls.clear()
    large.calls.clear()
    assert program(question="What is 2 + 5?").answer == "7"
    assert {c.role for c in small.calls} == {"goal", "execute"} and {c.role for c in large.calls} == {
        "guideline"
    }


def test_reset_copy_keeps_policy_and_routing_and_clears_demos():
    small, large = pair()
    program = Program(small.lm, large.lm, n=3, tau1=0.9, tau2=0.4, stages=(1, 2, 3))
    program.solve.goal_planner.demos = [dspy.Example(question="q", goal="g")]
    fresh = program.reset_copy()
    assert (fresh.solve.n, fresh.solve.tau1, fresh.solve.tau2) == (3, 0.9, 0.4)
    assert all(p.demos == [] for p in fresh.predictors())
    assert fresh.solve.guideline_planner.lm.kwargs["api_key"] == KEY
    assert_routed(fresh, small, large)


def test_deepcopy_keeps_the_key_in_memory_and_pickles_hold_none(tmp_path):
    small, large = pair()
    copied = copy.deepcopy(Program(small.lm, large.lm))
    assert copied.solve.large_executor.lm.kwargs["api_key"] == KEY
    assert copied.solve.goal_planner.lm is copied.solve.small_executor.lm  # one small model, as built
    assert_routed(copied, small, large)

    program = Program(dspy.LM("openai/gpt-4o-mini", api_key=KEY), dspy.LM("openai/gpt-4o", api_key=KEY))
    copied = copy.deepcopy(program)
    assert copied.solve.policy is not program.solve.policy
    for blob in (
        pickle.dumps(program.solve.guideline_planner),
        cloudpickle.dumps(program),
        cloudpickle.dumps(copied),
    ):
        assert KEY.encode() not in blob
    program.save(str(tmp_path / "whole"), save_program=True)
    assert KEY.encode() not in (tmp_path / "whole" / "program.pkl").read_bytes()
    assert program.solve.large_executor.lm.kwargs["api_key"] == KEY  # pickling changed nothing in memory


def test_bootstrap_fewshot_puts_demos_on_the_roles_that_made_them_and_they_survive_save_load(tmp_path):
    small, large = pair()
    program = Program(small.lm, large.lm, tau1=0.75, tau2=0.5)
    compiled = dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0).compile(
        program, trainset=TRAIN
    )
    demos = {name.split(".")[-1]: p.demos for name, p in compiled.named_predictors()}
    assert set(demos["goal_planner"][0]) >= {"question", "goal"}
    assert set(demos["guideline_planner"][0]) >= {"question", "guideline"}
    assert set(demos["small_executor"][0]) >= {"question", "plans", "solution", "answer"}
    assert demos["large_executor"] == []  # stage 3 never ran on the training set
    assert_routed(compiled, small, large)
    demo_question = demos["goal_planner"][0]["question"]
    assert any(demo_question in c.user for c in small.by_role("goal"))
    assert any(demos["guideline_planner"][0]["question"] in c.user for c in large.by_role("guideline"))

    compiled.save(str(tmp_path / "compiled.json"))
    assert KEY not in (tmp_path / "compiled.json").read_text()
    small2, large2 = pair()
    loaded = Program(small2.lm, large2.lm, n=8, tau1=0.1)
    loaded.load(str(tmp_path / "compiled.json"))
    assert (loaded.solve.n, loaded.solve.tau1, loaded.solve.tau2, loaded.solve.stages) == (
        4,
        0.75,
        0.5,
        (1, 2, 3),
    )
    for name, p in loaded.named_predictors():
        assert [d["question"] for d in p.demos] == [d["question"] for d in demos[name.split(".")[-1]]]
    assert_routed(loaded, small2, large2)


def any_signature(call):
    """A prompt model for optimizers' own signatures: fills every output field it is asked for."""
    listed = re.search(r"Your output fields are:(.*?)All interactions", call.system, re.S)
    return reply(
        **{
            f: "Solve carefully; end with the answer in \\boxed{}."
            for f in re.findall(r"\d+\. `(\w+)`", listed.group(1) if listed else "")
        }
    )


def test_mipro_v2_compiles_a_program_holding_a_cascade():
    small, large = pair()
    prompt = ScriptedLM("scripted/prompt", any_signature)
    optimizer = dspy.MIPROv2(
        metric=exact,
        prompt_model=prompt.lm,
        task_model=prompt.lm,
        auto=None,
        num_candidates=2,
        num_threads=1,
        verbose=False,
    )
    compiled = optimizer.compile(
        Program(small.lm, large.lm),
        trainset=TRAIN[:2],
        valset=TRAIN[2:],
        num_trials=2,
        max_bootstrapped_demos=1,
        max_labeled_demos=0,
        minibatch=False,
        program_aware_proposer=False,
        data_aware_proposer=False,
        tip_aware_proposer=False,
        fewshot_aware_proposer=False,
    )
    assert prompt.calls, "the proposer was asked for instructions"
    assert (compiled.solve.n, compiled.solve.tau1) == (4, 0.75)
    assert_routed(compiled, small, large)


def test_gepa_rewrites_a_role_instruction_that_its_prompt_then_carries():
    new_instruction = "Name the two numbers to add, in capitals."
    _, large = pair()

    def small_respond(call):  # a goal written under the new instruction makes every sample right
        if call.role == "goal":
            return reply(goal="ADD THREE AND FOUR" if new_instruction in call.system else "Find the number.")
        answer = "7" if "ADD THREE" in call.plans or call.rollout_id in (0, 1) else "8"
        return reply(solution=f"\\boxed{{{answer}}}", answer=answer)

    small = ScriptedLM("scripted/small", small_respond)
    # GEPA's proposer asks through DSPy's JSONAdapter
    reflection = ScriptedLM("scripted/reflect", lambda call: json.dumps({"new_instruction": new_instruction}))

    def cheaper_is_better(gold, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(
            score=1.0 if pred.stage == 1 else 0.5, feedback="Settle it without the large model."
        )

    compiled = dspy.GEPA(
        metric=cheaper_is_better,
        reflection_lm=reflection.lm,
        max_metric_calls=16,
        num_threads=1,
        use_merge=False,
    ).compile(Program(small.lm, large.lm), trainset=TRAIN[:2], valset=TRAIN[2:])
    assert compiled.solve.goal_planner.signature.instructions == new_instruction
    assert_pinned(compiled)
    small.calls.clear()
    large.calls.clear()
    assert compiled(question="What is 3 + 4?").stage == 1
    assert small.by_role("goal") and all(new_instruction in c.system for c in small.by_role("goal"))
    assert large.calls == []


def test_best_of_n_refine_and_simba_refuse_before_any_call():
    small, large = pair()
    cascade = Program(small.lm, large.lm).solve
    for wrapper in (
        dspy.BestOfN(cascade, N=2, reward_fn=lambda a, p: 1.0, threshold=1.0),
        dspy.Refine(cascade, N=2, reward_fn=lambda a, p: 1.0, threshold=1.0),
    ):
        with pytest.raises(CopeError, match="no single LM.*BootstrapFewShot"):
            wrapper(question="What is 2 + 5?")
    with pytest.raises(CopeError, match="no single LM"):
        dspy.SIMBA(metric=exact, max_steps=1, bsize=2).compile(cascade, trainset=TRAIN)
    with pytest.raises(ValueError, match="Multiple LMs"):  # wrapped: DSPy's own refusal, also before any call
        dspy.BestOfN(Program(small.lm, large.lm), N=2, reward_fn=lambda a, p: 1.0, threshold=1.0)(
            question="x?"
        )
    assert small.calls == [] and large.calls == []


def test_loading_keeps_the_lms_the_cascade_was_built_with(tmp_path):
    served = dict(api_base="http://127.0.0.1:9/v1", api_key=KEY)
    small, large = dspy.LM("openai/local-small", **served), dspy.LM("openai/local-large", **served)
    saved = Program(small, large, tau1=0.5)
    saved.save(str(tmp_path / "p.json"))
    saved.solve.save(str(tmp_path / "cascade.json"))

    built = Program(dspy.LM("openai/local-small", **served), dspy.LM("openai/local-large", **served))
    built.load(str(tmp_path / "p.json"))
    assert built.solve.tau1 == 0.5
    assert built.solve.guideline_planner.lm.kwargs["api_base"] == served["api_base"]
    assert built.solve.guideline_planner.lm.kwargs["api_key"] == KEY

    bare = Program()
    bare.load(str(tmp_path / "p.json"))
    with pytest.raises(
        CopeInputError, match=r"'openai/local-small' with api_base.*load\(path, small=dspy.LM"
    ):
        bare(question="What is 2 + 5?")
    with dspy.context(lm=dspy.LM("openai/somewhere-else")):  # never a quiet detour to the configured LM
        with pytest.raises(CopeInputError, match="'openai/local-large'"):
            bare.solve.stages = (3,)
            bare(question="What is 2 + 5?")

    again = Cascade(task=Math())
    again.load(str(tmp_path / "cascade.json"), small=small, large=large)
    assert again.goal_planner.lm is small and again.large_executor.lm is large and again.tau1 == 0.5


def test_parallel_batch_and_acall_of_a_wrapping_program():
    small, large = pair()
    program = Program(small.lm, large.lm)
    examples = [dspy.Example(question=f"What is 2 + 5? ({i})").with_inputs("question") for i in range(3)]
    assert [p.answer for p in dspy.Parallel(num_threads=3)([(program, ex) for ex in examples])] == ["7"] * 3
    assert [p.answer for p in program.batch(examples, num_threads=2)] == ["7"] * 3
    assert asyncio.run(program.acall(question="What is 2 + 5?")).answer == "7"


def test_cost_aware_metric_trades_quality_for_dollars():
    usage = type("U", (), {"usd": 0.002})()
    right, wrong = dspy.Prediction(answer="7", cost=usage), dspy.Prediction(answer="8", cost=usage)
    example = dspy.Example(question="q", answer="7")
    metric = cost_aware(exact, weight=100)
    assert metric(example, right) == pytest.approx(0.8) and metric(example, wrong) == pytest.approx(-0.2)
    budgeted = cost_aware(exact, budget_usd=0.001)
    assert budgeted(example, right) == 0.0 and cost_aware(exact, budget_usd=0.01)(example, right) == 1.0
    assert (
        budgeted(example, right, trace=[]) is False and cost_aware(exact)(example, wrong, trace=[]) is False
    )
    assert cost_aware(exact, weight=100)(example, right, trace=[]) is True  # bootstrapping keeps right demos
    with pytest.raises(CopeInputError, match="cost=out.cost"):
        metric(example, dspy.Prediction(answer="7"))
    with pytest.raises(CopeInputError, match="weight must be a number >= 0"):
        cost_aware(exact, weight=-1)


def test_bootstrap_with_a_cost_aware_metric_scores_real_cascade_costs():
    small, large = pair()
    program = Program(small.lm, large.lm)
    pred = program(question="What is 2 + 5?")
    assert pred.cost.usd > 0  # the guideline is a paid call
    assert cost_aware(exact, weight=10)(TRAIN[0], pred) == pytest.approx(1 - 10 * pred.cost.usd)
