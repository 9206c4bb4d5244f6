"""Record a cascade's stages 2 and 3 on the stage 1 another folder recorded (`cope eval ... --stage1-from BASE`):
a paired comparison of a guideline setting.

Two recordings of the cascade in two guideline wordings differ in their stage-1 draws as much as in their
guidelines: on MBPP's 100 problems the code-hint recording's stage 1 (asked identically) accepted 54 problems and
got 40 right, Code's own wording's 61 and 47 (evals/README), more than the 4 points between their COPE rows. Here the new recording asks only what the
guideline setting changes: the guideline, stage 2's small samples following it, stage 3's large answer. Each record
takes stage 1 and the unplanned baselines from BASE's record of the same problem, so both folders' COPE rows
share their stage 1 and their large-alone and MoT rows are the same samples.

This is exact only when stage 2 does not depend on stage 1's draw: with `--stage1 alone` (stage 2's samples get
the guideline and no goal). Under the paper's stage 1 they follow the goal behind stage 1's ballot, so BASE must
have been recorded with `--stage1 alone`. Only the guideline planner's settings (wording, format, reply cap) may
differ from BASE's; everything else must match, or the shared rows would not be the same method's.

`python -m evals.restage NEW` then compares NEW with its BASE problem by problem (`paired`): on the problems both
hold, the paper's COPE in each (at the thresholds its table replays), how many only one gets right, an exact
two-sided sign test on those, and what each folder's guideline and COPE cost.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from .folders import SETTINGS, with_defaults

# The one role whose settings may differ from BASE's: it is asked only in stages 2 and 3.
FREE_ROLE = "guideline_planner"
# Per-role settings (role -> value); the others must be equal as they are.
PER_ROLE = ("formats", "wordings", "role_max_tokens")


def base_records(base: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """BASE's records by problem id, after checking that BASE was recorded as `settings` ask, the guideline
    planner's settings apart. Raises SystemExit naming what differs."""
    from .benchmarks import folder_records

    base = Path(base)
    if not (base / "run.json").is_file() or not (base / "records.jsonl").is_file():
        raise SystemExit(f"cope eval: --stage1-from {base}: not a result folder (no run.json or records.jsonl); "
                         "give a folder `python -m evals.run ... --stage1 alone --out FOLDER` recorded")
    old = with_defaults({"prices": {}, **json.loads((base / "run.json").read_text())})
    if old.get("stage1_from"):
        raise SystemExit(f"cope eval: --stage1-from {base}: that folder's stage 1 is itself {old['stage1_from']}'s; "
                         "give that folder instead")
    if old["stage1_plans"]:
        raise SystemExit(f"cope eval: --stage1-from {base}: it was recorded with the paper's stage 1 (goals), where "
                         "stage 2's samples follow the goal behind stage 1's ballot, so its stage 1 cannot be paired "
                         "with new stages 2-3; give a folder recorded with --stage1 alone")
    diff, settings = [], with_defaults(settings)
    for key in SETTINGS:
        if key in ("prices", "stage1_from"):  # prices: checked against the folder once the servers give theirs
            continue
        was, now = old.get(key), settings.get(key)
        if key in PER_ROLE:
            was = {r: v for r, v in (was or {}).items() if r != FREE_ROLE}
            now = {r: v for r, v in (now or {}).items() if r != FREE_ROLE}
        if was != now:
            diff.append(f"{key}: {was!r} there, {now!r} here")
    if diff:
        raise SystemExit(f"cope eval: --stage1-from {base}: only the guideline planner's settings may differ from the "
                         f"folder's, and these do: {'; '.join(diff)}. Rerun with its settings ({old.get('command')}).")
    return folder_records(base).by_id("default")


def merge(base_line: dict[str, Any], new_line: dict[str, Any], base: str) -> dict[str, Any]:
    """One problem's record: BASE's stage 1 and baselines, the new stages 2 and 3. The answer a live run gives at
    the recorded thresholds is stage 1's when BASE's stage 1 accepted, else the new stages'. `seconds` is the new
    stages' recording time."""
    stage1 = [e for e in base_line["trace"] if e.get("stage") == 1 and e["kind"] == "vote"]
    if len(stage1) != 1 or any(e.get("stage") == 1 for e in new_line["trace"]):
        raise ValueError(f"{new_line['id']}: expected one recorded stage-1 vote in {base} and none in the new "
                         "recording")
    line = {**new_line, "policy": base_line["policy"], "trace": stage1 + new_line["trace"],
            "baselines": base_line["baselines"], "stage1_from": base}
    if stage1[0]["accepted"]:
        line["answer"], line["stage"] = base_line["answer"], 1
    return line


