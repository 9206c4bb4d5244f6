"""`python -m evals.rescore FOLDER`: re-read a code benchmark's recorded replies with the current parser.

A record keeps every reply as the model wrote it (`solution`, and the answer field as `extra.raw_answer`),
so when the code parser learns a new shape of reply, candidates that abstained (no program found) can be
parsed again and tested, with no model call: the recorded tokens, dollars and seconds stay as they were.
Only candidates that abstained without an error are re-read (a reply cut off at max_tokens stays out), and
a stage whose candidates change is decided again by the cascade's own `TestsBallot`. The file is rewritten
atomically; the report is then re-derived with `python -m evals.run ... --report-only`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cope_dspy.code import Code, TestsBallot, extract_code
from cope_dspy.consensus import Candidate


def _reread(c: dict[str, Any]) -> str | None:
    """The program in an abstaining, error-free reply under the current parser, else None."""
    if c.get("answer") is not None or c.get("error"):
        return None
    return extract_code(c.get("solution") or "", (c.get("extra") or {}).get("raw_answer", ""))


def _candidate(c: dict[str, Any], answer: str | None) -> Candidate:
    extra = {k: v for k, v in (c.get("extra") or {}).items() if k != "tests"}
    return Candidate(index=c["index"], solution=c.get("solution") or "", answer=answer, plans=c.get("plans") or {},
                     error=c.get("error"), usage=c.get("usage"), extra=extra)


def rescore_record(record: dict[str, Any], example, correct, task: Code) -> int:
    """Re-read one record in place; returns how many candidates now hold a program."""
    from cope_dspy.cascade import _stage_record

    changed = 0
    for i, entry in enumerate(record["cope"]["trace"]):
        if entry["kind"] != "vote":
            continue
        found = {c["index"]: _reread(c) for c in entry["candidates"]}
        if not any(found.values()):
            continue
        changed += sum(code is not None for code in found.values())
        ballot = TestsBallot(len(entry["candidates"]), entry["tau"], tests=example.tests,
                             setup=example.get("test_setup") or "", early_stop=False, timeout_s=task.timeout_s,
                             memory_mb=task.memory_mb, max_workers=task.max_workers)
        ballot.add([_candidate(c, found[c["index"]] or c.get("answer")) for c in entry["candidates"]])
        new = _stage_record(entry["stage"], entry["tau"], ballot.decision())
        for c in new["candidates"]:
            c["correct"] = bool(c["answer"] is not None and correct(example, c))
        record["cope"]["trace"][i] = new
    b = record.get("baselines") or {}
    finals = [c for e in record["cope"]["trace"] if e["kind"] == "final" for c in e["candidates"]]
    for c in [*finals, b.get("small_greedy"), *b.get("small_samples", []), b.get("large_greedy")]:
        code = _reread(c) if c else None
        if code is not None:
            c["answer"] = code
            c["correct"] = bool(correct(example, c))
            changed += 1
    for e in record["cope"]["trace"]:
        if e["kind"] == "final":
            e["answer"], e["accepted"] = e["candidates"][0]["answer"], e["candidates"][0]["answer"] is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    from .benchmarks import get
    from .loaders import load
    from .records import load_records

    p = argparse.ArgumentParser(prog="python -m evals.rescore", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a result folder of a code benchmark (with run.json, records.jsonl)")
    args = p.parse_args(argv)
    run = json.loads((args.folder / "run.json").read_text())
    if run["benchmark"] not in ("mbpp", "humaneval"):
        raise SystemExit(f"evals.rescore re-reads code replies; {args.folder} holds {run['benchmark']!r}")
    path = args.folder / "records.jsonl"
    records = load_records(path)
    examples = {ex.id: ex for ex in load(run["benchmark"], split="all")}
    bench, task = get(run["benchmark"]), Code()
    changed = {pid: rescore_record(r, examples[pid], bench.correct, task) for pid, r in records.items()}
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records.values():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    print(f"{sum(changed.values())} replies re-read as programs in {sum(v > 0 for v in changed.values())} of "
          f"{len(records)} problems -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
