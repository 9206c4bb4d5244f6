"""`cope eval twc` / `cope eval cookingworld`: every method plays its own TextWorld-Express episodes on the
same fixed test seeds, one action a step; then success, cost, steps and stage exits are reported.

    python -m evals.run twc --limit 20 --params numLocations=1,numItemsToPutAway=2
    python -m evals.run twc --limit 20 --params numLocations=1,numItemsToPutAway=2 --report-only

Episodes change with the actions taken, so nothing is shared between methods: each (method, seed) is one
episode, one line of records.jsonl (resumable: rerun the same command; `kill PID` or Ctrl-C finishes the
episodes in flight and stops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cope_dspy.records import Writer, read_lines
from cope_dspy.role import ROLES

from .agent_methods import METHODS
from .folders import (
    AGENT_GAMES,
    AGENT_SETTINGS,
    RESULTS,
    check_same_settings,
    parse_formats,
    sigterm_as_interrupt,
)
from .metrics import bootstrap_mean_ci, wilson_interval
from .report import plot


def load_episodes(path: Path) -> dict[str, dict[str, Any]]:
    """Recorded episodes by id (`method/seed`); a torn last line (a run killed mid-write) is played again."""
    return {line["id"]: line for line in read_lines(path)}

SETTINGS = AGENT_SETTINGS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cope eval", description=__doc__.split("\n")[0])
    p.add_argument("benchmark", choices=AGENT_GAMES)
    p.add_argument(
        "--params",
        default="",
        help='the game\'s generation settings, e.g. "numLocations=1,numItemsToPutAway=2" '
        "(default: TextWorld-Express's own)",
    )
    p.add_argument("--fold", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=20, help="the fold's first N seeds (after --offset)")
    p.add_argument("--offset", type=int, default=0,
                   help="skip the fold's first K seeds: two recordings at once play disjoint seeds, each into its "
                        "own folder, then `python -m evals.join` puts them into one table")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    p.add_argument("--small", default="qwen2.5-coder-0.5b")
    p.add_argument("--large", default="qwen2.5-coder-1.5b")
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT")
    p.add_argument("--n", type=int, default=4, help="proposals per stage and for the majority vote")
    p.add_argument("--max-tokens", type=int, default=128, help="reply cap (an action, a goal or a guideline)")
    p.add_argument("--max-steps", type=int, default=20, help="actions per episode before it ends unsolved")
    p.add_argument("--history", type=int, default=5, help="past steps shown in a step's prompt")
    p.add_argument("--format", default="chat", metavar="NAME|ROLE=NAME,...",
                   help="the format roles are asked in, as for the benchmarks (default: chat, unlike the "
                        "benchmarks: in one plain-text twc episode the large model sent the same invalid action 11 "
                        "times, where in the chat format 12%% of its actions were invalid over 10 episodes)")
    p.add_argument("--concurrency", type=int, default=2, help="episodes played at once")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--report-only", action="store_true")
    return p


def out_dir(args, formats: dict[str, str]) -> Path:
    """The folder: --out, else one named by the game, its settings, the pair, the format (none for chat, the
    first recordings') and n."""
    if args.out:
        return args.out
    short = lambda s: s.split("/")[-1].replace(":", "-")  # noqa: E731
    params = "-" + args.params.replace("=", "").replace(",", "-") if args.params else ""
    names = set(formats.values())
    fmt = "" if not formats else f"-{names.pop()}" if len(names) == 1 and len(formats) == len(ROLES) else "-mixed"
    return RESULTS / f"{args.benchmark}{params}-{short(args.small)}+{short(args.large)}{fmt}-n{args.n}"


def main(argv: list[str]) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise SystemExit(f"cope eval: --methods: unknown {sorted(unknown)}; choose from {list(METHODS)}")
    for flag in ("limit", "n", "max_tokens", "max_steps", "concurrency"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"cope eval: --{flag.replace('_', '-')} must be >= 1")
    if args.offset < 0:
        raise SystemExit(f"cope eval: --offset must be >= 0, got {args.offset}")
    args.formats = parse_formats(args.format)
    folder = out_dir(args, args.formats)
    folder.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        code = record(args, methods, folder, argv)
        if code:
            return code
    print(write_report(folder))
    return 0


def pick_seeds(fold_seeds: list[int], offset: int, limit: int, game: str, fold: str) -> list[int]:
    """The fold's seeds `offset` to `offset + limit`; an offset past the last seed is an error, not an empty run."""
    if offset >= len(fold_seeds):
        raise SystemExit(f"cope eval: --offset {offset} skips every seed of {game}'s {fold} fold "
                         f"({len(fold_seeds)} seeds); give a smaller --offset.")
    return list(fold_seeds[offset : offset + limit])


def merge_seeds(old, new) -> list[int]:
    """The seeds two recordings into one folder (or joined) played, in ascending order (the folds' own)."""
    return sorted({*old, *new})


def record(args, methods: list[str], folder: Path, argv: list[str]) -> int:
    from cope_dspy import Cascade
    from cope_dspy.agent import Act
    from cope_dspy.pair import open_models, parse_prices
    from cope_dspy.textworld import TextWorldExpress

    from .agent_methods import policy

    settings = {k: getattr(args, k) for k in SETTINGS if k != "prices"}
    check_same_settings(folder, settings, keys=tuple(settings))
    with contextlib.ExitStack() as stack:
        envs: queue.Queue = queue.Queue()
        for _ in range(args.concurrency):
            envs.put(stack.enter_context(TextWorldExpress(args.benchmark, args.params, args.fold)))
        seeds = pick_seeds(envs.queue[0].seeds(), args.offset, args.limit, args.benchmark, args.fold)
        small, large, prices = open_models(
            stack, args.small, args.large, parse_prices(args.price), cache=False, max_tokens=args.max_tokens
        )
        old = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
        meta = {
            **settings,
            "limit": max(args.offset + args.limit, old.get("limit", 0)),
            # a run of some methods (or other seeds) into a folder keeps those recorded before in its table
            "methods": [m for m in METHODS if m in {*methods, *old.get("methods", ())}],
            "seeds": merge_seeds(old.get("seeds", ()), seeds),
            "price_note": large.price_note,
            "prices": {m: list(r) for m, r in prices.overrides.items()}
            if hasattr(prices, "overrides")
            else {},
            "command": "python -m evals.run " + shlex.join(argv),
        }
        check_same_settings(folder, meta, keys=SETTINGS)
        (folder / "run.json").write_text(json.dumps(meta, indent=2))
        cascade = Cascade(small=small.lm, large=large.lm, task=Act(), n=args.n, prices=prices, formats=args.formats)
        policies = {m: policy(m, cascade) for m in methods}
        path = folder / "records.jsonl"
        done = load_episodes(path)
        # seed by seed, every method: a recording stopped early still compares methods on the same seeds
        todo = [(seed, m) for seed in seeds for m in methods if f"{m}/{seed}" not in done]
        started = time.perf_counter()
        try:
            with sigterm_as_interrupt():
                play_all(todo, policies, envs, path, args)
        except KeyboardInterrupt:
            print(
                f"stopped after {time.perf_counter() - started:.0f}s; episodes so far in {path}. Rerun the same "
                "command to resume, or add --report-only to report what is recorded.",
                file=sys.stderr,
            )
            return 130
        print(f"recorded in {time.perf_counter() - started:.0f}s -> {path}")
    return 0


def play_all(todo, policies, envs: queue.Queue, path: Path, args) -> None:
    """Play every (seed, method) episode, `args.concurrency` at once, one line each. An interrupt stops
    taking new episodes and finishes those in flight (their steps are already paid for); a second one
    abandons them, unwritten (`cope_dspy.jobs`)."""
    from cope_dspy.episode import play
    from cope_dspy.jobs import run_jobs

    writer = Writer(path)

    def work(job: tuple[int, str]) -> dict[str, Any] | None:
        seed, method = job
        if f"{method}/{seed}" in load_episodes(path):  # recorded meanwhile (another run into the same folder)
            return None
        env = envs.get()
        try:
            started = time.perf_counter()
            result = play(policies[method], env, seed=seed, max_steps=args.max_steps, history=args.history)
            seconds = time.perf_counter() - started
            gold = len(env.gold_actions())
        finally:
            envs.put(env)
        return {
            "id": f"{method}/{seed}",
            "method": method,
            "seed": seed,
            "gold_steps": gold,
            "seconds": round(seconds, 3),
            **result.to_dict(),
        }

    def keep(job: tuple[int, str], line: dict[str, Any] | None) -> None:
        if line is None:
            return
        writer.write(line)
        print(
            f"{line['method']} seed {line['seed']}: {line['end']} in {line['n_steps']} steps, "
            f"{line['seconds']:.0f}s, ${line['usage']['usd']:.6f}",
            flush=True,
        )

    run_jobs(work, keep, list(todo), concurrency=args.concurrency, unit="episode", thread_name="cope-episode")


# ------------------------------------------------------------------------------------------- report


def method_rows(records: list[dict[str, Any]], methods: list[str]) -> tuple[dict[str, list[dict]], list[int]]:
    """Per method, its episodes on the seeds every method has played (a stopped recording compares methods
    on the same games only)."""
    by = {(r["method"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records if all((m, r["seed"]) in by for m in methods)})
    return {m: [by[(m, s)] for s in seeds] for m in methods}, seeds


def progress(records: list[dict[str, Any]], methods: list[str]) -> str:
    """Episodes recorded per method (solved ones in brackets), whether or not every method has played their seeds."""
    done = {m: [r for r in records if r["method"] == m] for m in methods}
    return ", ".join(
        f"{m} {len(eps)} ({sum(bool(e['success']) for e in eps)} solved)" for m, eps in done.items()
    )


def summarize(method: str, episodes: list[dict[str, Any]], large_usd: float | None) -> dict[str, Any]:
    k, n = sum(bool(e["success"]) for e in episodes), len(episodes)
    lo, hi = wilson_interval(k, n)
    usd = [e["usage"]["usd"] for e in episodes]
    clo, chi = bootstrap_mean_ci(usd)
    steps = [s for e in episodes for s in e["steps"]]
    exits = {str(s): sum(st["stage"] == s for st in steps) for s in (1, 2, 3)}
    mean = float(np.mean(usd))
    return {
        "method": method,
        "episodes": n,
        "success_rate": k / n,
        "success_rate_ci95": [lo, hi],
        "usd_per_episode": mean,
        "usd_per_episode_ci95": [clo, chi],
        "cost_vs_large": (mean / large_usd - 1) if large_usd else None,
        "usd_per_success": float(np.sum(usd)) / k if k else None,  # what a solved game costs
        "steps_mean": float(np.mean([e["n_steps"] for e in episodes])),
        "steps_mean_solved": float(np.mean([e["n_steps"] for e in episodes if e["success"]])) if k else None,
        "calls_per_episode": float(np.mean([e["usage"]["calls"] for e in episodes])),
        "invalid_action_rate": float(np.mean([not s["valid"] for s in steps])) if steps else 0.0,
        "step_exits": exits if any(st["stage"] for st in steps) else {},
        "seconds_per_episode": float(np.mean([e["seconds"] for e in episodes])),
    }


def write_report(folder: Path) -> str:
    if not (folder / "run.json").exists():
        return f"nothing recorded in {folder} yet (no run.json): run the command without --report-only first"
    run = json.loads((folder / "run.json").read_text())
    records = list(load_episodes(folder / "records.jsonl").values())
    rows, seeds = method_rows(records, run["methods"])
    if not seeds:
        md = f"No seed played by every method yet; recorded so far: {progress(records, run['methods'])}.\n"
        (folder / "table.md").write_text(md)
        return md
    large = rows.get("large alone")
    large_usd = float(np.mean([e["usage"]["usd"] for e in large])) if large else None
    table = [summarize(m, eps, large_usd) for m, eps in rows.items()]
    summary = {
        "run": run,
        "metric": "success rate",
        "progress": progress(records, run["methods"]),
        "seeds": seeds,
        "episodes_recorded": len(records),
        "methods": table,
        "gold_steps_mean": float(
            np.mean([rows[run["methods"][0]][i]["gold_steps"] for i in range(len(seeds))])
        ),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (folder / "table.md").write_text(md)
    run_title = (
        f"{run['benchmark']} {run['params']}: {run['small']} + {run['large']} ({len(seeds)} episodes each)"
    )
    plot(
        summary,
        folder / "plot.png",
        x_key="usd_per_episode",
        y_key="success_rate",
        xlabel="API cost, USD per episode",
        title=run_title,
    )
    return md


def _formats(formats: dict[str, str]) -> str:
    """"plain text" / "the two-field chat format" / each role's, for a table's header."""
    names = {formats.get(role, "chat") for role in ROLES}
    if names == {"chat"}:
        return "the two-field chat format"
    if len(names) == 1:
        return f"{names.pop()} text" if "plain" in names else f"the {names.pop()} format"
    return ", ".join(f"{role} {formats.get(role, 'chat')}" for role in ROLES)


def markdown(summary: dict[str, Any]) -> str:
    run = summary["run"]
    params = run["params"] or "TextWorld-Express defaults"
    lines = [
        f"# {run['benchmark']} ({params}; {run['fold']} seeds, {len(summary['seeds'])} episodes per method): "
        f"small = {run['small']}, large = {run['large']}, n = {run['n']}",
        "",
        f"Command: `{run['command']}`",
        "",
        f"Each method plays its own episode on each seed, at most {run['max_steps']} actions, the last "
        f"{run['history']} steps shown in each step's prompt. The game's own solution takes "
        f"{summary['gold_steps_mean']:.1f} actions on average on these seeds. Roles asked in: "
        f"{_formats(run.get('formats') or {})}.",
        "",
    ]
    if run.get("price_note"):
        lines += [f"Prices: {run['price_note']}.", ""]
    lines += [
        "| method | success (95% CI) | API $ per episode (95% CI) | cost vs large alone | steps (solved) | "
        "calls / episode | invalid actions | steps decided at stage 1 / 2 / 3 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in summary["methods"]:
        lo, hi = m["success_rate_ci95"]
        clo, chi = m["usd_per_episode_ci95"]
        vs = "" if m["cost_vs_large"] is None else f"{100 * m['cost_vs_large']:+.0f}%"
        solved = "" if m["steps_mean_solved"] is None else f" ({m['steps_mean_solved']:.1f})"
        exits = " / ".join(str(m["step_exits"].get(str(s), 0)) for s in (1, 2, 3)) if m["step_exits"] else ""
        lines.append(
            f"| {m['method']} | {100 * m['success_rate']:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}) | "
            f"{m['usd_per_episode']:.6f} ({clo:.6f}-{chi:.6f}) | {vs} | {m['steps_mean']:.1f}{solved} | "
            f"{m['calls_per_episode']:.1f} | {100 * m['invalid_action_rate']:.0f}% | {exits} |"
        )
    lines += [
        "",
        "- COPE: the three stages at every step (small goal for the step, large guideline, large action), "
        "tau1 = 0.75, tau2 = 0.5; MoT-style: the small model's n-sample majority if it agrees >= 0.75, else the "
        "large model (stage 1 / 3 = small / large decided). Small majority votes n samples at temperature 0.8; "
        "small alone and large alone answer greedily. A proposal that is not a valid action abstains from a vote; "
        "an action sent that is not valid is a wasted step (counted in 'invalid actions').",
        f"- Episodes recorded: {summary['episodes_recorded']} ({summary['progress']}); the table holds the "
        f"{len(summary['seeds'])} seeds every method has played.",
        "- API $ per solved episode (the paid methods): " + (", ".join(
            f"{m['method']} {m['usd_per_success']:.6f}" for m in summary["methods"]
            if m.get("usd_per_success") and m["usd_per_episode"] > 0) or "n/a (no paid method solved one)") + ".",
        "",
    ]
    return "\n".join(lines)
