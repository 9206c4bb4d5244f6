"""`python -m evals.plain_format`: small models in the two-field chat format against plain text, and the
guideline's length under a few planner wordings (issue 16), on the first GSM8K test problems.

    nice -n 10 python -m evals.plain_format --out evals/results/plain-format
    python -m evals.plain_format --benchmark humaneval --models --planners code-today code-one-sentence \
        --answers evals/results/humaneval-...-block-n4-cap768 --out evals/results/plan-wording-humaneval
    python -m evals.plain_format --benchmark math500 --models --planners plain-hint paragraph-one-sentence \
        --answers evals/results/math500-...-plain-n4-cap1024 --out evals/results/plan-wording-math500

Executors: each model answers the first --limit test problems alone (no plan), greedy, once per executor
variant (format x wording). Guidelines: the --planner model writes one guideline per problem for the first
--guideline-limit problems (T=0.8, as in the cascade) in each planner variant; its length is compared with
the same model's plain-text answer alone on those problems, and a guideline "states the answer" when a
number in it equals the gold answer. On HumanEval and MBPP (`--benchmark humaneval` / `mbpp`: planners only, no executor is
run) the answer a guideline is compared with is the large-alone reply of a recorded benchmark folder
(`--answers`, on the problems it holds), and a guideline "states the answer" when it holds a `def` of the
function to write with a body (`evals.plan_stats.code_states_answer`); on MATH-500 (`--benchmark math500`, the
same way) when it holds a `\\boxed{}` or its answer reads as the gold one (`evals.plan_stats.math_states_answer`).
One llama.cpp server at a time, 1 thread, 4 slots. Records go to <out>/records.jsonl (resumable: rerun the
same command to continue); the summary to <out>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from pathlib import Path

import dspy

from cope_dspy import Cascade, Code, Math
from cope_dspy.costs import CostTracker, tag
from cope_dspy.local import LocalServer
from cope_dspy.records import solve_unplanned
from cope_dspy.signatures import PlanGuideline

from .benchmarks import folder_records
from .loaders import load
from .metrics import gsm8k_match
from .plan_stats import code_states_answer, math_states_answer, reads_as
from .wordings import CODE_HINT, CODE_ONE_SENTENCE, MATH_HINT, QWEN_MATH

# name -> (format, instructions or None for the task's own, number of few-shot demos from the dev split)
EXECUTORS = {
    "chat": ("chat", None, 0),
    "plain": ("plain", None, 0),
    "plain-qwen": ("plain", QWEN_MATH, 0),
    "plain-4shot": ("plain", None, 4),
}
DEMO_MAX_CHARS = 200  # a demo is a dev problem whose worked solution, annotations removed, is this short
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "48/2 = <<48/2=24>>24"
PLANNERS = {
    "chat-today": ("chat", None),
    "plain-today": ("plain", PlanGuideline.instructions),
    "plain-one-sentence": ("plain", None),  # Math's own plain wording: one sentence, no calculation
    "paragraph-one-sentence": ("paragraph", None),
    "plain-hint": ("plain", MATH_HINT),
    "paragraph-hint": ("paragraph", MATH_HINT),
}
# Code (HumanEval): the wording the block recordings used (Code's chat wording, asked in plain text), and
# one sentence with no steps, as Math's plain wording; the stop at a blank line would keep only the 1.5B's
# lead-in ("...we can follow these steps:"), measured on the recorded guidelines, so it is not a variant here.
CODE_PLANNERS = {
    "code-today": ("plain", Code.instructions["guideline_planner"]),
    "code-one-sentence": ("plain", CODE_ONE_SENTENCE),
    "code-hint": ("plain", CODE_HINT),
}
BENCHMARKS = ("gsm8k", "humaneval", "mbpp", "math500")
CODE_BENCHMARKS = ("humaneval", "mbpp")  # asked with Code's planner wordings
# Benchmarks asked for guidelines only, compared with a recorded folder's large-alone answers (--answers).
PLANNERS_ONLY = ("humaneval", "mbpp", "math500")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _cascade(lm, role: str, variant: tuple, task_type=Math) -> Cascade:
    fmt, instructions = variant[:2]
    task = task_type(instructions={role: instructions} if instructions else None)
    return Cascade(small=lm, large=lm, task=task, n=1, formats={role: fmt})


def _guideline(cascade: Cascade, question: str) -> dict:
    tracker = CostTracker(prices=cascade.prices)
    started = time.perf_counter()
    with (
        dspy.context(
            adapter=cascade.adapter_for("guideline_planner"), callbacks=[*dspy.settings.callbacks, tracker]
        ),
        tag(stage=2, role="guideline_planner"),
    ):
        try:
            text, error = (
                cascade.guideline_planner(question=question, config={"temperature": 0.8}).guideline,
                None,
            )
        except Exception as exc:  # noqa: BLE001 - an unreadable guideline is counted, not fatal
            text, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
    return {
        "guideline": text,
        "error": error,
        "usage": tracker.usage().to_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def worked_solution(example) -> str:
    """A GSM8K reference solution as the executor is asked to write one: the steps without the calculator
    annotations, ending with the answer in \\boxed{}."""
    steps = _CALCULATOR.sub("", example.solution.split("####")[0]).strip()
    return f"{steps}\nThe answer is \\boxed{{{example.answer}}}."


def demos(k: int) -> list[dspy.Example]:
    """The first k GSM8K dev problems (the benchmark's order) whose worked solution is at most DEMO_MAX_CHARS
    long, as (question, solution) demos. Dev only: the split is disjoint from the test problems scored here."""
    out = []
    for ex in load("gsm8k", split="dev"):
        if len(out) == k:
            break
        solution = worked_solution(ex)
        if len(solution) <= DEMO_MAX_CHARS:
            out.append(
                dspy.Example(id=ex.id, question=ex.question, solution=solution).with_inputs("question")
            )
    return out


def _executor(cascade: Cascade, shots: int):
    """The executor alone (its signature without plans), with `shots` dev demos."""
    predictor = dspy.Predict(cascade.small_executor.signature.delete("plans"))
    # the adapter renders only the signature's fields (a demo's id is never shown)
    predictor.demos = demos(shots) if shots else []
    return predictor


def states_answer(text: str | None, gold: str) -> bool:
    return any(gsm8k_match(n, gold) for n in _NUMBER.findall(text or ""))


def _run(jobs, path: Path, concurrency: int) -> None:
    lock = threading.Lock()

    def one(job):
        key, fn = job
        result = fn()
        error = (result.get("candidate") or result).get("error") or ""
        if (
            "LMTransportError" in error
        ):  # the server went away (a stop): not a measurement, asked again on resume
            return
        line = json.dumps({**key, **result}, ensure_ascii=False) + "\n"
        with lock, path.open("a", encoding="utf-8") as f:
            f.write(line)  # one write per line: two processes may append to the same file

    pool = ThreadPoolExecutor(concurrency)
    try:
        for f in [pool.submit(copy_context().run, one, job) for job in jobs]:
            f.result()
    finally:  # Ctrl-C: calls not started are dropped, those in flight finish and are kept
        pool.shutdown(wait=True, cancel_futures=True)


def _done(path: Path) -> set[tuple]:
    """Keys already recorded; a torn last line (a run killed mid-write) is recorded again."""
    done = set()
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        done.add((r["part"], r["model"], r["variant"], r["id"]))
    return done


def record(args, examples) -> None:
    path = args.out / "records.jsonl"
    done = _done(path)
    models = list(dict.fromkeys([*args.models, *([args.planner] if args.planners else [])]))
    for model in models:
        jobs = []
        with LocalServer(model, parallel=args.concurrency, threads=1) as server:
            lm = server.lm(max_tokens=args.max_tokens, cache=False)
            if model in args.models:
                solvers = {}
                for name in args.executors:
                    cascade = _cascade(lm, "small_executor", EXECUTORS[name])
                    solvers[name] = (cascade, _executor(cascade, EXECUTORS[name][2]))
                    solvers[name][1].set_lm(lm)
                # problem by problem, every variant in turn: a run cut short still compares them on the same problems
                for i, ex in enumerate(examples[: args.limit]):
                    for name, (cascade, predictor) in solvers.items():
                        key = {"part": "executor", "model": model, "variant": name, "id": ex.id}
                        if tuple(key.values()) not in done:
                            jobs.append((i, key, lambda c=cascade, p=predictor, ex=ex: _solve(c, p, ex)))
            if model == args.planner and args.planners:
                code = args.benchmark in CODE_BENCHMARKS
                wordings, task_type = (CODE_PLANNERS, Code) if code else (PLANNERS, Math)
                planners = {
                    name: _cascade(lm, "guideline_planner", wordings[name], task_type)
                    for name in args.planners
                }
                for i, ex in enumerate(examples[: args.guideline_limit]):
                    for name, cascade in planners.items():
                        key = {"part": "guideline", "model": model, "variant": name, "id": ex.id}
                        if tuple(key.values()) not in done:
                            jobs.append((i, key, lambda c=cascade, ex=ex: _plan(c, ex, args.benchmark)))
            print(f"{model}: {len(jobs)} calls to make", flush=True)
            jobs.sort(key=lambda job: job[0])  # problem by problem, executors and planners alike
            _run([job[1:] for job in jobs], path, args.concurrency)


def _solve(cascade: Cascade, predictor, ex) -> dict:
    """The model alone, greedy, as the benchmarks' small single / large alone (the same reading rule)."""
    candidate = solve_unplanned(cascade, predictor, "small_executor", ex.question, 0.0, None)
    candidate["correct"] = bool(
        candidate["answer"] is not None and gsm8k_match(candidate["answer"], ex.answer)
    )
    out = {"candidate": candidate}
    if predictor.demos:
        out["demos"] = [d.id for d in predictor.demos]
    return out


def _plan(cascade: Cascade, ex, benchmark: str) -> dict:
    out = _guideline(cascade, ex.question)
    if "entry_point" in ex:  # code: a def of the function to write, with a body
        out["states_answer"] = code_states_answer(out["guideline"] or "", ex.entry_point)["any"]
    elif benchmark == "math500":  # a \boxed{}, or the gold answer read out of it as out of a reply
        out["states_answer"] = math_states_answer(out["guideline"] or "", ex.answer, None, reads_as("math500"))["any"]
    else:
        out["states_answer"] = states_answer(out["guideline"], ex.answer)
    return out


def recorded_answers(folder: Path) -> dict[str, dict]:
    """The large-alone replies of a recorded benchmark folder, by problem id, as answers to compare with."""
    return {
        r["id"]: r["baselines"]["large_greedy"]
        for r in folder_records(folder).items
        if r["variant"] == "default"
    }


def _common(groups: dict[tuple[str, str], list[dict]], model: str) -> set[str]:
    """The problems every variant of `model` has: variants are compared on the same problems only."""
    sets = [{x["id"] for x in xs} for (m, _), xs in groups.items() if m == model]
    return set.intersection(*sets) if sets else set()


def summarize(
    path: Path,
    executors_shown=tuple(EXECUTORS),
    planners_shown=tuple(PLANNERS),
    answers: dict[str, dict] | None = None,
) -> dict:
    """Per model, the variants shown, on the problems all of them have (a run cut short compares fairly).
    `answers`: recorded large-alone replies by id (HumanEval), compared with as "recorded"."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    executors, planners = {}, {}
    for r in (r for r in rows if r["part"] == "executor" and r["variant"] in executors_shown):
        executors.setdefault((r["model"], r["variant"]), []).append({**r["candidate"], "id": r["id"]})
    for r in (r for r in rows if r["part"] == "guideline" and r["variant"] in planners_shown):
        planners.setdefault((r["model"], r["variant"]), []).append(r)
    out = {"executors": [], "guidelines": []}
    for (model, variant), cands in executors.items():
        common = _common(executors, model)
        cands = [c for c in cands if c["id"] in common]
        correct = sum(c["correct"] for c in cands)
        out["executors"].append(
            {
                "model": model,
                "variant": variant,
                "problems": len(cands),
                "correct": correct,
                "accuracy": round(correct / len(cands), 3) if cands else None,
                "cut_off": sum("cut off" in (c.get("error") or "") for c in cands),
                "no_answer": sum(c["answer"] is None for c in cands),
                "mean_completion_tokens": round(
                    statistics.mean(c["usage"]["completion_tokens"] for c in cands), 1
                )
                if cands
                else None,
                "mean_prompt_tokens": round(statistics.mean(c["usage"]["prompt_tokens"] for c in cands), 1)
                if cands
                else None,
            }
        )
    for (model, variant), plans in planners.items():
        common = _common(planners, model)
        plans = [p for p in plans if p["id"] in common]
        if not plans:
            continue
        tokens = [p["usage"]["completion_tokens"] for p in plans]
        entry = {
            "model": model,
            "variant": variant,
            "problems": len(plans),
            "mean_completion_tokens": round(statistics.mean(tokens), 1),
            "max_completion_tokens": max(tokens),
            "states_answer": sum(p["states_answer"] for p in plans),
            "unreadable": sum(p["guideline"] is None for p in plans),
        }
        # the share of the same model's answer alone, on the problems both have
        baselines = {v: {c["id"]: c for c in executors.get((model, v), [])} for v in ("chat", "plain")}
        baselines["recorded"] = answers or {}
        for v, by_id in baselines.items():
            both = [p for p in plans if p["id"] in by_id]
            if both:
                plan_tokens = statistics.mean(p["usage"]["completion_tokens"] for p in both)
                answer_tokens = statistics.mean(by_id[p["id"]]["usage"]["completion_tokens"] for p in both)
                entry[f"share_of_{v}_answer"] = round(plan_tokens / answer_tokens, 3)
                entry[f"share_problems_{v}"] = len(both)
        out["guidelines"].append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.plain_format", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "plain-format")
    p.add_argument(
        "--benchmark",
        default="gsm8k",
        choices=BENCHMARKS,
        help=f"{', '.join(PLANNERS_ONLY)}: guidelines only (--models with no names), compared with --answers",
    )
    p.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    p.add_argument("--executors", nargs="*", default=list(EXECUTORS), choices=list(EXECUTORS))
    p.add_argument("--planner", default="qwen2.5-coder-1.5b")
    p.add_argument(
        "--planners",
        nargs="*",
        default=None,
        choices=[*PLANNERS, *CODE_PLANNERS],
        help=f"planner wordings (default: all of the benchmark's; gsm8k: {', '.join(PLANNERS)}; "
        f"{', '.join(CODE_BENCHMARKS)}: {', '.join(CODE_PLANNERS)})",
    )
    p.add_argument(
        "--answers",
        type=Path,
        help=f"{', '.join(PLANNERS_ONLY)}: a recorded benchmark folder whose large-alone "
        "replies the guidelines are compared with (only its problems are asked)",
    )
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--guideline-limit", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=320, help="reply cap (the GSM8K runs' cap)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (= server slots)")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    wordings = CODE_PLANNERS if args.benchmark in CODE_BENCHMARKS else PLANNERS
    if args.planners is None:
        args.planners = list(wordings)
    wrong = [name for name in args.planners if name not in wordings]
    if wrong:
        p.error(
            f"--planners {' '.join(wrong)}: not a {args.benchmark} wording; choose from {', '.join(wordings)}"
        )
    answers = None
    if args.benchmark in PLANNERS_ONLY:
        if args.models:
            p.error(f"--benchmark {args.benchmark} runs planners only: pass --models with no names")
        if args.answers is None:
            p.error(
                f"--benchmark {args.benchmark} needs --answers FOLDER: a recorded {args.benchmark} folder "
                "(evals.run) whose large-alone replies the guidelines are compared with"
            )
        answers = recorded_answers(args.answers)
    args.out.mkdir(parents=True, exist_ok=True)
    examples = load(args.benchmark, split="test", limit=max(args.limit, args.guideline_limit))
    if answers is not None:
        examples = [ex for ex in examples if ex.id in answers]
    if not args.summary_only:
        record(args, examples)
    summary = summarize(args.out / "records.jsonl", args.executors, args.planners, answers)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    return 0


def table(summary: dict) -> str:
    lines = [
        "executor alone, greedy: model, variant, correct / problems, cut off at the cap, no answer, "
        "mean completion tokens, mean prompt tokens"
    ]
    for e in sorted(summary["executors"], key=lambda e: (e["model"], e["variant"])):
        lines.append(
            f"  {e['model']:20s} {e['variant']:12s} {e['correct']:3d}/{e['problems']:<3d} "
            f"({e['accuracy']:.0%})  cut {e['cut_off']:2d}  none {e['no_answer']:2d}  "
            f"tokens {e['mean_completion_tokens']:.0f}  prompt {e.get('mean_prompt_tokens') or 0:.0f}"
        )
    lines.append(
        "guideline (T=0.8): model, variant, mean / max completion tokens, share of the same model's "
        "answer alone (chat, plain, recorded large alone), states the answer, unreadable"
    )
    for g in sorted(summary["guidelines"], key=lambda g: (g["model"], g["variant"])):
        shares = "  ".join(
            f"{g[k]:.0%}" if k in g else "-"
            for k in ("share_of_chat_answer", "share_of_plain_answer", "share_of_recorded_answer")
        )
        lines.append(
            f"  {g['model']:20s} {g['variant']:24s} {g['mean_completion_tokens']:5.0f} / "
            f"{g['max_completion_tokens']:3d}  share {shares}  states answer {g['states_answer']}/"
            f"{g['problems']}  unreadable {g['unreadable']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
