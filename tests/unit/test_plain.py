"""The plain-text format: prompts without field markers, answers read out of free text, per-role choice."""

import dspy
import pytest
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import AdapterParseError
from fakes import ScriptedLM, reply

from cope_dspy import Cascade, CopeInputError, ExactMatch, Math
from cope_dspy.code import Code
from cope_dspy.plain import BLOCK_END, FORMATS, PlainAdapter

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def role_of(call) -> str:
    """Plain prompts carry no field names: tell the roles apart by their instructions."""
    return "goal" if "math teacher" in call.system else "guideline" if "math coach" in call.system else "execute"


def plain_model(name, solve, goal="Find the total number of apples.", guideline="Add the two amounts."):
    def respond(call):
        role = role_of(call)
        return goal if role == "goal" else guideline if role == "guideline" else solve(call)

    return ScriptedLM(name, respond)


class Kwargs(BaseCallback):
    def __init__(self):
        self.seen = []

    def on_lm_start(self, call_id, instance, inputs):
        self.seen.append(dict(inputs.get("kwargs") or {}))


# ------------------------------------------------------------------------------------------- the adapter


def test_prompt_is_instructions_and_plain_inputs_without_field_markers():
    sig = Math().signature("small_executor", "plain")
    messages = PlainAdapter().format(sig, [], {"question": Q, "plans": "Goal: count them"})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == sig.instructions
    assert messages[1]["content"] == f"{Q}\n\nPlans:\nGoal: count them"
    assert not any("[[" in m["content"] or "`solution`" in m["content"] for m in messages)
    # an empty plan is left out, not shown as an empty section
    assert PlainAdapter().format(sig, [], {"question": Q, "plans": ""})[1]["content"] == Q


def test_plain_executor_signature_has_one_output():
    assert list(Math().signature("small_executor", "plain").output_fields) == ["solution"]
    assert list(Math().signature("small_executor").output_fields) == ["solution", "answer"]  # chat: both


def test_whole_reply_is_the_first_output_and_an_empty_reply_raises():
    sig = Math().signature("small_executor")  # two outputs: the later one is left empty
    assert PlainAdapter().parse(sig, "  3 + 4 = 7, so \\boxed{7}\n") == {"solution": "3 + 4 = 7, so \\boxed{7}", "answer": ""}
    with pytest.raises(AdapterParseError):
        PlainAdapter().parse(sig, " \n ")


def test_stop_is_validated():
    with pytest.raises(CopeInputError, match="tuple of non-empty strings"):
        PlainAdapter(stop="\n\n")


# ------------------------------------------------------------------------------------ the cascade in plain


@pytest.mark.parametrize(
    "text, answer",
    [
        ("3 apples and 4 more make 3 + 4 = 7.\n\nThe answer is \\boxed{7}.", "7"),
        ("He has 3 + 4 = 7 apples.\nAnswer: 7", "7"),
        ("So 3 + 4 = \\boxed{\\frac{14}{2}}", "7"),  # read symbolically, votes with 7
    ],
)
def test_boxed_and_answer_lines_are_read_from_free_text(text, answer):
    small = plain_model("scripted/small", lambda call: text)
    cascade = Cascade(small=small.lm, large=small.lm, task=Math(), n=4, formats="plain")
    pred = cascade(question=Q)
    assert pred.stage == 1 and pred.accepted and Math().same(pred.answer, answer)
    assert all("[[" not in c.system + c.user for c in small.calls)


@pytest.mark.parametrize("text", ["", "I cannot solve this.", "\\boxed{"])
def test_malformed_replies_abstain_and_the_cascade_escalates(text):
    small = plain_model("scripted/small", lambda call: text)
    large = ScriptedLM("scripted/large", lambda call: "Count both." if "coach" in call.system else
                       reply(solution="3 + 4 = 7", answer="7"))
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=4,
                      formats={"small_executor": "plain", "goal_planner": "plain"})
    pred = cascade(question=Q)
    assert (pred.answer, pred.stage) == ("7", 3)  # the large side kept the chat format
    votes = [e for e in pred.trace if e["kind"] == "vote"]
    assert all(c["answer"] is None for e in votes for c in e["candidates"])


def test_code_block_is_read_from_free_text_and_no_code_abstains():
    program = "def add(a, b):\n    return a + b"
    replies = [f"Add them.\n\n```python\n{program}\n```", "I would add the numbers."]

    def respond(call):
        return "Write add." if "State the goal" in call.system else replies[call.rollout_id]

    small = ScriptedLM("scripted/small", respond)
    large = ScriptedLM("scripted/large", lambda call: reply(guideline="Return a + b."))
    cascade = Cascade(small=small.lm, large=large.lm, task=Code(), n=2, stages=(1,), formats="plain")
    pred = cascade.record(question="Write add(a, b).", tests=["assert add(1, 2) == 3"])  # every sample drawn
    cands = sorted(pred.trace[0]["candidates"], key=lambda c: c["index"])
    assert [c["answer"] for c in cands] == [program, None]
    assert (pred.answer, pred.accepted) == (program, True)
    assert "end your reply with the complete code" in small.calls[-1].system


