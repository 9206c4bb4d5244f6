"""`python -m evals.cap_probe FOLDER --max-tokens N`: the large-alone replies a recording cut at its reply cap,
asked again under a larger cap, so that the records say which cap cuts under 5% of them (issue 16's rule).

    M=evals/results/math500-qwen2.5-coder-0.5b+qwen2.5-coder-1.5b-plain-n4-cap1024-math-hint
    python -m evals.cap_probe $M --max-tokens 2048                  # writes $M/cap-probe-2048/

`evals.plan_stats` can only say "above the cap" when 5% or more of the replies reach it: their lengths past it
are unknown. Only those replies are asked again, the large model alone at temperature 0 under the recording's
prompt, format and wording, in one of two ways:

- continued (the default): the recorded reply is sent back as the start of the assistant's message (llama.cpp's
  server continues a final assistant message, as Anthropic's API does; an API that starts a new turn instead,
  such as OpenAI's, would give a wrong reading: use --redraw there) and the model goes on from it, up to the new
  cap in all. Its first tokens are the recorded ones, so the reading is about the recording itself: each
  recorded reply that ended under the old cap ends the same way under a larger one, and each cut one is read to
  where it would have ended. Plain-text formats only (a chat-format record keeps parsed fields, not the reply);
- `--redraw`: asked again from the start. Greedy decoding on a server that batches requests is not
  bit-reproducible (the first MATH-500 probe: none of 10 re-drawn replies began with the recorded one), so a
  re-draw is a new sample of the reply, not a longer copy of it.

Writes `probe.jsonl` (one line per reply asked; rerun the same command to resume, `kill` stops it after the
replies in flight) and `probe.md`: the cut rate at both caps, the smallest cap that cuts under 5% when the new
one does, and large alone's accuracy and API cost at both caps. The recording itself is not changed: its
methods' tables stay at the recorded cap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .folders import sigterm_as_interrupt, with_defaults
from .plan_stats import CUT_TARGET, cap_under, cut_off

CONCURRENCY = 2  # replies asked at once (the embedded server's slots)


def _tokens(c: dict[str, Any]) -> int:
    return int((c.get("usage") or {}).get("completion_tokens") or 0)


def _usd(c: dict[str, Any]) -> float:
    return float((c.get("usage") or {}).get("usd") or 0.0)


def cut_records(records: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """The records whose large-alone reply was cut at `cap`."""
    return [r for r in records if cut_off(r["baselines"]["large_greedy"], cap)]


def read_probe(path: Path) -> dict[str, dict[str, Any]]:
    """probe.jsonl by id (a last line torn by a killed run is cut: that reply is asked again)."""
    from cope_dspy.records import read_lines

    return {item["id"]: item for item in read_lines(path, repair=True)}


def summarize(records: list[dict[str, Any]], probed: dict[str, dict[str, Any]], old_cap: int, new_cap: int,
              judged: bool = True, mode: str = "continue") -> dict[str, Any]:
    """The cut rate, accuracy and cost of large alone at the recorded cap and at `new_cap`. A reply that was not
    cut keeps its record at both caps; a cut one is read from the probe (`probed`, by id)."""
    cut = cut_records(records, old_cap)
    asked = [probed[r["id"]]["reply"] for r in cut if r["id"] in probed]
    complete = len(asked) == len(cut)
    old = [r["baselines"]["large_greedy"] for r in records]
    new = [probed[r["id"]]["reply"] if r["id"] in probed else r["baselines"]["large_greedy"] for r in records]
    still_cut = sum(cut_off(c, new_cap) for c in asked)
    n = len(records)
    tokens = [new_cap if cut_off(c, new_cap) else _tokens(c) for c in new]
    return {
        "mode": mode,
        "problems": n,
        "old_cap": old_cap,
        "new_cap": new_cap,
        "cut_at_old_cap": len(cut),
        "asked": len(asked),
        "complete": complete,
        "cut_at_new_cap": still_cut if complete else None,
        "cut_share_at_new_cap": still_cut / n if complete and n else None,
        "cap_under_target": cap_under(tokens, new_cap) if complete else None,
        "begins_with_recorded_reply": sum(probed[r["id"]]["begins_with_recorded"] for r in cut if r["id"] in probed),
        "accuracy_old_cap": sum(bool(c.get("correct")) for c in old) / n if judged and n else None,
        "accuracy_new_cap": sum(bool(c.get("correct")) for c in new) / n if judged and complete and n else None,
        "usd_old_cap": sum(_usd(c) for c in old),
        "usd_new_cap": sum(_usd(c) for c in new) if complete else None,
        "right_now_among_asked": sum(bool(c.get("correct")) for c in asked) if judged else None,
        "asked_tokens": sorted(new_cap if cut_off(c, new_cap) else _tokens(c) for c in asked),
    }


def markdown(folder: Path, s: dict[str, Any]) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    rows = [
        ("large-alone replies cut at the recorded cap", f"{s['cut_at_old_cap']} of {s['problems']} at {s['old_cap']}"),
        (f"asked again at {s['new_cap']}", f"{s['asked']} of {s['cut_at_old_cap']}"
         + ("" if s["complete"] else " (incomplete: rerun the command to resume)")),
        (f"still cut at {s['new_cap']}", "n/a" if s["cut_at_new_cap"] is None else
         f"{s['cut_at_new_cap']} of {s['problems']} ({pct(s['cut_share_at_new_cap'])})"),
        (f"smallest cap cutting under {CUT_TARGET:.0%}" + (" (an estimate: the cut replies re-drawn, the others as "
                                                          "recorded)" if s.get("mode") == "redraw" else ""),
         "n/a" if not s["complete"] else
         str(s["cap_under_target"]) if s["cap_under_target"] else f"above {s['new_cap']} (censored)"),
        ("completion tokens of the replies asked again, sorted", ", ".join(map(str, s.get("asked_tokens", [])))),
        ("new replies that begin with the recorded one", f"{s['begins_with_recorded_reply']} of {s['asked']}"
         + (" (continued from it)" if s.get("mode") == "continue" else " (re-drawn from the start)")),
        ("large alone right", "n/a (judged at report time)" if s["accuracy_old_cap"] is None else
         f"{pct(s['accuracy_old_cap'])} at {s['old_cap']}, {pct(s['accuracy_new_cap'])} at {s['new_cap']} "
         f"({s['right_now_among_asked']} of the {s['asked']} asked again now right)"),
        ("large alone's API $ (all problems)", f"{s['usd_old_cap']:.4f} at {s['old_cap']}, "
         + ("n/a" if s["usd_new_cap"] is None else f"{s['usd_new_cap']:.4f} at {s['new_cap']}")),
    ]
    return "\n".join([f"# Reply cap probe: {folder.name}", "", "| | |", "|---|---|",
                      *[f"| {k} | {v} |" for k, v in rows], ""])


def continue_text(cascade, role: str, predictor, lm, inputs: dict[str, Any], prefix: str, done: int, new_cap: int,
                  temperature: float) -> dict[str, Any]:
    """`prefix`, a reply of `role` that the old cap cut after `done` completion tokens, continued at `temperature`
    up to `new_cap` completion tokens in all: the adapter's own messages (what DSPy sends) with the prefix as the
    start of the assistant's message. Returns the whole reply's output field (`text`), whether it was cut again
    (`cut`), the new completion tokens (`more`), the continuation call's prompt tokens and its seconds."""
    from dspy.lm15 import Config, Message, Request, TextPart

    adapter = cascade.adapter_for(role)
    messages = adapter.format(predictor.signature, predictor.demos, inputs)
    turns = [Message.user(m["content"]) if m["role"] == "user" else Message.assistant([TextPart(m["content"])])
             for m in messages if m["role"] != "system"]
    request = Request(
        model=lm.model, messages=(*turns, Message.assistant([TextPart(prefix)])),
        system="\n\n".join(m["content"] for m in messages if m["role"] == "system") or None,
        config=Config(max_tokens=new_cap - done, temperature=temperature, stop=tuple(getattr(adapter, "stop", ()))))
    started = time.perf_counter()
    response = lm(request)
    text = response.text or ""
    full = text if text.startswith(prefix) else prefix + text  # llama.cpp returns the prefix with the rest
    return {"text": adapter.parse(predictor.signature, full)[next(iter(predictor.signature.output_fields))],
            "cut": response.finish_reason == "length",
            "more": int(response.usage.output_tokens or 0) if response.usage else 0,
            "prompt_tokens": int(response.usage.input_tokens or 0) if response.usage else 0,
            "seconds": round(time.perf_counter() - started, 3)}


