"""`python -m evals.plan_stats [FOLDER ...]`: what the large model's plans cost and say, and how often its
answers are cut off, read from recorded benchmark folders (no model call).

Per benchmark:
- the guideline's completion tokens as a share of the large-alone answer's on the same problem (mean and
  median over problems, and the ratio of the totals). A large-alone reply cut off at the cap counts with
  the cap's tokens, so on benchmarks with many cut-off replies the share is overstated;
- how often a guideline states an answer (not asked of MT-Bench's open-ended questions). Math: it has a
  `\\boxed{}`, or the answer read out of it as out of a reply (the boxed value, else the number after "the
  answer is", else the last number; math-verify on MATH-500) is the gold answer or the large-alone answer.
  Code: it holds a `def` of the function to write (the entry point), with a body;
- the share of large-alone replies cut off at the run's reply cap (completion tokens at the cap, or marked
  cut off), and the smallest cap that keeps that share under 5%. When 5% or more are cut at the cap, their
  true lengths are unknown (censored): the records only say the cap must be higher;
- code: how much of a large-alone reply comes after its code (the last complete fenced block, the one the
  task reads), as a share of the replies' characters, and what large alone would have cost had its replies
  stopped there (each reply's completion tokens scaled by its share of characters before that point, at the
  run's completion price; an estimate, since tokens are not spread evenly over characters).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FOLDERS = [
    RESULTS / f"{b}-qwen2.5-coder-0.5b+qwen2.5-coder-1.5b-n4"
    for b in ("gsm8k", "math500", "mbpp", "humaneval")
]
CUT_TARGET = 0.05


def _tokens(c: dict[str, Any] | None) -> int:
    return int(((c or {}).get("usage") or {}).get("completion_tokens") or 0)


def _guideline(record: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in record["trace"] if e["kind"] == "guideline"), None)


def guideline_share(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Guideline completion tokens / large-alone completion tokens, per problem: mean, median, ratio of totals."""
    pairs = [
        (_tokens(_guideline(r)), _tokens(r["baselines"]["large_greedy"])) for r in records if _guideline(r)
    ]
    pairs = [(g, a) for g, a in pairs if a > 0]
    if not pairs:
        return {"problems": 0, "mean": None, "median": None, "ratio_of_totals": None}
    shares = [g / a for g, a in pairs]
    return {
        "problems": len(pairs),
        "mean": statistics.fmean(shares),
        "median": statistics.median(shares),
        "ratio_of_totals": sum(g for g, _ in pairs) / sum(a for _, a in pairs),
        "guideline_tokens_mean": statistics.fmean(g for g, _ in pairs),
        "answer_tokens_mean": statistics.fmean(a for _, a in pairs),
    }


_BOXED = re.compile(r"\\boxed\s*\{")


def math_states_answer(
    guideline: str, gold: str, large_answer: str | None, same: Callable[[str, str], bool]
) -> dict[str, bool]:
    """Which of the checks a math guideline meets: a \\boxed{}, the gold answer read out of it, the large-alone
    answer read out of it (`same(text, answer)` reads the text's answer and compares)."""
    flags = {
        "boxed": bool(_BOXED.search(guideline or "")),
        "gold": bool(guideline) and same(guideline, gold),
        "large_answer": bool(guideline) and large_answer is not None and same(guideline, large_answer),
    }
    flags["any"] = any(flags.values())
    return flags


def code_states_answer(guideline: str, entry_point: str) -> dict[str, bool]:
    """Whether a code guideline holds a `def` of the function to write with a body (an indented line after it),
    and whether it holds any fenced code block."""
    full_def = re.search(
        rf"^[ \t]*def[ \t]+{re.escape(entry_point)}[ \t]*\(.*\n[ \t]+\S", guideline or "", flags=re.MULTILINE
    )
    flags = {"def": bool(entry_point) and bool(full_def), "code_block": "```" in (guideline or "")}
    flags["any"] = flags["def"]
    return flags


