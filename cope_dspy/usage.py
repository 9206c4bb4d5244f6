"""The record of one LM call as billed (`CallRecord`), counts that add (`Usage`), and their summaries.

A leaf: `costs` (which makes the records) and `ledger` (which stores them) both read it.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Counts that add with `+` (and `sum()`): calls, billed tokens, dollars.

    `prompt_tokens` includes `cached_prompt_tokens` (the provider's prompt-cache reads, billed at a
    discount) and `cache_write_tokens`; `completion_tokens` includes `reasoning_tokens`. `cached_calls`
    are DSPy cache hits (no provider call, $0)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    cached_calls: int = 0
    estimated_calls: int = 0
    unpriced_calls: int = 0
    failed_calls: int = 0
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: Any) -> "Usage":
        if other == 0:  # sum() starts from 0
            return self
        return self.__add__(other)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    @classmethod
    def from_records(cls, records: Iterable["CallRecord"]) -> "Usage":
        return sum((r.usage() for r in records), cls())


@dataclass(frozen=True)
class CallRecord:
    """One LM call as billed: no prompt text, no keys, no headers."""

    time: float
    model: str
    stage: int | None
    role: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    cached: bool = False
    estimated: bool = False
    priced: bool = True
    error: str | None = None
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    sample: int | None = None  # which sample of its stage the call served (None: a plan, or untagged)
    cut: bool = False  # the reply stopped at max_tokens (finish_reason "length"), cached replies included

    def usage(self) -> Usage:
        return Usage(
            calls=1,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            usd=self.usd,
            cached_calls=int(self.cached),
            estimated_calls=int(self.estimated),
            unpriced_calls=int(not self.priced),
            failed_calls=int(self.error is not None),
            cached_prompt_tokens=self.cached_prompt_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_usage(records: Iterable[CallRecord], key: str) -> dict[Any, Usage]:
    """Usage per value of a record attribute ("model", "stage", "role"), in first-seen order."""
    groups: dict[Any, Usage] = {}
    for r in records:
        k = getattr(r, key)
        groups[k] = groups.get(k, Usage()) + r.usage()
    return groups


def _stage_key(stage: Any) -> str:
    return "untagged" if stage is None else str(stage)


def summarize_records(records: list[CallRecord]) -> dict[str, Any]:
    """Totals and breakdowns as plain JSON-ready data (the shape `format_summary` prints)."""
    pairs = [
        CallRecord(**{**r.to_dict(), "role": f"{_stage_key(r.stage)}/{r.role or 'untagged'}"})
        for r in records
    ]
    return {
        "usage": Usage.from_records(records).to_dict(),
        "by_model": {m: u.to_dict() for m, u in group_usage(records, "model").items()},
        "by_stage": {_stage_key(s): u.to_dict() for s, u in group_usage(records, "stage").items()},
        "by_role": {(r or "untagged"): u.to_dict() for r, u in group_usage(records, "role").items()},
        "by_stage_role": {k: u.to_dict() for k, u in group_usage(pairs, "role").items()},
        "unpriced_models": sorted({r.model for r in records if not r.priced}),
    }


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Text columns left-aligned, figures right-aligned; a rule above a final "total" row."""
    text_columns = {i for i, h in enumerate(headers) if h in ("model", "stage", "role")}
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    body = [line(r) for r in rows]
    if rows and rows[-1][0] == "total":
        body.insert(len(body) - 1, rule)
    return "\n".join([line(headers), rule, *body])


def _figures(u: Mapping[str, Any]) -> list[str]:
    usd = f"${u['usd']:,.6f}"
    if u["unpriced_calls"]:  # dollars are incomplete: say so rather than print a false figure
        usd = "no price" if u["unpriced_calls"] == u["calls"] - u["cached_calls"] else f"{usd} + unpriced"
    return [
        f"{u['calls']:,}",
        f"{u['cached_calls']:,}",
        f"{u['estimated_calls']:,}",
        f"{u['failed_calls']:,}",
        f"{u['prompt_tokens']:,}",
        f"{u.get('cached_prompt_tokens', 0):,}",
        f"{u['completion_tokens']:,}",
        f"{u.get('reasoning_tokens', 0):,}",
        f"{u['total_tokens']:,}",
        usd,
    ]


# "cached" calls are DSPy cache hits; "cache read" prompt tokens are the provider's cache (billed at a discount)
_FIGURE_HEADERS = [
    "calls",
    "cached",
    "estimated",
    "failed",
    "prompt",
    "cache read",
    "completion",
    "reasoning",
    "tokens",
    "USD",
]


def format_summary(summary: Mapping[str, Any]) -> str:
    """The text report of a summary from `CostTracker.to_dict()` / `summarize_ledger()`."""
    total = summary["usage"]
    out = [
        f"{total['calls']:,} LM calls ({total['cached_calls']:,} cached, {total['estimated_calls']:,} estimated, "
        f"{total['failed_calls']:,} failed), {total['total_tokens']:,} tokens, {_figures(total)[-1]}"
    ]
    if summary.get("unpriced_models"):
        names = ", ".join(repr(m) for m in summary["unpriced_models"])
        out.append(
            f"WARNING: {total['unpriced_calls']:,} calls to {names} have no known price and count $0; "
            "add prices with Prices({model: (input, output)}) or Prices.from_file(path)."
        )
    for run in summary.get("runs", []):
        out.append(
            f"run {run['run_id']}: {run['start']} .. {run['end']}, {run['calls']:,} calls, ${run['usd']:,.6f}"
        )
    out += ["", "By model"]
    rows = [[m, *_figures(u)] for m, u in summary["by_model"].items()]
    out.append(_table(["model", *_FIGURE_HEADERS], [*rows, ["total", *_figures(total)]]))
    out += ["", "By stage and role"]
    rows = [[*k.split("/", 1), *_figures(u)] for k, u in summary["by_stage_role"].items()]
    out.append(_table(["stage", "role", *_FIGURE_HEADERS], [*rows, ["total", "", *_figures(total)]]))
    return "\n".join(out)
