"""Agent mode on a scripted game and scripted models: the vote over valid actions, escalation per step,
the step limit, costs per step, replay of recorded episodes, and the harness's episodes and report."""

import json
import queue
import re
from argparse import Namespace

import pytest
from fakes import ScriptedLM, reply

from cope_dspy import Cascade, Prices
from cope_dspy.agent import Act, match_action, render_state
from cope_dspy.episode import Observation, play, replay_episode, replay_episodes
from cope_dspy.errors import CopeInputError

TASK = "Put the apple in the fridge."
SOLUTION = ["take apple", "open fridge", "put apple in fridge"]
DISTRACTORS = ["look around", "eat apple"]
LARGE_PRICE = (1.0, 2.0)  # USD per million: 100 prompt + 20 completion tokens = $0.00014 a call
CALL_USD = (100 * 1.0 + 20 * 2.0) / 1e6


class Game:
    """A scripted game: the solution's actions in order win; other valid actions change nothing, except
    "eat apple", which loses the game."""

    def __init__(self):
        self.progress, self.resets = 0, 0

    def observation(self, text, done=False, success=False):
        valid = sorted({SOLUTION[min(self.progress, 2)], *DISTRACTORS})
        return Observation(
            text=text,
            valid_actions=valid,
            task=TASK,
            done=done,
            success=success,
            score=self.progress / len(SOLUTION),
        )

    def reset(self, seed=None):
        self.progress, self.resets = 0, self.resets + 1
        return self.observation(f"You are in the kitchen (game {seed}).")

    def step(self, action):
        if action == "eat apple":
            return self.observation("You ate the apple. You lost.", done=True)
        if self.progress < len(SOLUTION) and action == SOLUTION[self.progress]:
            self.progress += 1
            won = self.progress == len(SOLUTION)
            return self.observation(f"Done: {action}.", done=won, success=won)
        return self.observation("Nothing happens." if action in DISTRACTORS else "Unknown action.")

    def gold_actions(self):
        return list(SOLUTION)


def step_of(call) -> int:
    """Which step a call is for: the number of steps listed in its prompt (history is long enough)."""
    return len(re.findall(r"^\d+\. > ", call.question, re.M))


def game_model(name, actions, goal="Get closer to the goal.", guideline="Follow the task's steps in order."):
    """A scripted model for the game: plans are fixed, an executor call answers actions(call)."""

    def respond(call):
        if call.role == "goal":
            return reply(goal=goal)
        if call.role == "guideline":
            return reply(guideline=guideline)
        return reply(answer=actions(call))

    return ScriptedLM(name, respond)


def solver(call):
    return SOLUTION[step_of(call)]


def make(small_actions, large_actions=solver, n=4, **kwargs):
    small, large = game_model("scripted/small", small_actions), game_model("scripted/large", large_actions)
    prices = Prices({"scripted/large": LARGE_PRICE, "scripted/small": (0.0, 0.0)})
    return Cascade(small=small.lm, large=large.lm, task=Act(), n=n, prices=prices, **kwargs), small, large


def state(valid=("look around", "open fridge", "take apple")):
    return render_state(TASK, [], "You are in the kitchen.", list(valid))


# ------------------------------------------------------------------------------------------ one step


def test_match_action_is_exact_up_to_case_quotes_and_full_stop():
    valid = ["take apple", "open fridge"]
    assert match_action(" 'Take  Apple.' ", valid) == "take apple"
    assert match_action("take the apple", valid) is None
    assert match_action("open fridge and take apple", valid) is None
    assert match_action(None, valid) is None


def test_vote_picks_the_majority_valid_action():
    cascade, small, large = make(
        lambda c: ["take apple", "open fridge", "take apple", "take apple"][c.rollout_id]
    )
    pred = cascade(question=state(), valid_actions=["look around", "open fridge", "take apple"])
    assert (pred.answer, pred.stage, pred.confidence) == ("take apple", 1, 0.75)
    assert large.calls == []


def test_an_invalid_proposal_abstains_and_a_differently_written_valid_one_counts():
    proposals = ["take apple", "fly to the moon", "Take Apple.", "take apple"]
    cascade, small, large = make(lambda c: proposals[c.rollout_id], early_stop=False)
    pred = cascade(question=state(), valid_actions=["look around", "open fridge", "take apple"])
    assert (pred.answer, pred.stage, pred.confidence) == ("take apple", 1, 0.75)
    (vote,) = [e for e in pred.trace if e["kind"] == "vote"]
    answers = [c["answer"] for c in vote["candidates"]]
    assert answers == ["take apple", None, "take apple", "take apple"]
    abstained = vote["candidates"][1]
    assert abstained["extra"]["invalid_action"] == "fly to the moon" and abstained["error"] is None


