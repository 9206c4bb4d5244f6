"""`python -m evals.reply_tokens A B`: two recordings of one benchmark compared call by call (no model call).

    python -m evals.reply_tokens $PLAIN $BLOCK --out evals/results/variants-humaneval-formats

On the problems both folders hold: the mean completion tokens of each kind of call (large alone, small
greedy, the small samples, each stage's candidates, the guideline), and how many large-alone answers are the
same program, with why the others differ: B's reply is the start of A's (a stop cut A's reply short and the
task read another part of it) or it is not (the decoding itself differed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from .benchmarks import folder_records


def _tokens(c: dict[str, Any]) -> int:
    return int((c.get("usage") or {}).get("completion_tokens") or 0)


def call_tokens(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Completion tokens per kind of call, over the records."""
    out: dict[str, list[int]] = {}
    for r in records:
        b = r["baselines"]
        out.setdefault("large alone", []).append(_tokens(b["large_greedy"]))
        out.setdefault("small greedy", []).append(_tokens(b["small_greedy"]))
        out.setdefault("small samples", []).extend(_tokens(s) for s in b["small_samples"])
        for e in r["trace"]:
            if e["kind"] == "guideline":
                out.setdefault("guideline", []).append(_tokens(e))
            for c in e.get("candidates") or []:
                out.setdefault(f"{e['kind']} stage {e['stage']}", []).append(_tokens(c))
    return out


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """`a` and `b`: records of the same problems in the same order."""
    ta, tb = call_tokens(a), call_tokens(b)
    calls = {k: {"a": statistics.fmean(ta[k]), "b": statistics.fmean(tb[k]),
                 "change": statistics.fmean(tb[k]) / statistics.fmean(ta[k]) - 1}
             for k in ta if k in tb and ta[k] and statistics.fmean(ta[k])}
    same = prefix = other = 0
    for ra, rb in zip(a, b, strict=True):
        la, lb = ra["baselines"]["large_greedy"], rb["baselines"]["large_greedy"]
        if la.get("answer") == lb.get("answer"):
            same += 1
        elif (la.get("solution") or "").startswith(lb.get("solution") or "\0"):
            prefix += 1
        else:
            other += 1
    return {"problems": len(a), "calls": calls,
            "large_alone_programs": {"same": same, "b_reply_starts_a_reply": prefix, "decoding_differed": other}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.reply_tokens", description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--out", type=Path, default=None, help="also write reply_tokens.json here")
    args = p.parse_args(argv)
    ra, rb = folder_records(args.a).by_id(), folder_records(args.b).by_id()
    common = [pid for pid in ra if pid in rb]
    if not common:
        raise SystemExit(f"reply_tokens: {args.a} and {args.b} hold no problem in common")
    out = {"a": str(args.a), "b": str(args.b), **compare([ra[i] for i in common], [rb[i] for i in common])}
    lines = [f"{out['problems']} problems in both; mean completion tokens, A -> B:"]
    lines += [f"  {k}: {v['a']:.0f} -> {v['b']:.0f} ({100 * v['change']:+.0f}%)" for k, v in out["calls"].items()]
    lines.append(f"large-alone programs: {out['large_alone_programs']}")
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reply_tokens.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
