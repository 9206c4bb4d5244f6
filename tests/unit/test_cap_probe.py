"""evals.cap_probe on scripted models: only the cut large-alone replies are asked again, under the larger cap
(continued from the recorded reply, or re-drawn), and the cut rate, accuracy and cost are read at both caps."""

import json

import dspy
import pytest
from fakes import ScriptedLM, cut, math_model, math_record

import evals.loaders
from cope_dspy import pair
from evals import cap_probe

OLD_CAP, NEW_CAP = 8, 64
CUT = {"p1", "p2"}  # cut at the recorded cap; at the new one p1 ends (right), p2 is cut again


def folder_with_records(tmp_path, k=25, formats=None):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({
        "benchmark": "gsm8k", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": 4,
        "max_tokens": OLD_CAP, "prices": {"scripted/large": [1.0, 2.0]}, "formats": formats or {},
        "command": "test"}))
    lines = []
    for i in range(k):
        pid = f"p{i}"
        r = math_record(pid, ["7"] * 4, ["7"] * 4, "7", ["7"] * 4, "7" if i % 2 else "3")
        large = r["baselines"]["large_greedy"]
        large["usage"]["completion_tokens"] = 6
        if pid in CUT:
            large.update(answer=None, solution="Working", correct=0.0,
                         error="the reply was cut off at max_tokens (finish_reason='length')")
            large["usage"]["completion_tokens"] = OLD_CAP
        lines.append(json.dumps(r))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def serve(monkeypatch, model):
    """cap_probe's model and problems: `model`, and 25 problems p0..p24 whose answer is 7."""
    opened = []

    def open_model(stack, name, *, max_tokens, **kw):
        opened.append((name, max_tokens))
        model.lm.kwargs["max_tokens"] = max_tokens
        return model.lm

    monkeypatch.setattr(pair, "open_model", open_model)
    monkeypatch.setattr(evals.loaders, "load", lambda name, split, acceptance: [
        dspy.Example(id=f"p{i}", question=f"p{i}", answer="7").with_inputs("question") for i in range(25)])
    model.opened = opened
    return model


@pytest.fixture
def large(monkeypatch):
    return serve(monkeypatch, math_model("scripted/large", lambda call: cut("7") if call.question == "p2" else "7"))


def test_only_the_cut_replies_are_asked_again_under_the_larger_cap(tmp_path, large):
    folder = folder_with_records(tmp_path)
    before = (folder / "records.jsonl").read_text()
    s = cap_probe.probe(folder, NEW_CAP, folder / "probe", redraw=True, progress=lambda *_: None)

    assert large.opened == [("scripted/large", NEW_CAP)]
    assert sorted(c.question for c in large.calls) == ["p1", "p2"]
    assert {c.max_tokens for c in large.calls} == {NEW_CAP} and {c.temperature for c in large.calls} == {0.0}
    assert (folder / "records.jsonl").read_text() == before  # the recording is not changed
    assert (s["cut_at_old_cap"], s["asked"], s["cut_at_new_cap"]) == (2, 2, 1)
    assert s["cut_share_at_new_cap"] == pytest.approx(1 / 25)
    # under 5% of 25 means at most one reply at or above the cap: every other reply is 6 or 20 tokens long
    assert s["cap_under_target"] == 21
    assert s["accuracy_old_cap"] == pytest.approx(11 / 25)  # odd ids right, p1 cut
    assert s["accuracy_new_cap"] == pytest.approx(12 / 25)  # p1 now ends with the right answer
    assert s["begins_with_recorded_reply"] == 2 and s["asked_tokens"] == [20, NEW_CAP]
    # two recorded calls at $0.001 replaced by two new ones at 100 x $1 + 20 x $2 per million
    assert s["usd_new_cap"] == pytest.approx(s["usd_old_cap"] - 2 * 0.001 + 2 * 140e-6)
    md = (folder / "probe" / "probe.md").read_text()
    assert "2 of 2 (re-drawn from the start)" in md
    assert "| still cut at 64 | 1 of 25 (4.0%) |" in md and "the others as recorded) | 21 |" in md


