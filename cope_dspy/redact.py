"""`redact(text)`: remove anything that looks like a credential from text bound for a message, a log or a file.

Used where cope-dspy builds text from a provider's error (which may echo the request's Authorization
header or key back): `LargeModelError` messages and the errors kept in a cascade's trace.

    redact("401: Incorrect API key provided: Bearer sk-abc123xyz")   # '401: Incorrect API key provided: Bearer ***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MASK = "***"
# Environment variables whose values are secrets: their values are removed wherever they appear.
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter values ("1", "true", "local") are not worth masking and would mangle text
_PATTERNS = [
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}"),  # OpenAI, Anthropic (sk-ant-...), Stripe-like keys
    re.compile(r"\b(?:gsk|xai|hf|ghp|gho|github_pat)_[A-Za-z0-9_]{10,}"),  # Groq, xAI, Hugging Face, GitHub
    re.compile(r"\bxai-[A-Za-z0-9_\-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)(\b(?:x-)?api[_-]?key\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
    re.compile(r"(?i)(\b(?:access[_-]?token|auth[_-]?token|secret|password)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
]


def _env_secrets() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN]


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """`text` as a string with known secrets (`secrets`, and the values of environment variables named
    like *KEY*, *TOKEN*, *SECRET*, *PASSWORD*) and anything shaped like a key or bearer token masked."""
    out = str(text)
    known = [s for s in (*secrets, *_env_secrets()) if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN]
    for secret in sorted(set(known), key=len, reverse=True):  # longest first: one secret may contain another
        out = out.replace(secret, MASK)
    for pattern in _PATTERNS:
        out = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + MASK, out)
    return out
