"""evals.cap_extend on scripted models: a voting recording read at a larger cap. Only the replies the old cap cut
are asked again (continued from their recorded text, at their own temperature), a sample that read a cut goal
is drawn again with the continued goal, stage 2 is drawn again when stage 1's majority stands behind another
goal, and every vote and outcome is read again; the recording itself is never changed."""

import json

import dspy
import pytest
from fakes import ScriptedLM

import cope_dspy.local
import evals.loaders
from evals import cap_extend

OLD, NEW = 8, 64
PLAIN = {r: "plain" for r in ("goal_planner", "guideline_planner", "small_executor", "large_executor")}
CUT = "the reply was cut off at max_tokens (finish_reason='length'), so it holds no final answer"
LONG_GOAL = "a b c d e f g h"  # 8 "tokens": the old cap


def sample(i, answer, goal=None, guideline=None, cut=False, tokens=3, solution=None):
    plans = {k: v for k, v in (("goal", goal), ("guideline", guideline)) if v}
    return {"index": i, "solution": solution or ("Working" if cut else f"so \\boxed{{{answer}}}"),
            "answer": None if cut else answer, "plans": plans, "error": CUT if cut else None, "score": None,
            "usage": {"calls": 1 + bool(goal and not guideline), "prompt_tokens": 10, "completion_tokens": tokens,
                      "usd": 0.0},
            "extra": {"seconds": 1.0}, "correct": answer == "7" and not cut}


def record(pid, stage1, stage2_goal, stage2, *, final_cut=False, large_cut=False, small_cut=False):
    large = {**sample(0, "7", cut=large_cut, tokens=OLD if large_cut else 5)}
    large["usage"]["usd"] = 0.001
    final = sample(0, "7", guideline="G", cut=final_cut, tokens=OLD if final_cut else 5)
    trace = [{"kind": "vote", "stage": 1, "tau": 0.75, "drawn": 4, "accepted": False, "confidence": 0.5,
              "answer": None, "candidates": stage1},
             {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "completion_tokens": 3}},
             {"kind": "vote", "stage": 2, "tau": 0.5, "drawn": 4, "accepted": False, "confidence": 0.5,
              "answer": None, "candidates": [sample(i, a, goal=stage2_goal, guideline="G") for i, a in enumerate(stage2)]},
             {"kind": "final", "stage": 3, "accepted": not final_cut, "answer": None if final_cut else "7",
              "candidates": [final]}]
    return {"format": "cope-dspy/records/1", "id": pid, "variant": "default",
            "policy": {"n": 4, "stages": [1, 2, 3], "task": "math", "variant": "default"},
            "inputs": {"question": pid}, "answer": "7", "stage": 3, "trace": trace,
            "baselines": {"small_greedy": sample(0, "3", cut=small_cut, tokens=OLD if small_cut else 3),
                          "small_samples": [sample(i, "3") for i in range(4)], "large_greedy": large}}


def folder_with(tmp_path, records, formats=PLAIN):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({
        "benchmark": "gsm8k", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": 4,
        "max_tokens": OLD, "prices": {"scripted/large": [1.0, 2.0]}, "formats": formats, "command": "test"}))
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def p1():
    """Stage 1: samples 0 and 1 cut, sample 2's goal cut (its executor wrote 3 tokens and an end), sample 3 says 3.
    Recorded, 3 and 7 tie and stage 2 read sample 2's goal; at the new cap 0, 1 and 2 say 7."""
    stage1 = [sample(0, None, goal="g0", cut=True, tokens=OLD + 2), sample(1, None, goal="g1", cut=True, tokens=OLD + 2),
              sample(2, "3", goal=LONG_GOAL, tokens=OLD + 3 + 1, solution="x y z"), sample(3, "3", goal="g3")]
    return record("p1", stage1, LONG_GOAL, ["3", "3", "7", "3"], final_cut=True, large_cut=True, small_cut=True)


def p2():
    """Nothing cut: the record is read as it was."""
    return record("p2", [sample(i, "7", goal=f"g{i}") for i in range(4)], "g0", ["7"] * 4)


def respond(call):
    """Continuations come back with their prefix (as llama.cpp's server returns them); draws from the start say 7."""
    if call.prefill == LONG_GOAL:
        return call.prefill + " i j."
    if call.prefill is not None:
        return call.prefill + " it out: \\boxed{7}."
    return "Drawn again: \\boxed{7}."


