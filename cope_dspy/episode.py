"""Playing a whole text game with a policy (a `Cascade` with the `Act` task, or any module answering the
same call), one action a step, and replaying recorded episodes under other thresholds.

    from cope_dspy import Cascade
    from cope_dspy.agent import Act
    from cope_dspy.episode import play
    from cope_dspy.textworld import TextWorldExpress

    with TextWorldExpress("twc", "numLocations=1,numItemsToPutAway=2") as env:
        result = play(Cascade(small=..., large=..., task=Act()), env, seed=20000, max_steps=20)
    result.success, len(result.steps), result.exits, result.usage.usd
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .agent import match_action, render_state
from .costs import Usage
from .errors import CopeInputError


@dataclass(frozen=True)
class Observation:
    """What the game shows after a reset or a step."""

    text: str
    valid_actions: list[str]
    task: str
    done: bool = False  # the game ended: solved, or failed for good
    success: bool = False
    score: float = 0.0
    # where the agent is and what it carries (TextWorld-Express: the room's description and the inventory),
    # shown for the current step only: the observation after "take apple" is just "You take the apple."
    details: str = ""


class Environment(Protocol):
    def reset(self, seed: int | None = None) -> Observation: ...
    def step(self, action: str) -> Observation: ...


@dataclass
class Step:
    """One action: what the policy chose, whether it was a valid action, the stage that decided it (None for
    a policy without stages), its confidence, what the step cost, the policy's trace, and what the game
    answered."""

    index: int
    valid_actions: list[str]
    action: str
    valid: bool
    stage: int | None
    confidence: float | None
    usage: Usage
    observation: str
    score: float
    trace: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usage": self.usage.to_dict()}


@dataclass
class EpisodeResult:
    """A played game: success, the final score, why it ended ("success", "failure" or "step_limit"), the
    first observation and every step."""

    success: bool
    score: float
    end: str
    task: str
    first_observation: str
    steps: list[Step] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        return sum((s.usage for s in self.steps), Usage())

    @property
    def exits(self) -> dict[int, int]:
        """How many steps each stage decided."""
        return {stage: sum(s.stage == stage for s in self.steps) for stage in (1, 2, 3)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "score": self.score,
            "end": self.end,
            "task": self.task,
            "first_observation": self.first_observation,
            "n_steps": len(self.steps),
            "exits": self.exits,
            "usage": self.usage.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
        }


def play(
    policy,
    env: Environment,
    *,
    seed: int | None = None,
    max_steps: int = 30,
    history: int = 5,
    full: bool = False,
) -> EpisodeResult:
    """Play one game: at each step ask `policy(question=<the step's state>, valid_actions=[...])` for an
    action and send it to the game, until the game ends or `max_steps` actions were taken.

    The state shows the last `history` steps and says how many earlier ones it leaves out. A reply that
    names a valid action is sent as the game spells it; any other reply is sent as written (the game answers
    it as an unknown action, and the step counts). `full` calls `policy.record` (a `Cascade`'s: every stage
    in full) so `replay_episode` can re-decide the steps offline.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise CopeInputError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if isinstance(history, bool) or not isinstance(history, int) or history < 0:
        raise CopeInputError(f"history must be an integer >= 0 (steps shown to the model), got {history!r}")
    ask = policy.record if full else policy
    obs = env.reset(seed=seed)
    first = obs
    shown: list[tuple[str, str]] = []
    steps: list[Step] = []
    while not obs.done and len(steps) < max_steps:
        recent = shown[len(shown) - history :] if history else []
        question = render_state(
            obs.task,
            recent,
            obs.text,
            obs.valid_actions,
            omitted=len(shown) - len(recent),
            details=obs.details,
        )
        pred = ask(question=question, valid_actions=list(obs.valid_actions))
        action = match_action(pred.answer, obs.valid_actions)
        sent = action if action is not None else (pred.answer or "")
        after = env.step(sent)
        steps.append(
            Step(
                index=len(steps),
                valid_actions=list(obs.valid_actions),
                action=sent,
                valid=action is not None,
                stage=pred.get("stage"),
                confidence=pred.get("confidence"),
                usage=pred.get("cost") or Usage(),
                observation=after.text,
                score=after.score,
                trace=pred.get("trace"),
            )
        )
        shown.append((sent, after.text))
        obs = after
    end = "success" if obs.success else "failure" if obs.done else "step_limit"
    return EpisodeResult(
        success=obs.success,
        score=obs.score,
        end=end,
        task=first.task,
        first_observation=first.text,
        steps=steps,
    )


