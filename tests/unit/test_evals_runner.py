"""The benchmark harness on scripted models: records, resume, every method's accuracy and cost, the report."""

import json

import dspy
import pytest
from fakes import math_model

from cope_dspy import Cascade, Math, Prices
from cope_dspy.records import CUT_OFF_CHECKED, Records
from evals.benchmarks import get, record_all, record_example
from evals.report import write_report

LARGE_PRICE = (1.0, 2.0)  # USD per million: 100 prompt + 20 completion tokens = $0.00014 a call
CALL_USD = (100 * 1.0 + 20 * 2.0) / 1e6


def load_records(path):
    return Records.load(path).by_id()


def examples(k):
    return [dspy.Example(id=f"p{i}", question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
            for i in range(k)]


def small_answer(call):
    """Problem p0: the small model is right everywhere. p1: right only when unplanned (baselines).
    Others: every sample different, so nothing is ever agreed."""
    i = int(call.question.split()[2])
    if i == 0:
        return "0"
    if i == 1:
        return "2" if not call.plans else "5"
    return str(100 + (call.rollout_id or 0) + (50 if "Guideline" in call.plans else 0))


def make(tmp_path):
    small = math_model("scripted/small", small_answer)
    large = math_model("scripted/large", lambda call: str(2 * int(call.question.split()[2])))
    prices = Prices({"scripted/large": LARGE_PRICE, "scripted/small": (0.0, 0.0)})
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=4, prices=prices)
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "gsm8k", "split": "test", "small": "scripted/small",
                                                    "large": "scripted/large", "n": 4, "command": "test"}))
    return cascade, small, large


