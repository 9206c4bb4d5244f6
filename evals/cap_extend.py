"""`python -m evals.cap_extend FOLDER --max-tokens N --out NEW`: a voting recording (GSM8K, MATH-500) read at a
larger reply cap without recording it again.

    M=evals/results/math500-qwen2.5-coder-0.5b+qwen2.5-coder-1.5b-plain-n4-cap1024-math-hint
    python -m evals.cap_extend $M --max-tokens 2048 --out $M-cap2048
    python -m evals.run math500 --limit 100 --n 4 --format plain --max-tokens 2048 \\
        --wording guideline_planner=math-hint --report-only --out $M-cap2048      # its tables

A reply that ended under the old cap ends the same way under a larger one, so only what the old cap cut is asked
again, each reply continued from its recorded text at its own temperature (`evals.cap_probe.continue_text`): a
reply is drawn token by token, so the recorded start plus a continuation is a draw of the whole reply at the
larger cap. What read a cut plan is drawn again with the continued plan:

- executor replies marked cut (the baselines' samples, every stage's samples, stage 3) are continued;
- a stage-1 goal the old cap cut (its length counted by the small model's own tokenizer) is continued, and the
  sample that read it is drawn again from the start under the new cap;
- each stage's vote is read again; when stage 1's majority now stands behind another goal (or a continued one),
  all of stage 2's samples, which read that goal, are drawn again; a guideline cut at the old cap is refused (it
  would change stages 2 and 3: record again).

Greedy replies (T = 0) are continued greedily; on a server that batches requests greedy decoding is not
bit-reproducible (evals.cap_probe's re-draws), so the continuation is the recorded reply's own end, not a rerun.
Two passes, one model server at a time (a small machine's cores): the large model's replies (stage 3 and large
alone; the latter read from FOLDER/cap-probe-N when that probe continued them), then the small model's. Writes
NEW/run.json (the recording's settings at the new cap and where they came from), NEW/large.jsonl,
NEW/calls.jsonl (every small-model call, by what it asked) and NEW/records.jsonl (one finished record per line):
rerun the command to resume; `kill` stops at once, losing only the calls in flight. Seconds: a continued or re-drawn sample's seconds add the new calls' to the recorded ones, measured
under whatever else ran then, so this folder's latency columns are not a recording's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .cap_probe import continue_reply, continue_text, continued_usage, read_probe
from .folders import sigterm_as_interrupt, with_defaults

CONCURRENCY = 4  # records in flight in the small model's pass (the server's slots)


def is_cut(c: dict[str, Any]) -> bool:
    """An executor reply the recording marked cut (a stage-1 sample's usage sums its goal's and its own tokens,
    so the mark, not the count, says it)."""
    return "max_tokens" in str(c.get("error") or "")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A file of JSON lines ([] when missing); a last line torn by a killed run is cut from the file (its work is
    done again), so the next line appended starts on its own."""
    from cope_dspy.records import read_lines

    return read_lines(path, repair=True)


def check_extendable(run: dict[str, Any], records: list[dict[str, Any]], new_cap: int) -> None:
    """Refuse, before any server starts, what a continuation cannot read at the new cap."""
    old_cap = int(run["max_tokens"])
    if new_cap <= old_cap:
        raise SystemExit(f"cap_extend: --max-tokens {new_cap} is not above the recorded cap {old_cap}; give a larger one")
    if run.get("role_max_tokens"):
        raise SystemExit("cap_extend: the recording capped roles one by one (--role-max-tokens); it extends one cap only")
    if run["benchmark"] not in ("gsm8k", "math500"):
        raise SystemExit(f"cap_extend: {run['benchmark']} is not a voting benchmark (gsm8k, math500): code samples "
                         "run tests and MT-Bench's are judged; record again at the new cap")
    roles = ("goal_planner", "guideline_planner", "small_executor", "large_executor")
    chat = [r for r in roles if (run.get("formats") or {}).get(r) != "plain"]
    if chat:
        raise SystemExit(f"cap_extend: {', '.join(chat)} asked in a format whose records keep parsed fields, not the "
                         "reply, so it cannot be continued; record again at the new cap")
    for r in records:
        if not r.get("baselines"):
            raise SystemExit(f"cap_extend: record {r['id']!r} has no baselines; record with `python -m evals.run`")
        for entry in r["trace"]:
            if entry["kind"] == "guideline" and (entry.get("usage") or {}).get("completion_tokens", 0) >= old_cap:
                raise SystemExit(f"cap_extend: record {r['id']!r}'s guideline was cut at {old_cap}; stages 2 and 3 "
                                 "read it, so record again at the new cap")