def test_exact_match_reads_an_answer_line_in_plain():
    small = ScriptedLM("scripted/small", lambda call: "Paris is the capital.\nAnswer: Paris")
    cascade = Cascade(small=small.lm, large=small.lm, task=ExactMatch(), n=2, stages=(1,), formats="plain")
    assert cascade(question="Capital of France?").answer == "Paris"


def test_paragraph_format_stops_at_the_first_blank_line():
    small = plain_model("scripted/small", lambda call: "3 + 4 = \\boxed{7}")
    seen = Kwargs()
    cascade = Cascade(small=small.lm, large=small.lm, task=Math(), n=2, stages=(1,),
                      formats={"goal_planner": "paragraph", "small_executor": "plain"})
    with dspy.context(callbacks=[seen]):
        cascade(question=Q)
    stops = [k.get("stop") for k in seen.seen]
    assert stops.count(["\n\n"]) == 2 and stops.count(None) == 2  # two goals stopped, two solutions not


def test_block_format_ends_a_code_reply_where_its_code_block_closes():
    program = "def add(a, b):\n    return a + b"

    def respond(call):  # what a server sends back for stop "\n```\n": the reply up to the closing fence
        return "Write add." if "State the goal" in call.system else f"Add them.\n\n```python\n{program}"

    small = ScriptedLM("scripted/small", respond)
    seen = Kwargs()
    cascade = Cascade(small=small.lm, large=small.lm, task=Code(), n=2, stages=(1,), early_stop=False,
                      formats={"goal_planner": "plain", "small_executor": "block"})
    with dspy.context(callbacks=[seen]):
        pred = cascade(question="Write add(a, b).", tests=["assert add(1, 2) == 3"])
    assert (pred.answer, pred.accepted) == (program, True)  # the open block is the program
    stops = [k.get("stop") for k in seen.seen]
    assert stops.count([BLOCK_END]) == 2 and stops.count(None) == 2  # two solutions stopped, two goals not
    assert BLOCK_END == "\n```\n" and "block" in FORMATS


def test_unknown_format_or_role_is_refused():
    with pytest.raises(CopeInputError, match="unknown format 'xml'"):
        Cascade(formats="xml")
    with pytest.raises(CopeInputError, match="unknown role 'executor'"):
        Cascade(formats={"executor": "plain"})


# ---------------------------------------------------------------------------- save / load and optimizers


def test_save_load_keeps_the_format(tmp_path):
    small = plain_model("scripted/small", lambda call: "3 + 4 = \\boxed{7}")
    saved = Cascade(task=Math(), n=2, formats={"small_executor": "plain"})  # a scripted LM cannot be saved
    saved.save(str(tmp_path / "cascade.json"))
    loaded = Cascade(task=Math(), n=2)  # built in the chat format
    loaded.load(str(tmp_path / "cascade.json"))
    loaded.set_lm(small.lm)
    assert loaded.formats["small_executor"] == "plain" and loaded.formats["goal_planner"] == "chat"
    small.calls.clear()
    pred = loaded(question=Q)
    assert pred.answer == "7"
    executions = [c for c in small.calls if role_of(c) == "execute"]
    assert executions and all("[[" not in c.system + c.user for c in executions)


def test_program_saved_before_formats_existed_loads_as_chat(tmp_path):
    cascade = Cascade(task=Math(), n=2)
    state = cascade.dump_state()
    del state["policy"]["formats"]
    cascade.load_state(state)
    assert set(cascade.formats.values()) == {"chat"}


def test_optimizer_demos_render_in_the_plain_format():
    small = plain_model("scripted/small", lambda call: "3 + 4 = \\boxed{7}")
    student = Cascade(small=small.lm, large=small.lm, task=Math(), n=2, stages=(1,), formats="plain")
    demo = dspy.Example(question="What is 2 + 2?", plans="Goal: add", solution="2 + 2 = \\boxed{4}",
                        goal="Find the sum.").with_inputs("question")
    compiled = dspy.LabeledFewShot(k=1).compile(student, trainset=[demo])
    assert compiled.small_executor.demos
    small.calls.clear()
    compiled(question=Q)
    execution = next(c for c in small.calls if role_of(c) == "execute")
    assert "What is 2 + 2?\n\nPlans:\nGoal: add" in execution.user  # the demo's question, as plain text
    assert "[[" not in execution.user + execution.system
    messages = PlainAdapter().format(compiled.small_executor.signature, compiled.small_executor.demos, {"question": Q})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "2 + 2 = \\boxed{4}"  # the demo's solution, the whole reply
