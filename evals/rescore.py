"""`python -m evals.rescore FOLDER [--cut-off]`: re-read recorded replies with the current rules, no model call.

`--cut-off` (any benchmark): the cascade treats an executor reply cut off at max_tokens as holding no
answer; records made before the baselines followed that rule (and the first GSM8K records, made before the
cascade did) read such replies as answers. This marks every error-free one-call reply whose completion
tokens reached the run's cap as cut off (inferred from the tokens, since those records kept no
finish_reason), re-decides the votes it changes and counts the stage-1 samples it cannot judge (their
usage adds the goal call, so the executor's own length is unknown). A record says how its replies were
judged (`"cut_off"`): records made with the finish_reason check, and records an earlier rescore marked, are
left alone, since a reply can end naturally on exactly the cap's last token.

`--retest` (code benchmarks): re-runs the tests of every recorded program with the benchmark's current tests
and test setup (e.g. after HumanEval's prompt preamble became its test setup) and decides each stage again;
the record says so (`"retested"`).

`--acceptance user` (code benchmarks): decides every stage again as if it had accepted on the tests a user
has (MBPP's first assert, HumanEval's docstring examples: doctests, else example lines such as "f(2) == 4";
see `evals.loaders`) instead of the grading tests, with no model call: every recorded program a stage could accept (the cascade's stage-1/2
samples, the unplanned small samples) is run on those tests, each stage's ballot picks again (the first
program passing them, else the one passing most), and every program keeps the grade it was recorded with
(every grading test). The records, run.json and the report go to a new folder (default
FOLDER/acceptance-user); the folder's own records and tables are left as they were. On a folder recorded
under the same rule, `--out NEW` re-derives it on that rule's tests as they are today (HumanEval's user tests
gained the docstring's example lines on 2026-12-01).

Without any of these (code benchmarks):

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
import sys
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


def _decided_again(entry: dict[str, Any], ballot, example, correct) -> dict[str, Any]:
    """A vote entry decided again by the cascade's own ballot (already fed its candidates), graded."""
    new = ballot.decision().to_record(entry["stage"], entry["tau"])
    for c in new["candidates"]:
        c["correct"] = bool(c["answer"] is not None and correct(example, c))
    return new


def _tests_ballot(entry: dict[str, Any], example, task: Code) -> TestsBallot:
    """The cascade's own ballot for one recorded stage, running the example's current tests and setup."""
    return TestsBallot(len(entry["candidates"]), entry["tau"], tests=example.tests,
                       setup=example.get("test_setup") or "", early_stop=False, timeout_s=task.timeout_s,
                       memory_mb=task.memory_mb, max_workers=task.max_workers)


def accept_record(record: dict[str, Any], example, task: Code, accept) -> int:
    """Decide a record's stages again on the example's `tests` (what accepts), in place: each stage's ballot
    runs them on its recorded programs; the unplanned small samples get `accept`'s report. Every program keeps
    its recorded grade (`correct`); each says whether it was `accepted`. Returns how many programs ran."""
    ran = 0
    for i, entry in enumerate(record["trace"]):
        if entry["kind"] != "vote":
            continue
        grade = {c["index"]: bool(c.get("correct")) for c in entry["candidates"]}
        ballot = _tests_ballot(entry, example, task)
        ballot.add([_candidate(c, c.get("answer")) for c in entry["candidates"]])
        record["trace"][i] = new = _decided_again(entry, ballot, example,
                                                          lambda ex, c, grade=grade: grade[c["index"]])
        for c in new["candidates"]:
            c["accepted"] = c["extra"]["tests"]["status"] == "passed"
        ran += sum(c["extra"]["tests"]["status"] not in ("no_code", "no_tests") for c in new["candidates"])
    for c in (record.get("baselines") or {}).get("small_samples", []):
        c.setdefault("extra", {})["tests"] = report = accept(example, c)
        c["accepted"] = report["status"] == "passed"
        ran += report["status"] not in ("no_code", "no_tests")
    record["acceptance_tests"] = len(example.tests)
    return ran