def test_invalid_proposals_alone_escalate_even_when_they_agree():
    """Four identical invalid proposals are no agreement: the step goes to stage 2."""
    cascade, small, large = make(lambda c: "take the apple" if "Guideline" not in c.plans else "take apple")
    pred = cascade(question=state(), valid_actions=["look around", "open fridge", "take apple"])
    assert (pred.answer, pred.stage) == ("take apple", 2)


def test_escalation_stage_by_stage():
    # stage 1 split, stage 2 agrees: the large model wrote one guideline and no action
    split = ["take apple", "open fridge", "look around", "take apple"]
    cascade, small, large = make(
        lambda c: split[c.rollout_id] if "Guideline" not in c.plans else "take apple"
    )
    pred = cascade(question=state(), valid_actions=["look around", "open fridge", "take apple"])
    assert (pred.answer, pred.stage) == ("take apple", 2)
    assert [c.role for c in large.calls] == ["guideline"]
    assert all(
        "Goal: Get closer to the goal." in c.plans for c in small.by_role("execute") if "Guideline" in c.plans
    )
    # no two proposals agree at either stage: the large model acts, with its guideline, without the small goal
    apart = ["take apple", "open fridge", "look around", "nap"]
    cascade, small, large = make(lambda c: apart[c.rollout_id], large_actions=lambda c: "open fridge")
    pred = cascade(question=state(), valid_actions=["look around", "open fridge", "take apple"])
    assert (pred.answer, pred.stage) == ("open fridge", 3)
    assert [c.role for c in large.calls] == ["guideline", "execute"]
    assert large.by_role("execute")[0].plans == "Guideline: Follow the task's steps in order."  # no goal


def test_the_step_state_lists_valid_actions_and_says_what_is_omitted():
    text = render_state(
        TASK,
        [("look around", "A kitchen."), ("take apple", "Taken.")],
        "Taken.",
        ["open fridge", "eat apple"],
        omitted=3,
    )
    assert "(3 earlier steps omitted; the last 2 shown.)" in text
    assert "4. > look around\nA kitchen." in text and "5. > take apple\nTaken." in text
    assert text.endswith("Valid actions:\n- open fridge\n- eat apple")
    assert "omitted" not in render_state(TASK, [], "Start.", ["open fridge"])
    with_details = render_state(TASK, [], "Taken.", ["open fridge"], details="Inventory: an apple")
    assert "Current observation: Taken.\n\nInventory: an apple\n\nValid actions:" in with_details


def test_act_checks_the_valid_actions_before_any_call():
    cascade, small, large = make(solver)
    with pytest.raises(CopeInputError, match="valid_actions must be a non-empty list"):
        cascade(question=state(), valid_actions=[])
    with pytest.raises(CopeInputError, match="missing input field 'valid_actions'"):
        cascade(question=state())
    assert small.calls == []


# ------------------------------------------------------------------------------------------ episodes


def test_an_episode_solved_by_the_small_model_costs_nothing():
    cascade, small, large = make(solver)
    result = play(cascade, Game(), seed=7, max_steps=10, history=10)
    assert (result.success, result.end, len(result.steps)) == (True, "success", 3)
    assert [s.action for s in result.steps] == SOLUTION
    assert result.exits == {1: 3, 2: 0, 3: 0}
    assert result.first_observation == "You are in the kitchen (game 7)."
    assert result.usage.usd == 0 and large.calls == []


def test_costs_add_up_per_step():
    """Every step escalates to stage 3: two large calls a step (guideline, action), each step billed its own."""
    cascade, small, large = make(
        lambda c: ["look around", "eat apple", "take the apple", "nap"][c.rollout_id]
    )
    result = play(cascade, Game(), max_steps=10, history=10)
    assert result.success and result.exits == {1: 0, 2: 0, 3: 3}
    assert [s.usage.usd for s in result.steps] == pytest.approx([2 * CALL_USD] * 3)
    assert result.usage.usd == pytest.approx(6 * CALL_USD)
    assert (
        result.usage.calls == sum(s.usage.calls for s in result.steps) == len(small.calls) + len(large.calls)
    )
    assert result.to_dict()["usage"]["usd"] == pytest.approx(6 * CALL_USD)


def test_the_step_limit_ends_an_episode():
    cascade, small, large = make(lambda c: "look around")
    result = play(cascade, Game(), max_steps=4)
    assert (result.success, result.end, len(result.steps)) == (False, "step_limit", 4)
    assert all(s.action == "look around" and s.valid for s in result.steps)


