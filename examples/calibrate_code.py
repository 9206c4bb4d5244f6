"""Calibrate a code cascade: programs are accepted on the tests a user has and graded on hidden ones.

    python examples/calibrate_code.py                       # scripted models: seconds, nothing to install
    python examples/calibrate_code.py --local --limit 20    # two packaged local models on MBPP dev
    python examples/calibrate_code.py --local --small ollama/qwen2.5-coder:1.5b --large openai/gpt-4o-mini

A code stage accepts when one of its samples passes the call's `tests`; the metric grades the returned program
on tests the cascade never saw. A program that passes the shown example and nothing else is accepted and
graded wrong, as it would be for a user. The study then chooses n, the stages and how each accepts (tau 0:
stop at that stage, 1: pass it by, between: accept on a pass). Writes <out>.jsonl (the records; rerun to resume) and
<out>.png.
"""

import argparse
import contextlib
import random
import re
import threading

import dspy

from cope_dspy import Cascade, Code, Prices
from cope_dspy.calibrate import calibrate, record, within_points_of_large
from cope_dspy.sandbox import run_tests

parser = argparse.ArgumentParser()
parser.add_argument("--local", action="store_true", help="real models instead of scripted ones")
parser.add_argument("--small", default="qwen2.5-coder-0.5b", help="with --local: a packaged model, ollama/NAME or an API model")
parser.add_argument("--large", default="qwen2.5-coder-1.5b", help="with --local: as --small")
parser.add_argument("--max-tokens", type=int, default=512, help="with --local: reply cap of every call")
parser.add_argument("--limit", type=int, default=30, help="dev problems to record")
parser.add_argument("--n", type=int, default=4)
parser.add_argument("--within", type=float, default=1.0, help="accuracy points allowed below the large model")
parser.add_argument("--out", default="code-calibration")
args = parser.parse_args()


def scripted_pair():
    """A 'small' coder right on most problems, sometimes writing a program that only fits the shown example,
    and a 'large' one right 90% of the time."""
    from dspy.lm15 import Message, Response, TextPart, Usage

    rng, lock = random.Random(0), threading.Lock()

    class Engine:
        def __init__(self, right, fits_example):
            self.right, self.fits_example = right, fits_example

        def complete(self, request):
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            user = "\n".join(m.text or "" for m in request.messages if m.role == "user")
            k = int(re.search(r"returns x \+ (\d+)", user).group(1))
            if "`goal`" in system:
                text = "[[ ## goal ## ]]\nReturn x shifted by a constant."
            elif "`guideline`" in system:
                text = "[[ ## guideline ## ]]\nReturn x plus the constant; no special cases."
            else:
                with lock:
                    draw = rng.random()
                body = (f"x + {k}" if draw < self.right else
                        f"{1 + k} if x == 1 else x" if draw < self.right + self.fits_example else f"x - {k}")
                text = (f"[[ ## solution ## ]]\nShift x.\n\n[[ ## answer ## ]]\n```python\ndef f(x):\n    return {body}\n```")
            return Response(id=None, model="scripted", message=Message.assistant([TextPart(text + "\n\n[[ ## completed ## ]]")]),
                            finish_reason="stop", usage=Usage(input_tokens=300, output_tokens=80, total_tokens=380))

    class AsyncEngine:
        def __init__(self, engine):
            self.engine = engine

        async def complete(self, request):
            return self.engine.complete(request)

    def lm(name, right, fits_example):
        engine = Engine(right, fits_example)
        return dspy.LM(name, engine=engine, async_engine=AsyncEngine(engine), cache=False)

    return (lm("local/scripted-small", 0.6, 0.2), lm("scripted/large", 0.9, 0.0),
            Prices({"scripted/large": (2.5, 10.0)}))


def graded(example, pred):
    """The hidden tests: every test of the problem, never shown to the cascade."""
    return pred.answer is not None and run_tests(pred.answer, example.hidden_tests,
                                                 setup=example.get("test_setup") or "").passed


with contextlib.ExitStack() as stack:
    if args.local:
        from cope_dspy.pair import open_models
        from evals.loaders import load

        small_spec, large_spec, prices = open_models(stack, args.small, args.large, {}, max_tokens=args.max_tokens)
        small, large = small_spec.lm, large_spec.lm
        devset = load("mbpp", split="dev", limit=args.limit)  # tests: MBPP's first assert, as its prompt shows
        print(f"note: {large_spec.price_note}")
    else:
        small, large, prices = scripted_pair()
        devset = [dspy.Example(id=f"shift-{k}", question=f"Write f(x) that returns x + {k}.",
                               tests=[f"assert f(1) == {1 + k}"],
                               hidden_tests=[f"assert f({x}) == {x + k}" for x in (1, 2, 5, -3)]
                               ).with_inputs("question", "tests") for k in range(args.limit)]
    cascade = Cascade(small=small, large=large, task=Code(), n=args.n, prices=prices)
    records = record(cascade, devset, graded, f"{args.out}.jsonl", concurrency=4, baselines=True)

# one study per stage set: on code a tau of 1 passes a stage by but still pays stage 2's guideline, so the
# MoT-like (1, 3) and the cheap (1, 2) are sets of their own; each study may also drop the plans at stage 3 (the
# large model alone) and the goals at stage 1 (the small model alone), both read from the baselines
cal = calibrate(records, sampler="grid", storage="memory", constraint=within_points_of_large(args.within),
                stage3_plans=(True, False), stage1_plans=(True, False), stages=[(1, 2, 3), (1, 3), (1, 2)])
print(cal.summary())
accepted_wrong = sum(c.get("accepted", False) and not c["correct"] for r in records
                     for e in r["trace"] if e["kind"] == "vote" for c in e["candidates"])
print(f"{accepted_wrong} recorded samples passed the shown tests and failed the hidden ones")
cal.plot(f"{args.out}.png")
cal.apply(cascade)  # then cascade.save("cascade.json") keeps the stages, tau1, tau2, n and both plans switches
print(f"cascade now runs stages {cascade.stages} with tau1={cascade.tau1:.3g}, tau2={cascade.tau2:.3g}, n={cascade.n}, "
      f"stage3_plans={cascade.stage3_plans}, stage1_plans={cascade.stage1_plans}; plot: {args.out}.png")