def test_a_rerun_resumes_and_asks_nothing_already_asked(tmp_path, large):
    folder = folder_with_records(tmp_path)
    out = folder / "probe"
    out.mkdir()
    first = cap_probe.probe(folder, NEW_CAP, out, redraw=True, progress=lambda *_: None)
    calls = len(large.calls)
    with (out / "probe.jsonl").open("a") as f:
        f.write('{"id": "torn')  # a run killed mid-write
    again = cap_probe.probe(folder, NEW_CAP, out, redraw=True, progress=lambda *_: None)
    assert len(large.calls) == calls and len(large.opened) == 1  # no server opened: nothing left to ask
    assert again == first


def test_an_incomplete_probe_reports_no_new_cut_rate(tmp_path):
    folder = folder_with_records(tmp_path)
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    s = cap_probe.summarize(records, {}, OLD_CAP, NEW_CAP)
    assert (s["asked"], s["complete"], s["cut_at_new_cap"], s["cap_under_target"]) == (0, False, None, None)
    assert "incomplete: rerun the command to resume" in cap_probe.markdown(folder, s)


def test_a_cap_not_above_the_recorded_one_is_refused_before_any_server_starts(tmp_path, large):
    folder = folder_with_records(tmp_path)
    with pytest.raises(SystemExit, match="not above the recorded cap 8"):
        cap_probe.main([str(folder), "--max-tokens", "8"])
    with pytest.raises(SystemExit, match="has no run.json"):
        cap_probe.main([str(tmp_path), "--max-tokens", "64"])
    assert large.opened == []


PLAIN = {"large_executor": "plain"}


def test_a_plain_text_reply_is_continued_from_where_the_recording_cut_it(tmp_path, monkeypatch):
    def respond(call):  # the prefill comes back with the rest, as llama.cpp's server returns it
        assert call.prefill == "Working"
        return call.prefill + (" it out: \\boxed{7}." if call.user == "p1" else cut(" on and on"))

    model = serve(monkeypatch, ScriptedLM("scripted/large", lambda call: (
        cut(respond(call)) if call.user == "p2" else respond(call))))
    folder = folder_with_records(tmp_path, formats=PLAIN)
    s = cap_probe.probe(folder, NEW_CAP, folder / "probe", progress=lambda *_: None)

    assert sorted(c.user for c in model.calls) == ["p1", "p2"]
    # the rest of the cap: 64 in all less the 8 recorded tokens; greedy
    assert {c.max_tokens for c in model.calls} == {NEW_CAP - OLD_CAP} and {c.temperature for c in model.calls} == {0.0}
    replies = {item["id"]: item["reply"] for item in cap_probe.read_probe(folder / "probe" / "probe.jsonl").values()}
    assert replies["p1"]["solution"] == "Working it out: \\boxed{7}." and replies["p1"]["answer"] == "7"
    assert replies["p1"]["correct"] is True and replies["p1"]["error"] is None
    assert replies["p2"]["answer"] is None and "cut off at max_tokens" in replies["p2"]["error"]
    # one call at the new cap: the recorded 8 tokens and $0.001, plus 20 more completion tokens at $2 per million
    assert replies["p1"]["usage"]["completion_tokens"] == OLD_CAP + 20
    assert replies["p1"]["usage"]["usd"] == pytest.approx(0.001 + 20 * 2.0 / 1e6)
    assert (s["mode"], s["cut_at_new_cap"], s["begins_with_recorded_reply"]) == ("continue", 1, 2)
    assert s["accuracy_new_cap"] == pytest.approx(12 / 25)
    md = (folder / "probe" / "probe.md").read_text()
    # p1 now ends at 8 + 20 tokens, p2 still reaches 64: under 5% of 25 leaves one reply at or above the cap
    assert "2 of 2 (continued from it)" in md and "| smallest cap cutting under 5% | 29 |" in md
    with pytest.raises(SystemExit, match="holds replies asked another way"):
        cap_probe.probe(folder, NEW_CAP, folder / "probe", redraw=True)


def test_a_chat_format_recording_cannot_be_continued(tmp_path, large):
    folder = folder_with_records(tmp_path)
    with pytest.raises(SystemExit, match="chat format.*add --redraw"):
        cap_probe.probe(folder, NEW_CAP, folder / "probe", progress=lambda *_: None)
    assert large.calls == []