def test_a_lost_game_ends_the_episode():
    cascade, small, large = make(lambda c: "eat apple")
    result = play(cascade, Game(), max_steps=10)
    assert (result.success, result.end, len(result.steps)) == (False, "failure", 1)


def test_an_invalid_final_action_is_sent_as_written_and_wastes_the_step():
    cascade, small, large = make(lambda c: "nap", large_actions=lambda c: "take the apple")
    result = play(cascade, Game(), max_steps=2)
    assert [(s.action, s.valid, s.observation) for s in result.steps] == [
        ("take the apple", False, "Unknown action.")
    ] * 2


def test_history_is_bounded_and_the_prompt_says_so():
    cascade, small, large = make(lambda c: "look around")
    play(cascade, Game(), max_steps=5, history=2)
    last = small.by_role("execute")[-1].question
    assert "(2 earlier steps omitted; the last 2 shown.)" in last
    assert "3. > look around" in last and "1. > " not in last


# ------------------------------------------------------------------------------------------ replay


def test_replay_is_exact_with_the_recorded_setting_and_stops_where_an_action_would_differ():
    # stage 1 splits 2-2 on step 0 (the tie goes to the earlier "take apple"); stage 2 agrees on it
    def small_actions(c):
        if "Guideline" in c.plans:
            return SOLUTION[step_of(c)]
        if step_of(c) == 0:
            return ["take apple", "look around", "take apple", "look around"][c.rollout_id]
        return SOLUTION[step_of(c)]

    cascade, small, large = make(small_actions)
    episode = play(cascade, Game(), max_steps=10, history=10, full=True).to_dict()
    assert episode["success"] and episode["exits"] == {1: 2, 2: 1, 3: 0}
    same = replay_episode(json.loads(json.dumps(episode)), tau1=0.75, tau2=0.5)
    assert same["exact"] and same["success"] and same["exits"] == {1: 2, 2: 1, 3: 0}
    # the live cost of step 0: the guideline (stage-2 samples are free); early decision drew no more
    assert same["usd"] == pytest.approx(CALL_USD)
    # with tau1 = 0.5 step 0 exits at stage 1 with the same action: still exact, and free
    cheaper = replay_episode(episode, tau1=0.5, tau2=0.5)
    assert cheaper["exact"] and cheaper["usd"] == 0 and cheaper["exits"] == {1: 3, 2: 0, 3: 0}
    # with stage 2 off the large model acts on step 0; the recorded final action was "take apple" too
    assert replay_episode(episode, stages=(1, 3))["exact"]


def test_replay_reports_the_step_where_another_action_would_have_been_taken():
    def small_actions(c):
        if "Guideline" in c.plans:
            return SOLUTION[step_of(c)]
        return ["look around", "look around", SOLUTION[step_of(c)], SOLUTION[step_of(c)]][c.rollout_id]

    cascade, small, large = make(small_actions)
    episode = play(cascade, Game(), max_steps=10, history=10, full=True).to_dict()
    assert episode["success"] and episode["exits"] == {1: 0, 2: 3, 3: 0}
    # tau1 = 0.5 accepts stage 1's tie, won by "look around": another action, so the game would differ
    diverged = replay_episode(episode, tau1=0.5)
    assert (diverged["exact"], diverged["diverged_at"], diverged["success"]) == (False, 0, None)
    summary = replay_episodes([episode, episode], tau1=0.5)
    assert (summary["exact"], summary["diverged_at"], summary["success_rate_exact"]) == (0, [0, 0], None)


def test_replay_needs_full_traces():
    cascade, small, large = make(solver)
    episode = play(cascade, Game(), max_steps=10).to_dict()
    with pytest.raises(CopeInputError, match="full=True"):
        replay_episode(episode)


# ------------------------------------------------------------------------------------------ harness


