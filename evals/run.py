"""`python -m evals.run BENCHMARK`: record every model's samples once, then derive and report every method.

    python -m evals.run gsm8k --limit 20                       # the embedded local pair, no network
    python -m evals.run gsm8k --small ollama_chat/qwen2.5:1.5b --large openai/gpt-4o-mini
    python -m evals.run gsm8k --limit 100 --report-only        # re-derive the report from the records
    python -m evals.run mtbench --max-tokens 1024              # judged pairwise vs large alone (--judge)
    python -m evals.run twc --limit 20                         # agent mode: evals/agent_run.py

Records go to evals/results/<benchmark>-<small>+<large>-<date>/records.jsonl (resumable: rerun the same
command to continue); the report (summary.json, table.md, plot.png) is written next to them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import time
from pathlib import Path

from . import restage
from .folders import (  # noqa: F401 (SETTINGS, RESULTS and parse_formats: read from here by other modules and tests)
    AGENT_GAMES,
    CODE,
    CODE_FORMATS,
    DEFAULT_FORMATS,
    RESULTS,
    SETTINGS,
    check_same_settings,
    parse_formats,
    sigterm_as_interrupt,
    user_tests,
)
from .wordings import DEFAULT_WORDINGS, OWN, WORDINGS, instructions, parse_wordings

# Samples per stage and reply caps when the command line gives none. n = 4, not the paper's 8: on a laptop's
# CPU the embedded pair records a problem in ~2 min at n = 4; the caps fit one worked answer on each
# benchmark. Both match the committed local-pair runs (evals/README.md), so a default run is comparable.
DEFAULT_N = 4
# Reply caps per benchmark. In plain text (the default format) the 1.5B model works a GSM8K problem out in ~290
# tokens and a 320-token cap cut 55% of its answers alone (evals/README, "Plain-format recording"), so GSM8K
# and MATH-500 get more room; the rule is a cap that cuts under 5% of large-alone replies: check it
# with `python -m evals.plan_stats FOLDER` on each new recording. Code too: in plain text the 1.5B model writes
# the function, then test calls and an explanation; at 384 tokens 2 of the first 3 HumanEval large-alone replies
# were cut after a complete code block (and a cut reply abstains), so code gets 768 as GSM8K does. MATH-500: 1024
# cut 10 of the first 100 large-alone replies; continued to 2048 (`python -m evals.cap_probe`), 3 of 100 are still
# cut, so MATH-500 gets 2048 (evals/README, "Reply caps"). The committed MATH-500 recordings
# were made at 1024, and resume with `--max-tokens 1024`.
DEFAULT_MAX_TOKENS = {"gsm8k": 768, "math500": 2048, "mbpp": 768, "humaneval": 768, "mtbench": 1024}
# The embedded llama.cpp servers' repetition penalty per benchmark (llama.cpp's default, 1.0, is off; Ollama's is
# 1.1). MT-Bench's open-ended replies: at 1.0 two of the first 40 greedy large-alone replies repeat one phrase to
# any cap (2048 tried), so MT-Bench is asked at Ollama's 1.1 (evals/README, "Reply caps"); answers that are a
# number or a program keep 1.0, under which every other recording was made (code repeats tokens on purpose). The
# MT-Bench recordings of 2026-12-02 were made at 1.0 and resume with `--repeat-penalty 1.0`.
DEFAULT_REPEAT_PENALTY = {"mtbench": 1.1}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cope eval", description=__doc__.split("\n")[0])
    p.add_argument("benchmark", choices=["gsm8k", "math500", "mbpp", "humaneval", "mtbench"])
    p.add_argument("--split", default="test", choices=["test", "dev", "all"])
    p.add_argument("--limit", type=int, default=None, help="first N problems of the split")
    p.add_argument("--offset", type=int, default=0,
                   help="skip the split's first K problems (two recordings of one benchmark on disjoint problems, "
                        "each into its own --out folder; `python -m evals.join` then joins them)")
    p.add_argument("--small", default="qwen2.5-coder-0.5b", help="local catalogue name, ollama_chat/<name> or LiteLLM model")
    p.add_argument("--large", default="qwen2.5-coder-1.5b", help="local catalogue name, ollama_chat/<name> or LiteLLM model")
    p.add_argument("--judge", default=None, help="mtbench: the pairwise judge, any name --large takes "
                   "(default: the large model); judgments are cached in judgments.jsonl")
    p.add_argument("--judge-max-tokens", type=int, default=None,
                   help="mtbench: the judge's reply cap (default: evals.judge.JUDGE_MAX_TOKENS)")
    p.add_argument("--judge-logprobs", action="store_true",
                   help="mtbench: also read the judge's verdict probabilities (a second win rate, position bias "
                        "cancelled); always on for a local catalogue judge, whose server returns them")
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="USD per million input,output tokens; repeatable")
    p.add_argument("--n", type=int, default=None,
                   help=f"samples per stage and for the majority-vote baseline (default {DEFAULT_N}; the paper uses 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="reply cap (default per benchmark: " +
                   ", ".join(f"{b} {t}" for b, t in DEFAULT_MAX_TOKENS.items()) + ")")
    p.add_argument("--repeat-penalty", type=float, default=None, metavar="X",
                   help="the embedded servers' repetition penalty (llama-server --repeat-penalty; 1.0 is off, Ollama's "
                        "default is 1.1); models not served here are asked as they are (default per benchmark: " +
                        ", ".join(f"{b} {x}" for b, x in DEFAULT_REPEAT_PENALTY.items()) + "; elsewhere 1.0)")
    p.add_argument("--role-max-tokens", action="append", default=[], metavar="ROLE=N",
                   help="cap one role's replies (Cascade(max_tokens=...)), e.g. guideline_planner=128; repeatable")
    p.add_argument("--acceptance", choices=["user", "grading"], default="user",
                   help="code benchmarks: which tests accept a program at stages 1-2: 'user' (default: the "
                        "tests a user has, MBPP's first assert, HumanEval's docstring examples as doctests) or "
                        "'grading' (every grading test, the first recordings' rule); grading always uses all")
    p.add_argument("--format", default=None, metavar="NAME|ROLE=NAME,...",
                   help="the format roles are asked in: chat, plain, paragraph or block, for every role or per role, e.g. "
                   f"small_executor=plain,goal_planner=plain (default: {DEFAULT_FORMATS}; on code {CODE_FORMATS})")
    p.add_argument("--wording", action="append", default=[], metavar="ROLE=NAME",
                   help="ask a role in a named wording instead of the task's own (evals/wordings.py: "
                        f"{', '.join(WORDINGS)}), e.g. guideline_planner=code-one-sentence, or {OWN} for the "
                        "task's own; repeatable (default: " + "; ".join(
                            f"{b} " + ",".join(f"{r}={n}" for r, n in w.items()) for b, w in DEFAULT_WORDINGS.items())
                        + "; elsewhere each task's own)")
    p.add_argument("--stage1", default="goals", choices=["goals", "alone"],
                   help="stage 1: 'goals' (the paper: a small goal per sample) or 'alone' (the small samples answer "
                        "the question alone: Cascade(stage1_plans=False), not the paper's)")
    p.add_argument("--stage1-from", type=Path, default=None, metavar="FOLDER",
                   help="record only stages 2 and 3, each problem's stage 1 and baselines taken from FOLDER's "
                        "record (a --stage1 alone recording whose settings this run shares but the guideline "
                        "planner's): a paired comparison of a guideline setting (evals/restage.py)")
    p.add_argument("--concurrency", type=int, default=2, help="problems recorded at once")
    p.add_argument("--out", type=Path, default=None, help="result folder (default: derived from the arguments)")
    p.add_argument("--report-only", action="store_true", help="do not record; report what is recorded")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_role_caps(items: list[str]) -> dict[str, int]:
    """`--role-max-tokens guideline_planner=128` -> {"guideline_planner": 128}; roles are checked by Cascade."""
    caps = {}
    for item in items:
        role, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise SystemExit(f"cope eval: --role-max-tokens {item!r}: write ROLE=N, e.g. guideline_planner=128")
        caps[role.strip()] = int(value)
    if caps:
        from cope_dspy.policy import check_role_max_tokens

        try:
            check_role_max_tokens(caps)
        except ValueError as exc:
            raise SystemExit(f"cope eval: --role-max-tokens: {exc}") from None
    return caps


def out_dir(args) -> Path:
    if args.out:
        return args.out
    short = lambda s: s.split("/")[-1].replace(":", "-")  # noqa: E731
    return RESULTS / f"{args.benchmark}-{short(args.small)}+{short(args.large)}-{datetime.date.today():%Y-%m-%d}"


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from cope_dspy import Cascade
    from cope_dspy.pair import open_models, parse_prices

    from .benchmarks import folder_records, get, record_all
    from .loaders import load

    argv = list(os.sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in AGENT_GAMES:  # text games: each method plays its own episodes (evals/agent_run.py)
        from .agent_run import main as play_games

        return play_games(argv)
    args = build_parser().parse_args(argv)
    args.n = DEFAULT_N if args.n is None else args.n
    args.max_tokens = DEFAULT_MAX_TOKENS[args.benchmark] if args.max_tokens is None else args.max_tokens
    if args.repeat_penalty is None:
        args.repeat_penalty = DEFAULT_REPEAT_PENALTY.get(args.benchmark, 1.0)
    if not 0 < args.repeat_penalty < float("inf"):
        raise SystemExit(f"cope eval: --repeat-penalty must be a number > 0 (1.0 is off), got {args.repeat_penalty}")
    for flag, value in (("--limit", args.limit), ("--n", args.n), ("--max-tokens", args.max_tokens),
                        ("--concurrency", args.concurrency), ("--judge-max-tokens", args.judge_max_tokens)):
        if value is not None and value < 1:
            raise SystemExit(f"cope eval: {flag} must be >= 1, got {value}")
    if args.stage1_from is not None and args.stage1 != "alone":
        raise SystemExit("cope eval: --stage1-from needs --stage1 alone (under the paper's stage 1, stage 2 follows "
                         "stage 1's goal, so another recording's stage 1 cannot be paired with new stages 2-3)")
    if args.offset < 0:
        raise SystemExit(f"cope eval: --offset must be >= 0, got {args.offset}")
    parse_prices(args.price)  # bad prices fail here, before any server starts
    role_caps = parse_role_caps(args.role_max_tokens)
    formats = parse_formats(args.format, args.benchmark)
    wordings = parse_wordings(args.wording, args.benchmark)
    bench = get(args.benchmark)
    acceptance = args.acceptance if args.benchmark in CODE else None
    end = None if args.limit is None else args.offset + args.limit
    examples = load(args.benchmark, split=args.split, limit=end, acceptance=args.acceptance)[args.offset:]
    if not examples:
        raise SystemExit(f"cope eval: --offset {args.offset} skips every problem of {args.benchmark}'s "
                         f"{args.split} split; give a smaller --offset.")
    folder = out_dir(args)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "run.json"
    if not args.report_only:
        settings = {"benchmark": args.benchmark, "split": args.split, "small": args.small, "large": args.large,
                    "n": args.n, "max_tokens": args.max_tokens, "role_max_tokens": role_caps,
                    "acceptance": acceptance, "user_tests": user_tests(args.benchmark, acceptance), "formats": formats,
                    "wordings": wordings, "stage1_plans": args.stage1 == "goals",
                    "stage1_from": None if args.stage1_from is None else str(args.stage1_from),
                    "repeat_penalty": args.repeat_penalty}
        check_same_settings(folder, settings, keys=tuple(settings))  # before any server starts
        base_lines = None if args.stage1_from is None else restage.base_records(args.stage1_from, settings)
        recorded = {r["id"] for r in folder_records(folder).items if r["variant"] == "default"}
        wanted = [ex for ex in examples if base_lines is None or ex.id in base_lines]
        if len(wanted) < len(examples):
            print(f"{len(examples) - len(wanted)} of the {len(examples)} problems asked for are not in "
                  f"{args.stage1_from} yet: not recorded here; rerun this command once they are")
        if not args.price and all(ex.id in recorded for ex in wanted):  # (prices given: checked with servers)
            print(f"all {len(wanted)} problems to record are recorded in {folder}: no server started")
            args.report_only = True
    if not args.report_only:
        with contextlib.ExitStack() as stack:
            # no DSPy cache: a reply replayed from the cache would be billed $0 and timed ~0 s in the records
            small, large, prices = open_models(stack, args.small, args.large, parse_prices(args.price), cache=False,
                                               max_tokens=args.max_tokens, repeat_penalty=args.repeat_penalty)
            meta = {"benchmark": args.benchmark, "split": args.split, "limit": args.limit, "offset": args.offset,
                    "small": args.small,
                    "large": args.large, "n": args.n, "max_tokens": args.max_tokens, "role_max_tokens": role_caps,
                    "acceptance": acceptance, "user_tests": user_tests(args.benchmark, acceptance), "formats": formats,
                    "wordings": wordings, "stage1_plans": args.stage1 == "goals",
                    "stage1_from": settings["stage1_from"], "repeat_penalty": args.repeat_penalty,
                    "price_note": large.price_note,
                    "prices": {m: list(r) for m, r in prices.overrides.items()} if hasattr(prices, "overrides") else {},
                    "command": "python -m evals.run " + " ".join(argv if argv is not None else os.sys.argv[1:])}
            check_same_settings(folder, meta)  # the prices too (stand-in prices come with the servers)
            meta_path.write_text(json.dumps(meta, indent=2))
            task = bench.task(instructions=instructions(wordings))
            cascade = Cascade(small=small.lm, large=large.lm, task=task, n=args.n, prices=prices,
                              max_tokens=role_caps or None, formats=formats, stage1_plans=args.stage1 == "goals")
            started = time.perf_counter()
            try:
                with sigterm_as_interrupt():
                    if base_lines is None:
                        record_all(cascade, examples, bench.correct, folder / "records.jsonl",
                                   concurrency=args.concurrency, progress=not args.no_progress, accept=bench.accept)
                    else:  # stages 2 and 3 only, on the base folder's stage 1 (the whole cascade checks the policy)
                        later = Cascade(small=small.lm, large=large.lm, task=task, n=args.n, prices=prices,
                                        max_tokens=role_caps or None, formats=formats, stage1_plans=False,
                                        stages=(2, 3))
                        restage.record_on(base_lines, str(args.stage1_from), cascade, later, examples, bench.correct,
                                          folder / "records.jsonl", accept=bench.accept,
                                          concurrency=args.concurrency, progress=not args.no_progress)
            except KeyboardInterrupt:
                print(f"stopped after {time.perf_counter() - started:.0f}s; records so far in "
                      f"{folder / 'records.jsonl'}. Rerun the same command to resume, or add --report-only "
                      "to report what is recorded.", file=os.sys.stderr)
                return 130
            print(f"recorded in {time.perf_counter() - started:.0f}s -> {folder / 'records.jsonl'}")
    from cope_dspy.local import catalogue

    from .judge import JUDGE_MAX_TOKENS, open_judge
    from .report import write_report

    with contextlib.ExitStack() as judge_stack:  # a judge is opened only if a judgment is not cached yet
        judge_name = args.judge or args.large
        judge_max_tokens = args.judge_max_tokens or JUDGE_MAX_TOKENS
        judge_logprobs = args.judge_logprobs or judge_name in catalogue()

        def judge():
            return open_judge(judge_stack, judge_name, max_tokens=judge_max_tokens)

        try:
            print(write_report(folder, examples, judge=judge, judge_name=judge_name,
                               judge_max_tokens=judge_max_tokens, judge_logprobs=judge_logprobs))
        except KeyboardInterrupt:
            if args.benchmark != "mtbench":  # no judge: nothing was left half done
                raise
            print(f"stopped judging; judgments so far in {folder / 'judgments.jsonl'}. Rerun the same command to "
                  "resume.", file=os.sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
