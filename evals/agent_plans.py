"""`python -m evals.agent_plans FOLDER`: what COPE's plans say in recorded text-game episodes (no model call).

A plan that helps an agent names a next step: an object or a place the step can act on. This reads every
COPE step's plans from a `cope eval twc` folder's records and counts, per kind (the small model's goals at
stage 1, the large model's guidelines at stage 2), how many name one: a plan *names a target* when it
contains, case-insensitively, an argument of one of the step's valid actions ("notebook" and "book case"
from "put notebook in book case"; the verb-only actions such as "look around" and "inventory" have none).
A plan that names none restates the task or says nothing the step can use. Only episodes of the seeds every
method has played are read, as in the table.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from cope_dspy.records import read_lines

from .agent_run import method_rows

KINDS = {"goal": "stage-1 goals (small model, one per sample)", "guideline": "stage-2 guidelines (large model)"}
_LINK = re.compile(r" (?:in|on|into|onto|from|to|with|at) ")


def targets(valid_actions: list[str]) -> set[str]:
    """The objects and places the valid actions name: each action's words after its verb, split at a
    preposition ("put notebook in book case" -> notebook, book case)."""
    found = set()
    for action in valid_actions:
        verb, _, rest = action.strip().lower().partition(" ")
        if rest and verb not in {"look"}:
            found.update(part.strip() for part in _LINK.split(rest) if part.strip())
    return found


def plan_counts(episodes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per kind of plan: how many the episodes' steps hold, and how many name a target of their step. A
    guideline shared by a stage's samples counts once per step."""
    counts = {kind: {"plans": 0, "name_a_target": 0} for kind in KINDS}
    for episode in episodes:
        for step in episode["steps"]:
            names = targets(step["valid_actions"])
            seen_guidelines = set()
            for wave in step.get("trace") or ():
                for candidate in wave.get("candidates") or ():
                    for kind, text in (candidate.get("plans") or {}).items():
                        if kind not in counts or text is None:
                            continue
                        if kind == "guideline":
                            if text in seen_guidelines:
                                continue
                            seen_guidelines.add(text)
                        counts[kind]["plans"] += 1
                        counts[kind]["name_a_target"] += any(name in text.lower() for name in names)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.agent_plans", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a `cope eval twc` result folder")
    args = p.parse_args(argv)
    run = json.loads((args.folder / "run.json").read_text())
    if "COPE" not in run["methods"]:
        raise SystemExit(f"python -m evals.agent_plans: {args.folder} holds no COPE episodes (methods: {run['methods']})")
    rows, seeds = method_rows(list(read_lines(args.folder / "records.jsonl")), run["methods"])
    counts = plan_counts(rows["COPE"])
    print(f"COPE's plans in {len(seeds)} episodes (the seeds every method has played) of {args.folder.name}:")
    for kind, c in counts.items():
        share = f"{c['name_a_target'] / c['plans']:.0%}" if c["plans"] else "-"
        print(f"- {KINDS[kind]}: {c['plans']}, of which {c['name_a_target']} ({share}) name an object or place "
              f"of their step's valid actions; {c['plans'] - c['name_a_target']} name none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
