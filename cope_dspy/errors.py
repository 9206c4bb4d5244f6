"""Exceptions of cope-dspy: each message says what went wrong and how to fix it."""


class CopeError(Exception):
    """Base class of every error cope-dspy raises on purpose."""


class CopeInputError(CopeError, ValueError):
    """A bad argument or input field; raised before any LM call is made."""


class BudgetExceeded(CopeError):
    """A paid call would cross the configured budget."""


class ModelUnavailable(CopeError):
    """A model server is not reachable, or the model is not present on it."""


class MissingAPIKey(CopeError):
    """The provider's API key environment variable is not set."""


class LocalModelMissing(CopeError):
    """The embedded llama.cpp server or its model package is not installed."""


class LargeModelError(CopeError):
    """The large (paid) model failed after retries; the cascade cannot give a trustworthy answer."""


class SmallModelError(CopeError):
    """The small model cannot be used (unknown name or provider, not pulled, server down, key refused):
    the cascade stops before it pays the large model for questions the small one never saw."""


class SmallModelFailing(SmallModelError):
    """Too many of the small model's recent samples failed (the cascade's run-level `FailureGuard`)."""


class EnvironmentUnavailable(CopeError):
    """A game environment for agent mode cannot start (package or Java runtime missing, bad game settings)."""
