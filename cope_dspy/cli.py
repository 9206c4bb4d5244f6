"""The `cope` command. Each subcommand is a small function registered on its own subparser.

cope models                                   # the packaged local models, installed or not
cope serve --model smollm2-135m --parallel 4  # a local OpenAI-compatible server until Ctrl-C
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable

from cope_dspy.errors import CopeError

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
    missing = [r for r in rows if not r["installed"]]
    if missing:
        print("\nInstall a model's packages with, for example:\n  " + missing[0]["install"])
    if any(r["installed"] and not r["ready"] for r in rows):
        print("\nAssemble and verify with: python -m cope_dspy.local ensure <model>  (once)")
    return 0


# -- cope serve -----------------------------------------------------------------------------------------


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="smollm2-135m", help="catalogue name (see `cope models`) or a .gguf path"
    )
    p.add_argument("--parallel", type=int, default=4, help="server slots decoding together (default 4)")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument(
        "--ctx-size", type=int, default=None, help="total context shared by the slots (default 4096 per slot)"
    )
    p.add_argument("extra", nargs="*", help="more llama-server flags, after `--`")


def _snippet(server) -> str:
    return (
        f"import dspy\nfrom cope_dspy.models import local_lm\n\n"
        f'lm = local_lm("{server.base_url}", "{server.model_name}", temperature=0.7, max_tokens=512)\n'
        f"dspy.configure(lm=lm)"
    )


@command("serve", "serve a packaged local model (llama.cpp) on 127.0.0.1 until Ctrl-C", _serve_args)
def serve_cmd(args: argparse.Namespace) -> int:
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


# -- entry point ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cope", description="COPE cascades of a small and a large LLM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, configure, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
