"""Replay a cascade whose stages do not vote, over its records: `Code` (a stage accepts when a sample passes
the call's tests, `cope_dspy.code.TestsPass`) and `Text` (it accepts the most likely reply when its confidence,
1/perplexity, reaches tau: `cope_dspy.text.Perplexity`). `cope_dspy.replay.replay` dispatches here.

Code: confidence is 1.0 when a drawn sample passed, else 0.0, so tau reads three ways (`consensus.accepts`):
tau = 0 accepts the stage's best program whatever its tests say, any tau in (0, 1) accepts on a pass, tau = 1
never accepts (one sample is drawn, as the live ballot does, and the call escalates). A setting is replayed as
the live cascade runs it: samples in waves of ceil(n/2) with early decision, the lowest-index passer chosen,
stages 1 and 2 skipped for a call with no test when stage 3 runs (`Task.can_accept`).
Text: the live `PerplexityBallot` decides each stage from the recorded samples' scores (all n drawn; one when
tau = 1 with early decision).
The one approximation is replay's own (see `cope_dspy.replay.replay`): stage-2 samples were recorded with the
goal behind the recorded stage-1 ballot.
"""

from __future__ import annotations

import math
from typing import Any

from .consensus import Candidate, accepts

TESTS_PASS = "tests-pass"  # a record policy's "consensus": a stage accepts on passed tests
PERPLEXITY = "perplexity"  # ... on the most likely reply's confidence
_BY_TASK = {"code": TESTS_PASS, "text": PERPLEXITY}  # benchmark records made before the policy said so


def consensus_kind(policy: dict[str, Any]) -> str | None:
    """How the recorded cascade's stages accept: TESTS_PASS, PERPLEXITY, or None (a vote)."""
    return policy.get("consensus") or _BY_TASK.get(policy.get("task"))


def accepted(c: dict[str, Any]) -> bool:
    """Whether a recorded sample passed the tests that accept it. Records made when acceptance and grading were
    the same tests (the harness's "grading" rule, before `accepted` was kept) say so by `correct`."""
    return bool(c.get("accepted", c.get("correct")))


def _tested(c: dict[str, Any]) -> bool:
    tests = (c.get("extra") or {}).get("tests") or {}
    return c.get("answer") is not None and tests.get("status") not in (None, "no_code", "no_tests", "skipped")


