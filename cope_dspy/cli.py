"""The `cope` command. Each subcommand is a small function registered on its own subparser.

cope ask "What is 1/2 + 1/4?"                 # one question through a cascade (local pair by default)
cope eval gsm8k --limit 20                    # the benchmark harness (see evals/README.md)
cope calibrate ...                            # thresholds from recorded dev-set traces (Optuna)
cope report ledger.sqlite                     # a cost ledger as a table or JSON
cope models                                   # the packaged local models, installed or not
cope serve --model smollm2-135m --parallel 4  # a local OpenAI-compatible server until Ctrl-C
cope serve --cascade --small S --large L     # COPE itself as an OpenAI-compatible model "cope"
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from collections.abc import Callable

from cope_dspy.errors import CopeError, CopeInputError

# name -> (register(subparsers) -> parser, run(args) -> exit code); add a subcommand with @command.
Command = Callable[[argparse.Namespace], int]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Command]] = []


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register `run(args) -> int` as `cope <name>`; `configure(parser)` adds its arguments."""

    def register(run: Command) -> Command:
        _COMMANDS.append((name, help, configure, run))
        return run

    return register


# -- cope models ----------------------------------------------------------------------------------------


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status as JSON")


@command("models", "list the packaged local models and whether each is installed and assembled", _models_args)
def models_cmd(args: argparse.Namespace) -> int:
    import json

    from cope_dspy.local import catalogue, model_status

    rows = []
    for name, model in catalogue().items():
        status = model_status(name)
        rows.append(
            {
                **status,
                "size_mb": round(model.size / 1e6),
                "context_length": model.context_length,
                "license": model.license,
                "description": model.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<20} {'size':>8} {'context':>8}  {'license':<11} status")
    for r in rows:
        state = "ready" if r["ready"] else ("installed, not assembled" if r["installed"] else "not installed")
        print(f"{r['name']:<20} {r['size_mb']:>5} MB {r['context_length']:>8}  {r['license']:<11} {state}")
    missing = [r for r in rows if not r["installed"] and not r["ready"]]
    if missing:
        print("\nInstall a model's packages with, for example:\n  " + missing[0]["install"])
    if any(r["installed"] and not r["ready"] for r in rows):
        print("\nAssemble and verify with: python -m cope_dspy.local ensure <model>  (once)")
    return 0


# -- cope serve -----------------------------------------------------------------------------------------


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; argparse names the flag in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


# Flags of one mode only; None means "not given", so a flag of the other mode is refused by name.
_LOCAL_DEFAULTS = {"model": "smollm2-135m", "parallel": 4, "threads": 2}
_CASCADE_DEFAULTS = {"small": "qwen2.5-coder-0.5b", "large": "qwen2.5-coder-1.5b", "task": "math", "host": "127.0.0.1",
                     "budget_usd": None, "on_exceed": "raise", "calibration": None, "load": None, "n": None,
                     "tau1": None, "tau2": None, "api_key_env": None, "model_name": "cope", "max_tokens": 512,
                     "repeat_penalty": None}
REPEAT_PENALTY_HELP = ("the embedded llama.cpp servers' repetition penalty (their --repeat-penalty: 1.0, llama.cpp's "
                       "default, is off; Ollama's default is 1.1); a model served elsewhere (Ollama, an API) is "
                       "asked as it is")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cascade", action="store_true",
                   help="serve a COPE cascade of --small and --large as an OpenAI-compatible model "
                        "(without it: one packaged local model, served by llama.cpp)")
    p.add_argument("--port", type=_int_in(1, 65535), default=None,
                   help="port (default: 8000 with --cascade, else a free one on 127.0.0.1)")
    one = p.add_argument_group("one packaged local model (without --cascade)")
    one.add_argument("--model", default=None, help="catalogue name (see `cope models`) or a .gguf path "
                                                   "(default smollm2-135m)")
    one.add_argument("--parallel", type=_int_in(1), default=None, help="server slots decoding together (default 4)")
    one.add_argument("--threads", type=_int_in(1), default=None, help="CPU threads (default 2)")
    one.add_argument("--ctx-size", type=_int_in(256), default=None,
                     help="total context shared by the slots (default 4096 per slot)")
    one.add_argument("extra", nargs="*", help="more llama-server flags, after `--`")
    c = p.add_argument_group("a COPE cascade (--cascade)")
    c.add_argument("--small", default=None, type=_model_name, help="local catalogue name, ollama_chat/<name> or LiteLLM model "
                                                 f"(default {_CASCADE_DEFAULTS['small']})")
    c.add_argument("--large", default=None, type=_model_name, help=f"the same, for the paid side (default {_CASCADE_DEFAULTS['large']}, "
                                                 "a local stand-in priced as gpt-4o-mini)")
    c.add_argument("--task", default=None, choices=list(_TASKS), help="how answers are read and compared (default math)")
    c.add_argument("--n", type=_int_in(1), default=None, help="samples per stage (default 8)")
    c.add_argument("--tau1", type=float, default=None, help="agreement to accept stage 1 (default 0.75)")
    c.add_argument("--tau2", type=float, default=None, help="agreement to accept stage 2 (default 0.5)")
    c.add_argument("--calibration", default=None, help="a calibration (cope calibrate run --json) whose n, tau1 "
                                                       "and tau2 to use; --n/--tau1/--tau2 override it")
    c.add_argument("--load", default=None, help="a saved cascade (Cascade.save): its prompts and policy")
    c.add_argument("--budget-usd", type=float, default=None, help="one cap on paid spend shared by all requests")
    c.add_argument("--on-exceed", default=None, choices=["raise", "fallback"],
                   help="a request that would cross the budget: an HTTP 429 error (raise, the default) or the "
                        "last stage's answer, flagged budget_limited (fallback)")
    c.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT", help="USD per million tokens")
    c.add_argument("--max-tokens", type=_int_in(1), default=None, help="reply cap of both models (default 512)")
    c.add_argument("--repeat-penalty", type=float, default=None, metavar="X", help=REPEAT_PENALTY_HELP)
    c.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1; any other needs "
                                                "--api-key-env)")
    c.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the bearer token clients must send")
    c.add_argument("--model-name", default=None, help="the model name clients ask for (default cope)")