def continued_usage(cascade, lm, recorded: dict[str, Any], more: int) -> dict[str, Any]:
    """A recorded candidate's usage as one call at the new cap: its recorded prompt and tokens plus `more`
    completion tokens at the completion price."""
    rate = cascade.prices.rate(lm.model) or (0.0, 0.0)
    usage = recorded.get("usage") or {}
    done = _tokens(recorded)
    return {**usage, "completion_tokens": done + more, "total_tokens": (usage.get("prompt_tokens") or 0) + done + more,
            "usd": _usd(recorded) + more * rate[1] / 1e6}


def continue_reply(cascade, predictor, lm, question: str, recorded: dict[str, Any], new_cap: int) -> dict[str, Any]:
    """The recorded cut large-alone reply continued greedily up to `new_cap` completion tokens in all, as a
    candidate the way the recording keeps one: its usage is one call at `new_cap` (the continuation's own call is
    kept in extra)."""
    from cope_dspy.consensus import Candidate

    done = _tokens(recorded)
    more = continue_text(cascade, "large_executor", predictor, lm, {"question": question},
                         recorded.get("solution") or "", done, new_cap, 0.0)
    c = Candidate(index=0, solution=more["text"], answer=cascade.task.parse(more["text"], ""))
    if more["cut"]:
        c.cut_off()
    c.usage = continued_usage(cascade, lm, recorded, more["more"])
    c.extra = {"continued_from_tokens": done, "continuation": {
        "prompt_tokens": more["prompt_tokens"], "completion_tokens": more["more"], "seconds": more["seconds"]}}
    return c.to_dict()