def _others(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates outside the votes: the final (stage-3) answer and the baselines' replies."""
    b = record.get("baselines") or {}
    finals = [c for e in record["trace"] if e["kind"] == "final" for c in e["candidates"]]
    return [c for c in [*finals, b.get("small_greedy"), *b.get("small_samples", []), b.get("large_greedy")] if c]


RETESTED = "every recorded program's tests re-run (evals.rescore --retest)"


def retest_record(record: dict[str, Any], example, correct, task: Code) -> int:
    """Re-run the tests of every recorded program in one record, in place (after the benchmark's tests or
    setup changed), deciding each stage again; returns how many programs were tested. Replies are not
    re-read (answers stay as recorded) and tokens, dollars and seconds stay as they were."""
    tested = 0
    for i, entry in enumerate(record["trace"]):
        if entry["kind"] == "vote":
            ballot = _tests_ballot(entry, example, task)
            ballot.add([_candidate(c, c.get("answer")) for c in entry["candidates"]])
            record["trace"][i] = _decided_again(entry, ballot, example, correct)
            tested += sum(c.get("answer") is not None for c in entry["candidates"])
    for c in _others(record):
        if c.get("answer") is not None:
            (c.get("extra") or {}).pop("tests", None)  # a stale report would be reused by the grader
            c["correct"] = bool(correct(example, c))
            tested += 1
    record["retested"] = RETESTED
    return tested


def rescore_record(record: dict[str, Any], example, correct, task: Code) -> int:
    """Re-read one record in place; returns how many candidates now hold a program."""
    changed = 0
    for i, entry in enumerate(record["trace"]):
        if entry["kind"] != "vote":
            continue
        found = {c["index"]: _reread(c) for c in entry["candidates"]}
        if not any(found.values()):
            continue
        changed += sum(code is not None for code in found.values())
        ballot = _tests_ballot(entry, example, task)
        ballot.add([_candidate(c, found[c["index"]] or c.get("answer")) for c in entry["candidates"]])
        record["trace"][i] = _decided_again(entry, ballot, example, correct)
    for c in _others(record):
        code = _reread(c)
        if code is not None:
            c["answer"] = code
            c["correct"] = bool(correct(example, c))
            changed += 1
    for e in record["trace"]:
        if e["kind"] == "final":
            e["answer"], e["accepted"] = e["candidates"][0]["answer"], e["candidates"][0]["answer"] is not None
    return changed


CUT_OFF = ("the reply reached max_tokens={cap} (inferred from its completion tokens; recorded before this reply "
           "was checked), so it holds no final answer")


def _reached_cap(c: dict[str, Any], cap: int) -> bool:
    usage = c.get("usage") or {}
    return c.get("error") is None and usage.get("calls") == 1 and usage.get("completion_tokens", 0) >= cap


def _abstain(c: dict[str, Any], cap: int) -> None:
    c["answer"], c["error"], c["correct"] = None, CUT_OFF.format(cap=cap), False


INFERRED = "inferred from completion tokens (evals.rescore --cut-off)"


def mark_cut_off(record: dict[str, Any], example, correct, task, caps: dict[str, int]) -> tuple[int, int] | None:
    """Mark one record's one-call replies that reached their role's cap (`caps`: small_executor and
    large_executor) as cut off, in place. Returns (marked, stage-1 samples that cannot be judged), or None
    for a record whose replies were already judged: recorded with the finish_reason check (a reply that
    ended naturally on exactly the cap's last token is not cut off) or marked by an earlier rescore."""
    if record.get("cut_off"):
        return None
    record["cut_off"] = INFERRED
    marked = unknown = 0
    for i, entry in enumerate(record["trace"]):
        cap = caps["large_executor" if entry["kind"] == "final" else "small_executor"]
        cands = entry.get("candidates", [])
        unknown += sum(c.get("error") is None and (c.get("usage") or {}).get("calls", 1) > 1
                       and c["usage"].get("completion_tokens", 0) >= cap for c in cands)
        hit = [c for c in cands if _reached_cap(c, cap)]
        if not hit:
            continue
        for c in hit:
            _abstain(c, cap)
        marked += len(hit)
        if entry["kind"] == "vote":  # decided again by the cascade's own ballot for this task
            ballot = task.consensus().ballot(len(cands), entry["tau"], task.same, example.inputs().toDict(),
                                             early_stop=False)
            ballot.add([_candidate(c, c.get("answer")) for c in cands])
            record["trace"][i] = _decided_again(entry, ballot, example, correct)
        else:
            entry["answer"], entry["accepted"] = None, False
    b = record.get("baselines") or {}
    for c, role in [(b.get("small_greedy"), "small_executor"), *[(c, "small_executor") for c in b.get("small_samples", [])],
                    (b.get("large_greedy"), "large_executor")]:
        if c and _reached_cap(c, caps[role]):
            _abstain(c, caps[role])
            marked += 1
    return marked, unknown


def _rewrite(path: Path, records: dict[str, dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records.values():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _rederive(args, run, rule, records, examples, bench, argv) -> int:
    """`--acceptance RULE`: the folder's records decided again under RULE, written with their report to a new
    folder; the folder itself is not touched."""
    from .folders import user_tests
    from .report import write_report

    if run["benchmark"] not in ("mbpp", "humaneval"):
        raise SystemExit(f"--acceptance applies to code benchmarks; {args.folder} holds {run['benchmark']!r}")
    if rule == args.acceptance and args.out is None:
        raise SystemExit(f"{args.folder} was recorded with acceptance {rule!r} already: its report is that rule's. "
                         "To decide it again on that rule's tests as they are today (e.g. after HumanEval's user "
                         "tests gained the docstring's example lines), name the new folder with --out")
    out = args.out or args.folder / f"acceptance-{args.acceptance}"
    if out.resolve() == args.folder.resolve():
        raise SystemExit("--out must be a new folder: the recorded folder's records and tables are kept as they are")
    out.mkdir(parents=True, exist_ok=True)
    task = Code()
    ran = {pid: accept_record(r, examples[pid], task, bench.accept) for pid, r in records.items()}
    _rewrite(out / "records.jsonl", records)
    command = "python -m evals.rescore " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "run.json").write_text(json.dumps({**run, "acceptance": args.acceptance,
                                              "user_tests": user_tests(run["benchmark"], args.acceptance),
                                              "recorded_acceptance": rule,
                                              "derived_from": str(args.folder), "command": command}, indent=2))
    no_tests = sum(r["acceptance_tests"] == 0 for r in records.values())
    print(f"{sum(ran.values())} recorded programs run on their {args.acceptance} acceptance tests in {len(records)} "
          f"problems ({no_tests} with no acceptance test); no model call -> {out / 'records.jsonl'}")
    print(acceptance_summary(list(records.values())))
    print(write_report(out))
    return 0


def acceptance_summary(records: list[dict[str, Any]]) -> str:
    """How acceptance and grading disagree over the cascade's stage-1/2 samples: programs accepted but wrong,
    and correct programs not accepted."""
    cands = [c for r in records for e in r["trace"] if e["kind"] == "vote" for c in e["candidates"]
             if c.get("answer") is not None]
    accepted_wrong = sum(bool(c.get("accepted")) and not c.get("correct") for c in cands)
    correct_rejected = sum(bool(c.get("correct")) and not c.get("accepted") for c in cands)
    n_accepted = sum(bool(c.get("accepted")) for c in cands)
    return (f"stage-1/2 programs: {len(cands)}; accepted {n_accepted}, of which wrong under every grading test "
            f"{accepted_wrong}; correct but not accepted {correct_rejected}")


def main(argv: list[str] | None = None) -> int:
    from .benchmarks import folder_records, get
    from .loaders import load

    p = argparse.ArgumentParser(prog="python -m evals.rescore", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a result folder (with run.json, records.jsonl)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cut-off", action="store_true",
                   help="mark one-call replies that reached max_tokens as cut off (any benchmark)")
    mode.add_argument("--retest", action="store_true",
                   help="re-run the tests of every recorded program, e.g. after the benchmark's tests or test "
                        "setup changed (code benchmarks)")
    mode.add_argument("--acceptance", choices=["user", "grading"],
                      help="decide every stage again under this acceptance rule, into a new folder (code benchmarks)")
    p.add_argument("--out", type=Path, default=None,
                   help="with --acceptance: the folder for the new records and report (default FOLDER/acceptance-RULE)")
    args = p.parse_args(argv)
    run = json.loads((args.folder / "run.json").read_text())
    path = args.folder / "records.jsonl"
    records = folder_records(args.folder).by_id()
    rule = run.get("acceptance") or ("grading" if run["benchmark"] in ("mbpp", "humaneval") else None)
    examples = {ex.id: ex for ex in load(run["benchmark"], split="all", acceptance=args.acceptance or rule or "user")}
    bench = get(run["benchmark"])
    if args.acceptance:
        return _rederive(args, run, rule, records, examples, bench, argv)
    if args.cut_off:
        roles = run.get("role_max_tokens") or {}
        caps = {r: roles.get(r, run["max_tokens"]) for r in ("small_executor", "large_executor")}
        results = [mark_cut_off(r, examples[pid], bench.correct, bench.task(), caps) for pid, r in records.items()]
        counts = [c for c in results if c is not None]
        _rewrite(path, records)
        print(f"{sum(m for m, _ in counts)} replies that reached max_tokens marked cut off in "
              f"{sum(m > 0 for m, _ in counts)} of {len(counts)} problems; {sum(u for _, u in counts)} stage-1 "
              f"samples reached it with their goal call and cannot be judged; {len(results) - len(counts)} "
              f"problems left alone (checked while recording or by an earlier rescore) -> {path}")
        return 0
    if run["benchmark"] not in ("mbpp", "humaneval"):
        raise SystemExit(f"evals.rescore re-reads code replies; {args.folder} holds {run['benchmark']!r} "
                         "(--cut-off works on any benchmark)")
    task = Code()
    if args.retest:
        tested = [retest_record(r, examples[pid], bench.correct, task) for pid, r in records.items()]
        _rewrite(path, records)
        print(f"{sum(tested)} recorded programs tested again in {len(records)} problems -> {path}")
        return 0
    changed = {pid: rescore_record(r, examples[pid], bench.correct, task) for pid, r in records.items()}
    _rewrite(path, records)
    print(f"{sum(changed.values())} replies re-read as programs in {sum(v > 0 for v in changed.values())} of "
          f"{len(records)} problems -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