def _snippet(server) -> str:
    return (
        f"import dspy\nfrom cope_dspy.models import local_lm\n\n"
        f'lm = local_lm("{server.base_url}", "{server.model_name}", temperature=0.7, max_tokens=512)\n'
        f"dspy.configure(lm=lm)"
    )


@command("serve", "serve a COPE cascade (--cascade) or one packaged local model as an OpenAI-compatible "
                  "server until Ctrl-C", _serve_args)
def serve_cmd(args: argparse.Namespace) -> int:
    args = serve_mode(args)
    return _serve_cascade(args) if args.cascade else _serve_local(args)


def serve_mode(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse the flags of the other mode (by name), then fill in this mode's defaults."""
    mine, theirs, flag = ((_CASCADE_DEFAULTS, _LOCAL_DEFAULTS, "--cascade") if args.cascade
                          else (_LOCAL_DEFAULTS, _CASCADE_DEFAULTS, "no --cascade"))
    wrong = [f"--{k.replace('_', '-')}" for k in theirs if getattr(args, k) is not None]
    if args.cascade and args.ctx_size is not None:
        wrong.append("--ctx-size")
    if args.cascade and args.extra:
        wrong.append("llama-server flags after --")
    if not args.cascade and args.price:
        wrong.append("--price")
    if wrong:
        raise CopeInputError(f"{', '.join(wrong)}: not a flag of `cope serve` with {flag} (see cope serve --help)")
    if args.cascade and args.on_exceed is not None and args.budget_usd is None:
        raise CopeInputError("--on-exceed says what happens when the budget is reached: give --budget-usd too")
    for key, default in mine.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    return args


def _serve_local(args: argparse.Namespace) -> int:
    from cope_dspy.local import LocalServer

    def terminate(signum, frame):  # `kill <pid>` stops the server as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    server = LocalServer(
        args.model,
        parallel=args.parallel,
        port=args.port,
        threads=args.threads,
        ctx_size=args.ctx_size,
        extra_args=tuple(args.extra),
    )
    try:
        with server:
            print(
                f"Serving {server.model_name} ({server.parallel} slots, {server.ctx_size} tokens of "
                f"context shared) at {server.base_url}  [pid {server.pid}, log {server.log_path}]"
            )
            print(f"\nUse it from Python:\n\n{_snippet(server)}\n\nCtrl-C to stop.", flush=True)
            while server.running:
                time.sleep(0.5)
            print(
                f"llama-server stopped unexpectedly. Last lines of its log:\n{server.log_tail()}",
                file=sys.stderr,
            )
            return 1
    except KeyboardInterrupt:
        print("\nStopped.")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


