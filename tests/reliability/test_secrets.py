"""Secrets: a recognisable fake key must appear in nothing a run writes, logs, warns or raises.

The key is set as OPENAI_API_KEY and passed as api_key= to both LMs; the fake servers answer some calls
with a 401 whose body echoes the Authorization header (as careless providers and proxies do). The run
saves the cascade (JSON state and whole-program pickle), writes a ledger, a trace, calibration records
and a calibration study, an evals records file, and a `cope report`; logging is captured at DEBUG on every
logger, warnings are recorded, and exception messages and tracebacks are kept. Then everything is grepped.
"""

from __future__ import annotations

import io
import json
import logging
import traceback
import warnings

import dspy
import pytest
from fault_server import always, by_role, every
from reliability_kit import PRICES, TRUTH, Q, cascade, scattered

from cope_dspy import CostTracker, LargeModelError, SmallModelError
from cope_dspy import cli as cope_cli
from cope_dspy.calibrate import calibrate, record
from evals.benchmarks import record_all

SECRET = "sk-cope-FAKE-SECRET-1234"
MARKERS = (SECRET, "FAKE-SECRET-1234")  # the whole key, and its tail (a partial leak counts too)


@pytest.fixture
def debug_logs():
    """Every record of every logger at DEBUG, also of loggers that do not propagate to the root."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    try:
        yield buffer
    finally:
        for lg, level in saved:
            lg.setLevel(level)
            lg.removeHandler(handler)


def _leaks(text: str) -> int:
    return sum(text.count(m) for m in MARKERS[:1]) or sum(text.count(m) for m in MARKERS[1:])


def _exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def test_the_key_leaks_nowhere(tmp_path, monkeypatch, serve, tally, debug_logs, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    texts: dict[str, str] = {}  # captured text by where it came from

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        # 1. a small model answering 401 with the key echoed cannot be used: SmallModelError, redacted; the
        #    ledger keeps the failed calls (redacted). Then a run whose small model fails some calls with
        #    5xx: those samples abstain, their errors go into the trace, the ledger and the records
        ledger = tmp_path / "ledger.sqlite"
        refused, large = serve(every(3, "401")), serve()
        with CostTracker(prices=PRICES, ledger=ledger):
            err = tally.run(lambda: cascade(refused.url, large.url, api_key=SECRET, n=4)(question=Q))
        assert isinstance(err, SmallModelError) and "LMAuthError" in str(err) and "Bearer ***" in str(err)
        assert SECRET in str(err.lm_error)  # the provider really echoed it: the redaction did the work
        texts["SmallModelError"] = "\n".join(_exception_texts(err))
        small = serve(every(3, "500"))
        c = cascade(small.url, large.url, api_key=SECRET, n=4, tau1=1.0)
        with CostTracker(prices=c.prices, ledger=ledger) as tracker:
            pred = tally.run(lambda: c(question=Q))
        assert pred.answer == TRUTH
        errors = [x["error"] for e in pred.trace if e["kind"] == "vote" for x in e["candidates"] if x["error"]]
        assert errors and all("LMServerError" in e for e in errors)
        assert tracker.usage().failed_calls > 0
        (tmp_path / "trace.json").write_text(json.dumps(pred.trace, default=str))
        (tmp_path / "prediction.json").write_text(json.dumps(pred.toDict(), default=str))
        (tmp_path / "cost_report.txt").write_text(tracker.report() + tracker.report("json"))

        # 2. save: DSPy's JSON state and the whole program (cloudpickle)
        c.save(str(tmp_path / "cascade.json"))
        c.save(str(tmp_path / "program"), save_program=True)
        assert c.large_executor.lm.kwargs["api_key"] == SECRET  # the live cascade keeps its key
        loaded = dspy.load(str(tmp_path / "program"), allow_pickle=True)
        assert "api_key" not in loaded.large_executor.lm.kwargs

        # 3. calibration records and a calibration study on them
        devset = [dspy.Example(question=Q, answer=TRUTH, id=f"q{i}").with_inputs("question") for i in range(2)]
        records = record(c, devset, lambda ex, p: p.answer == ex.answer, tmp_path / "dev.jsonl", progress=False)
        cal = calibrate(records, n_trials=3, storage=f"sqlite:///{tmp_path / 'study.db'}")
        cal.to_json(tmp_path / "calibration.json")

        # 4. an evals records file (the benchmark recorder, baselines included)
        record_all(c, devset, lambda ex, cand: cand["answer"] == ex.answer, tmp_path / "evals" / "records.jsonl",
                   progress=False)

        # 5. the large model answers 401 echoing the key: LargeModelError
        small2, large2 = serve(answer=scattered), serve(by_role(execute="401"))
        c2 = cascade(small2.url, large2.url, api_key=SECRET, n=4)  # 4 different answers: none wins stage 2
        err = tally.run(lambda: c2(question=Q))
        assert isinstance(err, LargeModelError) and "LMAuthError" in str(err) and "Bearer ***" in str(err)
        assert SECRET in str(err.lm_error)  # the provider really echoed it: the redaction did the work
        texts["LargeModelError"] = "\n".join(_exception_texts(err))

        # 6. every sample of a stage failing (the guard off): the warning quotes the first error
        small3, large3 = serve(always("500")), serve()
        tally.run(lambda: cascade(small3.url, large3.url, api_key=SECRET, n=2, guard=False)(question=Q), quiet=False)

        # 7. `cope report` on the ledger
        assert cope_cli.main(["report", str(ledger)]) == 0
        assert cope_cli.main(["report", str(ledger), "--json"]) == 0

    texts["warnings"] = "\n".join(f"{w.category.__name__}: {w.message}" for w in caught)
    assert any("every sample of stage" in t for t in texts["warnings"].splitlines())
    texts["logs"] = debug_logs.getvalue()
    out = capsys.readouterr()
    texts["stdout"], texts["stderr"] = out.out, out.err
    assert "Total" in out.out or "LM calls" in out.out

    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"ledger.sqlite", "trace.json", "cascade.json", "program/program.pkl", "dev.jsonl", "study.db",
            "calibration.json", "evals/records.jsonl"} <= names, names
    leaks = {f"file {p.relative_to(tmp_path)}": p.read_bytes().decode("latin-1") for p in written}
    leaks.update({f"text {k}": v for k, v in texts.items()})
    found = {where: _leaks(text) for where, text in leaks.items() if _leaks(text)}
    print(f"\nsecrets: grepped {len(written)} files and {len(texts)} captured texts "
          f"({sum(map(len, leaks.values())):,} characters, {len(texts['logs'].splitlines())} DEBUG log lines): "
          f"{sum(found.values())} occurrences of the key")
    assert found == {}, f"the key leaked into: {found}"
