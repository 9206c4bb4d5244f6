"""Unit tests of cope_dspy.ledger: rows committed one by one, readable after a crash, no secrets."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextvars
import signal
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart
from dspy.lm15 import Usage as LMUsage

from cope_dspy.costs import CallRecord, CostTracker, tag
from cope_dspy.errors import CopeInputError
from cope_dspy.ledger import Ledger, format_summary, summarize_ledger

REPO = Path(__file__).resolve().parents[2]
PAID = "openai/gpt-4o-mini"
PRICES = {PAID: (0.15, 0.60)}


class ScriptedEngine:
    def __init__(self, usage):
        self.usage = usage

    def complete(self, request):
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart("ok")]),
            finish_reason="stop",
            usage=LMUsage(input_tokens=self.usage[0], output_tokens=self.usage[1]),
        )


def scripted_lm(model=PAID, usage=(11, 7)):
    return dspy.LM(model, engine=ScriptedEngine(usage), cache=False, num_retries=0)


def record(model=PAID, stage=1, role="goal_planner", prompt=10, completion=5, usd=1e-6, **kw):
    return CallRecord(
        time=1_700_000_000.0,
        model=model,
        stage=stage,
        role=role,
        prompt_tokens=prompt,
        completion_tokens=completion,
        usd=usd,
        **kw,
    )


def test_rows_round_trip_and_summarize_per_run(tmp_path):
    path = tmp_path / "sub" / "costs.sqlite"  # parent folders are created
    with Ledger(path, run_id="run-a") as a:
        a.write(record(prompt=10, completion=5, usd=0.25))
        a.write(record(model="ollama_chat/q", stage=2, role="small_executor", usd=0.0, cached=True))
    with Ledger(path, run_id="run-b") as b:
        b.write(record(stage=None, role=None, usd=0.5, estimated=True, priced=True, error="LMAuthError: no"))
        assert [r.usd for r in b.records("run-b")] == [0.5]
        assert len(b.records()) == 3
    summary = summarize_ledger(path)
    assert summary["usage"]["calls"] == 3 and summary["usage"]["usd"] == pytest.approx(0.75)
    assert (
        summary["usage"]["cached_calls"]
        == summary["usage"]["estimated_calls"]
        == summary["usage"]["failed_calls"]
        == 1
    )
    assert summary["by_model"][PAID]["calls"] == 2 and summary["by_stage"]["untagged"]["usd"] == 0.5
    assert [(r["run_id"], r["calls"]) for r in summary["runs"]] == [("run-a", 2), ("run-b", 1)]
    only_b = summarize_ledger(path, run_id="run-b")
    assert only_b["usage"]["calls"] == 1 and [r["run_id"] for r in only_b["runs"]] == ["run-b"]
    text = format_summary(summary)
    assert (
        "run-a" in text
        and "run-b" in text
        and PAID in text
        and "goal_planner" in text
        and "$0.750000" in text
    )


def test_tracker_writes_every_call_from_32_threads(tmp_path):
    path = tmp_path / "costs.sqlite"
    lm = scripted_lm(usage=(13, 5))
    tracker = CostTracker(prices=PRICES, ledger=path)

    def work(i):
        with tag(stage=i % 3 + 1, role="small_executor"):
            for j in range(3):
                lm(f"thread {i} call {j}")

    with tracker, ThreadPoolExecutor(max_workers=32) as pool:
        for future in [pool.submit(contextvars.copy_context().run, work, i) for i in range(32)]:
            future.result()
    summary = summarize_ledger(path)
    assert summary["usage"]["calls"] == 96 == tracker.usage().calls
    assert summary["usage"]["prompt_tokens"] == 13 * 96 and summary["usage"]["completion_tokens"] == 5 * 96
    assert summary["usage"]["usd"] == pytest.approx(tracker.usage().usd, rel=1e-12)
    assert {k: v["calls"] for k, v in summary["by_stage"].items()} == {"1": 33, "2": 33, "3": 30}
    tracker.ledger.close()


CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy
    from dspy.lm15 import Message, Response, TextPart, Usage
    from cope_dspy.costs import CostTracker, tag

    class Engine:
        def complete(self, request):
            return Response(id=None, model="s", message=Message.assistant([TextPart("ok")]), finish_reason="stop",
                            usage=Usage(input_tokens=11, output_tokens=7))

    lm = dspy.LM("openai/gpt-4o-mini", engine=Engine(), cache=False)
    tracker = CostTracker(prices={"openai/gpt-4o-mini": (0.15, 0.6)}, ledger=sys.argv[1])
    with tracker, tag(stage=1, role="goal_planner"):
        for i in range(100000):
            lm(f"question {i}")      # on return, on_lm_end has committed this call's row
            print(i, flush=True)
            time.sleep(0.005)
""")


def test_ledger_survives_sigkill_with_every_completed_call(tmp_path):
    path = tmp_path / "costs.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    k = 0
    try:
        for line in child.stdout:
            k = int(line) + 1
            if k >= 25:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert k >= 25, child.stderr.read()
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    summary = summarize_ledger(path)
    rows = summary["usage"]["calls"]
    assert rows >= k
    assert (
        summary["usage"]["prompt_tokens"] == 11 * rows and summary["usage"]["completion_tokens"] == 7 * rows
    )
    assert summary["by_role"]["goal_planner"]["calls"] == rows


def test_ledger_has_no_column_for_text_or_secrets(tmp_path):
    path = tmp_path / "costs.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    assert columns == {
        "id",
        "run_id",
        "time",
        "model",
        "stage",
        "role",
        "prompt_tokens",
        "completion_tokens",
        "usd",
        "cached",
        "estimated",
        "priced",
        "error",
        "cached_prompt_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    }


def test_summarize_refuses_missing_or_foreign_files(tmp_path):
    with pytest.raises(CopeInputError, match="no cost ledger at .*nowhere.sqlite"):
        summarize_ledger(tmp_path / "nowhere.sqlite")
    assert not (tmp_path / "nowhere.sqlite").exists()  # reading never creates a file
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CopeInputError, match="junk.sqlite"):
        summarize_ledger(junk)
    with pytest.raises(CopeInputError, match="junk.sqlite"):
        Ledger(junk)
