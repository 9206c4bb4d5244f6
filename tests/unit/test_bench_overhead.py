"""evals.bench_overhead keeps working (it is issue 15's yardstick): each case reaches its stage with the LM
calls it should. Times are printed, never asserted."""

from __future__ import annotations

from evals import bench_overhead


def test_each_case_reaches_its_stage_and_counts_its_lm_calls():
    rows = {
        (case, driver): bench_overhead.measure(case, driver, calls=2, warmup=0)
        for case in bench_overhead.CASES
        for driver in ("forward", "aforward")
    }
    for (case, _driver), r in rows.items():
        assert r["stage"] == (1 if case == "stage 1 accepts" else 3)
        assert r["mean_us"] > 0 and r["us_per_lm_call"] > 0
    calls = {key: r["lm_calls"] for key, r in rows.items()}
    # unanimous stage 1: 6 goals + 6 executions (early decision stops at 6 of 8), both ways
    assert calls[("stage 1 accepts", "forward")] == calls[("stage 1 accepts", "aforward")] == 12
    # all different: stage 1 rejects after 4 goals + 4 executions, stage 2 after 1 guideline + 6 executions
    # (at tau2=0.5 the last 2 could not make 4 of 8 agree), then 1 large execution
    assert calls[("stage 3 answers", "forward")] == calls[("stage 3 answers", "aforward")] == 16


def test_the_printed_table_has_a_row_per_case_and_driver(capsys):
    bench_overhead.main(["--calls", "2", "--warmup", "0"])
    out = capsys.readouterr().out
    assert out.startswith("commit ")
    assert sum(line.startswith(("stage 1 accepts", "stage 3 answers")) for line in out.splitlines()) == 4
