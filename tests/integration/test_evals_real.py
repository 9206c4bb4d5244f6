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
