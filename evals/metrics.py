"""Answer checks and confidence intervals for the benchmarks: GSM8K numbers, MATH symbolic equivalence
(math-verify), Wilson intervals for accuracy and bootstrap intervals for mean cost."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from math_verify import parse, verify

from cope_dspy.answers import last_boxed  # noqa: F401  (re-exported: the benchmarks read answers as the library does)

# A number: optional minus, digits with optional thousands commas, optional decimals, optional /denominator.
# Not preceded by a letter, digit or dot: no number in "x2" or "v1.5", and "5-3" reads as 5 and 3, not -3.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_ANSWER_MARKER = re.compile(r"####|final answer\s*(?:is)?\s*:?|answer\s*(?:is|:)", re.IGNORECASE)
_LATEX_DELIMITERS = re.compile(r"\\boxed|\\fbox|(?<!\\)\$|\\\(|\\\[")  # an escaped \$ is a dollar sign
_WORD = re.compile(r"(?<![\\\w])[A-Za-z]{3,}\b")  # a word that is not a LaTeX command: the text is prose


def extract_number(text: str | float | None) -> str | None:
    r"""The final number in free text, as a plain string ("1000", "-3", "0.75", "3/4"); None if there is none.

    Looks first inside the last \boxed{}, then on the line after the last "Answer:" / "the answer is" /
    "####" (first number there), then anywhere (last number). Commas, "$" and LaTeX \frac are undone.
    """
    if text is None:
        return None
    text = str(text).replace("\u2212", "-").replace("\\$", "").replace("$", "").replace("{,}", ",")
    text = _LATEX_FRAC.sub(r"\1/\2", text)

    boxed = last_boxed(text)
    if boxed is not None:
        numbers = _NUMBER.findall(boxed)
        if numbers:
            return _clean(numbers[-1])
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        after = text[markers[-1].end() :].strip()
        numbers = _NUMBER.findall(after.split("\n", 1)[0]) or _NUMBER.findall(after)
        if numbers:
            return _clean(numbers[0])
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _clean(number: str) -> str:
    return number.replace(",", "")


def _to_fraction(number: str) -> Fraction | None:
    try:
        return Fraction(number)
    except (ValueError, ZeroDivisionError):
        return None


def gsm8k_match(pred_answer: str | float | None, gold: str | float) -> bool:
    """True when the number in `pred_answer` equals the gold number exactly (as fractions: "18.00" == "18",
    "3/4" == "0.75", "1,000" == "1000", "$18" == "18"). `gold` may be a number or a "#### N" solution."""
    pred, ref = extract_number(pred_answer), extract_number(gold)
    if pred is None or ref is None:
        return False
    pred_value, ref_value = _to_fraction(pred), _to_fraction(ref)
    return pred_value is not None and pred_value == ref_value


def _boxed_if_bare(text: str) -> str:
    return text if _LATEX_DELIMITERS.search(text) else f"\\boxed{{{text}}}"


def _normalize(text: str) -> str:
    return re.sub(r"\s+|\\[,;!]|\\left|\\right", "", text).strip("$.").lower()


def math_equiv(pred: str | None, gold: str) -> bool:
    r"""True when `pred` is mathematically equivalent to the MATH gold answer `gold` (math-verify).

    `pred` may be a bare answer ("\dfrac{14}{3}", "(-\infty, 3]", "90^\circ", "Evelyn") or text with a
    \boxed{} or $...$ in it. Unparsable input gives False: math-verify catches its own parse errors and
    timeouts (raise_on_error=False) and nothing else is swallowed here. Its timeouts use SIGALRM, which
    only works in the main thread, so in other threads (dspy.Parallel) they are turned off.
    """
    if pred is None or not str(pred).strip():
        return False
    pred, gold = str(pred), str(gold)
    if _normalize(pred) == _normalize(gold):
        return True
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(_boxed_if_bare(gold), parsing_timeout=timeout)
    if not gold_parsed:
        return False
    # A bare answer is boxed so it parses as one expression. Bare prose ("The answer is 5") would then read
    # as a product of letters, so it also goes to math-verify unboxed, for its own answer extraction; only
    # prose, since that extraction reads "1" out of "8n^2 + 4n + 1".
    attempts = [_boxed_if_bare(pred)]
    if attempts[0] != pred and _WORD.search(pred):
        attempts.append(pred)
    return any(
        verify(gold_parsed, parse(text, parsing_timeout=timeout), timeout_seconds=timeout)
        for text in attempts
    )


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% for z=1.96)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always holds p; at k = 0 or k = n rounding can put a bound a hair past it (6 of 6 gave an
    # upper bound of 0.9999999999999999), which a plot's error bar refuses as a negative length.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_mean_ci(
    values: Sequence[float], iters: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `values` (e.g. cost per example), reproducible by seed."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(iters, data.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)
