"""Cascade: COPE's three stages as a DSPy module (small plans and executes; large plans, small executes;
large plans and executes), escalating only when a stage is not confident enough."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import dspy

from . import runner
from .adapter import LenientChatAdapter
from .consensus import Candidate, Decision
from .costs import Budget, CostTracker, Prices, tag
from .errors import BudgetExceeded, CopeError, CopeInputError, LargeModelError
from .failures import (
    FailureGuard,
    ask_again_or_raise,
    check_guard,
    large_model_errors,
    small_model_failed,
)
from .plain import adapter_for
from .policy import Policy, Temperatures, check_role_max_tokens
from .redact import redact
from .role import LARGE_ROLES, ROLES, SMALL_ROLES, Role, unplanned
from .signatures import format_plans
from .tasks import Math, Task


class Cascade(dspy.Module):
    """COPE (arXiv 2506.11578): a small model and a large model take turns as planner and executor.

    | stage | planner                    | executor                      | accept when            |
    |-------|----------------------------|-------------------------------|------------------------|
    | 1     | small writes n goals       | small, one solution per goal  | agreement >= tau1      |
    | 2     | large writes one guideline | small, n solutions (g_S, g_L) | agreement >= tau2      |
    | 3     | large reuses its guideline | large, one greedy solution    | always                 |

    Only plans cross stages, never answers. `stage3_plans=False` departs from the paper: stage 3 is the large
    model answering the question alone, as a MoT-style cascade escalates; `stage1_plans=False` too: stage 1's
    small samples answer without goals, as a MoT-style cascade's first stage samples. Example::

        import dspy
        from cope_dspy import Cascade, Math
        from cope_dspy.models import ollama, api

        cascade = Cascade(small=ollama("qwen2.5:1.5b"), large=api("openai/gpt-4o-mini"), task=Math())
        pred = cascade(question="What is 1/2 + 1/4?")
        print(pred.answer, pred.stage, pred.confidence, pred.cost)

    Args:
        small, large: the two `dspy.LM`s; each role's predictor is pinned to its LM with `set_lm`.
        task: how to ask, read and judge answers (`Math()` by default).
        n: samples in stages 1 and 2. tau1, tau2: agreement needed to accept stage 1 / 2, in [0, 1];
            0 always accepts, 1 always escalates.
        stages: which stages run, e.g. (1, 2) stops after stage 2, (2, 3) skips stage 1. The last one
            listed always answers. A call the task can accept nothing on (`Code` with `tests=[]`) goes
            straight to stage 3 when stage 3 runs: stages 1 and 2 could only escalate (`record` still runs them).
        temperatures: per role, the paper's by default. early_stop: stop drawing samples once a vote is
            decided (same decision, fewer calls). max_concurrency: samples in flight at once
            (default: a whole wave). budget: a `Budget` capping paid spend across calls. prices: `Prices`
            for the cost figures. adapter: DSPy adapter (default: `LenientChatAdapter`).
        max_tokens: per-role caps on reply length that override the LM's own `max_tokens` for that role's
            calls, e.g. `{"guideline_planner": 128}`: the paid model's guideline is asked for in one or two
            sentences, but a model that writes a full solution instead is billed for all of it. A planner
            cut off at its cap passes on the text it wrote; an executor cut off abstains. Not saved with the
            program (like `budget` and `prices`): pass it again when you rebuild the cascade.
        guard: stops the run when the small model keeps failing (`FailureGuard`: more than half of its last 8
            calls failed, by default) instead of sending every question to the large model; False turns it off.
            A small model that cannot be used at all (unknown name, not pulled, server down, key refused)
            raises SmallModelError at its first call, guard or not (see `cope_dspy.failures`).
        formats: the format each role is asked in: "chat" (DSPy's field markers, a `solution` and an
            `answer` field: the default), "plain" (`PlainAdapter`: free text ending with `\\boxed{}` or a code
            block, the paper's prompt style, which small models follow far better), "paragraph" (plain,
            and the reply ends at its first blank line: for planners) or "block" (plain, and the reply ends
            where its first code block closes: for code executors, whose task reads only the code). One name
            for every role, or a dict,
            e.g. `{"small_executor": "plain", "goal_planner": "plain"}`. Saved with the program (in `policy`).
        stage3_plans: True (the paper): stage 3's large executor gets the large model's guideline. False: it
            answers the question alone, the same call as the large model alone (no goal, no guideline; with
            stages (1, 3) no guideline is written at all). For pairs where the plans make the large model
            worse (measured in evals/README.md); `calibrate(..., stage3_plans=(True, False))` chooses it from
            records. Saved with the program (in `policy`).
        stage1_plans: True (the paper): stage 1 asks the small model for a goal per sample, then a solution
            following it. False: stage 1's samples are the small executor answering the question alone, at
            `temperatures.stage2_executor` (the MoT-style cascade's first stage, and the call records' unplanned
            baseline samples make, so `replay(..., stage1_plans=False)` reads them); stage 2's samples then get
            the guideline only. For pairs where the small model's goals mislead it (measured in
            evals/README.md, "Stage 1 without goals"). Saved with the program (in `policy`).
    """

    def __init__(
        self,
        small: dspy.BaseLM | None = None,
        large: dspy.BaseLM | None = None,
        task: Task | None = None,
        *,
        n: int = 8,
        tau1: float = 0.75,
        tau2: float = 0.5,
        stages: tuple[int, ...] = (1, 2, 3),
        temperatures: Temperatures | None = None,
        early_stop: bool = True,
        max_concurrency: int | None = None,
        budget: Budget | None = None,
        prices: Prices | None = None,
        adapter: dspy.Adapter | None = None,
        max_tokens: dict[str, int] | None = None,
        guard: FailureGuard | bool = True,
        formats: str | dict[str, str] | None = None,
        stage3_plans: bool = True,
        stage1_plans: bool = True,
    ):
        super().__init__()
        for name, lm in (("small", small), ("large", large)):
            if lm is not None and not isinstance(lm, dspy.BaseLM):
                raise CopeInputError(f"{name} must be a dspy.LM (e.g. cope_dspy.models.ollama(...)), got {lm!r}")
        for name, value, kind, what in (
            ("task", task, Task, "a cope_dspy Task such as Math() or ExactMatch()"),
            ("budget", budget, Budget, "a cope_dspy.Budget"),
            ("prices", prices, Prices, "a cope_dspy.Prices (e.g. Prices.from_file(path))"),
            ("adapter", adapter, dspy.Adapter, "a dspy.Adapter such as dspy.ChatAdapter()"),
        ):
            if value is not None and not isinstance(value, kind):
                raise CopeInputError(f"{name} must be {what}, got {value!r}")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise CopeInputError(f"max_concurrency must be an integer >= 1 or None, got {max_concurrency!r}")
        if not isinstance(early_stop, (bool, int)):
            raise CopeInputError(f"early_stop must be True or False, got {early_stop!r}")
        self.role_max_tokens = check_role_max_tokens(max_tokens)
        self.task = task or Math()
        self.task.check_lms(small, large)
        self.policy = Policy(n=n, tau1=tau1, tau2=tau2, stages=stages, temperatures=temperatures or Temperatures(),
                             formats=formats, stage3_plans=stage3_plans, stage1_plans=stage1_plans)
        f = self.policy.format
        for role in ROLES:  # goal_planner, guideline_planner, small_executor, large_executor
            setattr(self, role, Role(self.task.signature(role, f(role))))
            lm = small if role in SMALL_ROLES else large
            if lm is not None:
                getattr(self, role).set_lm(lm)
        self.early_stop = bool(early_stop)
        self.max_concurrency = max_concurrency
        self.budget = budget
        self.prices = prices or Prices()
        self.adapter = adapter or LenientChatAdapter()
        self.guard = check_guard(guard)

    # The policy's fields, readable and settable on the cascade itself (validated on set).
    n = property(lambda self: self.policy.n, lambda self, v: self._set_policy(n=v))
    tau1 = property(lambda self: self.policy.tau1, lambda self, v: self._set_policy(tau1=v))
    tau2 = property(lambda self: self.policy.tau2, lambda self, v: self._set_policy(tau2=v))
    stages = property(lambda self: self.policy.stages, lambda self, v: self._set_policy(stages=v))
    stage3_plans = property(lambda self: self.policy.stage3_plans, lambda self, v: self._set_policy(stage3_plans=v))
    stage1_plans = property(lambda self: self.policy.stage1_plans, lambda self, v: self._set_policy(stage1_plans=v))

    @property
    def formats(self) -> dict[str, str]:
        """Each role's format (one of `cope_dspy.plain.FORMATS`)."""
        return {role: self.policy.format(role) for role in ROLES}

    def adapter_for(self, role: str) -> dspy.Adapter:
        """The adapter a role's calls go through: its format's, or the cascade's `adapter` for "chat"."""
        name = self.policy.format(role)
        return self.adapter if name == "chat" else adapter_for(name)

    def _set_policy(self, **changes) -> None:
        state = {**self.policy.dump_state(), **changes}
        self.policy.load_state(state)

    def load(self, path, *, small: dspy.BaseLM | None = None, large: dspy.BaseLM | None = None, **kwargs):
        """Load a saved program's demos, instructions and policy. The LMs this cascade was built with (or
        `small` / `large` given here) are kept; a file supplies a role's LM only where none is pinned and
        the file's LM is complete (DSPy drops saved endpoints unless `allow_unsafe_lm_state=True`)."""
        for role in SMALL_ROLES if small is not None else ():
            getattr(self, role).set_lm(small)
        for role in LARGE_ROLES if large is not None else ():
            getattr(self, role).set_lm(large)
        return super().load(path, **kwargs)

    def get_lm(self):
        raise CopeError(
            "a Cascade has no single LM: its roles are pinned to a small and a large model, so wrappers that "
            "resample one LM (dspy.BestOfN, dspy.Refine, dspy.SIMBA call get_lm() and set_lm()) would route "
            "every role to one model. Use the cascade's own samples instead (Cascade(n=..., tau1=..., tau2=...)), "
            "and tune its prompts with dspy.BootstrapFewShot, dspy.MIPROv2 or dspy.GEPA."
        )

    # ---------------------------------------------------------------- entry points

    def forward(self, **inputs) -> dspy.Prediction:
        tracker = self._begin(inputs)
        with self._context(tracker):
            return self._finish(runner.run(self._protocol(inputs, tracker), self._prepare, self.max_concurrency),
                                tracker)

    async def aforward(self, **inputs) -> dspy.Prediction:
        tracker = self._begin(inputs)
        with self._context(tracker):
            return self._finish(await runner.arun(self._protocol(inputs, tracker), self._prepare,
                                                  self.max_concurrency), tracker)

    def record(self, **inputs) -> dspy.Prediction:
        """Run every stage in full (all n samples of stages 1 and 2, then stage 3) whatever the votes say.
        The prediction is the one a live run without early stopping returns; the trace holds everything,
        with each sample's cost: what calibration replays offline."""
        tracker = self._begin(inputs)
        with self._context(tracker):
            return self._finish(runner.run(self._protocol(inputs, tracker, full=True), self._prepare,
                                           self.max_concurrency), tracker)

    def _begin(self, inputs: dict[str, Any]) -> CostTracker:
        self.task.check_inputs(inputs)
        for role in _roles(self.policy.stages, self.policy.stage3_plans, self.policy.stage1_plans):
            getattr(self, role).require_lm(role, "small" if role in SMALL_ROLES else "large")
        return CostTracker(prices=self.prices, budget=self.budget)

    @contextlib.contextmanager
    def _context(self, tracker: CostTracker):
        """The cascade's adapter and tracker for one run. A run that ends in one of our errors (a budget
        refusal, a failed large model) still paid for its calls: the error carries them as `error.cost`
        (a Usage) and `error.cost_by_model`, so a caller such as the server can bill them."""
        guard = [self.guard] if self.guard is not None else []  # it counts the small model's failed calls
        with dspy.context(adapter=self.adapter, callbacks=[*dspy.settings.callbacks, tracker, *guard]):
            try:
                yield
            except CopeError as exc:
                exc.cost, exc.cost_by_model = tracker.usage(), tracker.by_model()
                raise

    @staticmethod
    def _finish(pred: dspy.Prediction, tracker: CostTracker) -> dspy.Prediction:
        pred.cost = tracker.usage()
        pred.cost_by_stage = tracker.by_stage()
        pred.cost_by_model = tracker.by_model()
        return pred

    # ---------------------------------------------------------------- the protocol

    def _protocol(self, inputs: dict[str, Any], tracker: CostTracker, full: bool = False) -> runner.Protocol:
        """The paper's three stages, top to bottom. Yields waves of jobs for `runner` and receives their
        results. `full` records every stage whatever the votes say."""
        p = self.policy
        question = inputs[self.task.input_field]
        trace: list[dict[str, Any]] = []
        goal = guideline = None
        result = None  # what a live run returns: the first accepting stage, or the last stage run
        last: Decision | None = None
        # a call with nothing to accept a candidate on (code with no tests): stages 1 and 2 could only escalate
        unacceptable = not full and p.stages[-1] == 3 and not self.task.can_accept(inputs)
        skip = tuple(s for s in p.stages if s < 3) if unacceptable else ()
        if skip:
            trace.append({"kind": "skipped", "stages": list(skip),
                          "reason": f"the {self.task.name} task has nothing to accept a candidate on in this call"})
        try:
            if 1 in p.stages and 1 not in skip:
                last = yield from self._vote(1, p.tau1, inputs, full, tracker, lambda i: self._stage1(question, i))
                goal = goal_behind(last)
                trace.append(last.to_record(1, p.tau1))
                if last.accepted or p.stages[-1] == 1:
                    result = _prediction(last, 1, trace, goal)
                    if not full or p.stages[-1] == 1:
                        return result
            if (2 in p.stages and 2 not in skip) or (3 in p.stages and p.stage3_plans):
                stage = 2 if 2 in p.stages and 2 not in skip else 3
                ((guideline, usage, seconds),) = yield [self._metered(self._guideline(question, stage), tracker,
                                                                      stage=stage, role="guideline_planner")]
                trace.append({"kind": "guideline", "stage": stage, "guideline": guideline, "usage": usage,
                              "seconds": seconds})
            if 2 in p.stages and 2 not in skip:
                d = yield from self._vote(2, p.tau2, inputs, full, tracker,
                                          lambda i: self._stage2(question, goal, guideline, i))
                trace.append(d.to_record(2, p.tau2))
                if result is None:
                    last = d
                    if d.accepted or p.stages[-1] == 2:
                        result = _prediction(d, 2, trace, goal, guideline)
                if result is not None and (not full or p.stages[-1] == 2):
                    return result
            (final,) = yield [self._metered(self._stage3(question, guideline), tracker, stage=3, sample=0)]
            # a reply with no readable answer (cut off, wrong format) is kept, raw, but never accepted
            trace.append({"kind": "final", "stage": 3, "accepted": final.answer is not None, "answer": final.answer,
                          "candidates": [final.to_dict()]})
            return result or dspy.Prediction(
                answer=final.answer, solution=final.solution, stage=3, confidence=None,
                accepted=final.answer is not None,
                plans=_plans(goal, guideline), trace=trace, budget_limited=False,
            )
        except BudgetExceeded:
            if self.budget is None or self.budget.on_exceed != "fallback" or last is None:
                raise
            fallback = _prediction(last, [t for t in trace if t["kind"] == "vote"][-1]["stage"], trace, goal, guideline)
            fallback.budget_limited = True
            return fallback

    def _vote(self, stage: int, tau: float, inputs, full: bool, tracker: CostTracker, sample):
        """Draw samples in waves until the stage's ballot is decided (all n when recording)."""
        ballot = self.task.consensus().ballot(self.policy.n, tau, self.task.same, inputs, early_stop=self.early_stop and not full)
        drawn = 0
        while k := ballot.wave():
            ballot.add((yield [self._metered(self._abstaining(sample(i), i), tracker, stage=stage, sample=i)
                               for i in range(drawn, drawn + k)]))
            drawn += k
        decision = ballot.decision()
        if decision.candidates and all(c.error for c in decision.candidates):
            warnings.warn(
                f"every sample of stage {stage} failed (first error: {decision.candidates[0].error}); the stage "
                "escalates. Each failure is in the trace (pred.trace, the candidates' 'error').",
                RuntimeWarning,
                stacklevel=2,
            )
        return decision

    # ---------------------------------------------------------------- jobs: one sample or plan each

    def _stage1(self, question: str, i: int) -> runner.Job:
        t = self.policy.temperatures
        if not self.policy.stage1_plans:  # the small model alone (`_prepare` drops the plans input)
            return self._candidate(i, (yield self._ask("small_executor", 1, i, t.stage2_executor, question=question)))
        goal = (yield self._ask("goal_planner", 1, i, t.goal, question=question)).goal
        out = yield self._ask("small_executor", 1, i, t.stage1_executor, question=question,
                              plans=format_plans(goal=goal))
        return self._candidate(i, out, goal=goal)

    def _stage2(self, question: str, goal: str | None, guideline: str, i: int) -> runner.Job:
        out = yield self._ask("small_executor", 2, i, self.policy.temperatures.stage2_executor, question=question,
                              plans=format_plans(goal, guideline))
        return self._candidate(i, out, goal, guideline)

    def _guideline(self, question: str, stage: int) -> runner.Job:
        """The large model's guideline. A sampled guideline whose reply holds nothing readable (empty, or only
        blank lines and format markers) is asked for once more, a fresh sample with its own cache entry,
        both calls counted; a second unreadable reply raises LargeModelError, as any other failure does."""
        t = self.policy.temperatures.guideline
        try:
            return (yield self._ask("guideline_planner", stage, None, t, question=question)).guideline
        except LargeModelError as exc:
            ask_again_or_raise(exc, t)
        return (yield self._ask("guideline_planner", stage, None, t, rollout=1, question=question)).guideline

    def _stage3(self, question: str, guideline: str | None) -> runner.Job:
        t = self.policy.temperatures.large_executor
        if not self.policy.stage3_plans:  # the large model alone (`_prepare` drops the plans input)
            return self._candidate(0, (yield self._ask("large_executor", 3, 0, t, rollout=None, question=question)))
        out = yield self._ask("large_executor", 3, 0, t, rollout=None, question=question,
                              plans=format_plans(guideline=guideline))
        return self._candidate(0, out, guideline=guideline)

    def _abstaining(self, job: runner.Job, i: int) -> runner.Job:
        """A small-model sample: if its calls fail (server error, unparseable reply) it abstains, with the
        error kept in the trace. Our own errors (bad input, budget) still propagate, and so does a small
        model that cannot be used at all, or one the guard stops (`cope_dspy.failures`)."""
        try:
            return (yield from job)
        except CopeError:
            raise
        except Exception as exc:  # noqa: BLE001 - see docstring
            small_model_failed(exc, self.small_executor.lm or dspy.settings.lm, self.guard)
            return Candidate(index=i, answer=None, error=redact(f"{type(exc).__name__}: {exc}"))

    def _metered(self, job: runner.Job, tracker: CostTracker, **where) -> runner.Job:
        """A job with its cost (its calls in the run's tracker: those tagged `where`, a stage and a sample or
        role) and its wall-clock seconds; an executor's reply cut off at max_tokens holds no final answer,
        so its candidate abstains."""
        started = time.perf_counter()
        result = yield from job
        seconds = round(time.perf_counter() - started, 3)
        usage = tracker.usage(**where).to_dict()
        if not isinstance(result, Candidate):
            return result, usage, seconds  # a plan: (text, usage, seconds)
        if any(r.cut for r in tracker.select(**where) if r.role in _EXECUTORS):
            result.cut_off()
        result.usage = usage
        result.extra["seconds"] = seconds
        return result

    # ---------------------------------------------------------------- one LM call

    def _ask(self, role: str, stage: int, sample: int | None, temperature: float, *,
             rollout: int | None | str = "sample", **inputs) -> runner.Call:
        return runner.Call(role, stage, sample, temperature, inputs, sample if rollout == "sample" else rollout)

    def _prepare(self, call: runner.Call):
        """What `runner` needs to make a call: the role's predictor, its arguments, and the context it runs
        in (stage/role/sample tags for the tracker, the role's adapter, the budget, large-model errors)."""
        predictor = getattr(self, call.role)
        if call.role in _EXECUTORS and "plans" not in call.inputs:  # stage 1 or 3 without plans: a model alone
            predictor = unplanned(predictor)
        config: dict[str, Any] = {**self.task.lm_config(call.role), "temperature": call.temperature}
        if call.role in self.role_max_tokens:
            config["max_tokens"] = self.role_max_tokens[call.role]
        if call.rollout is not None and call.temperature > 0:
            config["rollout_id"] = call.rollout  # a distinct cache entry per sample; a rerun still hits the cache
        return predictor, {**call.inputs, "config": config}, self._calling(call, predictor)

    @contextlib.contextmanager
    def _calling(self, call: runner.Call, predictor):
        with tag(stage=call.stage, role=call.role, sample=call.sample), large_model_errors(call.role, predictor), \
                self._budget_guard(predictor, call.role, call.inputs), dspy.context(adapter=self.adapter_for(call.role)):
            yield

    def _budget_guard(self, predictor, role: str, kwargs):
        """Hold the estimated cost of a paid call against the budget while it runs (refused if it would
        cross the cap), so concurrent calls cannot overshoot it together."""
        if self.budget is None or role not in LARGE_ROLES:
            return contextlib.nullcontext()
        lm = predictor.lm or dspy.settings.lm
        messages = self.adapter_for(role).format(predictor.signature, predictor.demos, kwargs)
        cap = self.role_max_tokens.get(role, lm.kwargs.get("max_tokens"))
        return self.budget.reserve(lm.model, messages, cap, api_base=lm.kwargs.get("api_base"))

    def _candidate(self, i: int, out, goal: str | None = None, guideline: str | None = None) -> Candidate:
        solution, answer = getattr(out, "solution", "") or "", getattr(out, "answer", "") or ""
        return Candidate(
            index=i, solution=solution, answer=self.task.parse(solution, answer), plans=_plans(goal, guideline),
            score=self.task.score(out), extra={"raw_answer": answer} if answer else {},
        )


