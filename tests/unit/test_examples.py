"""The examples a user copies from run as documented (the ones that need no model server)."""

import json

from fixtures.run_example import run_example


def test_calibrate_thresholds_example_with_scripted_models(tmp_path):
    done = run_example("calibrate_thresholds.py", "--limit", "12", "--n", "4", "--trials", "20", "--out", "cal",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cascade now runs with tau1=" in done.stdout
    records = (tmp_path / "cal.jsonl").read_text().splitlines()
    assert len(records) == 12
    assert (tmp_path / "cal.png").stat().st_size > 0 and (tmp_path / "cal.jsonl.optuna.db").exists()


def test_calibrate_code_example_with_scripted_models(tmp_path):
    done = run_example("calibrate_code.py", "--limit", "8", "--out", "code", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cascade now runs stages (" in done.stdout
    assert "stages (1, 3):" in done.stdout and "failed the hidden ones" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "code.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["acceptance_tests"] == 1 for r in records)
    assert (tmp_path / "code.png").stat().st_size > 0


def test_serve_client_example_against_a_scripted_server(tmp_path, monkeypatch):
    from fixtures.serving import serving, sums_cascade

    from cope_dspy.server import create_app

    monkeypatch.setenv("COPE_API_KEY", "example-token-1234")
    with serving(create_app(sums_cascade()[0], api_key="example-token-1234")) as url:
        done = run_example("serve_client.py", "--base-url", f"{url}/v1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("answer 42: stage 1, ") and "streamed answer 123\n" in done.stdout
    assert "dspy.LM answer 15" in done.stdout