def large_work(record: dict[str, Any]) -> list[str]:
    """What the large model continues for one record: 'large_greedy' and 'final' when cut."""
    final = [e for e in record["trace"] if e["kind"] == "final"]
    return ([w for w, c in (("large_greedy", record["baselines"]["large_greedy"]),
                            ("final", final[0]["candidates"][0] if final else None)) if c and is_cut(c)])


class Extender:
    """One pass's model, and the cascade that formats its prompts (the recording's formats and wordings)."""

    def __init__(self, run: dict[str, Any], lm, new_cap: int, calls: Path | None = None):
        from cope_dspy import Cascade
        from cope_dspy.costs import Prices

        from .benchmarks import get
        from .wordings import instructions

        self.run, self.lm, self.new_cap, self.old_cap = run, lm, new_cap, int(run["max_tokens"])
        self.bench = get(run["benchmark"])
        self.cascade = Cascade(small=lm, large=lm, task=self.bench.task(instructions=instructions(run["wordings"])),
                               n=int(run["n"]), prices=Prices({m: tuple(r) for m, r in run.get("prices", {}).items()}),
                               formats=run["formats"], stage1_plans=run.get("stage1_plans", True))
        self.t = self.cascade.policy.temperatures
        # every call made, by what was asked: a rerun reuses them, so a stop loses only the calls in flight
        self.calls_path, self.stopping = calls, threading.Event()
        self.calls = {x["key"]: x["value"] for x in read_jsonl(calls)} if calls else {}
        self.lock = threading.Lock()

    def once(self, spec: dict[str, Any], make) -> dict[str, Any]:
        """`make()`'s result for the call `spec` describes (role, inputs, prefix, temperature, sample), made once
        and kept in calls.jsonl; nothing is kept once a stop began (a call cut short by it is not a reply)."""
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        if key not in self.calls:
            value = make()
            if self.stopping.is_set():
                raise KeyboardInterrupt
            with self.lock:
                self.calls[key] = value
                if self.calls_path:
                    with self.calls_path.open("a") as f:
                        f.write(json.dumps({"key": key, "value": value}) + "\n")
        return copy.deepcopy(self.calls[key])

    def more(self, role: str, predictor, inputs: dict[str, Any], prefix: str, temperature: float,
             index: int) -> dict[str, Any]:
        """`prefix` continued to the new cap (`continue_text`), once per call."""
        spec = {"continue": role, "inputs": inputs, "prefix": prefix, "temperature": temperature, "index": index,
                "max_tokens": self.new_cap}
        return self.once(spec, lambda: continue_text(self.cascade, role, predictor, self.lm, inputs, prefix,
                                                     self.old_cap, self.new_cap, temperature))

    # ------------------------------------------------------------------------------------- one reply

    def continued(self, role: str, predictor, inputs: dict[str, Any], recorded: dict[str, Any],
                  temperature: float) -> dict[str, Any]:
        """A cut executor sample continued: its plans and index kept, its answer read again, its usage one call
        at the new cap, its seconds the recorded ones plus the continuation's."""
        from cope_dspy.consensus import Candidate

        more = self.more(role, predictor, inputs, recorded.get("solution") or "", temperature, recorded["index"])
        c = Candidate(index=recorded["index"], solution=more["text"], answer=self.cascade.task.parse(more["text"], ""),
                      plans=dict(recorded.get("plans") or {}))
        if more["cut"]:
            c.cut_off()
        c.usage = continued_usage(self.cascade, self.lm, recorded, more["more"])
        c.extra = {"seconds": round(_seconds(recorded) + more["seconds"], 3),
                   "continued": {"from_tokens": self.old_cap, "completion_tokens": more["more"],
                                 "prompt_tokens": more["prompt_tokens"]}}
        return c.to_dict()

    def drawn(self, stage_role: str, inputs: dict[str, Any], temperature: float, index: int,
              plans: dict[str, str]) -> dict[str, Any]:
        """A sample drawn again from the start under the new cap (its plan changed)."""
        from cope_dspy.records import solve

        spec = {"draw": stage_role, "inputs": inputs, "temperature": temperature, "index": index,
                "max_tokens": self.new_cap}
        c = self.once(spec, lambda: solve(self.cascade, getattr(self.cascade, stage_role), stage_role, inputs,
                                          temperature, index))
        c["index"], c["plans"] = index, plans
        c.setdefault("extra", {})["redrawn"] = {"max_tokens": self.new_cap}
        return c

    def tokens(self, text: str) -> int:
        """`text`'s length in the model's own tokens (the llama.cpp server's /tokenize)."""
        base = self.lm.kwargs["api_base"].rstrip("/").removesuffix("/v1")
        req = urllib.request.Request(base + "/tokenize", data=json.dumps({"content": text}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as reply:  # noqa: S310 - our own local server
            return len(json.load(reply)["tokens"])

    def score(self, example, c: dict[str, Any]) -> dict[str, Any]:
        c["correct"] = bool(self.bench.correct(example, c))
        return c

    # ------------------------------------------------------------------------------------- the large pass

    def large(self, record: dict[str, Any], where: str, example) -> dict[str, Any]:
        from cope_dspy.role import unplanned
        from cope_dspy.signatures import format_plans

        q = example.question
        if where == "large_greedy":
            reply = continue_reply(self.cascade, unplanned(self.cascade.large_executor), self.lm, q,
                                   record["baselines"]["large_greedy"], self.new_cap)
            reply["extra"]["seconds"] = round(_seconds(record["baselines"]["large_greedy"])
                                              + reply["extra"]["continuation"]["seconds"], 3)
        else:
            (final,) = [e for e in record["trace"] if e["kind"] == "final"][0]["candidates"]
            guideline = final.get("plans", {}).get("guideline")
            reply = self.continued("large_executor", self.cascade.large_executor,
                                   {"question": q, "plans": format_plans(guideline=guideline)}, final,
                                   self.t.large_executor)
        return self.score(example, reply)

    # ------------------------------------------------------------------------------------- the small pass

    def small(self, record: dict[str, Any], example, large: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One record at the new cap: its large replies from the large pass, its small ones continued or drawn
        again here, its votes read again."""
        from cope_dspy.role import unplanned
        from cope_dspy.signatures import format_plans

        r = copy.deepcopy(record)
        q, t, c = example.question, self.t, self.cascade
        b = r["baselines"]
        counts = {"continued": 0, "redrawn": 0}

        def cont(role, predictor, inputs, recorded, temperature):
            counts["continued"] += 1
            return self.score(example, self.continued(role, predictor, inputs, recorded, temperature))

        alone = unplanned(c.small_executor)
        if is_cut(b["small_greedy"]):
            b["small_greedy"] = cont("small_executor", alone, {"question": q}, b["small_greedy"], 0.0)
        b["small_samples"] = [cont("small_executor", alone, {"question": q}, s, t.stage2_executor) if is_cut(s) else s
                              for s in b["small_samples"]]
        if "large_greedy" in large:
            b["large_greedy"] = large["large_greedy"]
        votes = {e["stage"]: e for e in r["trace"] if e["kind"] == "vote"}
        guideline = next((e["guideline"] for e in r["trace"] if e["kind"] == "guideline"), None)
        if 1 in votes:
            cands = []
            for s in sorted(votes[1]["candidates"], key=lambda s: s["index"]):
                goal = (s.get("plans") or {}).get("goal")
                if goal is not None and self.goal_cut(s, goal):
                    counts["continued"] += 1
                    counts["redrawn"] += 1
                    s = self.score(example, self.regoal(q, s, goal))
                elif is_cut(s):
                    s = cont("small_executor", c.small_executor, {"question": q, "plans": format_plans(goal=goal)}, s,
                             t.stage1_executor)
                cands.append(s)
            votes[1].update(revote(c, r["inputs"], votes[1], cands))
        if 2 in votes:
            goal = goal_behind(c, r["inputs"], votes[1]) if 1 in votes else None
            plans = {k: v for k, v in (("goal", goal), ("guideline", guideline)) if v}
            inputs = {"question": q, "plans": format_plans(goal, guideline)}
            old = sorted(votes[2]["candidates"], key=lambda s: s["index"])
            if any((s.get("plans") or {}).get("goal") != goal for s in old):  # stage 2 read another goal
                counts["redrawn"] += len(old)
                cands = [self.score(example, self.drawn("small_executor", inputs, t.stage2_executor, s["index"], plans))
                         for s in old]
            else:
                cands = [cont("small_executor", c.small_executor, inputs, s, t.stage2_executor) if is_cut(s) else s
                         for s in old]
            votes[2].update(revote(c, r["inputs"], votes[2], cands))
        for e in r["trace"]:
            if e["kind"] == "final" and "final" in large:
                e["candidates"] = [large["final"]]
                e["answer"], e["accepted"] = large["final"]["answer"], large["final"]["answer"] is not None
        r["stage"], r["answer"] = outcome(r["trace"])
        r["extended"] = {"from_max_tokens": self.old_cap, "max_tokens": self.new_cap,
                         "large_continued": sorted(large), **counts}
        return r

    def goal_cut(self, sample: dict[str, Any], goal: str) -> bool:
        """Whether the old cap cut a stage-1 sample's goal: the goal fills the cap and the sample's completion
        tokens leave no end-of-text token for it (its executor's reply: the cap when cut, else its own tokens and
        one end-of-text token)."""
        if int((sample.get("usage") or {}).get("completion_tokens") or 0) < self.old_cap:
            return False
        goal_tokens = self.tokens(goal)
        executor = self.old_cap if is_cut(sample) else self.tokens(sample.get("solution") or "") + 1
        return goal_tokens >= self.old_cap - 8 and sample["usage"]["completion_tokens"] - executor - goal_tokens <= 0

    def regoal(self, question: str, sample: dict[str, Any], goal: str) -> dict[str, Any]:
        """A stage-1 sample whose goal was cut: the goal continued, then its executor drawn again reading it."""
        from cope_dspy.signatures import format_plans

        more = self.more("goal_planner", self.cascade.goal_planner, {"question": question}, goal, self.t.goal,
                         sample["index"])
        new = self.drawn("small_executor", {"question": question, "plans": format_plans(goal=more["text"])},
                         self.t.stage1_executor, sample["index"], {"goal": more["text"]})
        u = new["usage"]
        goal_prompt = max(more["prompt_tokens"] - self.tokens(goal), 0)  # the continuation's prompt holds the prefix
        u.update(calls=u.get("calls", 0) + 1, prompt_tokens=u.get("prompt_tokens", 0) + goal_prompt,
                 completion_tokens=u.get("completion_tokens", 0) + self.old_cap + more["more"])
        u["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
        new["extra"]["seconds"] = round(_seconds(sample) + more["seconds"] + new["extra"].get("seconds", 0.0), 3)
        new["extra"]["goal_continued"] = {"from_tokens": self.old_cap, "completion_tokens": more["more"],
                                          "cut": more["cut"]}
        return new


def _seconds(c: dict[str, Any]) -> float:
    return float((c.get("extra") or {}).get("seconds") or 0.0)


def _decision(cascade, inputs: dict[str, Any], entry: dict[str, Any], cands: list[dict[str, Any]]):
    from cope_dspy.consensus import Candidate

    ballot = cascade.task.consensus().ballot(len(cands), entry["tau"], cascade.task.same, inputs, early_stop=False)
    ballot.add([Candidate(index=s["index"], solution=s.get("solution") or "", answer=s.get("answer"),
                          plans=dict(s.get("plans") or {}), error=s.get("error")) for s in cands])
    return ballot.decision()


def revote(cascade, inputs: dict[str, Any], entry: dict[str, Any], cands: list[dict[str, Any]]) -> dict[str, Any]:
    """A vote entry read again from its (new) samples, as the cascade's ballot reads them."""
    d = _decision(cascade, inputs, entry, cands)
    return {"drawn": d.drawn, "accepted": d.accepted, "confidence": d.confidence, "answer": d.answer,
            "candidates": cands}


def goal_behind(cascade, inputs: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """The goal stage 2 reads, as the cascade picks it (`cope_dspy.cascade.goal_behind`) from stage 1's vote."""
    from cope_dspy import cascade as cascade_module

    return cascade_module.goal_behind(_decision(cascade, inputs, entry,
                                                sorted(entry["candidates"], key=lambda s: s["index"])))


def outcome(trace: list[dict[str, Any]]) -> tuple[int, str | None]:
    """The recorded policy's live result: the first stage that accepts, else stage 3's answer."""
    for e in trace:
        if e["kind"] == "vote" and e["accepted"]:
            return e["stage"], e["answer"]
    final = [e for e in trace if e["kind"] == "final"]
    if final:
        return 3, final[0]["answer"]
    last = [e for e in trace if e["kind"] == "vote"][-1]
    return last["stage"], last["answer"]


def extend(folder: Path, new_cap: int, out: Path, *, concurrency: int = CONCURRENCY, threads: int = 2,
           progress=print) -> Path:
    """`folder`'s records at `new_cap` into out/records.jsonl (both passes; resumable)."""
    from cope_dspy.local import LocalServer

    from .benchmarks import folder_records
    from .loaders import load

    run = with_defaults(json.loads((folder / "run.json").read_text()))
    records = [r for r in folder_records(folder).items if r["variant"] == "default"]
    check_extendable(run, records, new_cap)
    old_cap = int(run["max_tokens"])
    out.mkdir(parents=True, exist_ok=True)
    meta = {**run, "limit": len(records), "offset": 0, "max_tokens": new_cap,
            "command": f"python -m evals.cap_extend {folder} --max-tokens {new_cap} --out {out}",
            "extended_from": {"folder": str(folder), "max_tokens": old_cap, "command": run.get("command")}}
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    examples = {ex.id: ex for ex in load(run["benchmark"], split=run["split"])}
    missing = [r["id"] for r in records if r["id"] not in examples]
    if missing:
        raise SystemExit(f"cap_extend: {len(missing)} recorded ids are not in {run['benchmark']}'s {run['split']} "
                         f"split (e.g. {missing[0]!r})")
    lock = threading.Lock()

    def each(work, items, name, ext):
        """`work` on every item, `concurrency` at once. A SIGTERM/Ctrl-C stops at once: a record can take many
        calls in sequence, so the records in flight are not waited for; every call they finished is kept
        (calls.jsonl) and a rerun makes only the rest."""
        pool = ThreadPoolExecutor(max_workers=concurrency)
        try:
            with sigterm_as_interrupt():
                for f in [pool.submit(work, i) for i in items]:
                    f.result()
        except KeyboardInterrupt:
            ext.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            print(f"stopped in the {name} pass; work so far in {out}. Rerun the same command to resume.",
                  file=sys.stderr)
            raise
        pool.shutdown(wait=True)

    # the large pass: stage 3 and large alone (large alone from a continued cap probe when there is one)
    large_path = out / "large.jsonl"
    probe = folder / f"cap-probe-{new_cap}" / "probe.jsonl"
    done = {(x["id"], x["where"]) for x in read_jsonl(large_path)}
    for pid, item in read_probe(probe).items():
        if item.get("mode") == "continue" and item.get("max_tokens") == new_cap and (pid, "large_greedy") not in done:
            with large_path.open("a") as f:
                f.write(json.dumps({"id": pid, "where": "large_greedy", "reply": item["reply"],
                                    "from": str(probe)}) + "\n")
            done.add((pid, "large_greedy"))
    todo = [(r, w) for r in records for w in large_work(r) if (r["id"], w) not in done]
    if todo:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(LocalServer(run["large"], parallel=2, threads=threads))
            ext = Extender(run, server.lm(max_tokens=new_cap, cache=False), new_cap)

            def ask(item):
                if ext.stopping.is_set():
                    return
                r, where = item
                reply = ext.large(r, where, examples[r["id"]])
                with lock, large_path.open("a") as f:
                    f.write(json.dumps({"id": r["id"], "where": where, "reply": reply}) + "\n")
                progress(f"large {r['id']} {where}: {reply['usage']['completion_tokens']} tokens"
                         + (", still cut" if is_cut(reply) else ""))

            each(ask, todo, "large", ext)
    large = {}
    for x in read_jsonl(large_path):
        large.setdefault(x["id"], {})[x["where"]] = x["reply"]

    # the small pass: every record, in order of the recording
    path = out / "records.jsonl"
    finished = {x["id"] for x in read_jsonl(path)}
    todo_records = [r for r in records if r["id"] not in finished]
    if todo_records:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(LocalServer(run["small"], parallel=concurrency, threads=threads))
            ext = Extender(run, server.lm(max_tokens=new_cap, cache=False), new_cap, calls=out / "calls.jsonl")

            def redo(r):
                new = ext.small(r, examples[r["id"]], large.get(r["id"], {}))
                if ext.stopping.is_set():
                    return
                with lock, path.open("a") as f:
                    f.write(json.dumps(new) + "\n")
                progress(f"small {r['id']}: {new['extended']['continued']} continued, "
                         f"{new['extended']['redrawn']} drawn again")

            each(redo, todo_records, "small", ext)
    return path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="python -m evals.cap_extend", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a recorded voting benchmark folder (run.json + records.jsonl)")
    p.add_argument("--max-tokens", type=int, required=True, help="the larger reply cap")
    p.add_argument("--out", type=Path, required=True, help="the new folder (its records are the recording's at the cap)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="records in flight in the small model's pass")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads of each pass's server (1 beside another recording on 2 cores)")
    args = p.parse_args(argv)
    if not (args.folder / "run.json").exists():
        raise SystemExit(f"cap_extend: {args.folder} has no run.json; give a folder `python -m evals.run` recorded")
    for flag, value in (("--concurrency", args.concurrency), ("--threads", args.threads)):
        if value < 1:
            raise SystemExit(f"cap_extend: {flag} must be >= 1, got {value}")
    if args.out.resolve() == args.folder.resolve():
        raise SystemExit("cap_extend: --out must be a new folder; the recording is never changed")
    try:
        path = extend(args.folder, args.max_tokens, args.out, concurrency=args.concurrency, threads=args.threads)
    except KeyboardInterrupt:
        return 130
    print(f"{len(read_jsonl(path))} records at {args.max_tokens} in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