def test_records_resume_and_report_every_method(tmp_path):
    cascade, small, large = make(tmp_path)
    path = tmp_path / "records.jsonl"
    record_all(cascade, examples(2), get("gsm8k").correct, path, progress=False)
    calls = len(large.calls)
    record_all(cascade, examples(3), get("gsm8k").correct, path, progress=False)
    assert len(large.calls) - calls == 3  # only p2 was new: guideline, stage-3 answer, large-alone answer
    records = load_records(path)
    assert sorted(records) == ["p0", "p1", "p2"]
    with path.open("a") as f:
        f.write('{"id": "torn')  # a run killed mid-write
    assert sorted(load_records(path)) == ["p0", "p1", "p2"]

    md = write_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert methods["small single"]["accuracy"] == pytest.approx(2 / 3)  # p0, p1
    assert methods["small majority"]["accuracy"] == pytest.approx(2 / 3)
    assert methods["large alone"]["accuracy"] == 1.0
    assert methods["large alone"]["usd_per_1k"] == pytest.approx(1000 * CALL_USD)
    # MoT: p0 and p1 agree (kept, free), p2 escalates to the large model
    assert methods["MoT-vote (tau 0.75)"]["accuracy"] == 1.0
    assert methods["MoT-vote (tau 0.75)"]["usd_per_1k"] == pytest.approx(1000 * CALL_USD / 3)
    # COPE: p0 exits at stage 1 (free); p1's planned samples agree on a wrong 5 at stage 1;
    # p2 reaches stage 3: guideline + final answer
    cope = methods["COPE (0.75 / 0.5)"]
    assert {int(k): v for k, v in cope["exits"].items()} == {1: 2, 2: 0, 3: 1}
    assert cope["accuracy"] == pytest.approx(2 / 3)
    assert cope["usd_per_1k"] == pytest.approx(1000 * 2 * CALL_USD / 3)
    assert "| COPE (0.75 / 0.5) |" in md and (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    # per correct answer: COPE paid 2 calls over 3 problems and got 2 right; free methods are left out
    assert cope["usd_per_1k_correct"] == pytest.approx(1000 * 2 * CALL_USD / 2)
    assert methods["large alone"]["usd_per_1k_correct"] == pytest.approx(1000 * CALL_USD)
    line = next(x for x in md.splitlines() if x.startswith("- API $ per 1k correct answers"))
    assert f"COPE (0.75 / 0.5) {1000 * CALL_USD:.4f}" in line and "small single" not in line
    # stage 3 alone: p2 pays the guideline (stage 2) and the large-alone answer, as planned COPE pays its own
    alone = methods["COPE, stage 3 alone (0.75 / 0.5)"]
    assert (alone["accuracy"], alone["usd_per_1k"]) == pytest.approx((cope["accuracy"], cope["usd_per_1k"]))
    assert "not the paper's" in alone["note"]


def test_code_benchmark_records_and_report(tmp_path):
    from fakes import ScriptedLM, reply

    from cope_dspy import Code

    good, bad = "def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b"

    def small(call):
        if call.role == "goal":
            return reply(goal="Add two numbers.")
        # even problems: the small model's planned samples pass from sample 1 on; odd ones: it never passes
        ok = int(call.question.split(":")[0][1:]) % 2 == 0 and call.plans and (call.rollout_id or 0) >= 1
        return reply(solution="Here it is.", answer=f"```python\n{good if ok else bad}\n```")

    def large(call):
        if call.role == "guideline":
            return reply(guideline="Return the sum.")
        return reply(solution="Sum.", answer=f"```python\n{good}\n```")

    s, lg = ScriptedLM("scripted/small", small), ScriptedLM("scripted/large", large)
    prices = Prices({"scripted/large": LARGE_PRICE, "scripted/small": (0.0, 0.0)})
    cascade = Cascade(small=s.lm, large=lg.lm, task=Code(), n=4, prices=prices)
    exs = [dspy.Example(id=f"mbpp-c{i}", question=f"c{i}: write add(a, b)", tests=["assert add(1, 2) == 3"],
                        test_setup="", entry_point="add").with_inputs("question", "tests") for i in range(10)]
    (tmp_path / "run.json").write_text(json.dumps({"benchmark": "mbpp", "split": "test", "small": "s", "large": "l",
                                                    "n": 4, "command": "test"}))
    record_all(cascade, exs, get("mbpp").correct, tmp_path / "records.jsonl", progress=False)
    write_report(tmp_path)
    methods = {m["method"]: m for m in json.loads((tmp_path / "summary.json").read_text())["methods"]}
    assert methods["small single"]["accuracy"] == 0.0 and methods["large alone"]["accuracy"] == 1.0
    cope = methods["COPE"]
    # even: a pass in stage 1's first wave (samples 0-1: sample 1 passes); odd: fail stages 1 and 2, large solves it
    assert {int(k): v for k, v in cope["exits"].items()} == {1: 5, 2: 0, 3: 5}
    assert cope["accuracy"] == 1.0
    assert cope["usd_per_1k"] == pytest.approx(1000 * 2 * CALL_USD / 2)  # odd: guideline + final
    # MoT-style: unplanned small samples never pass, so every problem goes to the large model
    mot = methods["small n, then large if none passes (MoT-style)"]
    assert (mot["accuracy"], {int(k): v for k, v in mot["exits"].items()}) == (1.0, {1: 0, 2: 10})
    assert mot["usd_per_1k"] == pytest.approx(1000 * CALL_USD)
    # calibrated: a setting with stage 1 and n >= 2 is as accurate as large alone and cheapest
    calibrated = methods["COPE calibrated (cross-fitted)"]
    assert calibrated["accuracy"] == 1.0 and calibrated["usd_per_1k"] == pytest.approx(1000 * CALL_USD)


def _set_seconds(record, small, guideline, large):
    for entry in record["trace"]:
        if entry["kind"] == "guideline":
            entry["seconds"] = guideline
        for c in entry.get("candidates", []):
            c["extra"]["seconds"] = large if entry["kind"] == "final" else small
    b = record["baselines"]
    for c in [b["small_greedy"], *b["small_samples"]]:
        c["extra"]["seconds"] = small
    b["large_greedy"]["extra"]["seconds"] = large


def test_latency_per_method_from_recorded_job_times(tmp_path):
    """Each small job 1 s, the guideline 5 s, each large answer 10 s: parallel samples take the slowest, stages
    add up. A problem recorded before jobs were timed is left out of every method's latency."""
    cascade, _, _ = make(tmp_path)
    path = tmp_path / "records.jsonl"
    records = record_all(cascade, examples(4), get("gsm8k").correct, path, progress=False)
    lines = []
    for pid in ["p0", "p1", "p2", "p3"]:
        r = records[pid]
        _set_seconds(r, small=1.0, guideline=5.0, large=10.0)
        if pid == "p3":  # as in records from before timing: no cascade seconds
            for entry in r["trace"]:
                entry.pop("seconds", None)
                for c in entry.get("candidates", []):
                    c["extra"].pop("seconds")
        lines.append(json.dumps(r))
    path.write_text("\n".join(lines) + "\n")
    md = write_report(tmp_path)
    methods = {m["method"]: m for m in json.loads((tmp_path / "summary.json").read_text())["methods"]}
    assert all(m["timed"] == 3 for m in methods.values())
    assert methods["small single"]["seconds_mean"] == 1.0
    assert methods["small majority"]["seconds_mean"] == 1.0  # 4 samples at once
    assert methods["large alone"]["seconds_mean"] == 10.0
    assert methods["MoT-vote (tau 0.75)"]["seconds_mean"] == pytest.approx((1 + 1 + 11) / 3)  # p2 escalates
    # COPE: p0 and p1 exit after stage 1's first wave (3 samples at once: 1 s). p2: stage 1 rejects after that
    # wave (3 different answers), then the guideline (5 s), stage 2 (2 of 4 needed) draws waves of 2, 1 and 1
    # as no two answers agree (3 s), then the large answer (10 s): 1 + 5 + 3 + 10
    cope = methods["COPE (0.75 / 0.5)"]
    assert cope["calls_per_problem"] == pytest.approx((6 + 6 + 12 + 12) / 4)  # (goal + execute) x 3; p2, p3: + 1 + 4 + 1
    assert cope["seconds_mean"] == pytest.approx((1 + 1 + 19) / 3)
    assert cope["seconds_median"] == 1.0
    assert "latency s, mean / median" in md and "on the 3 of 4 problems" in md
    # the paper's latency figure: each method's mean as a multiple of large alone's (10 s)
    assert "small single 0.1x" in md and f"COPE (0.75 / 0.5) {cope['seconds_mean'] / 10:.1f}x" in md
    assert json.loads((tmp_path / "summary.json").read_text())["records_with_cached_calls"] == 0
    assert "served from DSPy's cache" not in md


def test_report_warns_about_replies_served_from_the_cache(tmp_path):
    cascade, _, _ = make(tmp_path)
    path = tmp_path / "records.jsonl"
    records = record_all(cascade, examples(2), get("gsm8k").correct, path, progress=False)
    records["p1"]["baselines"]["large_greedy"]["usage"]["cached_calls"] = 1
    path.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    md = write_report(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["records_with_cached_calls"] == 1
    assert "Warning: 1 problems hold replies served from DSPy's cache" in md


def test_role_caps_flag_is_parsed_and_checked_before_any_server_starts():
    from evals.run import main, parse_role_caps

    assert parse_role_caps(["guideline_planner=128", "goal_planner=48"]) == {"guideline_planner": 128,
                                                                              "goal_planner": 48}
    with pytest.raises(SystemExit, match="unknown role 'planner'"):
        main(["gsm8k", "--limit", "1", "--role-max-tokens", "planner=64"])
    with pytest.raises(SystemExit, match="write ROLE=N"):
        main(["gsm8k", "--limit", "1", "--role-max-tokens", "guideline_planner"])


class ServersWouldStart(Exception):
    pass


def _recorded_folder(tmp_path, **settings):
    meta = {"benchmark": "gsm8k", "split": "test", "small": "qwen2.5-coder-0.5b", "large": "qwen2.5-coder-1.5b",
            "n": 4, "max_tokens": 320, "command": "python -m evals.run gsm8k --n 4"} | settings
    cascade, _, _ = make(tmp_path)
    record_all(cascade, examples(1), get("gsm8k").correct, tmp_path / "records.jsonl", progress=False)
    (tmp_path / "run.json").write_text(json.dumps(meta))
    return tmp_path


def test_resuming_with_other_settings_is_refused_before_any_server_starts(tmp_path, monkeypatch):
    import cope_dspy.pair as pair
    from evals.run import main

    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (_ for _ in ()).throw(ServersWouldStart()))
    folder = str(_recorded_folder(tmp_path))
    with pytest.raises(SystemExit, match=r"made with n=4; this run asks n=8.*give --out a new folder"):
        main(["gsm8k", "--limit", "2", "--n", "8", "--max-tokens", "320", "--format", "chat", "--out", folder])
    with pytest.raises(SystemExit, match=r"max_tokens=320, role_max_tokens=\{\}; this run asks max_tokens=512, "
                                         r"role_max_tokens=\{'guideline_planner': 128\}"):
        main(["gsm8k", "--max-tokens", "512", "--role-max-tokens", "guideline_planner=128", "--format", "chat",
              "--out", folder])
    with pytest.raises(SystemExit, match="large='qwen2.5-coder-1.5b'; this run asks large='openai/gpt-4o-mini'"):
        main(["gsm8k", "--large", "openai/gpt-4o-mini", "--max-tokens", "320", "--format", "chat", "--out", folder])
    # a folder recorded before formats existed was asked in the chat format; today's default is plain text
    with pytest.raises(SystemExit, match=r"formats=\{\}; this run asks formats=\{'goal_planner': 'plain'"):
        main(["gsm8k", "--limit", "2", "--max-tokens", "320", "--out", folder])
    # GSM8K's default cap is 768 tokens since plain text became the default format: a folder recorded at 320
    # resumes only when asked for 320 again (n = 4 is still the default)
    with pytest.raises(SystemExit, match=r"made with max_tokens=320; this run asks max_tokens=768"):
        main(["gsm8k", "--limit", "2", "--format", "chat", "--out", folder])
    with pytest.raises(ServersWouldStart):
        main(["gsm8k", "--limit", "2", "--format", "chat", "--max-tokens", "320", "--out", folder])
    # and a folder without records takes any settings
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(ServersWouldStart):
        main(["gsm8k", "--n", "8", "--out", folder])


def test_recorded_prices_must_match_too(tmp_path):
    from evals.run import check_same_settings

    folder = _recorded_folder(tmp_path, prices={"openai/qwen2.5-coder-1.5b": [0.15, 0.6]})
    same = json.loads((folder / "run.json").read_text()) | {"role_max_tokens": {}}
    check_same_settings(folder, same)
    with pytest.raises(SystemExit, match=r"prices=\{'openai/qwen2.5-coder-1.5b': \[0.15, 0.6\]\}; this run asks"):
        check_same_settings(folder, same | {"prices": {"openai/qwen2.5-coder-1.5b": [2.5, 10.0]}})


def _servers_asked(monkeypatch) -> dict:
    """What evals.run would start its servers with (filled in as it tries, before it raises ServersWouldStart)."""
    import cope_dspy.pair as pair

    seen = {}

    def fake_open_models(stack, small, large, prices, **kw):
        seen.update(kw)
        raise ServersWouldStart()

    monkeypatch.setattr(pair, "open_models", fake_open_models)
    return seen


def test_default_reply_cap_follows_the_benchmark(tmp_path, monkeypatch):
    from evals.run import DEFAULT_MAX_TOKENS, main

    seen = _servers_asked(monkeypatch)
    for bench in ("gsm8k", "mbpp"):
        with pytest.raises(ServersWouldStart):
            main([bench, "--limit", "1", "--out", str(tmp_path / bench)])
        assert seen["max_tokens"] == DEFAULT_MAX_TOKENS[bench]
    with pytest.raises(ServersWouldStart):
        main(["mbpp", "--limit", "1", "--max-tokens", "200", "--out", str(tmp_path / "mbpp")])
    assert seen["max_tokens"] == 200


def test_the_repeat_penalty_follows_the_benchmark_and_is_a_folder_setting(tmp_path, monkeypatch):
    from evals.run import DEFAULT_REPEAT_PENALTY, main

    seen = _servers_asked(monkeypatch)
    with pytest.raises(ServersWouldStart):
        main(["mtbench", "--limit", "1", "--out", str(tmp_path / "mt")])
    assert seen["repeat_penalty"] == DEFAULT_REPEAT_PENALTY["mtbench"] == 1.1  # Ollama's default, open-ended replies
    with pytest.raises(ServersWouldStart):
        main(["gsm8k", "--limit", "1", "--out", str(tmp_path / "g")])
    assert seen["repeat_penalty"] == 1.0  # llama.cpp's default (off) elsewhere
    with pytest.raises(ServersWouldStart):
        main(["mtbench", "--limit", "1", "--repeat-penalty", "1.3", "--out", str(tmp_path / "mt")])
    assert seen["repeat_penalty"] == 1.3
    with pytest.raises(SystemExit, match="--repeat-penalty must be a number > 0"):
        main(["mtbench", "--repeat-penalty", "0", "--out", str(tmp_path / "mt")])
    # a folder recorded before the setting existed was recorded at 1.0: it resumes only at 1.0
    (tmp_path / "old").mkdir()
    folder = str(_recorded_folder(tmp_path / "old", max_tokens=768,
                                  formats={r: "plain" for r in ("goal_planner", "guideline_planner", "small_executor",
                                                                "large_executor")}))
    with pytest.raises(SystemExit, match=r"made with repeat_penalty=1.0; this run asks repeat_penalty=1.1"):
        main(["gsm8k", "--limit", "1", "--repeat-penalty", "1.1", "--out", folder])
    with pytest.raises(ServersWouldStart):
        main(["gsm8k", "--limit", "2", "--out", folder])


def test_offset_records_the_problems_after_it(tmp_path, monkeypatch):
    import cope_dspy.pair as pair
    import evals.benchmarks as benchmarks
    from evals.loaders import load
    from evals.run import main

    recorded = {}

    def fake_record_all(cascade, examples, correct, path, **kw):
        recorded["ids"] = [ex.id for ex in examples]
        raise KeyboardInterrupt  # stop as Ctrl-C does, before any model call

    class Opened:
        lm, price_note = None, "scripted"

    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (Opened(), Opened(), Prices({})))
    monkeypatch.setattr(benchmarks, "record_all", fake_record_all)
    first = [ex.id for ex in load("gsm8k", limit=5)]
    assert main(["gsm8k", "--offset", "3", "--limit", "2", "--out", str(tmp_path / "b")]) == 130
    assert recorded["ids"] == first[3:5]
    assert json.loads((tmp_path / "b" / "run.json").read_text())["offset"] == 3
    with pytest.raises(SystemExit, match="--offset must be >= 0"):
        main(["gsm8k", "--offset", "-1", "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="skips every problem"):
        main(["gsm8k", "--offset", "100000", "--out", str(tmp_path / "d")])


def _task_seen_before_any_model_call(monkeypatch) -> dict:
    """Scripted servers and a `record_all` that keeps the cascade's task and stops (exit 130) before any call."""
    import cope_dspy.pair as pair
    import evals.benchmarks as benchmarks

    seen = {}

    def fake_record_all(cascade, examples, correct, path, **kw):
        seen["task"] = cascade.task
        raise KeyboardInterrupt  # before any model call

    class Opened:
        lm, price_note = None, "scripted"

    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (Opened(), Opened(), Prices({})))
    monkeypatch.setattr(benchmarks, "record_all", fake_record_all)
    return seen


def test_a_named_wording_asks_its_role_in_it_and_keeps_the_folder_to_it(tmp_path, monkeypatch):
    import cope_dspy.pair as pair
    from evals.run import main
    from evals.wordings import CODE_ONE_SENTENCE, QWEN_MATH

    seen = _task_seen_before_any_model_call(monkeypatch)
    out = tmp_path / "he"
    assert main(["humaneval", "--limit", "1", "--wording", "guideline_planner=code-one-sentence",
                 "--out", str(out)]) == 130
    task = seen["task"]
    assert task.signature("guideline_planner", "plain").instructions == CODE_ONE_SENTENCE
    assert task.signature("goal_planner", "plain").instructions == type(task).instructions["goal_planner"]
    assert json.loads((out / "run.json").read_text())["wordings"] == {"guideline_planner": "code-one-sentence"}
    assert main(["gsm8k", "--limit", "1", "--wording", "small_executor=qwen-math", "--out",
                 str(tmp_path / "g")]) == 130
    assert seen["task"].signature("small_executor", "plain").instructions == QWEN_MATH
    assert seen["task"].signature("large_executor", "plain").instructions != QWEN_MATH  # that role only
    with pytest.raises(SystemExit, match="NAME one of qwen-math, code-one-sentence"):
        main(["gsm8k", "--limit", "1", "--wording", "small_executor=terse", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="ROLE one of"):
        main(["gsm8k", "--limit", "1", "--wording", "planner=qwen-math", "--out", str(tmp_path / "x")])
    # a folder recorded in the task's own wording (before the flag existed) takes no other wording
    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (_ for _ in ()).throw(ServersWouldStart()))
    (tmp_path / "old").mkdir()
    folder = str(_recorded_folder(tmp_path / "old", formats={}))
    with pytest.raises(SystemExit, match=r"wordings=\{\}; this run asks wordings=\{'small_executor': 'qwen-math'\}"):
        main(["gsm8k", "--limit", "2", "--format", "chat", "--max-tokens", "320", "--wording",
              "small_executor=qwen-math", "--out", folder])
    with pytest.raises(ServersWouldStart):
        main(["gsm8k", "--limit", "2", "--format", "chat", "--max-tokens", "320", "--out", folder])


def test_math500_and_mbpp_ask_their_guideline_in_their_hint_unless_told_own_and_the_others_keep_their_task_s(
        tmp_path, monkeypatch):
    import cope_dspy.pair as pair
    from evals.run import main
    from evals.wordings import MATH_HINT

    seen = _task_seen_before_any_model_call(monkeypatch)
    wordings = lambda folder: json.loads((folder / "run.json").read_text())["wordings"]  # noqa: E731
    assert main(["math500", "--limit", "1", "--out", str(tmp_path / "m")]) == 130
    own = type(seen["task"])().signature("guideline_planner", "plain").instructions  # Math's own, no override
    assert seen["task"].signature("guideline_planner", "plain").instructions == MATH_HINT != own
    assert seen["task"].signature("small_executor", "plain").instructions != MATH_HINT  # that role only
    assert wordings(tmp_path / "m") == {"guideline_planner": "math-hint"}
    assert main(["math500", "--limit", "1", "--wording", "guideline_planner=own", "--out", str(tmp_path / "o")]) == 130
    assert seen["task"].signature("guideline_planner", "plain").instructions == own
    assert wordings(tmp_path / "o") == {}  # as folders recorded before the default: they resume with =own
    assert main(["gsm8k", "--limit", "1", "--out", str(tmp_path / "g")]) == 130
    assert seen["task"].signature("guideline_planner", "plain").instructions == own
    assert wordings(tmp_path / "g") == {}
    # MBPP and HumanEval ask their guideline in code-hint, unless told Code's own
    from evals.wordings import CODE_HINT
    assert main(["mbpp", "--limit", "1", "--out", str(tmp_path / "mb")]) == 130
    code_own = type(seen["task"])().signature("guideline_planner", "plain").instructions
    assert seen["task"].signature("guideline_planner", "plain").instructions == CODE_HINT != code_own
    assert wordings(tmp_path / "mb") == {"guideline_planner": "code-hint"}
    assert main(["humaneval", "--limit", "1", "--out", str(tmp_path / "he")]) == 130
    assert seen["task"].signature("guideline_planner", "plain").instructions == CODE_HINT
    assert seen["task"].signature("small_executor", "block").instructions != CODE_HINT  # that role only
    assert wordings(tmp_path / "he") == {"guideline_planner": "code-hint"}
    assert main(["humaneval", "--limit", "1", "--wording", "guideline_planner=own", "--out", str(tmp_path / "ho")]) == 130
    assert seen["task"].signature("guideline_planner", "plain").instructions == code_own
    assert wordings(tmp_path / "ho") == {}
    # a MATH-500 folder recorded in Math's own wording refuses the new default and names the difference
    (tmp_path / "old").mkdir()
    folder = _recorded_folder(tmp_path / "old", benchmark="math500", max_tokens=1024, formats={"goal_planner": "plain"})
    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (_ for _ in ()).throw(ServersWouldStart()))
    with pytest.raises(SystemExit, match=r"wordings=\{\}; this run asks wordings=\{'guideline_planner': 'math-hint'\}"):
        main(["math500", "--limit", "3", "--max-tokens", "1024", "--format", "goal_planner=plain", "--out", str(folder)])
    with pytest.raises(ServersWouldStart):  # recorded at 1024, before MATH-500's cap became 2048
        main(["math500", "--limit", "3", "--max-tokens", "1024", "--format", "goal_planner=plain", "--wording",
              "guideline_planner=own", "--out", str(folder)])


