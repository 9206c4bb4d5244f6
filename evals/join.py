"""`python -m evals.join SRC DST`: add to result folder DST the records of SRC it does not hold yet.

Two recordings of one benchmark can run at once on disjoint problems (`evals.run ... --offset K`), each in its
own folder (two processes never append to one file). Joining them gives one table:

    python -m evals.join evals/results/gsm8k-...-from51 evals/results/gsm8k-...
    python -m evals.run gsm8k --limit 100 --report-only --out evals/results/gsm8k-...

Only folders recorded with the same settings join (`evals.folders.check_same_settings`: models, n, caps,
formats, wordings, acceptance, prices); a record is added when DST has none with its id and variant, so joining again
after both recordings went on adds only what is new. SRC is left as it is. MT-Bench: SRC's judgments
(judgments.jsonl) that DST lacks are added too, so DST's report does not ask the judge again for them.

Text games (`cope eval twc`) join too: two recordings of other methods (`--methods`) or seeds, each into its
own folder, with the same game settings (`evals.folders.AGENT_SETTINGS`); DST's run.json then lists every
method and every seed either played (`--offset K` splits the seeds between two recordings), so its table covers both:

    python -m evals.run twc ... --methods COPE --out evals/results/twc-...-cope
    python -m evals.join evals/results/twc-...-cope evals/results/twc-...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cope_dspy.records import Writer, read_lines

from .folders import AGENT_GAMES, AGENT_SETTINGS, SETTINGS, check_same_settings, with_defaults


def join(src: Path, dst: Path) -> int:
    """Append SRC's records that DST lacks (by variant and id); returns how many were added."""
    src, dst = Path(src), Path(dst)
    for folder in (src, dst):
        if not (folder / "run.json").exists() or not (folder / "records.jsonl").exists():
            raise SystemExit(f"cope eval join: {folder} is not a result folder (no run.json or records.jsonl)")
    # SRC's settings as check_same_settings reads a folder's (runs of before a setting existed lacked it)
    meta = with_defaults({"prices": {}, **json.loads((src / "run.json").read_text())})
    game = meta.get("benchmark") in AGENT_GAMES
    keys = AGENT_SETTINGS if game else SETTINGS
    missing = [k for k in keys if k not in meta]
    if missing:
        raise SystemExit(f"cope eval join: {src / 'run.json'} does not name {', '.join(missing)}")
    check_same_settings(dst, meta, keys=keys)
    writer = Writer(dst / "records.jsonl")  # also cuts a torn last line of DST
    held = {(r.get("variant", "default"), r["id"]) for r in read_lines(dst / "records.jsonl")}
    added = 0
    for record in read_lines(src / "records.jsonl"):
        key = (record.get("variant", "default"), record["id"])
        if key not in held:
            writer.write(record)
            held.add(key)
            added += 1
    judged = src / "judgments.jsonl"  # MT-Bench: a judgment is keyed by judge, prompts, question and both answers
    if judged.exists():
        cached = Writer(dst / "judgments.jsonl")
        have = {j["key"] for j in read_lines(cached.path)}
        for judgment in read_lines(judged):
            if judgment["key"] not in have:
                cached.write(judgment)
                have.add(judgment["key"])
    if game:  # DST's table covers the methods and seeds SRC played too
        from .agent_methods import METHODS
        from .agent_run import merge_seeds

        run = json.loads((dst / "run.json").read_text())
        run["methods"] = [m for m in METHODS if m in {*meta["methods"], *run["methods"]}]
        run["seeds"] = merge_seeds(run.get("seeds", ()), meta.get("seeds", ()))
        run["limit"] = max(run.get("limit", 0), meta.get("limit", 0))
        (dst / "run.json").write_text(json.dumps(run, indent=2))
    return added


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.join", description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="the folder whose records are added")
    p.add_argument("dst", type=Path, help="the folder that receives them")
    args = p.parse_args(argv)
    added = join(args.src, args.dst)
    print(f"{added} records of {args.src} added to {args.dst / 'records.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