def record_on(base_lines: dict[str, dict[str, Any]], base: str, full_cascade, later_cascade, examples, correct,
              path: Path, *, accept=None, concurrency: int = 2, progress: bool = True) -> list[str]:
    """Record `later_cascade` (stages 2 and 3) on every example BASE holds and not yet in `path`, each line merged
    with BASE's (`merge`); resumable as `record_all`, whose policy check reads `full_cascade` (the whole cascade the
    merged lines describe). Returns the ids of the examples BASE does not hold (not recorded)."""
    from cope_dspy.records import record_each

    from .benchmarks import record_example

    missing = [ex.id for ex in examples if ex.id not in base_lines]
    jobs = [(ex.id, ex) for ex in examples if ex.id in base_lines]
    if jobs:
        record_each(full_cascade, jobs,
                    lambda job: merge(base_lines[job[0]], record_example(later_cascade, job[1], correct, False, accept),
                                      base),
                    path, concurrency=concurrency, progress=progress, desc=f"recording {path.parent.name}",
                    unit="problem")
    return missing


def sign_test(a: int, b: int) -> float:
    """Exact two-sided sign test: the chance of a split of a + b discordant problems at least as uneven as (a, b)
    when either folder is as likely to be the one right."""
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired(new: Path) -> dict[str, Any]:
    """NEW (recorded with --stage1-from) against its BASE on the problems both hold: COPE's rows (`evals.versus`'s,
    as each table replays them), the discordant problems by the stage each decided at, the sign test, and per
    folder the guideline's mean completion tokens and COPE's mean API dollars."""
    from .benchmarks import folder_records
    from .versus import folder_rows

    new = Path(new)
    if not (new / "run.json").is_file():
        raise SystemExit(f"python -m evals.restage: {new} has no run.json; give a folder `python -m evals.run ... "
                         "--stage1-from BASE --out FOLDER` wrote")
    base = json.loads((new / "run.json").read_text()).get("stage1_from")
    if not base:
        raise SystemExit(f"python -m evals.restage: {new} was not recorded with --stage1-from: nothing to pair it with")
    base = Path(base)
    records = {"base": folder_records(base).by_id(), "new": folder_records(new).by_id()}
    ids = sorted(set(records["base"]) & set(records["new"]))
    if not ids:
        raise SystemExit(f"python -m evals.restage: {new} and {base} hold no problem in common")
    out: dict[str, Any] = {"base_folder": str(base), "new_folder": str(new), "problems": len(ids)}
    rows = {}
    for name, folder in (("base", base), ("new", new)):
        rows[name], _, _ = folder_rows(folder, ids)
        tokens = [_guideline_tokens(records[name][i]) for i in ids]
        out[name] = {"right": sum(r["correct"] for r in rows[name]),
                     "usd_per_1k": 1000 * sum(r["usd"] for r in rows[name]) / len(ids),
                     "exits": {s: sum(r["stage"] == s for r in rows[name]) for s in (1, 2, 3)},
                     "guideline_tokens_mean": sum(tokens) / len(tokens)}
    only = {"base": {}, "new": {}}
    for b, n in zip(rows["base"], rows["new"], strict=True):
        if b["correct"] != n["correct"]:
            side = "base" if b["correct"] else "new"
            key = f"{b['stage']}/{n['stage']}"
            only[side][key] = only[side].get(key, 0) + 1
    out["only_base_right"], out["only_new_right"] = sum(only["base"].values()), sum(only["new"].values())
    out["only_by_stages"] = only  # "base stage/new stage" -> problems
    out["sign_test_p"] = sign_test(out["only_base_right"], out["only_new_right"])
    return out


def _guideline_tokens(record: dict[str, Any]) -> int:
    entry = next((e for e in record["trace"] if e["kind"] == "guideline"), None)
    return int(((entry or {}).get("usage") or {}).get("completion_tokens") or 0)


def markdown(result: dict[str, Any]) -> str:
    b, n = result["base"], result["new"]
    lines = [f"Paired on {result['problems']} problems, stage 1 shared: `{result['new_folder']}` (new) against "
             f"`{result['base_folder']}` "
             "(base).", "",
             "| folder | COPE right | API $ per 1k problems | exits at stage 1 / 2 / 3 | guideline tokens, mean |",
             "|---|---|---|---|---|"]
    for name, r in (("base", b), ("new", n)):
        lines.append(f"| {name} | {r['right']} of {result['problems']} | {r['usd_per_1k']:.4f} | "
                     f"{' / '.join(str(r['exits'][s]) for s in (1, 2, 3))} | {r['guideline_tokens_mean']:.0f} |")
    said = lambda d: ", ".join(f"{v} at stages {k}" for k, v in sorted(d.items())) or "none"  # noqa: E731
    lines += ["", f"Only base right on {result['only_base_right']} ({said(result['only_by_stages']['base'])}); only new "
              f"right on {result['only_new_right']} ({said(result['only_by_stages']['new'])}); stages read base/new. "
              f"Exact two-sided sign test p = {result['sign_test_p']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.restage", description="Compare a --stage1-from folder with its "
                                "base, problem by problem (no model call).")
    p.add_argument("folder", type=Path, help="a folder `python -m evals.run ... --stage1-from BASE` recorded")
    p.add_argument("--out", type=Path, help="also write paired.md and paired.json here")
    args = p.parse_args(argv)
    result = paired(args.folder)
    text = markdown(result)
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "paired.md").write_text(text)
        (args.out / "paired.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