def test_a_folder_holding_every_problem_reports_without_starting_a_server(tmp_path, monkeypatch):
    import cope_dspy.pair as pair
    import evals.loaders as loaders
    from evals.run import main, parse_formats

    cascade, _, _ = make(tmp_path)
    record_all(cascade, examples(2), get("gsm8k").correct, tmp_path / "records.jsonl", progress=False)
    (tmp_path / "run.json").write_text(json.dumps({
        "benchmark": "gsm8k", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": 4,
        "max_tokens": 768, "role_max_tokens": {}, "acceptance": None, "formats": parse_formats(None),
        "prices": {}, "command": "test"}))
    monkeypatch.setattr(loaders, "load", lambda name, split, limit, acceptance: examples(3)[:limit])
    monkeypatch.setattr(pair, "open_models", lambda *a, **k: (_ for _ in ()).throw(ServersWouldStart()))
    before = (tmp_path / "records.jsonl").read_text()
    args = ["gsm8k", "--small", "scripted/small", "--large", "scripted/large", "--out", str(tmp_path)]
    assert main([*args, "--limit", "2"]) == 0
    assert (tmp_path / "records.jsonl").read_text() == before
    assert json.loads((tmp_path / "summary.json").read_text())["problems"] == 2
    with pytest.raises(ServersWouldStart):  # a problem not recorded yet needs the servers
        main([*args, "--limit", "3"])
    with pytest.raises(SystemExit, match="made with n=4; this run asks n=8"):  # other settings: still refused
        main([*args, "--limit", "2", "--n", "8"])