def test_harness_plays_each_method_on_each_seed_resumes_and_reports(tmp_path):
    from evals.agent_methods import METHODS, policy
    from evals.agent_run import play_all, write_report

    # the small model solves only when planned; unplanned its proposals split
    def small_actions(c):
        if c.plans:
            return SOLUTION[step_of(c)]
        return ["look around", "take apple", "open fridge", "eat apple"][c.rollout_id or 0]

    cascade, small, large = make(small_actions)
    policies = {m: policy(m, cascade) for m in METHODS}
    envs = queue.Queue()
    for _ in range(2):
        envs.put(Game())
    args = Namespace(max_steps=5, history=5, concurrency=2)
    path = tmp_path / "records.jsonl"
    play_all([(1, m) for m in METHODS], policies, envs, path, args)
    play_all([(2, "COPE")], policies, envs, path, args)  # seed 2 only partly recorded
    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "benchmark": "twc",
                "params": "",
                "fold": "test",
                "small": "scripted/small",
                "large": "scripted/large",
                "n": 4,
                "max_steps": 5,
                "history": 5,
                "methods": list(METHODS),
                "command": "test",
            }
        )
    )
    md = write_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["seeds"] == [1] and summary["episodes_recorded"] == 6 and summary["metric"] == "success rate"
    )
    m = {row["method"]: row for row in summary["methods"]}
    assert m["small alone"]["success_rate"] == 0 and m["small alone"]["steps_mean"] == 5  # "look around" x5
    assert m["small majority"]["success_rate"] == 0
    assert m["large alone"]["success_rate"] == 1
    assert m["large alone"]["usd_per_episode"] == pytest.approx(3 * CALL_USD)
    assert m["MoT-style"]["success_rate"] == 1 and m["MoT-style"]["step_exits"] == {"1": 0, "2": 0, "3": 3}
    assert m["MoT-style"]["usd_per_episode"] == pytest.approx(3 * CALL_USD)
    # COPE: stage 1 (planned, agrees) every step: solved for free
    assert m["COPE"]["success_rate"] == 1 and m["COPE"]["usd_per_episode"] == 0
    assert m["COPE"]["step_exits"] == {"1": 3, "2": 0, "3": 0} and m["COPE"]["cost_vs_large"] == -1
    assert (
        "(small alone 1 (0 solved), small majority 1 (0 solved), large alone 1 (1 solved), MoT-style 1 (1 "
        in md
    )
    assert "COPE 2 (2 solved)); the table holds the 1 seeds every method has played" in md
    assert "| COPE | 100% (" in md and (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert m["large alone"]["usd_per_success"] == pytest.approx(3 * CALL_USD) and m["small alone"]["usd_per_success"] is None
    assert f"per solved episode (the paid methods): large alone {3 * CALL_USD:.6f}, MoT-style" in md  # COPE paid $0


def test_a_large_model_failure_in_cope_wastes_the_step_and_keeps_its_cost():
    from evals.agent_methods import policy

    cascade, small, large = make(lambda c: ["take apple", "open fridge", "look around", "nap"][c.rollout_id])
    large.respond = lambda call: "[[ ## completed ## ]]" if call.role == "execute" else reply(guideline="Go.")
    result = play(policy("COPE", cascade), Game(), max_steps=1)
    (step,) = result.steps
    assert (step.action, step.valid, step.stage) == ("", False, 3)
    assert "large model failed in its large_executor call" in step.trace[0]["error"]
    assert step.usage.usd == pytest.approx(
        2 * CALL_USD
    )  # the guideline and the unreadable action, both billed


def test_in_a_plain_format_the_whole_reply_is_the_action():
    """`Cascade(formats="plain")` asks executors for one text output: the action is its first line."""
    act = Act()
    assert list(act.signature("small_executor", "plain").output_fields) == ["solution"]
    assert list(act.signature("small_executor", "chat").output_fields) == ["answer"]
    assert act.parse("take apple\n(the task says to put it away)", "") == "take apple"
    assert act.parse("", "") is None


def test_every_method_plays_in_plain_text_reading_the_whole_reply_as_the_action():
    """The harness's proposals (small / large alone, majority, MoT-style) and COPE read a plain reply, whose
    whole text is the action (`solution`), not an `answer` field."""
    from evals.agent_methods import METHODS, policy

    def plain_model(name):
        def respond(call):
            if "goal of the next step" in call.system:
                return "Get the apple first."
            if "how to make progress" in call.system:
                return "Take it, open the fridge, put it in."
            return SOLUTION[len(re.findall(r"^\d+\. > ", call.user, re.M))] + "\n"

        return ScriptedLM(name, respond)

    small, large = plain_model("scripted/small"), plain_model("scripted/large")
    cascade = Cascade(small=small.lm, large=large.lm, task=Act(), n=4, formats="plain")
    for method in METHODS:
        result = play(policy(method, cascade), Game(), seed=1, max_steps=5, history=5)
        assert result.success and [s.action for s in result.steps] == SOLUTION, method
    assert all("[[ ##" not in c.system + c.user for c in small.calls + large.calls)


def test_two_recordings_of_different_methods_join_into_one_table(tmp_path):
    from evals.agent_methods import METHODS, policy
    from evals.agent_run import play_all, write_report
    from evals.join import join

    cascade, _, _ = make(lambda c: SOLUTION[step_of(c)])
    policies = {m: policy(m, cascade) for m in METHODS}
    envs = queue.Queue()
    envs.put(Game())
    args = Namespace(max_steps=5, history=5, concurrency=1)
    run = {"benchmark": "twc", "params": "", "fold": "test", "small": "scripted/small", "large": "scripted/large",
           "n": 4, "max_tokens": 64, "max_steps": 5, "history": 5, "prices": {}, "limit": 1, "seeds": [1],
           "command": "test"}
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, methods in ((first, ["small alone", "large alone"]), (second, ["small majority", "MoT-style", "COPE"])):
        folder.mkdir()
        play_all([(1, m) for m in methods], policies, envs, folder / "records.jsonl", args)
        (folder / "run.json").write_text(json.dumps({**run, "methods": methods}))
    assert join(second, first) == 3 and join(second, first) == 0
    assert json.loads((first / "run.json").read_text())["methods"] == list(METHODS)
    write_report(first)
    assert [m["method"] for m in json.loads((first / "summary.json").read_text())["methods"]] == list(METHODS)
    (second / "run.json").write_text(json.dumps({**run, "methods": ["COPE"], "max_steps": 9}))
    with pytest.raises(SystemExit, match="max_steps"):
        join(second, first)


def test_offset_splits_the_seeds_between_two_recordings_and_join_keeps_both(tmp_path):
    from evals.agent_methods import policy
    from evals.agent_run import pick_seeds, play_all
    from evals.join import join

    fold = [20000, 20001, 20002, 20003, 20004]
    assert pick_seeds(fold, 0, 3, "twc", "test") == [20000, 20001, 20002]
    assert pick_seeds(fold, 3, 20, "twc", "test") == [20003, 20004]
    with pytest.raises(SystemExit, match="--offset 5 skips every seed of twc's test fold"):
        pick_seeds(fold, 5, 1, "twc", "test")

    cascade, _, _ = make(lambda c: SOLUTION[step_of(c)])
    policies = {"large alone": policy("large alone", cascade)}
    envs = queue.Queue()
    envs.put(Game())
    args = Namespace(max_steps=5, history=5, concurrency=1)
    run = {"benchmark": "twc", "params": "", "fold": "test", "small": "scripted/small", "large": "scripted/large",
           "n": 4, "max_tokens": 64, "max_steps": 5, "history": 5, "prices": {}, "methods": ["large alone"],
           "command": "test"}
    head, tail = tmp_path / "head", tmp_path / "tail"
    for folder, offset, limit in ((head, 0, 3), (tail, 3, 2)):
        folder.mkdir()
        seeds = pick_seeds(fold, offset, limit, "twc", "test")
        play_all([(s, "large alone") for s in seeds], policies, envs, folder / "records.jsonl", args)
        (folder / "run.json").write_text(json.dumps({**run, "limit": offset + limit, "seeds": seeds}))
    assert join(tail, head) == 2
    joined = json.loads((head / "run.json").read_text())
    assert joined["seeds"] == fold and joined["limit"] == 5  # the shorter list did not replace the longer one


def test_agent_runs_name_their_format_in_the_folder_and_keep_chat_folders_apart(tmp_path):
    from evals.agent_run import build_parser, out_dir
    from evals.folders import AGENT_SETTINGS, check_same_settings
    from evals.run import parse_formats

    assert build_parser().parse_args(["twc"]).format == "chat"  # the recorded folders' format
    args = Namespace(out=None, benchmark="twc", params="numLocations=1", small="org/a", large="b:1", n=4)
    assert out_dir(args, parse_formats("plain")).name == "twc-numLocations1-a+b-1-plain-n4"
    assert out_dir(args, parse_formats("chat")).name == "twc-numLocations1-a+b-1-n4"  # the first recordings' name
    assert out_dir(args, parse_formats("small_executor=plain")).name == "twc-numLocations1-a+b-1-mixed-n4"
    # a folder recorded before the flag existed (no "formats": chat) takes chat episodes, refuses plain ones
    run = {"benchmark": "twc", "params": "", "fold": "test", "small": "a", "large": "b", "n": 4, "max_tokens": 64,
           "max_steps": 5, "history": 5, "prices": {}, "command": "old"}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "records.jsonl").write_text('{"id": "COPE/1"}\n')
    check_same_settings(tmp_path, {**run, "formats": parse_formats("chat")}, keys=AGENT_SETTINGS)
    with pytest.raises(SystemExit, match="formats"):
        check_same_settings(tmp_path, {**run, "formats": parse_formats("plain")}, keys=AGENT_SETTINGS)
