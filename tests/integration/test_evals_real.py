"""The benchmark runner end to end on real local servers (SmolLM2-135M as both models: quality is not the
point; the plumbing is): records, the code tests reaching the cascade, the report, resume."""

import json

import pytest

from evals.run import main

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"


def run(bench, out, *extra):
    return main([bench, "--limit", "1", "--n", "2", "--max-tokens", "48", "--small", MODEL, "--large", MODEL,
                 "--no-progress", "--out", str(out), *extra])


@pytest.mark.parametrize("bench", ["gsm8k", "mbpp"])  # math500 differs from gsm8k only in its loader (unit-tested)
def test_eval_records_reports_and_resumes(bench, tmp_path, capsys):
    assert run(bench, tmp_path) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    stages = [(e["kind"], e["stage"]) for e in record["trace"]]
    assert stages == [("vote", 1), ("guideline", 2), ("vote", 2), ("final", 3)]
    for entry in record["trace"]:
        for c in entry.get("candidates", []):
            assert c["usage"]["calls"] >= 1 and c["usage"]["cached_calls"] == 0  # generated, not replayed
            assert c["extra"]["seconds"] > 0
            if bench == "mbpp" and entry["kind"] == "vote":
                # the task's tests reached the cascade: every sample was run against them or had no code
                assert c["extra"]["tests"]["status"] in {"passed", "failed", "no_code", "timeout", "memory", "killed"}
    assert record["baselines"]["large_greedy"]["usage"]["usd"] > 0  # the local "large" model is priced
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 1 and summary["records_with_cached_calls"] == 0
    assert {m["method"] for m in summary["methods"]} >= {"small single", "large alone"}
    assert (tmp_path / "plot.png").exists() and "| method |" in (tmp_path / "table.md").read_text()
    before = (tmp_path / "records.jsonl").read_text()
    assert run(bench, tmp_path) == 0  # resumes: nothing left to record
    assert (tmp_path / "records.jsonl").read_text() == before


def test_mtbench_records_judges_with_a_real_judge_and_reads_judgments_back(tmp_path):
    assert run("mtbench", tmp_path, "--judge-max-tokens", "40") == 0
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert record["baselines"]["large_greedy"]["usage"]["calls"] == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    judge = summary["judge"]
    # a local catalogue judge is asked for its verdict's probabilities too
    assert judge["model"] == MODEL and judge["setup"].endswith("plain text, max_tokens 40, verdict logprobs")
    lines = [json.loads(line) for line in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert judge["new"] == len(lines) and judge["calls"] == 2 * len(lines)
    for j in lines:  # each judgment: two real calls, verdicts read or counted unparseable, cut replies counted
        assert j["usage"]["calls"] == 2 and j["usage"]["completion_tokens"] <= 2 * 40
        assert {j["first"], j["second"]} <= {"A", "B", "tie", None} and 0 <= j["cut"] <= 2
    assert run("mtbench", tmp_path, "--judge-max-tokens", "40") == 0  # nothing to record, nothing to judge
    assert json.loads((tmp_path / "summary.json").read_text())["judge"]["new"] == 0


def test_the_judge_asks_a_real_model_twice_in_plain_text():
    import contextlib

    from evals.judge import judge, open_judge

    with contextlib.ExitStack() as stack:
        lm = open_judge(stack, MODEL, max_tokens=40)
        j = judge(lm, "What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5.", reference="4", logprobs=True)
    assert j.usage["calls"] == 2 and 0 < j.usage["completion_tokens"] <= 80
    assert j.first in {"A", "B", "tie", None} and j.verdict in {"a", "b", "tie"} and 0 <= j.cut <= 2
    for p in (j.p_first, j.p_second):  # read from the server's top logprobs wherever it wrote "[[" + a letter
        assert p is None or (set(p) == {"A", "B", "C"} and sum(p.values()) == pytest.approx(1.0))
    assert lm.history[-1]["messages"][-1]["content"].startswith("[User Question]\nWhat is 2 + 2?")