_TASKS = {"math": "Math", "exact": "ExactMatch", "code": "Code", "text": "Text"}


def cascade_from_args(args: argparse.Namespace, small=None, large=None, prices=None):
    """The cascade `cope serve --cascade` serves: task, budget, then the thresholds of a saved program
    (--load), of a calibration (--calibration: with its stages, stage3_plans and stage1_plans), and of explicit
    --n/--tau1/--tau2, each over the one before."""
    import cope_dspy
    from cope_dspy import Budget, Cascade
    from cope_dspy.calibrate import load_calibration

    calibrated = load_calibration(args.calibration) if args.calibration else {}
    task = getattr(cope_dspy, _TASKS[args.task])()
    budget = None if args.budget_usd is None else Budget(usd=args.budget_usd, on_exceed=args.on_exceed, prices=prices)
    cascade = Cascade(small=small, large=large, task=task, budget=budget, prices=prices)
    if args.load:
        cascade.load(args.load)  # prompts and policy; the served models stay pinned
    for key in ("n", "tau1", "tau2"):
        value = getattr(args, key) if getattr(args, key) is not None else calibrated.get(key)
        if value is not None:
            setattr(cascade, key, value)
    if "stages" in calibrated:  # the stages its thresholds were chosen for (or that it chose)
        cascade.stages = tuple(calibrated["stages"])
    if "stage3_plans" in calibrated:  # a calibration that chose stage 3 with or without plans
        cascade.stage3_plans = calibrated["stage3_plans"]
    if "stage1_plans" in calibrated:  # ... and stage 1 with or without goals
        cascade.stage1_plans = calibrated["stage1_plans"]
    return cascade


def _serve_cascade(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from cope_dspy.pair import open_models, parse_prices
    from cope_dspy.server import check_bind, serve

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            raise CopeInputError(f"--api-key-env {args.api_key_env}: that environment variable is not set (or "
                                 f"empty); export {args.api_key_env}=<a long random token> first")
    check_bind(args.host, api_key)
    table = parse_prices(args.price)
    cascade_from_args(args)  # every flag and file checked before any model server starts
    port = args.port or 8000
    with contextlib.ExitStack() as stack:
        small, large, prices = open_models(stack, args.small, args.large, table, max_tokens=args.max_tokens,
                                           repeat_penalty=args.repeat_penalty)
        cascade = cascade_from_args(args, small.lm, large.lm, prices)
        budget = "no budget" if cascade.budget is None else f"budget ${cascade.budget.usd} ({cascade.budget.on_exceed})"
        print(f"Serving COPE as model {args.model_name!r} at http://{args.host}:{port}/v1: small {args.small}, "
              f"large {args.large}, task {args.task}, n={cascade.n}, tau1={cascade.tau1:.3g}, tau2={cascade.tau2:.3g}, "
              f"{budget}{', bearer token required' if api_key else ''}.")
        if large.price_note:
            print(f"note: {large.price_note}")
        print(f"Use it: OpenAI(base_url='http://{args.host}:{port}/v1', api_key=...) with model={args.model_name!r}. "
              "Ctrl-C to stop.", flush=True)
        serve(cascade, host=args.host, port=port, model_name=args.model_name, api_key=api_key)
    return 0


# -- cope ask -------------------------------------------------------------------------------------------


def _model_name(text: str) -> str:
    """An argparse type: a model name `cope ask` can open, refused at argument time otherwise."""
    from cope_dspy.pair import check_model_name

    try:
        return check_model_name(text)
    except CopeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _quiet_litellm() -> None:
    """Keep LiteLLM's "Give Feedback / Get Help" and "Provider List" banners out of the command's output."""
    import litellm

    litellm.suppress_debug_info = True


def _ask_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help="the problem to solve")
    models = "local catalogue name, ollama_chat/<name> or LiteLLM model"
    p.add_argument("--small", default="qwen2.5-coder-0.5b", type=_model_name, help=models)
    p.add_argument("--large", default="qwen2.5-coder-1.5b", type=_model_name, help=models)
    p.add_argument("--task", default="math", choices=["math", "qa"], help="how answers are read and compared")
    p.add_argument("--n", type=int, default=8, help="samples per stage (default 8)")
    p.add_argument("--tau1", type=float, default=0.75, help="agreement to accept stage 1 (default 0.75)")
    p.add_argument("--tau2", type=float, default=0.5, help="agreement to accept stage 2 (default 0.5)")
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT", help="USD per million tokens")
    p.add_argument("--load", default=None, help="a saved cascade (Cascade.save) whose prompts and policy to use")
    p.add_argument("--max-tokens", type=_int_in(1), default=512)
    p.add_argument("--repeat-penalty", type=float, default=None, metavar="X", help=REPEAT_PENALTY_HELP)
    p.add_argument("--json", action="store_true", help="print the prediction (answer, stage, cost, plans) as JSON")


