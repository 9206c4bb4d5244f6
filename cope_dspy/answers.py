"""Reading a final answer out of free text, and deciding when two math answers are the same."""

import functools
import logging
import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?im)^\W*(?:final\s+)?answer\s*(?:is)?\s*[:=]?\s*(.+?)\s*$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text`, nested braces included; None if there is none."""
    starts = [m.end() for m in _BOXED.finditer(text or "")]
    if not starts:
        return None
    i = depth = starts[-1]
    depth = 1
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[starts[-1] : i].strip()
        i += 1
    return None  # unbalanced: the model stopped mid-answer


def strip_math(answer: str) -> str:
    """Remove wrappers that do not change a math answer: `$`, `\\boxed{}`, a trailing period."""
    a = answer.strip()
    boxed = last_boxed(a)
    if boxed is not None:
        a = boxed
    a = a.strip().strip("$").strip()
    a = re.sub(r"^\\\(|\\\)$", "", a).strip()
    return a.rstrip(".").strip()


def extract_math_answer(solution: str, answer: str = "") -> str | None:
    """The final answer of a math solution: the `answer` field if filled, else the last `\\boxed{}`,
    else an 'Answer: ...' line, else the last number. None when nothing answer-like is there."""
    a = _clean_answer_field(answer)
    if a:
        return a
    text = solution or ""
    boxed = last_boxed(text)
    if boxed:
        return strip_math(boxed)
    lines = _ANSWER_LINE.findall(text)
    if lines and strip_math(lines[-1]):
        return strip_math(lines[-1])
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def answer_line(text: str) -> str | None:
    """The text of the last 'Answer: ...' (or 'Final answer: ...') line, or None."""
    lines = _ANSWER_LINE.findall(text or "")
    return lines[-1].strip() if lines and lines[-1].strip() else None


def _clean_answer_field(answer: str) -> str | None:
    """The answer field as small models fill it: code fences, several lines or a whole sentence.
    Keep a short expression as is; from prose keep its boxed part or its last number."""
    text = re.sub(r"```\w*", "", answer or "").replace("`", "").strip()
    if not text or text.lower() in {"none", "n/a", "unknown"}:
        return None
    boxed = last_boxed(text)
    if boxed:
        return strip_math(boxed)
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    a = strip_math(line)
    if len(re.findall(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", "", a))) > 2:  # prose, not an expression
        numbers = _NUMBER.findall(text)
        return numbers[-1] if numbers else None
    return a or None


def _quiet_math_verify() -> None:
    # math-verify warns on every call made with its signal-based timeout disabled; we must disable it
    # because signals only work in the main thread and samples are judged in worker threads.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4096)
def _parsed(answer: str):
    from math_verify import parse

    _quiet_math_verify()
    return tuple(parse(f"${answer}$", parsing_timeout=None))


def _canonical(answer: str) -> str:
    return re.sub(r"\s+|\\[,;!]|\\left|\\right|\{,\}", "", answer).replace("\\dfrac", "\\frac").replace(",", "")


@functools.lru_cache(maxsize=8192)
def math_equal(a: str, b: str) -> bool:
    """Symbolic equivalence of two final answers with `math-verify` (so 0.5, 1/2 and \\frac{1}{2} agree)."""
    if _canonical(a) == _canonical(b):
        return True
    from math_verify import verify

    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb:
        return False
    return bool(verify(list(pa), list(pb), timeout_seconds=None))


def normalize_text(answer: str) -> str:
    """Lower-case, drop punctuation, articles and extra spaces: the usual short-answer QA normalisation."""
    a = answer.lower().strip()
    a = re.sub(r"[^\w\s]", " ", a)
    a = re.sub(r"\b(a|an|the)\b", " ", a)
    return " ".join(a.split())
