"""MT-Bench's pairwise LLM judge (first turn), asked twice with the positions swapped.

The prompts are FastChat's `pair-v2` (general questions) and `pair-math-v1` (math, reasoning and coding,
judged against a reference answer), from `fastchat/llm_judge/data/judge_prompts.jsonl` (Zheng et al. 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", Apache-2.0), sent as FastChat sends them: the
system prompt as the system message, the filled prompt template as the user message, and the judge's reply
read as plain text ending with `[[A]]`, `[[B]]` or `[[C]]`. They are DSPy signatures (one text input, one
text output) asked through `cope_dspy.plain.PlainAdapter`, so no field markers reach the judge: a small judge
asked for two marked fields (DSPy's chat format) lost its verdict field in 2 of 12 replies, looping to the
reply cap (decisions.md).

Swap rule (FastChat's "pairwise with swap", as the COPE paper alternates positions): the judge sees
(a, b) and then (b, a); a response wins only when both orders pick it, anything else (one order a win
and the other a tie, the two orders disagreeing, an unparseable verdict) is a tie.

    from evals.judge import judge_pair
    judge_pair(judge_lm, "Write a haiku about rain.", cope_answer, large_answer)   # "a", "b" or "tie"

Every judge call is tagged `tag(stage=0, role="judge")` and metered by its own `CostTracker`, so its cost
is reported apart from the methods' cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from cope_dspy.costs import CostTracker, Prices, tag
from cope_dspy.plain import PlainAdapter

__all__ = ["PairwiseJudge", "PairwiseJudgeWithReference", "Judgment", "judge", "judge_pair", "combine", "parse_verdict",
           "reference_for", "open_judge", "judge_setup", "verdict_probabilities", "preference", "NEED_REF_CATEGORIES",
           "JUDGE_MAX_TOKENS"]

# FastChat judges these categories against a reference answer (pair-math-v1), the rest with pair-v2.
NEED_REF_CATEGORIES = ("math", "reasoning", "coding")
# The judge's reply cap. A readable verdict from the 1.5B judge took 75-100 tokens in the two-field format
# (six trial judgments, decisions.md), 4 in plain text (the verdict alone); a reply that reaches the cap is
# a repetition loop with no verdict, so a larger cap buys nothing but time. FastChat gives GPT-4 2,048.
JUDGE_MAX_TOKENS = 512
# Alternatives asked for at each reply token when the verdict's probabilities are wanted (A, B, C and spares).
TOP_LOGPROBS = 5

_RULES = (
    "Avoid any positional biases and ensure that the order in which the responses were presented does not "
    "influence your decision. Do not allow the length of the responses to influence your evaluation. Do not "
    "favor certain names of the assistants. Be as objective as possible. After providing your explanation, "
    'output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" '
    'if assistant B is better, and "[[C]]" for a tie.'
)
_ANSWERS = (
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
PAIR_V2_TEMPLATE = "[User Question]\n{question}\n\n" + _ANSWERS
PAIR_MATH_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
    + _ANSWERS
)


class PairwiseJudge(dspy.Signature):
    __doc__ = (  # FastChat pair-v2
        "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
        "assistants to the user question displayed below. You should choose the assistant that follows the "
        "user's instructions and answers the user's question better. Your evaluation should consider factors "
        "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their "
        "responses. Begin your evaluation by comparing the two responses and provide a short explanation. "
        + _RULES
    )

    comparison: str = dspy.InputField(desc="FastChat's pair-v2 template: the question, then the two answers")
    judgment: str = dspy.OutputField(desc='a short explanation ending with "[[A]]", "[[B]]" or "[[C]]"')


class PairwiseJudgeWithReference(dspy.Signature):
    __doc__ = (  # FastChat pair-math-v1
        "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
        "assistants to the user question displayed below. Your evaluation should consider correctness and "
        "helpfulness. You will be given a reference answer, assistant A's answer, and assistant B's answer. Your "
        "job is to evaluate which assistant's answer is better. Begin your evaluation by comparing both "
        "assistants' answers with the reference answer. Identify and correct any mistakes. " + _RULES
    )

    comparison: str = dspy.InputField(desc="FastChat's pair-math-v1 template: the question, the reference "
                                           "answer, then the two answers")
    judgment: str = dspy.OutputField(desc='a short explanation ending with "[[A]]", "[[B]]" or "[[C]]"')


def judge_setup(max_tokens: int = JUDGE_MAX_TOKENS, logprobs: bool = False) -> str:
    """What, besides the judge model, decides a judgment: the prompts (hashed), the format, the reply cap and
    whether the verdict's probabilities were asked for. Cached judgments are keyed on it, so a changed
    judge judges again instead of reusing verdicts."""
    prompts = "\n".join([PairwiseJudge.instructions, PAIR_V2_TEMPLATE, PairwiseJudgeWithReference.instructions,
                         PAIR_MATH_TEMPLATE])
    return (f"fastchat pair-v2/pair-math-v1 {hashlib.sha256(prompts.encode()).hexdigest()[:12]}, plain text, "
            f"max_tokens {max_tokens}" + (", verdict logprobs" if logprobs else ""))


_LETTERS = ("A", "B", "C")
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_BARE = {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}


def parse_verdict(reply: str | None) -> str | None:
    """"A", "B" or "tie" from the judge's reply; None when it cannot be read.

    The last `[[A]]` / `[[B]]` / `[[C]]` in the reply (its final verdict: an explanation may quote the
    format first), or a reply that is only "A", "B", "C" or "tie". FastChat takes the first of `[[A]]`,
    `[[B]]`, `[[C]]` found in that order, which reads a reply quoting the format as a win for A.
    """
    text = reply or ""
    found = _BRACKETED.findall(text)
    if found:
        return _BARE[found[-1].upper()]
    word = re.sub(r"[^A-Za-z]", "", text).upper()
    return _BARE.get(word)


@dataclass
class Judgment:
    """One pairwise comparison, asked in both orders.

    first: the verdict with a shown as assistant A ("A", "B", "tie", or None when unparseable);
    second: with b shown as assistant A. verdict: "a", "b" or "tie" after the swap rule. cut: how many of
    the two replies the judge's reply cap cut off (finish_reason "length"). p_first, p_second: the judge's
    probabilities of "A", "B" and "C" at its verdict in each order (`verdict_probabilities`), when asked for.
    """

    verdict: str
    first: str | None
    second: str | None
    usage: dict[str, Any] = field(default_factory=dict)
    cut: int = 0
    p_first: dict[str, float] | None = None
    p_second: dict[str, float] | None = None

    @property
    def score(self) -> float | None:
        """a's score from the verdict probabilities (`preference`); None when they were not asked for."""
        return preference(self.p_first, self.p_second)

    @property
    def unparseable(self) -> int:
        return int(self.first is None) + int(self.second is None)

    @property
    def consistent(self) -> bool:
        """Both orders named the same response (or both said tie)."""
        return _winner(self.first, swapped=False) == _winner(self.second, swapped=True)


