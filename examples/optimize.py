"""Compile a program that holds a Cascade with DSPy's BootstrapFewShot, scored by a cost-aware metric.

    python examples/optimize.py [--train 4] [--dev 10] [--n 4] [--out DIR]

A user's program calls the cascade and tidies its answer; BootstrapFewShot runs it on a few training
problems and keeps, per role (goal planner, guideline planner, small executor, large executor), the
demos of the runs that were right and within budget. The dev slice is scored before and after: accuracy
and API dollars. Both slices come from GSM8K's dev split (never the test problems the benchmarks report).
Local catalogue names start embedded llama.cpp servers on 127.0.0.1; the local "large" model is priced as
a stand-in for a paid one, and the output says so. With --out, every problem's result is written to
DIR/records.jsonl and the compiled program to DIR/compiled.json.
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import dspy

from cope_dspy import Cascade, LargeModelError, Math
from cope_dspy.objective import cost_aware
from cope_dspy.pair import open_models
from evals.loaders import load
from evals.metrics import gsm8k_match

parser = argparse.ArgumentParser()
parser.add_argument("--train", type=int, default=4, help="training problems BootstrapFewShot may run")
parser.add_argument("--dev", type=int, default=10, help="problems scored before and after compiling")
parser.add_argument("--n", type=int, default=4)
parser.add_argument("--demos", type=int, default=2, help="max bootstrapped demos per role")
parser.add_argument("--budget-usd", type=float, default=None, help="a demo's run must cost at most this")
parser.add_argument("--small", default="qwen2.5-coder-0.5b")
parser.add_argument("--large", default="qwen2.5-coder-1.5b")
parser.add_argument("--out", type=Path, default=None)
args = parser.parse_args()


class Solver(dspy.Module):
    """What a user writes: a cascade inside a program, its answer tidied, its cost passed on."""

    def __init__(self, cascade: Cascade):
        super().__init__()
        self.cascade = cascade

    def forward(self, question):
        out = self.cascade(question=question)
        return dspy.Prediction(answer=(out.answer or "").strip(), stage=out.stage, cost=out.cost)


def right(example, pred, trace=None):
    return gsm8k_match(pred.answer, example.answer)


def score(program, problems, phase, records):
    rows = []
    for ex in problems:
        started = time.perf_counter()
        try:
            pred = program(question=ex.question)
            row = {"id": ex.id, "phase": phase, "answer": pred.answer, "gold": ex.answer,
                   "right": right(ex, pred), "stage": pred.stage, "usd": pred.cost.usd, "calls": pred.cost.calls}
        except LargeModelError as exc:  # no answer for this problem; its calls were counted by the cascade
            row = {"id": ex.id, "phase": phase, "answer": None, "gold": ex.answer, "right": False, "stage": None,
                   "usd": None, "calls": None, "error": str(exc)}
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if records:
            records.write(json.dumps(row) + "\n")
            records.flush()
    paid = [r["usd"] for r in rows if r["usd"] is not None]
    return sum(r["right"] for r in rows) / len(rows), sum(paid) / max(len(paid), 1), rows


dev_split = load("gsm8k", split="dev")
trainset, devset = dev_split[: args.train], dev_split[args.train : args.train + args.dev]
if args.out:
    args.out.mkdir(parents=True, exist_ok=True)
with contextlib.ExitStack() as stack:
    records = stack.enter_context(open(args.out / "records.jsonl", "w")) if args.out else None
    small, large, prices = open_models(stack, args.small, args.large, {}, max_tokens=400)
    program = Solver(Cascade(small=small.lm, large=large.lm, task=Math(), n=args.n, prices=prices))

    before = score(program, devset, "before", records)
    started = time.perf_counter()
    metric = cost_aware(right, budget_usd=args.budget_usd)
    compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=args.demos, max_labeled_demos=0).compile(
        program, trainset=trainset
    )
    compile_seconds = time.perf_counter() - started
    after = score(compiled, devset, "after", records)
    if args.out:
        compiled.save(str(args.out / "compiled.json"))

print()
print(f"dev slice: {len(devset)} GSM8K dev problems; training: {len(trainset)}; n = {args.n}")
print("demos per role:", {name: len(p.demos) for name, p in compiled.named_predictors()})
print(f"compile: {compile_seconds:.0f} s")
for phase, (accuracy, usd, rows) in (("before", before), ("after", after)):
    stages = {s: sum(r["stage"] == s for r in rows) for s in (1, 2, 3)}
    print(f"{phase:<7} accuracy {accuracy:.1%}   API cost ${usd * 1000:.4f} per 1k problems   exits {stages}")
if large.price_note:
    print("note:", large.price_note)
