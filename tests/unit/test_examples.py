"""The examples a user copies from run as documented (the ones that need no model server)."""

from fixtures.run_example import run_example


def test_calibrate_thresholds_example_with_scripted_models(tmp_path):
    done = run_example("calibrate_thresholds.py", "--limit", "12", "--n", "4", "--trials", "20", "--out", "cal",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cascade now runs with tau1=" in done.stdout
    records = (tmp_path / "cal.jsonl").read_text().splitlines()
    assert len(records) == 12
    assert (tmp_path / "cal.png").stat().st_size > 0 and (tmp_path / "cal.jsonl.optuna.db").exists()