# -------------------------------------------------------------------- helpers

_EXECUTORS = ("small_executor", "large_executor")


def _roles(stages: tuple[int, ...], stage3_plans: bool = True, stage1_plans: bool = True) -> list[str]:
    """The predictors the given stages call, in the order they are first called."""
    per_stage = {1: ("goal_planner", "small_executor") if stage1_plans else ("small_executor",),
                 2: ("guideline_planner", "small_executor"),
                 3: ("guideline_planner", "large_executor") if stage3_plans else ("large_executor",)}
    return list(dict.fromkeys(role for s in stages for role in per_stage[s]))


def _plans(goal: str | None, guideline: str | None) -> dict[str, str]:
    return {k: v for k, v in (("goal", goal), ("guideline", guideline)) if v}


def goal_behind(d: Decision) -> str | None:
    """g_S: the goal of the first sample behind the majority answer. Samples are exchangeable, so this is
    distributed as the paper's random pick among them, and it is deterministic."""
    chosen = d.supporters[0] if d.supporters else d.chosen
    return chosen.plans.get("goal") if chosen else None


def _prediction(d: Decision, stage: int, trace, goal=None, guideline=None) -> dspy.Prediction:
    return dspy.Prediction(
        answer=d.answer, solution=d.chosen.solution if d.chosen else "", stage=stage, confidence=d.confidence,
        accepted=d.accepted, plans=_plans(goal, guideline), trace=trace, budget_limited=False,
    )