def _interrupting_cascade(signals: int):
    """A cascade whose small model, on problem p2's first call, sends this process SIGINT (as Ctrl-C does)
    `signals` times, then answers; every problem it starts is noted. With 2 problems at once, p2 starts
    only once p0 or p1 is done, so the main thread is waiting on results by then."""
    import os
    import signal
    import threading
    import time

    started, lock, fired = set(), threading.Lock(), threading.Event()

    def answers(call):
        i = int(call.question.split()[2])
        with lock:
            started.add(f"p{i}")
        if i == 2 and not fired.is_set():
            fired.set()
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)  # Linux hands it to the main thread, waiting on results
                time.sleep(0.5)
        return str(2 * i)

    small = math_model("scripted/small", answers)
    large = math_model("scripted/large", lambda call: str(2 * int(call.question.split()[2])))
    prices = Prices({"scripted/large": LARGE_PRICE, "scripted/small": (0.0, 0.0)})
    return Cascade(small=small.lm, large=large.lm, task=Math(), n=2, prices=prices), started


def test_ctrl_c_keeps_the_problems_in_flight_and_starts_no_new_one(tmp_path, ctrl_c):
    cascade, started = _interrupting_cascade(signals=1)
    path = tmp_path / "records.jsonl"
    with pytest.raises(KeyboardInterrupt):
        record_all(cascade, examples(8), get("gsm8k").correct, path, concurrency=2, progress=False)
    written = load_records(path)
    assert "p2" in written and set(written) == started  # every problem begun was finished and written
    assert len(written) < 8  # the queued ones were not started
    assert all(r["baselines"]["large_greedy"]["correct"] for r in written.values())  # complete records
    record_all(cascade, examples(8), get("gsm8k").correct, path, concurrency=2, progress=False)
    assert sorted(load_records(path)) == [f"p{i}" for i in range(8)]  # the rerun resumes


