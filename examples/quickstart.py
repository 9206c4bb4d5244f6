"""Quickstart: one question through a COPE cascade.

    python examples/quickstart.py                      # two packaged local models, no Ollama, no key
    python examples/quickstart.py --small ollama_chat/qwen2.5:1.5b --large openai/gpt-4o-mini

Local catalogue names start an embedded llama.cpp server on 127.0.0.1 (stopped on exit); with only local
models, the "large" one is priced as a stand-in for a paid model and the output says so.
"""

import argparse
import contextlib

from cope_dspy import Cascade, Math
from cope_dspy.pair import open_models

parser = argparse.ArgumentParser()
parser.add_argument("--small", default="qwen2.5-coder-0.5b")
parser.add_argument("--large", default="qwen2.5-coder-1.5b")
parser.add_argument("--max-tokens", type=int, default=400, help="reply cap of every call")
parser.add_argument("--n", type=int, default=4)
parser.add_argument("--question", default="A baker sells 12 muffins in the morning and twice as many in the "
                    "afternoon. Each muffin costs $3. How much money does the baker make?")
args = parser.parse_args()

with contextlib.ExitStack() as stack:
    small, large, prices = open_models(stack, args.small, args.large, {}, max_tokens=args.max_tokens)
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=args.n, prices=prices)
    pred = cascade(question=args.question)

print("answer:    ", pred.answer)
print("stage:     ", pred.stage, "(1 = small alone, 2 = large plan + small, 3 = large)")
print("confidence:", pred.confidence)
print("plans:     ", pred.plans)
print("cost:      ", f"${pred.cost.usd:.6f} over {pred.cost.calls} calls, {pred.cost.total_tokens} tokens")
if large.price_note:
    print("note:      ", large.price_note)
