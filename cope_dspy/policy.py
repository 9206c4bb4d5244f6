"""The settings that decide when a cascade escalates: n, tau1, tau2, stages and temperatures; the format
each role is asked in; and whether stage 1 plans goals and stage 3 passes the plans to the large model.

A `Policy` is a DSPy `Parameter`, so `Cascade.save` / `load` keep it, also when the cascade sits
inside a larger program.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

from dspy.predict.parameter import Parameter

from .errors import CopeInputError
from .plain import check_formats
from .role import ROLES


@dataclass(frozen=True)
class Temperatures:
    """Sampling temperatures per role and stage; defaults are the paper's."""

    goal: float = 0.8  # stage 1: small model writes n goals
    stage1_executor: float = 0.4  # stage 1: small model solves once per goal
    guideline: float = 0.8  # stage 2: large model writes one guideline
    stage2_executor: float = 0.8  # stage 2: small model solves n times with goal + guideline
    large_executor: float = 0.0  # stage 3: large model solves once, greedy

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 2:
                raise CopeInputError(f"temperatures.{name} must be a number in [0, 2], got {value!r}")


def check_tau(name: str, tau) -> float:
    if not isinstance(tau, numbers.Real) or isinstance(tau, bool) or not 0.0 <= float(tau) <= 1.0:
        raise CopeInputError(
            f"{name} must be a number in [0, 1] (agreement needed to accept; 0 = always accept, "
            f"1 = always escalate), got {tau!r}"
        )
    return float(tau)


def check_n(n) -> int:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise CopeInputError(f"n must be an integer >= 1 (samples per stage), got {n!r}")
    return int(n)


def check_stages(stages) -> tuple[int, ...]:
    try:
        values = tuple(stages)
    except TypeError:
        values = None
    if not values or any(s not in (1, 2, 3) for s in values) or len(set(values)) != len(values):
        raise CopeInputError(f"stages must be a non-empty subset of (1, 2, 3) without repeats, got {stages!r}")
    return tuple(sorted(values))


@dataclass
class Policy(Parameter):
    n: int = 8
    tau1: float = 0.75
    tau2: float = 0.5
    stages: tuple[int, ...] = (1, 2, 3)
    temperatures: Temperatures = field(default_factory=Temperatures)
    formats: dict[str, str] = field(default_factory=dict)  # role -> "plain" / "paragraph" / "block"; others "chat"
    stage3_plans: bool = True  # False: stage 3 is the large model answering alone (not the paper's)
    stage1_plans: bool = True  # False: stage 1's small samples answer without goals (not the paper's)

    def __post_init__(self):
        self.n = check_n(self.n)
        self.tau1 = check_tau("tau1", self.tau1)
        self.tau2 = check_tau("tau2", self.tau2)
        self.stages = check_stages(self.stages)
        if not isinstance(self.temperatures, Temperatures):
            raise CopeInputError(f"temperatures must be a cope_dspy.Temperatures, got {self.temperatures!r}")
        self.formats = check_formats(self.formats, ROLES)
        if not isinstance(self.stage3_plans, bool):
            raise CopeInputError(f"stage3_plans must be True (the paper's stage 3: the large model executes its "
                                 f"own guideline) or False (it answers alone), got {self.stage3_plans!r}")
        if not isinstance(self.stage1_plans, bool):
            raise CopeInputError(f"stage1_plans must be True (the paper's stage 1: the small model writes a goal per "
                                 f"sample) or False (its samples answer alone), got {self.stage1_plans!r}")

    def format(self, role: str) -> str:
        return self.formats.get(role, "chat")

    def reset(self) -> None:
        """Kept as is: DSPy's `reset_copy()` (every optimizer's student) resets each Parameter to forget what
        was learned from data (demos); the thresholds are the user's settings, not learned demos."""

    def dump_state(self, json_mode: bool = True) -> dict:
        return {
            "n": self.n,
            "tau1": self.tau1,
            "tau2": self.tau2,
            "stages": list(self.stages),
            "temperatures": asdict(self.temperatures),
            "formats": dict(self.formats),
            "stage3_plans": self.stage3_plans,
            "stage1_plans": self.stage1_plans,
        }

    def load_state(self, state: dict) -> Policy:
        loaded = Policy(
            n=state["n"],
            tau1=state["tau1"],
            tau2=state["tau2"],
            stages=tuple(state["stages"]),
            temperatures=Temperatures(**state.get("temperatures", {})),
            formats=state.get("formats", {}),  # programs saved before formats existed: every role "chat"
            stage3_plans=state.get("stage3_plans", True),  # and before this option: the paper's stage 3
            stage1_plans=state.get("stage1_plans", True),  # and the paper's stage 1
        )
        self.__dict__.update(loaded.__dict__)
        return self


def check_role_max_tokens(caps) -> dict[str, int]:
    """Per-role caps on reply length (`Cascade(max_tokens=...)`), checked: role -> integer >= 1."""
    if caps is None:
        return {}
    if not isinstance(caps, dict):
        raise CopeInputError(f"max_tokens must be a dict of role -> tokens, e.g. {{'guideline_planner': 128}}, "
                             f"got {caps!r}")
    for role, cap in caps.items():
        if role not in ROLES:
            raise CopeInputError(f"max_tokens: unknown role {role!r}; roles are {list(ROLES)}")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise CopeInputError(f"max_tokens[{role!r}] must be an integer >= 1, got {cap!r}")
    return dict(caps)