@command("ask", "answer one question with a COPE cascade and show its stage and cost", _ask_args)
def ask_cmd(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from cope_dspy import Cascade, ExactMatch, Math, Prices
    from cope_dspy.pair import open_models, parse_prices

    _quiet_litellm()
    task = Math() if args.task == "math" else ExactMatch()
    cascade = Cascade(task=task, n=args.n, tau1=args.tau1, tau2=args.tau2)  # validates before any server starts
    task.check_inputs({"question": args.question})  # so do the question and the prices
    table = parse_prices(args.price)
    Prices(table)
    with contextlib.ExitStack() as stack:
        small, large, prices = open_models(stack, args.small, args.large, table, max_tokens=args.max_tokens,
                                           repeat_penalty=args.repeat_penalty)
        if args.load:
            cascade.load(args.load)
        for p in (cascade.goal_planner, cascade.small_executor):
            p.set_lm(small.lm)
        for p in (cascade.guideline_planner, cascade.large_executor):
            p.set_lm(large.lm)
        cascade.prices = prices
        pred = cascade(question=args.question)
    if args.json:
        print(json.dumps({"answer": pred.answer, "stage": pred.stage, "confidence": pred.confidence,
                          "plans": pred.plans, "cost": pred.cost.to_dict(), "price_note": large.price_note}, indent=2))
    else:
        conf = "final" if pred.confidence is None else f"agreement {pred.confidence:.2f}"
        print(f"answer: {pred.answer}\nstage:  {pred.stage} ({conf})\ncost:   ${pred.cost.usd:.6f} "
              f"({pred.cost.calls} calls, {pred.cost.total_tokens} tokens)")
        if large.price_note:
            print(f"note:   {large.price_note}")
    return 0


# -- cope eval / calibrate: thin doors to their modules ------------------------------------------------


def _rest(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the subcommand (see --help)")


@command("eval", "run a benchmark: record every model's samples once, report every method", _rest)
def eval_cmd(args: argparse.Namespace) -> int:
    # The library never imports its benchmark harness: the command loads it by name when it is installed.
    try:
        harness = importlib.import_module("evals.run")
    except ModuleNotFoundError as exc:
        if exc.name not in ("evals", "evals.run"):
            raise
        print("cope eval: the benchmark harness (the `evals` package) is not installed here; it ships with the "
              "cope-dspy repository: clone it and run `pip install -e .` there (or `bash scripts/setup.sh`).",
              file=sys.stderr)
        return 2
    _quiet_litellm()
    return harness.main(args.args)


@command("calibrate", "choose tau1, tau2 and n on your dev set by replaying recorded traces (Optuna)", _rest)
def calibrate_cmd(args: argparse.Namespace) -> int:
    from cope_dspy.calibrate import main as run_calibrate

    _quiet_litellm()
    return run_calibrate(args.args)


# -- cope report ----------------------------------------------------------------------------------------


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ledger", help="a SQLite ledger written by CostTracker(ledger=...)")
    p.add_argument("--run-id", default=None, help="only this run's calls")
    p.add_argument("--json", action="store_true")


@command("report", "summarise a cost ledger per model, stage and role", _report_args)
def report_cmd(args: argparse.Namespace) -> int:
    import json

    from cope_dspy.ledger import format_summary, summarize_ledger

    summary = summarize_ledger(args.ledger, run_id=args.run_id)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


# -- entry point ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cope", description="COPE cascades of a small and a large LLM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, configure, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(run=run)
    return parser


_PASSTHROUGH = {"eval": eval_cmd, "calibrate": calibrate_cmd}  # their own parsers own every flag, --help too


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _PASSTHROUGH:
        args = argparse.Namespace(args=argv[1:], run=_PASSTHROUGH[argv[0]])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