def test_second_ctrl_c_abandons_the_problems_in_flight_without_writing_them(tmp_path, ctrl_c):
    cascade, started = _interrupting_cascade(signals=2)
    path = tmp_path / "records.jsonl"
    with pytest.raises(KeyboardInterrupt):
        record_all(cascade, examples(8), get("gsm8k").correct, path, concurrency=2, progress=False)
    import time

    time.sleep(1.0)  # let the abandoned worker finish its (scripted) calls
    assert "p2" in started and "p2" not in load_records(path)


def test_kill_stops_a_run_like_ctrl_c_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time
    from types import SimpleNamespace

    import cope_dspy.pair as pair
    import evals.benchmarks
    from evals.run import main

    def fake_open_models(stack, small, large, prices, **kw):
        lm = math_model("scripted/x", lambda call: "1").lm
        return SimpleNamespace(lm=lm), SimpleNamespace(lm=lm, price_note=None), Prices({"scripted/x": (0, 0)})

    def killed_record_all(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID`
        time.sleep(1)
        pytest.fail("SIGTERM did not stop the recording")

    monkeypatch.setattr(pair, "open_models", fake_open_models)
    monkeypatch.setattr(evals.benchmarks, "record_all", killed_record_all)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["gsm8k", "--limit", "1", "--out", str(tmp_path), "--no-progress"]) == 130
    assert "Rerun the same command to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only there while recording


def test_baselines_read_a_cut_off_reply_by_the_cascade_rule(tmp_path):
    from fakes import cut

    small = math_model("scripted/small", lambda call: "7")
    large = math_model("scripted/large", lambda call: cut(str(2 * int(call.question.split()[2]))))
    cascade = Cascade(small=small.lm, large=large.lm, task=Math(), n=2, tau1=1.0, tau2=1.0,
                      prices=Prices({"scripted/large": LARGE_PRICE, "scripted/small": (0.0, 0.0)}))
    ex = examples(4)[3]  # gold 6: the large model's cut-off replies hold "6", the small model says 7
    record = record_example(cascade, ex, get("gsm8k").correct)
    final = next(e for e in record["trace"] if e["kind"] == "final")["candidates"][0]
    large_alone = record["baselines"]["large_greedy"]
    for c in (final, large_alone):  # the same reply, read by the same rule in the cascade and the baseline
        assert c["answer"] is None and "cut off at max_tokens" in c["error"] and c["correct"] is False
    assert record["baselines"]["small_greedy"]["answer"] == "7"  # a complete reply is read as before
    assert record["cut_off"] == CUT_OFF_CHECKED  # so evals.rescore --cut-off leaves it alone


def test_code_benchmarks_default_to_executors_that_stop_at_their_code_block():
    from evals.run import parse_formats

    planners = {"goal_planner": "plain", "guideline_planner": "plain"}
    for code in ("humaneval", "mbpp"):
        assert parse_formats(None, code) == {**planners, "small_executor": "block", "large_executor": "block"}
    assert parse_formats(None, "gsm8k") == {**planners, "small_executor": "plain", "large_executor": "plain"}
    assert parse_formats("plain", "humaneval")["large_executor"] == "plain"  # a given format wins
    assert parse_formats("chat", "mbpp") == {}