def choose(drawn: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """The program `TestsBallot` returns from these samples, and whether one passed: the lowest-index passer;
    else the one that passed the most tests (earliest on ties); else (nothing was run) the first program."""
    passers = [c for c in drawn if accepted(c)]
    if passers:
        return min(passers, key=lambda c: c["index"]), True
    tested = [c for c in drawn if _tested(c)]
    if tested:
        return max(tested, key=lambda c: (c["extra"]["tests"].get("n_passed") or 0, -c["index"])), False
    programs = [c for c in drawn if c.get("answer") is not None] or drawn
    return (programs[0] if programs else None), False


def acceptance_tests(item: dict[str, Any]) -> int | None:
    """How many tests a code call could be accepted on (None when the record does not say)."""
    if "acceptance_tests" in item:
        return item["acceptance_tests"]
    tests = (item.get("inputs") or {}).get("tests")
    return len(tests) if isinstance(tests, (list, tuple)) else None


def replay_stages(items: list[dict[str, Any]], kind: str, tau1: float, tau2: float, n: int, stages: tuple[int, ...],
                  early_stop: bool = True, stage3_plans: bool = True, *, detail: bool = False) -> list[dict[str, Any]]:
    """Per record: {id, stage, answer, correct, usd, calls, seconds} of the live cascade with this setting.
    `kind`: TESTS_PASS or PERPLEXITY. `seconds` adds the recorded wall time of each wave (its slowest
    sample), the guideline and the final call. `detail` adds `chosen` (the recorded candidate returned) and
    `confidence` (the exit stage's; None at stage 3)."""
    if kind not in (TESTS_PASS, PERPLEXITY):
        raise ValueError(f"no replay for stages that accept by {kind!r}")
    if 3 in stages and not stage3_plans:
        for item in items:
            _large_alone(item)  # every record needs it, whichever exits this setting makes
    rows = []
    for item in items:
        trace = item["trace"]
        by = {(e["kind"], e["stage"]): e for e in trace}
        if 3 in stages and ("final", 3) not in by:
            raise ValueError(f"record {item['id']} has no stage-3 answer: it was not made with `Cascade.record` "
                             "(every stage in full), so a stage that escalates cannot be replayed")
        untestable = kind == TESTS_PASS and acceptance_tests(item) == 0
        run = (3,) if untestable and stages[-1] == 3 else tuple(stages)  # stages 1 and 2 could only escalate
        guideline = next((e for e in trace if e["kind"] == "guideline"), None)
        usd, calls, seconds = 0.0, 0, 0.0
        row = None
        for stage in run:
            if stage == 2 or (stage == 3 and 2 not in run and stage3_plans):  # the guideline comes first
                usd, calls = usd + _usd(guideline), calls + _calls(guideline)
                seconds += float((guideline or {}).get("seconds", math.nan))
            if stage == 3:
                final = by[("final", 3)]["candidates"][0] if stage3_plans else _large_alone(item)
                usd, calls, seconds = usd + _usd(final), calls + _calls(final), seconds + _sec(final)
                row = {"stage": 3, "answer": final.get("answer"), "correct": float(final.get("correct") or 0.0),
                       **({"chosen": final, "confidence": None} if detail else {})}
                break
            tau = tau1 if stage == 1 else tau2
            samples = sorted(by[("vote", stage)]["candidates"], key=lambda c: c["index"])[:n]
            decide = _tests_stage if kind == TESTS_PASS else _perplexity_stage
            waves, chosen, confidence = decide(samples, n, tau, early_stop, untestable)
            for wave in waves:
                usd += sum(_usd(c) for c in wave)
                calls += sum(_calls(c) for c in wave)
                seconds += max((_sec(c) for c in wave), default=0.0)  # a wave lasts as long as its slowest
            if accepts(confidence, tau) or stage == run[-1]:
                row = {"stage": stage, "answer": (chosen or {}).get("answer"),
                       "correct": float((chosen or {}).get("correct") or 0.0),
                       **({"chosen": chosen, "confidence": confidence} if detail else {})}
                break
        rows.append({"id": item["id"], **row, "usd": usd, "calls": calls, "seconds": seconds})
    return rows


def _tests_stage(samples, n: int, tau: float, early_stop: bool, untestable: bool):
    """`TestsBallot`: waves of ceil(n/2) until one passes (all n at once without early decision; one sample when
    the stage can never accept), the lowest-index passer chosen. Returns (waves, chosen, confidence)."""
    if not early_stop:
        sizes = [n]
    elif tau >= 1.0 or untestable:
        sizes = [1]
    else:
        size = math.ceil(n / 2)
        sizes = [min(size, n - start) for start in range(0, n, size)]
    waves: list[list[dict[str, Any]]] = []
    for size in sizes:
        start = sum(len(w) for w in waves)
        waves.append(samples[start:start + size])
        if any(accepted(c) for c in waves[-1]):
            break
    chosen, passed = choose([c for w in waves for c in w])
    return waves, chosen, 1.0 if passed else 0.0


def _perplexity_stage(samples, n: int, tau: float, early_stop: bool, untestable: bool):
    """The live `PerplexityBallot` on the recorded samples' scores. Returns (waves, chosen, confidence)."""
    from .text import Perplexity

    ballot = Perplexity().ballot(n, tau, early_stop=early_stop)
    drawn = 0
    while (k := ballot.wave()) and drawn < len(samples):  # a stage recorded with fewer samples ends with them
        new = samples[drawn:drawn + k]
        ballot.add([Candidate(index=c["index"], answer=c.get("answer"), score=c.get("score")) for c in new])
        drawn += len(new)
    d = ballot.decision()
    chosen = next((c for c in samples if d.chosen is not None and c["index"] == d.chosen.index), None)
    return [samples[:drawn]], chosen, d.confidence


def _large_alone(item: dict[str, Any]) -> dict[str, Any]:
    alone = (item.get("baselines") or {}).get("large_greedy")
    if alone is None:
        raise ValueError(f"record {item['id']} has no large-alone baseline, so stage 3 without plans cannot be "
                         "replayed: record with baselines=True, or replay stage3_plans=True")
    return alone


def _usd(entry: dict[str, Any] | None) -> float:
    return float(((entry or {}).get("usage") or {}).get("usd") or 0.0)


def _calls(entry: dict[str, Any] | None) -> int:
    return int(((entry or {}).get("usage") or {}).get("calls") or 0)


def _sec(c: dict[str, Any] | None) -> float:
    return float(((c or {}).get("extra") or {}).get("seconds", math.nan))
