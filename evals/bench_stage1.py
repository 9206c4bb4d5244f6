"""`python -m evals.bench_stage1`: stage 1's wall time with n samples in flight against one sample.

Stage 1 draws n (goal, solution) samples from the small model at once; on a server with n parallel slots they
share its threads, so stage 1 takes longer than one sample, but far less than n samples one after another. This
times `Cascade(stages=(1,), early_stop=False)` with n = 1 and with n = N, in turn, problem by problem, on the
first GSM8K test problems (plain text, as `cope eval` asks), on one small-model server with N slots and no
cache, and prints each problem's wall times, their medians and the ratio. Run it with nothing else on the
machine (the times are the point).

    python -m evals.bench_stage1 --model qwen2.5-coder-0.5b --problems 5 --n 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.bench_stage1", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="a packaged local model (cope models)")
    p.add_argument("--problems", type=int, default=5, help="the first K GSM8K test problems")
    p.add_argument("--n", type=int, default=4, help="samples in flight (and the server's parallel slots)")
    p.add_argument("--threads", type=int, default=2, help="the server's CPU threads")
    p.add_argument("--max-tokens", type=int, default=768)
    p.add_argument("--out", type=Path, default=None, help="also write the times here (JSON)")
    return p


def stage1_seconds(lm, n: int, question: str) -> tuple[float, int]:
    """Wall seconds of one stage 1 with n samples (every sample drawn), and the calls it made."""
    from cope_dspy import Cascade, Math

    cascade = Cascade(small=lm, task=Math(), n=n, stages=(1,), early_stop=False, formats="plain")
    started = time.perf_counter()
    pred = cascade(question=question)
    return time.perf_counter() - started, pred.cost.calls


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = build_parser().parse_args(argv)
    for flag in ("problems", "n", "threads", "max_tokens"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be >= 1")
    from cope_dspy.local import LocalServer

    from .loaders import load

    examples = load("gsm8k", split="test", limit=args.problems)
    rows = []
    with LocalServer(args.model, parallel=args.n, threads=args.threads) as server:
        lm = server.lm(max_tokens=args.max_tokens, cache=False)
        stage1_seconds(lm, 1, "What is 2 + 3?")  # warm-up: the model's weights into memory
        for ex in examples:
            one, _ = stage1_seconds(lm, 1, ex.question)
            many, calls = stage1_seconds(lm, args.n, ex.question)
            rows.append({"id": ex.id, "one_sample_s": round(one, 2), f"{args.n}_samples_s": round(many, 2),
                         "calls": calls})
            print(f"{ex.id}: 1 sample {one:.1f} s, {args.n} samples in flight {many:.1f} s ({calls} calls)", flush=True)
    one = statistics.median(r["one_sample_s"] for r in rows)
    many = statistics.median(r[f"{args.n}_samples_s"] for r in rows)
    summary = {"model": args.model, "n": args.n, "threads": args.threads, "max_tokens": args.max_tokens,
               "problems": len(rows), "median_one_sample_s": one, f"median_{args.n}_samples_s": many,
               "ratio": many / one if one else None, "rows": rows}
    print(f"median stage 1: 1 sample {one:.1f} s, {args.n} samples in flight {many:.1f} s: "
          f"{many / one:.2f}x one sample (drawn one after another: about {args.n}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
