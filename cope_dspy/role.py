"""Role: one of the cascade's four predictors, pinned to its model through everything DSPy's optimizers do.

DSPy's `Predict.reset()` (called by `reset_copy()` in BootstrapFewShot, MIPROv2, GEPA) sets `lm = None`, and
`Predict.load_state` replaces the pinned LM with one rebuilt from the file, without its endpoint. A cascade
routes each role to a different model, so a role keeps the LM it was pinned to: reset clears what an
optimizer learns (demos, traces), loading keeps a pinned LM (a file only supplies one where none is pinned),
a deep copy keeps the LM's key in memory, and a pickle never holds it.
"""

from __future__ import annotations

import copy
import logging

import dspy
from dspy.clients.base_lm import BaseLM
from dspy.predict.predict import UNSAFE_LM_STATE_KEYS

from .errors import CopeInputError

logger = logging.getLogger(__name__)

# The cascade's four roles, planners first; each pair is (small model's, large model's).
ROLES = ("goal_planner", "guideline_planner", "small_executor", "large_executor")
SMALL_ROLES = ROLES[0::2]  # goal_planner, small_executor
LARGE_ROLES = ROLES[1::2]  # guideline_planner, large_executor


def unplanned(predictor: dspy.Predict) -> dspy.Predict:
    """An executor without its `plans` input: the same instructions, format and LM, its demos without their
    plans. A model answering alone: the baselines (small and large), stage 3 with `stage3_plans=False` and stage
    1 with `stage1_plans=False` (one builder, so a baseline and the stage make the same call)."""
    alone = dspy.Predict(predictor.signature.delete("plans"))
    alone.lm = predictor.lm
    alone.demos = [{k: v for k, v in dict(d).items() if k != "plans"} for d in predictor.demos]
    return alone


class Role(dspy.Predict):
    """A `dspy.Predict` whose pinned LM survives `reset`, `deepcopy` and `load_state`."""

    def reset(self):
        lm = getattr(self, "lm", None)
        super().reset()
        self.lm = lm

    def load_state(self, state: dict, *, allow_unsafe_lm_state: bool = False) -> Role:
        pinned = getattr(self, "lm", None)
        saved = state.get("lm") or None
        unsafe = sorted(UNSAFE_LM_STATE_KEYS.intersection(saved or {}))
        # DSPy would rebuild the LM from the file (its endpoint dropped unless trusted): we do that only
        # where nothing is pinned and the file's LM is complete, so no role quietly talks to a default endpoint.
        super().load_state({**state, "lm": None}, allow_unsafe_lm_state=allow_unsafe_lm_state)
        self.unloaded_lm = None
        if pinned is not None:
            self.lm = pinned
            if saved and saved.get("model") != getattr(pinned, "model", None):
                logger.info(
                    "the saved program's %s used %s; keeping the pinned %s",
                    self.signature.__name__,
                    saved.get("model"),
                    pinned.model,
                )
        elif saved and (not unsafe or allow_unsafe_lm_state):
            self.lm = BaseLM.load_state(saved, allow_custom_lm_class=allow_unsafe_lm_state)
        elif saved:
            self.unloaded_lm = {"model": saved.get("model"), "dropped": unsafe}
        return self

    def require_lm(self, role: str, which: str) -> None:
        """Raise, naming the fix, when this role has no LM to call: neither pinned nor configured, or the
        loaded program's LM could not be restored (`which`: "small" or "large")."""
        unloaded = getattr(self, "unloaded_lm", None)
        if self.lm is None and unloaded:
            raise CopeInputError(
                f"the cascade has no {which} model for its {role}: the loaded program names "
                f"{unloaded['model']!r} with {', '.join(unloaded['dropped'])}, which DSPy does not restore "
                f"from a file. Pass the model when loading: cascade.load(path, {which}=dspy.LM("
                f"{unloaded['model']!r}, api_base=...)), or build Cascade({which}=...) and load into it "
                "(load(path, allow_unsafe_lm_state=True) restores it from a file you trust)"
            )
        if self.lm is None and dspy.settings.lm is None:
            raise CopeInputError(
                f"the cascade has no {which} model for its {role}: pass Cascade({which}=dspy.LM(...)), "
                f"cascade.load(path, {which}=dspy.LM(...)) or dspy.configure(lm=...)"
            )

    def __getstate__(self):
        """Pickled (e.g. `save(..., save_program=True)`), the LM leaves out its api_key, as DSPy's JSON state
        does: after loading, the provider's environment variable supplies it (or pin the LM again)."""
        state = super().__getstate__()
        lm = state.get("lm")
        if lm is not None and "api_key" in (getattr(lm, "kwargs", None) or {}):
            lm = copy.copy(lm)
            lm.kwargs = {k: v for k, v in lm.kwargs.items() if k != "api_key"}
            state["lm"] = lm
        return state

    def __deepcopy__(self, memo):
        """An in-memory copy (optimizers copy teacher and student) keeps the key: only pickles drop it."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(dspy.Predict.__getstate__(self), memo))
        return new