_BLOCK = re.compile(r"```[^\n]*\n.*?```", re.S)  # a complete fenced block, as `cope_dspy.code.extract_code` reads


def after_code(text: str) -> float | None:
    """The share of a reply's characters after its last complete fenced code block; None without one."""
    ends = [m.end() for m in _BLOCK.finditer(text or "")]
    return (len(text) - ends[-1]) / len(text) if ends else None


def large_after_code(records: Sequence[dict[str, Any]], out_price: float) -> dict[str, Any]:
    """Over the large-alone replies that hold a complete code block: the share of their characters after it
    (ratio of totals), and the estimated share of large alone's dollars that text cost (`out_price`: dollars
    per million completion tokens)."""
    large = [r["baselines"]["large_greedy"] for r in records]
    usd = sum(float((c.get("usage") or {}).get("usd") or 0.0) for c in large)
    rows = [(c, after_code(c.get("solution") or "")) for c in large]
    rows = [(c, share) for c, share in rows if share is not None]
    chars = sum(len(c.get("solution") or "") for c, _ in rows)
    tail = sum(share * len(c.get("solution") or "") for c, share in rows)
    tail_usd = sum(share * _tokens(c) for c, share in rows) * out_price / 1e6
    return {
        "replies": len(rows),
        "share_of_chars": tail / chars if chars else None,
        "share_of_usd_est": tail_usd / usd if usd else None,
    }


def cut_off(c: dict[str, Any], cap: int) -> bool:
    """A reply cut off at the cap: its completion tokens reached it, or it was marked cut off."""
    return _tokens(c) >= cap or "max_tokens" in str(c.get("error") or "")


def cap_under(tokens: Sequence[int], cap: int, target: float = CUT_TARGET) -> int | None:
    """The smallest cap <= `cap` that cuts (reaches) under `target` of these replies; None when `cap` itself cuts
    `target` or more (their lengths past the cap are unknown)."""
    n = len(tokens)
    if not n or sum(t >= cap for t in tokens) / n >= target:
        return None
    return next(c for c in range(1, cap + 1) if sum(t >= c for t in tokens) / n < target)


def stats(folder: Path, ids: set[str] | None = None) -> dict[str, Any]:
    """The statistics of one recorded folder; `ids`: only these problems (variants on the same problems)."""
    from .benchmarks import folder_records
    from .loaders import load

    run = json.loads((folder / "run.json").read_text())
    records = [r for r in folder_records(folder).items if ids is None or r["id"] in ids]
    bench = run["benchmark"]
    examples = {ex.id: ex for ex in load(bench, split="all", source="local")}
    cap = (run.get("role_max_tokens") or {}).get("large_executor", run["max_tokens"])
    large = [r["baselines"]["large_greedy"] for r in records]
    small = [r["baselines"]["small_greedy"] for r in records]
    flags = []
    for r in records:
        text = (_guideline(r) or {}).get("guideline") or ""
        ex = examples[r["id"]]
        if bench == "mtbench":  # open-ended questions: no answer for a guideline to give away
            continue
        if bench in ("mbpp", "humaneval"):
            flags.append(code_states_answer(text, ex.entry_point))
        else:
            flags.append(
                math_states_answer(
                    text, ex.answer, r["baselines"]["large_greedy"].get("answer"), reads_as(bench)
                )
            )
    counts = {k: sum(f[k] for f in flags) for k in flags[0]} if flags else {}
    tokens = [_tokens(c) for c in large]
    return {
        "benchmark": bench,
        "folder": str(folder.relative_to(RESULTS.parent.parent))
        if folder.is_relative_to(RESULTS.parent.parent)
        else str(folder),
        "problems": len(records),
        "cap": cap,
        "guideline_share": guideline_share(records),
        "states_answer": counts,
        "large_cut_off": sum(cut_off(c, cap) for c in large),
        "large_cap_under_5pct": cap_under(tokens, cap),
        "large_tokens_p95": _percentile(tokens, 95),
        "small_cut_off": sum(cut_off(c, run["max_tokens"]) for c in small),
        **({"large_after_code": large_after_code(records, _out_price(run))} if bench in ("mbpp", "humaneval") else {}),
    }