@pytest.fixture
def served(monkeypatch):
    models = {name: ScriptedLM(name, respond) for name in ("scripted/small", "scripted/large")}
    opened = []

    class Server:
        def __init__(self, name, **kw):
            self.name = name
            opened.append(name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def lm(self, max_tokens, cache):
            models[self.name].lm.kwargs["max_tokens"] = max_tokens
            return models[self.name].lm

    monkeypatch.setattr(cope_dspy.local, "LocalServer", Server)
    monkeypatch.setattr(cap_extend.Extender, "tokens", lambda self, text: len(text.split()))
    monkeypatch.setattr(evals.loaders, "load", lambda name, split="test", **kw: [
        dspy.Example(id=f"p{i}", question=f"p{i}", answer="7").with_inputs("question") for i in range(1, 3)])
    return models, opened


def lines(path):
    return {r["id"]: r for r in cap_extend.read_jsonl(path)}


def test_only_cut_replies_are_continued_and_what_read_a_cut_plan_is_drawn_again(tmp_path, served):
    models, opened = served
    folder = folder_with(tmp_path, [p1(), p2()])
    before = (folder / "records.jsonl").read_text()
    path = cap_extend.extend(folder, NEW, tmp_path / "new", concurrency=1, progress=lambda *_: None)
    small, large = models["scripted/small"], models["scripted/large"]

    assert opened == ["scripted/large", "scripted/small"]  # one server at a time, the large pass first
    assert (folder / "records.jsonl").read_text() == before
    # large: large alone and stage 3 of p1, each continued greedily for the rest of the cap
    assert [(c.prefill, c.max_tokens, c.temperature) for c in large.calls] == [("Working", NEW - OLD, 0.0)] * 2
    continued = [c for c in small.calls if c.prefill is not None]
    # small: the greedy baseline (T=0), stage 1's two cut samples (T=0.4) and the cut goal (T=0.8)
    assert sorted((c.prefill, c.temperature) for c in continued) == [
        ("Working", 0.0), ("Working", 0.4), ("Working", 0.4), (LONG_GOAL, 0.8)]
    assert {c.max_tokens for c in continued} == {NEW - OLD}
    drawn = [c for c in small.calls if c.prefill is None]
    # the sample that read the cut goal, drawn again reading the continued one; then all of stage 2 (stage 1's
    # majority now stands behind sample 0's goal), reading that goal and the guideline
    assert [c.temperature for c in drawn] == [0.4] + [0.8] * 4
    assert f"Goal: {LONG_GOAL} i j." in drawn[0].user
    assert all("Goal: g0" in c.user and "Guideline: G" in c.user for c in drawn[1:])

    new = lines(path)
    r = new["p1"]
    s1, s2 = (e for e in r["trace"] if e["kind"] == "vote")
    assert [c["answer"] for c in s1["candidates"]] == ["7", "7", "7", "3"]
    assert (s1["accepted"], s1["confidence"], s1["answer"]) == (True, 0.75, "7")
    assert s1["candidates"][2]["plans"] == {"goal": f"{LONG_GOAL} i j."}
    assert [c["plans"] for c in s2["candidates"]] == [{"goal": "g0", "guideline": "G"}] * 4
    assert (r["stage"], r["answer"]) == (1, "7")
    # a continued sample is one call at the new cap: its recorded tokens plus the new ones (20 a scripted call)
    assert s1["candidates"][0]["usage"]["completion_tokens"] == OLD + 2 + 20
    final = r["trace"][-1]
    assert final["answer"] == "7" and final["candidates"][0]["correct"] is True
    assert final["candidates"][0]["usage"]["usd"] == pytest.approx(0.0 + 20 * 2.0 / 1e6)
    assert r["baselines"]["large_greedy"]["usage"]["usd"] == pytest.approx(0.001 + 20 * 2.0 / 1e6)
    assert r["baselines"]["small_greedy"]["answer"] == "7"
    assert r["extended"]["redrawn"] == 5
    # nothing cut in p2: every sample as recorded, its votes read as the ballot reads them
    old, again = p2(), new["p2"]
    assert again["baselines"] == old["baselines"]
    assert [e.get("candidates") for e in again["trace"]] == [e.get("candidates") for e in old["trace"]]
    assert (again["stage"], again["answer"], again["extended"]["continued"]) == (1, "7", 0)
    meta = json.loads((tmp_path / "new" / "run.json").read_text())
    assert meta["max_tokens"] == NEW and meta["extended_from"]["max_tokens"] == OLD


def test_a_rerun_resumes_and_asks_nothing_already_asked(tmp_path, served):
    models, opened = served
    folder = folder_with(tmp_path, [p1(), p2()])
    path = cap_extend.extend(folder, NEW, tmp_path / "new", concurrency=1, progress=lambda *_: None)
    first = path.read_text()
    calls = sum(len(m.calls) for m in models.values())
    with path.open("a") as f:
        f.write('{"id": "torn')  # a run killed mid-write
    cap_extend.extend(folder, NEW, tmp_path / "new", concurrency=1, progress=lambda *_: None)
    assert sum(len(m.calls) for m in models.values()) == calls and opened == ["scripted/large", "scripted/small"]
    assert lines(path) == {r["id"]: r for r in map(json.loads, first.splitlines())}
    assert path.read_text() == first  # the torn line is cut, never glued to a new one


@pytest.mark.parametrize("change, message", [
    (lambda run, rec: run.update(max_tokens=NEW), "not above the recorded cap"),
    (lambda run, rec: run.update(formats={**PLAIN, "small_executor": "chat"}), "small_executor asked in a format"),
    (lambda run, rec: run.update(benchmark="mbpp"), "not a voting benchmark"),
    (lambda run, rec: rec["trace"][1]["usage"].update(completion_tokens=OLD), "guideline was cut"),
])
def test_what_a_continuation_cannot_read_is_refused_before_any_server_starts(tmp_path, served, change, message):
    _, opened = served
    run, rec = json.loads(folder_with(tmp_path, [p1()]).joinpath("run.json").read_text()), p1()
    change(run, rec)
    folder = tmp_path / "run"
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "records.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(SystemExit, match=message):
        cap_extend.extend(folder, NEW, tmp_path / "new", progress=lambda *_: None)
    assert opened == []


def test_a_stopped_run_keeps_every_finished_call_and_makes_only_the_rest(tmp_path, served):
    models, _ = served
    folder = folder_with(tmp_path, [p1(), p2()])
    path = cap_extend.extend(folder, NEW, tmp_path / "new", concurrency=1, progress=lambda *_: None)
    first = lines(path)
    small_calls = len(models["scripted/small"].calls)
    assert len(cap_extend.read_jsonl(tmp_path / "new" / "calls.jsonl")) == small_calls  # one line a call
    path.unlink()  # as if stopped before p1's record was written: its calls are kept
    cap_extend.extend(folder, NEW, tmp_path / "new", concurrency=1, progress=lambda *_: None)
    assert len(models["scripted/small"].calls) == small_calls  # every call reused, none made again
    assert lines(path) == first


def test_re_reading_the_unchanged_math500_records_reproduces_them():
    """The committed MATH-500 recording, read again without a change: every vote, stage 2's goal and each
    record's outcome come out as the cascade recorded them (no model call)."""
    from pathlib import Path

    from evals.folders import with_defaults

    folder = Path(__file__).resolve().parents[2] / "evals/results/math500-qwen2.5-coder-0.5b+qwen2.5-coder-1.5b-plain-n4-cap1024-math-hint"
    run = with_defaults(json.loads((folder / "run.json").read_text()))
    ext = cap_extend.Extender(run, dspy.LM("openai/unused"), 2048)
    records = cap_extend.read_jsonl(folder / "records.jsonl")
    assert len(records) == 100
    for r in records:
        votes = {e["stage"]: e for e in r["trace"] if e["kind"] == "vote"}
        for entry in votes.values():
            again = cap_extend.revote(ext.cascade, r["inputs"], entry, sorted(entry["candidates"], key=lambda c: c["index"]))
            assert {k: again[k] for k in ("drawn", "accepted", "confidence", "answer")} == \
                {k: entry[k] for k in ("drawn", "accepted", "confidence", "answer")}, r["id"]
        goal = cap_extend.goal_behind(ext.cascade, r["inputs"], votes[1])
        assert all(c["plans"].get("goal") == goal for c in votes[2]["candidates"]), r["id"]
        assert cap_extend.outcome(r["trace"]) == (r["stage"], r["answer"]), r["id"]
