"""cope-dspy: COPE (Efficient LLM Collaboration via Planning) as a DSPy module.

Public names only; importing this package does no work (no clients, no network, no litellm import).
"""

from .cascade import Cascade
from .code import Code, SandboxError, TestsPass
from .consensus import Candidate, Decision, Vote
from .costs import Budget, CostTracker, Prices, Usage
from .errors import (
    BudgetExceeded,
    CopeError,
    CopeInputError,
    LargeModelError,
    LocalModelMissing,
    MissingAPIKey,
    ModelUnavailable,
    SmallModelError,
    SmallModelFailing,
)
from .failures import FailureGuard
from .policy import Policy, Temperatures
from .signatures import Execute, PlanGoal, PlanGuideline
from .tasks import ExactMatch, Math, Task
from .text import Perplexity, Text

__all__ = [
    "Cascade", "Task", "Math", "ExactMatch", "Code", "Text", "Vote", "TestsPass", "Perplexity", "SandboxError", "Candidate", "Decision", "Policy", "Temperatures",
    "PlanGoal", "PlanGuideline", "Execute", "CostTracker", "Prices", "Budget", "Usage",
    "CopeError", "CopeInputError", "BudgetExceeded", "LargeModelError", "ModelUnavailable", "MissingAPIKey",
    "LocalModelMissing", "SmallModelError", "SmallModelFailing", "FailureGuard",
]
