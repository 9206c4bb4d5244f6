"""A real TextWorld-Express game (Java engine) played by a cascade whose scripted models reply with the
game's own solution: the plumbing from the engine's observations to its success flag, end to end."""

import pytest
from fakes import ScriptedLM, reply

from cope_dspy import Cascade, Prices
from cope_dspy.agent import Act
from cope_dspy.episode import play
from cope_dspy.textworld import TextWorldExpress

pytestmark = pytest.mark.integration


class Counting:
    """The game, counting the actions sent so the scripted models know which step they are at."""

    def __init__(self, env):
        self.env, self.sent = env, 0

    def reset(self, seed=None):
        self.sent = 0
        return self.env.reset(seed=seed)

    def step(self, action):
        self.sent += 1
        return self.env.step(action)


@pytest.mark.parametrize("params", ["numLocations=1,numItemsToPutAway=2", ""])
def test_a_twc_game_played_with_its_gold_actions_is_solved(params):
    with TextWorldExpress("twc", params, fold="test") as env:
        seed = env.seeds()[0]
        env.reset(seed=seed)
        gold = env.gold_actions()
        game = Counting(env)

        def respond(call):
            if call.role == "goal":
                return reply(goal="Put the items away.")
            if call.role == "guideline":
                return reply(guideline="Take each item to where it belongs.")
            return reply(answer=gold[game.sent].upper())  # case differs: the vote matches the valid action

        small, large = ScriptedLM("scripted/small", respond), ScriptedLM("scripted/large", respond)
        free = Prices({"scripted/small": (0.0, 0.0), "scripted/large": (0.0, 0.0)})
        cascade = Cascade(small=small.lm, large=large.lm, task=Act(), n=2, prices=free)
        result = play(cascade, game, seed=seed, max_steps=len(gold) + 5, history=3)
    assert (result.success, result.end) == (True, "success")
    # the game can be won before the gold sequence's last move (default twc ends it with a move back)
    assert [s.action for s in result.steps] == gold[: len(result.steps)] and len(result.steps) >= len(
        gold
    ) - 2
    assert all(s.valid and s.stage == 1 for s in result.steps)
    assert result.score == 1.0 and large.calls == []
