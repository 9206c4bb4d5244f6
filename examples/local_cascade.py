"""A fully local cascade on a handful of grade-school math problems: answers, stages and a cost report.

    python examples/local_cascade.py [--limit 5] [--n 4]

Needs no network, no Ollama and no API key: the small model is Qwen2.5-Coder-0.5B and the "large" one
Qwen2.5-Coder-1.5B, both served by the embedded llama.cpp server; the large one is priced as a stand-in
for a paid model (gpt-4o-mini's list price from litellm's offline price map), and the report says so.
"""

import argparse
import contextlib
import time

from cope_dspy import Cascade, CostTracker, LargeModelError, Math
from cope_dspy.pair import open_models
from evals.loaders import load
from evals.metrics import gsm8k_match

parser = argparse.ArgumentParser()
parser.add_argument("--limit", type=int, default=5)
parser.add_argument("--n", type=int, default=4)
parser.add_argument("--small", default="qwen2.5-coder-0.5b")
parser.add_argument("--large", default="qwen2.5-coder-1.5b")
parser.add_argument("--max-tokens", type=int, default=400, help="reply cap of every call")
args = parser.parse_args()

problems = load("gsm8k", split="dev", limit=args.limit)
with contextlib.ExitStack() as stack:
    small, large, prices = open_models(stack, args.small, args.large, {}, max_tokens=args.max_tokens)
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=args.n, prices=prices)
    with CostTracker(prices=prices) as tracker:
        for ex in problems:
            started = time.perf_counter()
            try:
                pred = cascade(question=ex.question)
            except LargeModelError as exc:  # no answer for this problem (its calls are still counted); go on
                print(f"{ex.id:<12} error    {exc}")
                continue
            ok = gsm8k_match(pred.answer, ex.answer)
            print(f"{ex.id:<12} stage {pred.stage}  answer {str(pred.answer)[:20]:<20} gold {ex.answer:<8} "
                  f"{'right' if ok else 'wrong'}  ${pred.cost.usd:.6f}  {time.perf_counter() - started:.0f}s")

print()
print(tracker.report())
print(f"note: {large.price_note}")