def _winner(v: str | None, swapped: bool) -> str:
    if v == "A":
        return "b" if swapped else "a"
    if v == "B":
        return "a" if swapped else "b"
    return "tie"  # a tie or an unparseable verdict


def combine(first: str | None, second: str | None) -> str:
    """The swap rule: a win only when both orders agree on it; every other combination is a tie."""
    w1, w2 = _winner(first, swapped=False), _winner(second, swapped=True)
    return w1 if w1 == w2 else "tie"


def verdict_probabilities(logprobs: Any) -> dict[str, float] | None:
    """The judge's probabilities of "A", "B" and "C" at its verdict: the top alternatives of the last reply
    token that is a verdict letter right after "[[", summed per letter (" A" and "A" are one letter) and
    normalised over the three. None when the reply carries no logprobs or no bracketed verdict letter."""
    from cope_dspy.text import token_entries

    entries, text, found = token_entries(logprobs), "", None
    for token, _, top in entries:
        if token.strip().upper() in _LETTERS and text.rstrip().endswith("[["):
            found = top
        text += token
    if not found:
        return None
    mass = dict.fromkeys(_LETTERS, 0.0)
    for token, logprob in found:
        letter = token.strip().upper()
        if letter in mass:
            mass[letter] += math.exp(logprob)
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()} if total > 0 else None