def probe(folder: Path, new_cap: int, out: Path, *, redraw: bool = False, concurrency: int = CONCURRENCY,
          threads: int = 2, progress=print) -> dict[str, Any]:
    """Ask the cut large-alone replies of `folder` again at `new_cap` (continued, or re-drawn with `redraw`);
    append each to out/probe.jsonl."""
    from cope_dspy import Cascade
    from cope_dspy.costs import Prices
    from cope_dspy.pair import open_model
    from cope_dspy.plain import PlainAdapter
    from cope_dspy.records import solve_unplanned
    from cope_dspy.role import unplanned

    from .benchmarks import folder_records, get
    from .loaders import load
    from .wordings import instructions

    run = with_defaults(json.loads((folder / "run.json").read_text()))
    old_cap = int(run["max_tokens"])
    mode = "redraw" if redraw else "continue"
    if new_cap <= old_cap:
        raise SystemExit(f"cap_probe: --max-tokens {new_cap} is not above the recorded cap {old_cap}; give a larger one")
    if "large_executor" in (run.get("role_max_tokens") or {}):
        raise SystemExit("cap_probe: the recording capped large_executor by role; the probe asks under one cap only")
    records = [r for r in folder_records(folder).items if r["variant"] == "default"]
    bench = get(run["benchmark"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "probe.jsonl"
    probed = read_probe(path)
    if any(item.get("mode", "redraw") != mode for item in probed.values()):
        raise SystemExit(f"cap_probe: {path} holds replies asked another way; give --out a new folder")
    todo = [r for r in cut_records(records, old_cap) if r["id"] not in probed]
    if todo:
        examples = {ex.id: ex for ex in load(run["benchmark"], split=run["split"], acceptance=run["acceptance"] or "user")}
        missing = [r["id"] for r in todo if r["id"] not in examples]
        if missing:
            raise SystemExit(f"cap_probe: {len(missing)} recorded ids are not in {run['benchmark']}'s "
                             f"{run['split']} split (e.g. {missing[0]!r})")
        lock = threading.Lock()
        with contextlib.ExitStack() as stack:
            penalty = float(run["repeat_penalty"])  # the recording's own (1.0, off, unless it set one)
            lm = open_model(stack, run["large"], max_tokens=new_cap, cache=False, parallel=concurrency,
                            threads=threads, repeat_penalty=None if penalty == 1.0 else penalty)
            cascade = Cascade(small=lm, large=lm, task=bench.task(instructions=instructions(run["wordings"])),
                              n=int(run["n"]), prices=Prices({m: tuple(r) for m, r in run.get("prices", {}).items()}),
                              formats=run["formats"] or None)
            if not redraw and not isinstance(cascade.adapter_for("large_executor"), PlainAdapter):
                raise SystemExit("cap_probe: the recording asked the large model in the chat format, whose records "
                                 "keep parsed fields, not the reply, so it cannot be continued: add --redraw")
            predictor = unplanned(cascade.large_executor)

            def ask(record: dict[str, Any]) -> None:
                ex = examples[record["id"]]
                recorded = record["baselines"]["large_greedy"]
                reply = (solve_unplanned(cascade, predictor, "large_executor", ex.question, 0.0, None) if redraw
                         else continue_reply(cascade, predictor, lm, ex.question, recorded, new_cap))
                if run["benchmark"] != "mtbench":
                    reply["correct"] = bool(bench.correct(ex, reply))
                item = {"id": record["id"], "max_tokens": new_cap, "mode": mode, "reply": reply,
                        "begins_with_recorded": (reply.get("solution") or "").startswith(recorded.get("solution") or "")}
                with lock, path.open("a") as f:
                    f.write(json.dumps(item) + "\n")
                progress(f"{record['id']}: {_tokens(reply)} tokens"
                         + (", still cut" if cut_off(reply, new_cap) else ""))

            pool = ThreadPoolExecutor(max_workers=concurrency)
            try:
                with sigterm_as_interrupt():
                    for f in [pool.submit(ask, r) for r in todo]:
                        f.result()
            except KeyboardInterrupt:
                pool.shutdown(wait=True, cancel_futures=True)  # the replies in flight finish and are kept
                print(f"stopped; replies so far in {path}. Rerun the same command to resume.", file=sys.stderr)
                raise
            pool.shutdown(wait=True)
    summary = summarize(records, read_probe(path), old_cap, new_cap, judged=run["benchmark"] != "mtbench", mode=mode)
    (out / "probe.md").write_text(markdown(folder, summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="python -m evals.cap_probe", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a recorded benchmark folder (run.json + records.jsonl)")
    p.add_argument("--max-tokens", type=int, required=True, help="the larger reply cap to ask the cut replies under")
    p.add_argument("--redraw", action="store_true",
                   help="ask each cut reply again from the start instead of continuing the recorded one")
    p.add_argument("--out", type=Path, default=None,
                   help="default: FOLDER/cap-probe-<max-tokens> (-redraw with --redraw)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="replies asked at once")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads of an embedded server (1 beside another recording on 2 cores)")
    args = p.parse_args(argv)
    if not (args.folder / "run.json").exists():
        raise SystemExit(f"cap_probe: {args.folder} has no run.json; give a folder `python -m evals.run` recorded")
    for flag, value in (("--concurrency", args.concurrency), ("--threads", args.threads)):
        if value < 1:
            raise SystemExit(f"cap_probe: {flag} must be >= 1, got {value}")
    out = args.out or args.folder / f"cap-probe-{args.max_tokens}{'-redraw' if args.redraw else ''}"
    try:
        probe(args.folder, args.max_tokens, out, redraw=args.redraw, concurrency=args.concurrency, threads=args.threads)
    except KeyboardInterrupt:
        return 130
    print((out / "probe.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