def replay_episode(
    episode: dict[str, Any],
    tau1: float = 0.75,
    tau2: float = 0.5,
    n: int | None = None,
    stages: tuple[int, ...] | None = None,
    early_stop: bool = True,
) -> dict[str, Any]:
    """Re-decide a recorded episode (`play(..., full=True)`, as a dict) step by step with other thresholds,
    with no LM call.

    Exact while the re-decided action equals the one played: a step's decision and cost come from its
    recorded samples through the cascade's own ballot (`cope_dspy.replay`). At the first step where
    another action would be chosen, the game would answer differently and every later step is unknown: the
    result says `exact: False` and where it diverged, with the cost up to and including that step. (Within a
    step, stage-2 samples were recorded with the goal behind the majority of all n stage-1 samples; with
    early decision or a smaller n a live run may pass on another goal: see `cope_dspy.replay`.)
    """
    from .records import FORMAT, Records
    from .replay import replay

    steps = episode["steps"]
    if not steps:
        return {
            "exact": True,
            "success": episode["success"],
            "usd": 0.0,
            "steps": 0,
            "exits": {1: 0, 2: 0, 3: 0},
            "diverged_at": None,
        }
    items = []
    for step in steps:
        trace = step.get("trace") or []
        votes = [e for e in trace if e["kind"] == "vote"]
        if not votes or not any(e["kind"] == "final" for e in trace):
            raise CopeInputError(
                f"step {step['index']} has no full cascade trace: replay needs an episode played "
                "with play(cascade, env, full=True)"
            )
        policy = {"n": len(votes[0]["candidates"]), "stages": [1, 2, 3], "task": "act", "variant": "episode"}
        items.append(
            {
                "format": FORMAT,
                "id": str(step["index"]),
                "variant": "episode",
                "policy": policy,
                "trace": trace,
            }
        )
    rows = replay(Records(items), tau1, tau2, n, stages, early_stop, same=_same).per_example
    usd, exits = 0.0, {1: 0, 2: 0, 3: 0}
    for step, row in zip(steps, rows, strict=True):
        usd += row["usd"]
        exits[row["stage"]] += 1
        action = match_action(row["answer"], step["valid_actions"]) or row["answer"] or ""
        if action != step["action"]:
            return {
                "exact": False,
                "success": None,
                "usd": usd,
                "steps": step["index"] + 1,
                "exits": exits,
                "diverged_at": step["index"],
            }
    return {
        "exact": True,
        "success": episode["success"],
        "usd": usd,
        "steps": len(steps),
        "exits": exits,
        "diverged_at": None,
    }


def replay_episodes(episodes: Sequence[dict[str, Any]], **settings) -> dict[str, Any]:
    """`replay_episode` over many episodes: how many replay exactly, and success and cost over those only
    (a biased subset: episodes whose actions the setting would not change)."""
    results = [replay_episode(e, **settings) for e in episodes]
    exact = [r for r in results if r["exact"]]
    return {
        "episodes": len(results),
        "exact": len(exact),
        "success_rate_exact": sum(r["success"] for r in exact) / len(exact) if exact else None,
        "usd_per_episode_exact": sum(r["usd"] for r in exact) / len(exact) if exact else None,
        "diverged_at": [r["diverged_at"] for r in results if not r["exact"]],
        "per_episode": results,
    }


def _same(a: str, b: str) -> bool:
    return a == b
