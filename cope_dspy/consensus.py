"""How a stage decides whether its candidates are good enough: `Vote` (agreement, early decision).

A `Consensus` opens one `Ballot` per stage. The cascade asks the ballot how many more samples to draw
(`wave()`), adds the drawn candidates in sample order, and reads `decision()` once `wave()` is 0.
Drawing in waves lets samples run concurrently while a vote still stops as soon as it is decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Candidate:
    """One sample of a stage: the plans it was given, what the executor wrote and the answer read from it."""

    index: int
    solution: str = ""
    answer: str | None = None  # None: the sample abstains (unparseable output or a failed call)
    plans: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    score: float | None = None  # consensus-specific: tests passed (code), mean log-likelihood (text)
    extra: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None  # what this sample's LM calls cost (tokens, USD)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "solution": self.solution,
            "answer": self.answer,
            "plans": dict(self.plans),
            "error": self.error,
            "score": self.score,
            "usage": self.usage,
            **({"extra": self.extra} if self.extra else {}),
        }

    def cut_off(self) -> None:
        """Abstain because the reply stopped at max_tokens (finish_reason "length"): a cut-off reply holds no
        final answer, even when a number can be read from it. A sample that already failed keeps its error."""
        if self.error is None:
            self.answer = None
            self.error = ("the reply was cut off at max_tokens (finish_reason='length'), so it holds no final "
                          "answer; raise max_tokens on the LM")


@dataclass
class Decision:
    """The outcome of a stage: accepted or not, its confidence in [0, 1], and the chosen candidate."""

    accepted: bool
    confidence: float
    chosen: Candidate | None
    supporters: list[Candidate]
    drawn: int
    candidates: list[Candidate] = field(default_factory=list)  # every sample drawn, in sample order

    @property
    def answer(self) -> str | None:
        return self.chosen.answer if self.chosen else None

    def to_record(self, stage: int, tau: float) -> dict[str, Any]:
        """This decision as a vote entry of a cascade's trace (and of its records)."""
        return {
            "kind": "vote", "stage": stage, "tau": tau, "drawn": self.drawn, "accepted": self.accepted,
            "confidence": self.confidence, "answer": self.answer, "candidates": [c.to_dict() for c in self.candidates],
        }


class Ballot(Protocol):
    def wave(self) -> int: ...
    def add(self, candidates: list[Candidate]) -> None: ...
    def decision(self) -> Decision: ...


class Consensus(Protocol):
    def ballot(self, n: int, tau: float, same, example: dict[str, Any] | None = None, early_stop: bool = True) -> Ballot:
        ...


def accepts(confidence: float, tau: float) -> bool:
    """The acceptance rule shared by every consensus: confidence >= tau. tau = 1 means always escalate."""
    return tau < 1.0 and confidence >= tau


def votes_needed(n: int, tau: float) -> int:
    """The smallest count k with k / n >= tau (so 6 of 8 passes 0.75); above n when tau = 1 (never accepts)."""
    if tau >= 1.0:
        return n + 1
    return max(0, math.ceil(tau * n - 1e-9))


class Vote:
    """Majority vote. agreement = (count of the majority answer) / n; accepted when agreement >= tau.

    - An abstaining candidate (answer None) counts in n, never in a majority.
    - Ties go to the answer whose first vote came earliest in sample order (deterministic, and as good as
      a random pick since samples are exchangeable).
    - With `early_stop`, the ballot asks only for samples that could still change the outcome, and is
      decided as soon as neither the accept/reject decision nor the winning answer can change.
    """

    def ballot(self, n: int, tau: float, same, example: dict[str, Any] | None = None, early_stop: bool = True):
        return VoteBallot(n, tau, same, early_stop)


class VoteBallot:
    def __init__(self, n: int, tau: float, same, early_stop: bool):
        self.n, self.tau, self.same, self.early_stop = n, tau, same, early_stop
        self.candidates: list[Candidate] = []
        self.clusters: list[list[Candidate]] = []  # in order of their first vote

    def add(self, candidates: list[Candidate]) -> None:
        for c in sorted(candidates, key=lambda c: c.index):
            self.candidates.append(c)
            if c.answer is None:
                continue
            for cluster in self.clusters:
                if self.same(cluster[0].answer, c.answer):
                    cluster.append(c)
                    break
            else:
                self.clusters.append([c])

    def _leader(self) -> list[Candidate] | None:
        best = None
        for cluster in self.clusters:  # strict > keeps the earliest cluster on ties
            if best is None or len(cluster) > len(best):
                best = cluster
        return best

    def _decided(self, counts: list[int], drawn: int) -> bool:
        """Whether a ballot with these cluster sizes (in first-vote order) can no longer change outcome."""
        remaining = self.n - drawn
        if drawn == 0:
            return False
        if remaining == 0:
            return True
        need = votes_needed(self.n, self.tau)
        lead = max(counts, default=0)
        if lead + remaining < need:
            # No answer can reach the threshold any more: rejected. The goal passed on (g_S) then follows
            # the majority of the samples drawn so far.
            return True
        if not counts or lead < need:
            return False
        leader = counts.index(lead)
        for i, c in enumerate(counts):
            if i == leader:
                continue
            # an earlier cluster wins ties; later and brand-new clusters lose them
            if c + remaining > lead or (c + remaining == lead and i < leader):
                return False
        return remaining <= lead  # a brand-new answer ties at best, and loses the tie

    def wave(self) -> int:
        drawn = len(self.candidates)
        remaining = self.n - drawn
        if remaining <= 0:
            return 0
        if not self.early_stop:
            return remaining
        counts = [len(c) for c in self.clusters]
        if self._decided(counts, drawn):
            return 0
        # the fewest further samples after which the vote could be decided, if they all agree with the
        # leader (accept) or all dissent (reject): draw that many at once, concurrently.
        lead = counts.index(max(counts)) if counts else None
        for k in range(1, remaining + 1):
            agree = list(counts) if counts else [0]
            agree[lead if lead is not None else 0] += k
            dissent = list(counts) + [1] * k
            if self._decided(agree, drawn + k) or self._decided(dissent, drawn + k):
                return k
        return remaining

    def decision(self) -> Decision:
        leader = self._leader()
        drawn = len(self.candidates)
        if leader is None:  # every sample abstained
            chosen = self.candidates[0] if self.candidates else None
            return Decision(accepts(0.0, self.tau), 0.0, chosen, [], drawn, list(self.candidates))
        agreement = len(leader) / self.n
        return Decision(
            accepted=accepts(agreement, self.tau),
            confidence=agreement,
            chosen=leader[0],
            supporters=list(leader),
            drawn=drawn,
            candidates=list(self.candidates),
        )
