"""The examples a user copies from, run as documented on real local servers (SmolLM2-135M as both models:
the plumbing is the point, not the answers)."""

import re

import pytest
from fixtures.run_example import run_example

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
CAP = ["--max-tokens", "96"]  # the plumbing needs no long replies (the examples' 400 made these the slowest tests)


def test_quickstart_answers_with_stage_cost_and_stand_in_price_note(tmp_path):
    done = run_example("quickstart.py", "--small", MODEL, "--large", MODEL, "--n", "2", *CAP, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^stage: +[123] ", out, re.M), out
    assert re.search(r"^cost: +\$\d+\.\d{6} over \d+ calls", out, re.M), out
    assert re.search(r"^note: .*priced as a stand-in", out, re.M), out


def test_local_cascade_scores_each_problem_and_reports_costs(tmp_path):
    done = run_example("local_cascade.py", "--small", MODEL, "--large", MODEL, "--n", "2", "--limit", "2",
                       *CAP, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # a problem whose large-model call failed is reported as such and the run goes on
    rows = re.findall(r"^gsm8k-\S+ +(?:stage [123] .* (?:right|wrong) +\$\d|error +the large model failed in its)",
                      done.stdout, re.M)
    assert len(rows) == 2, done.stdout
    assert "priced as a stand-in" in done.stdout


def test_calibrate_code_records_real_programs_and_calibrates(tmp_path):
    done = run_example("calibrate_code.py", "--local", "--small", MODEL, "--large", MODEL, "--n", "2", "--limit", "2",
                       *CAP, "--out", "code", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cascade now runs stages (" in done.stdout and "stages (1, 3):" in done.stdout
    assert len((tmp_path / "code.jsonl").read_text().splitlines()) == 2
