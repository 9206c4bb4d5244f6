"""Calibrate tau1, tau2 and n: record a dev set once, then let Optuna replay it (no further LM calls).

    python examples/calibrate_thresholds.py                       # scripted models: seconds, nothing to install
    python examples/calibrate_thresholds.py --local --limit 20    # two packaged local models on GSM8K dev

Writes <out>.jsonl (the records; rerun to resume), <out>.jsonl.optuna.db (the study) and <out>.png.
"""

import argparse
import contextlib
import random
import re
import threading

import dspy

from cope_dspy import Cascade, Math, Prices
from cope_dspy.calibrate import calibrate, record, within_points_of_large

parser = argparse.ArgumentParser()
parser.add_argument("--local", action="store_true", help="real local models instead of scripted ones")
parser.add_argument("--limit", type=int, default=40, help="dev examples to record")
parser.add_argument("--n", type=int, default=8)
parser.add_argument("--trials", type=int, default=150)
parser.add_argument("--within", type=float, default=1.0, help="accuracy points allowed below the large model")
parser.add_argument("--out", default="calibration")
args = parser.parse_args()


def scripted_pair():
    """A 'small' model that is right on easy sums and guesses on hard ones, a 'large' one right 90% of the
    time: enough to make the trade-off visible without any model server."""
    from dspy.lm15 import Message, Response, TextPart, Usage

    rng, lock = random.Random(0), threading.Lock()

    class Engine:
        def __init__(self, skill):
            self.skill = skill

        def complete(self, request):
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            user = "\n".join(m.text or "" for m in request.messages if m.role == "user")
            a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", user).groups())
            if "`goal`" in system:
                text = "[[ ## goal ## ]]\nAdd the two numbers."
            elif "`guideline`" in system:
                text = "[[ ## guideline ## ]]\nAdd the units, then the tens, carrying."
            else:
                with lock:
                    right = rng.random() < self.skill(a + b, "Guideline" in user)
                    answer = a + b if right else a + b + rng.choice([-10, -1, 1, 10])
                text = f"[[ ## solution ## ]]\n{a} + {b} = \\boxed{{{answer}}}\n\n[[ ## answer ## ]]\n{answer}"
            return Response(id=None, model="scripted", message=Message.assistant([TextPart(text + "\n\n[[ ## completed ## ]]")]),
                            finish_reason="stop", usage=Usage(input_tokens=300, output_tokens=60, total_tokens=360))

    class AsyncEngine:
        def __init__(self, engine):
            self.engine = engine

        async def complete(self, request):
            return self.engine.complete(request)

    def lm(name, skill):
        engine = Engine(skill)
        return dspy.LM(name, engine=engine, async_engine=AsyncEngine(engine), cache=False)

    small = lm("local/scripted-small", lambda total, guided: (0.95 if total < 100 else 0.35) + (0.2 if guided else 0))
    large = lm("scripted/large", lambda total, guided: 0.9)
    return small, large, Prices({"scripted/large": (2.5, 10.0)})


def metric(example, pred):
    return pred.answer is not None and Math().same(pred.answer, example.answer)


with contextlib.ExitStack() as stack:
    if args.local:
        from cope_dspy.pair import open_models
        from evals.loaders import load

        small_spec, large_spec, prices = open_models(stack, "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", {})
        small, large = small_spec.lm, large_spec.lm
        devset = load("gsm8k", split="dev", limit=args.limit)
        print(f"note: {large_spec.price_note}")
    else:
        small, large, prices = scripted_pair()
        rng = random.Random(1)
        pairs = [(rng.randint(1, 120), rng.randint(1, 120)) for _ in range(args.limit)]
        devset = [dspy.Example(id=f"sum-{i}", question=f"What is {a} + {b}?", answer=str(a + b)).with_inputs("question")
                  for i, (a, b) in enumerate(pairs)]
    cascade = Cascade(small=small, large=large, task=Math(), n=args.n, prices=prices)
    records = record(cascade, devset, metric, f"{args.out}.jsonl", concurrency=4)

cal = calibrate(records, n_trials=args.trials, constraint=within_points_of_large(args.within))
print(cal.summary())
cal.plot(f"{args.out}.png")
cal.apply(cascade)  # then cascade.save("cascade.json") keeps tau1, tau2 and n
print(f"cascade now runs with tau1={cascade.tau1:.3g}, tau2={cascade.tau2:.3g}, n={cascade.n}; plot: {args.out}.png")