def preference(p_first: dict[str, float] | None, p_second: dict[str, float] | None) -> float | None:
    """a's score against b from the verdict probabilities of both orders: P(a named better) + P(tie) / 2 in
    each order (a is "A" first, "B" second), averaged. A judge that always says "A" with the same certainty
    scores 0.5 (its position bias cancels); 1 and 0 are certain wins and losses in both orders. None when
    either order has no probabilities."""
    if not p_first or not p_second:
        return None
    return (p_first["A"] + p_first["C"] / 2 + p_second["B"] + p_second["C"] / 2) / 2


def _ask(predictor: dspy.Predict, judge_lm: dspy.BaseLM, comparison: str,
         logprobs: bool) -> tuple[str | None, dict[str, float] | None]:
    config = {"temperature": 0.0, **({"logprobs": True, "top_logprobs": TOP_LOGPROBS} if logprobs else {})}
    try:
        with dspy.context(lm=judge_lm, adapter=PlainAdapter()), tag(stage=0, role="judge"):
            out = predictor(comparison=comparison, config=config)
    except AdapterParseError:  # an empty reply: counted as unparseable, judged a tie
        return None, None
    probs = verdict_probabilities(getattr(out, "logprobs", None)) if logprobs else None
    return parse_verdict(out.judgment), probs


def judge(judge_lm: dspy.BaseLM, question: str, a: str, b: str, *, reference: str | None = None,
          prices: Prices | dict | None = None, logprobs: bool = False) -> Judgment:
    """Ask `judge_lm` which of a and b answers `question` better, in both orders (two calls, greedy).

    reference: a reference answer (MT-Bench gives one for math, reasoning and coding): the judge then uses
    FastChat's pair-math-v1 prompt. prices: how the judge's calls are priced (its usage is in the result).
    logprobs: also ask for the verdict's token probabilities (`Judgment.p_first`, `.score`); the judge's
    route must return logprobs (a local llama.cpp server does; some paid APIs refuse them).
    A failed call (server down) raises; an unparseable verdict counts as a tie.
    """
    if reference:
        predictor = dspy.Predict(PairwiseJudgeWithReference)
        fill = lambda x, y: PAIR_MATH_TEMPLATE.format(question=question, ref_answer_1=reference,  # noqa: E731
                                                      answer_a=x, answer_b=y)
    else:
        predictor = dspy.Predict(PairwiseJudge)
        fill = lambda x, y: PAIR_V2_TEMPLATE.format(question=question, answer_a=x, answer_b=y)  # noqa: E731
    tracker = CostTracker(prices=prices)
    with tracker:
        first, p_first = _ask(predictor, judge_lm, fill(a, b), logprobs)
        second, p_second = _ask(predictor, judge_lm, fill(b, a), logprobs)
    cut = sum(bool(r.cut) for r in tracker.records)
    return Judgment(combine(first, second), first, second, tracker.usage().to_dict(), cut, p_first, p_second)


def judge_pair(judge_lm: dspy.BaseLM, question: str, a: str, b: str, *, reference: str | None = None,
               prices: Prices | dict | None = None) -> str:
    """"a", "b" or "tie": `judge` with the swap rule (a wins only if it wins with either position)."""
    return judge(judge_lm, question, a, b, reference=reference, prices=prices).verdict


def reference_for(example: Any) -> str | None:
    """The first-turn reference answer FastChat's judge uses for this MT-Bench example, if any: GPT-4's
    reference answer (else the question file's own) for math, reasoning and coding; None otherwise."""
    if getattr(example, "category", None) not in NEED_REF_CATEGORIES:
        return None
    for name in ("reference_gpt4", "reference"):
        turns = getattr(example, name, None)
        if turns:
            return str(turns[0])
    return None


def open_judge(stack: contextlib.ExitStack, name: str, *, max_tokens: int = JUDGE_MAX_TOKENS) -> dspy.BaseLM:
    """A judge LM from a model name as `cope_dspy.pair.open_models` reads one: a local catalogue name starts
    an embedded llama.cpp server (stopped with `stack`), `ollama_chat/<name>` goes to Ollama, anything else
    is a LiteLLM model string (its API key must be set). DSPy's cache is off: judgments.jsonl is the cache,
    and a reply replayed from DSPy's would report a judgment's cost as $0 and 0 tokens."""
    from cope_dspy.pair import open_model

    return open_model(stack, name, max_tokens=max_tokens, cache=False)