def common_ids(folders: Sequence[Path]) -> set[str]:
    """The problem ids every folder's records hold."""
    from .benchmarks import folder_records

    sets = [{r["id"] for r in folder_records(f).items} for f in folders]
    return set.intersection(*sets) if sets else set()


def _out_price(run: dict[str, Any]) -> float:
    """The large model's completion price (dollars per million tokens) the run priced it at."""
    prices = [p for model, p in (run.get("prices") or {}).items() if model.endswith(run.get("large", "\0"))]
    return float(prices[0][1]) if prices else 0.0


def reads_as(bench: str) -> Callable[[str, str], bool]:
    """`same(text, answer)` for a math benchmark: the text's answer, read as a reply's, equals `answer`."""
    from .metrics import gsm8k_match, math_equiv

    return gsm8k_match if bench == "gsm8k" else (lambda text, answer: math_equiv(text, answer))


def _percentile(values: Sequence[int], q: float) -> float | None:
    return (
        float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])
        if len(values) > 1
        else None
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    pct = lambda k, n: f"{k} ({100 * k / n:.0f}%)" if n else "n/a"  # noqa: E731
    lines = [
        "| benchmark | problems | guideline / large-alone answer tokens: mean, median (ratio of totals) | "
        "guideline tokens, answer tokens (mean) | guidelines stating an answer | large-alone cut off at the cap | "
        "cap keeping cuts under 5% | small single cut off | large-alone reply after its code: characters "
        "(est. share of its cost) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        g, n, a = s["guideline_share"], s["problems"], s["states_answer"]
        if not a:
            says = "n/a (open-ended questions)" if s["benchmark"] == "mtbench" else "n/a"
        elif s["benchmark"] in ("mbpp", "humaneval"):
            says = f"{pct(a['any'], n)}: a def of the entry point ({a['code_block']} hold a code block)"
        else:
            says = (
                f"{pct(a['any'], n)}: \\boxed {a['boxed']}, gold answer {a['gold']}, large-alone's answer "
                f"{a['large_answer']}"
            )
        under = (
            f"{s['large_cap_under_5pct']} (p95 {s['large_tokens_p95']:.0f})"
            if s["large_cap_under_5pct"]
            else f"unknown, above {s['cap']} (censored)"
        )
        lines.append(
            f"| {s['benchmark']} | {n} | {100 * g['mean']:.0f}%, {100 * g['median']:.0f}% "
            f"({100 * g['ratio_of_totals']:.0f}%) | {g['guideline_tokens_mean']:.0f}, "
            f"{g['answer_tokens_mean']:.0f} | {says} | {pct(s['large_cut_off'], n)} at {s['cap']} | "
            f"{under} | {pct(s['small_cut_off'], n)} | {_after(s.get('large_after_code'))} |"
        )
    return "\n".join(lines) + "\n"


def _after(a: dict[str, Any] | None) -> str:
    if not a or a["share_of_chars"] is None:
        return "n/a"
    usd = f"{100 * a['share_of_usd_est']:.0f}%" if a["share_of_usd_est"] is not None else "unpriced"
    return f"{100 * a['share_of_chars']:.0f}% ({usd}; {a['replies']} replies with a code block)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.plan_stats", description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*", type=Path, default=FOLDERS, help="recorded benchmark folders")
    p.add_argument("--out", type=Path, default=None, help="also write plan_stats.md and plan_stats.json here")
    p.add_argument(
        "--common",
        action="store_true",
        help="read every folder on the problems all of them hold (variants compared on the same problems)",
    )
    args = p.parse_args(argv)
    ids = common_ids(args.folders) if args.common else None
    rows = [stats(f, ids) for f in args.folders]
    md = markdown(rows)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "plan_stats.md").write_text(md)
        (args.out / "plan_stats.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
