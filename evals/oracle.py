"""`python -m evals.oracle FOLDER [FOLDER ...]`: what a perfect confidence signal would buy with the samples a
recording already holds (no model call).

COPE and the MoT-style cascade accept a small answer when the small samples agree enough (math) or a program
passes the user's tests (code). When they settle a problem wrongly, or escalate one a small sample had right,
the signal failed, not necessarily the small model. This reads, per problem, whether any recorded small sample
is right (the benchmark's own `correct`), and replays each cascade with an oracle in place of its signal: a
stage settles the problem exactly when one of its samples is right (free: the small model is local), else the
problem goes on, paying what the recording paid for the next stage. Rows:

- small greedy, then large alone: the one greedy small answer;
- MoT-style with an oracle: the n unplanned small samples (the MoT baseline's), else large alone;
- COPE with an oracle: stage 1's goal-planned samples, then stage 2's guideline-planned ones (paying the
  guideline), else stage 3 as recorded (the guideline and the planned large answer);
- COPE stages 1-2 with an oracle, then large alone: as above, but the large model answers without the guideline.

Accuracy is an upper bound for any acceptance rule on these samples (a real signal accepts no more right answers
than the oracle); cost is against large alone's on the same problems. A bound above large alone's accuracy at a
low cost says the samples hold the answers and the confidence signal is what loses them; a bound that misses
says no acceptance rule on these samples can meet the goal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _usd(candidate: dict[str, Any] | None) -> float:
    return float(((candidate or {}).get("usage") or {}).get("usd") or 0.0)


def _any_right(candidates: Sequence[dict[str, Any]]) -> bool:
    return any(c.get("correct") for c in candidates)


def _stage(record: dict[str, Any], kind: str, stage: int) -> dict[str, Any] | None:
    return next((e for e in record["trace"] if e["kind"] == kind and e.get("stage") == stage), None)


def _votes(record: dict[str, Any], stage: int) -> list[dict[str, Any]]:
    return (_stage(record, "vote", stage) or {}).get("candidates") or []


def _guideline_usd(record: dict[str, Any]) -> float:
    return _usd(_stage(record, "guideline", 2))


def _final(record: dict[str, Any]) -> dict[str, Any] | None:
    return next(iter((_stage(record, "final", 3) or {}).get("candidates") or []), None)


def _large(record: dict[str, Any]) -> dict[str, Any]:
    return record["baselines"]["large_greedy"]


# each replay returns (right, dollars, the stage that settled the problem: 1, 2, or 3 for the large model)
def _small_greedy(r: dict[str, Any]) -> tuple[bool, float, int]:
    if r["baselines"]["small_greedy"].get("correct"):
        return True, 0.0, 1
    return bool(_large(r).get("correct")), _usd(_large(r)), 3


def _mot(r: dict[str, Any]) -> tuple[bool, float, int]:
    if _any_right(r["baselines"].get("small_samples") or []):
        return True, 0.0, 1
    return bool(_large(r).get("correct")), _usd(_large(r)), 3


def _cope(r: dict[str, Any], planned_last: bool = True) -> tuple[bool, float, int]:
    if _any_right(_votes(r, 1)):
        return True, 0.0, 1
    guideline = _guideline_usd(r)
    if _any_right(_votes(r, 2)):
        return True, guideline, 2
    last = _final(r) if planned_last else _large(r)
    return bool((last or {}).get("correct")), guideline + _usd(last), 3


ROWS: dict[str, Callable[[dict[str, Any]], tuple[bool, float, int]]] = {
    "small greedy, then large alone": _small_greedy,
    "MoT-style with an oracle (n unplanned small samples, then large alone)": _mot,
    "COPE with an oracle (stage 1, stage 2, then the planned large answer)": _cope,
    "COPE stages 1-2 with an oracle, then large alone": lambda r: _cope(r, planned_last=False),
}


def complete(record: dict[str, Any]) -> bool:
    """Whether the record holds every stage in full (stage 3 was drawn even where a stage before decided)."""
    return bool(_votes(record, 1)) and bool(_votes(record, 2)) and _final(record) is not None


def oracle(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Large alone, and each oracle row: problems right, accuracy, cost against large alone."""
    records = [r for r in records if complete(r)]
    large_usd = sum(_usd(_large(r)) for r in records)
    out = {
        "problems": len(records),
        "large_alone": {
            "correct": sum(bool(_large(r).get("correct")) for r in records),
            "usd": large_usd,
        },
        "rows": {},
    }
    for name, replay in ROWS.items():
        results = [replay(r) for r in records]
        usd = sum(u for _, u, _ in results)
        out["rows"][name] = {
            "correct": sum(ok for ok, _, _ in results),
            "usd": usd,
            "cost_vs_large": usd / large_usd - 1 if large_usd else None,
            "settled": [sum(stage == s for _, _, stage in results) for s in (1, 2, 3)],
        }
    return out


def markdown(name: str, result: dict[str, Any]) -> str:
    n = result["problems"]
    large = result["large_alone"]
    lines = [
        f"### {name}: {n} problems",
        "",
        "| method | right (accuracy) | cost vs large alone | settled by a right small sample at stage 1 / 2, sent on |",
        "|---|---|---|---|",
        f"| large alone | {large['correct']} ({large['correct'] / n:.1%}) | +0% | |" if n else "| large alone | - | - | |",
    ]
    for row, v in result["rows"].items():
        cost = v["cost_vs_large"]
        s1, s2, rest = v["settled"]
        lines.append(f"| {row} | {v['correct']} ({v['correct'] / n:.1%}) | "
                     f"{'-' if cost is None else f'{cost:+.0%}'} | {s1} / {s2}, {rest} |")
    return "\n".join(lines) + "\n"


def read(folder: Path) -> dict[str, Any]:
    """The oracle rows of one recorded folder (its default variant); records without every stage are counted."""
    from .benchmarks import folder_records

    records = [r for r in folder_records(folder).items if r.get("variant", "default") == "default"]
    result = oracle(records)
    if result["problems"] < len(records):
        result["skipped_incomplete"] = len(records) - result["problems"]
    return result


def main(argv: list[str] | None = None) -> int:
    from .folders import report_folders

    return report_folders(argv, "python -m evals.oracle", __doc__, read, markdown, "oracle")


if __name__ == "__main__":
    raise SystemExit(main())
