"""A persistent SQLite ledger of LM calls: one row per call, committed as it happens.

Rows hold counts and dollars only: never prompt text, messages, headers or API keys. A process killed
mid-run loses no completed row (each row is its own transaction, WAL journal, synchronous=FULL).

    tracker = CostTracker(ledger="runs/costs.sqlite")     # or Ledger(path, run_id="exp-3")
    ...
    print(format_summary(summarize_ledger("runs/costs.sqlite")))   # what `cope report` prints
"""

import datetime
import os
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from cope_dspy.errors import CopeInputError
from cope_dspy.usage import CallRecord, Usage, format_summary, summarize_records

__all__ = ["Ledger", "summarize_ledger", "format_summary"]

SCHEMA_VERSION = 2  # 2: cached_prompt_tokens, cache_write_tokens, reasoning_tokens (added to older ledgers)
_SPLIT = ("cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
_COLUMNS = (
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
    *_SPLIT,
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    stage INTEGER,
    role TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    usd REAL NOT NULL,
    cached INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    priced INTEGER NOT NULL,
    error TEXT,
    cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id);
"""


class Ledger:
    """Append-only SQLite ledger; safe to share between threads (one connection, one lock) and between
    processes (SQLite's own locking, 30 s busy timeout). `run_id` tags this run's rows."""

    def __init__(self, path: str | os.PathLike, run_id: str | None = None):
        self.path = Path(path)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            for column in sorted(set(_SPLIT) - _present(self._conn)):  # a version-1 ledger: add the split
                self._conn.execute(f"ALTER TABLE calls ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise CopeInputError(
                f"cannot open the cost ledger {self.path}: {exc} (is it a cope-dspy ledger?)"
            ) from exc

    def write(self, record: CallRecord) -> None:
        """Insert one call and commit it before returning."""
        values = [getattr(record, c) for c in _COLUMNS]
        with self._lock:
            self._conn.execute(
                f"INSERT INTO calls (run_id, {', '.join(_COLUMNS)}) VALUES "
                f"({', '.join('?' * (len(_COLUMNS) + 1))})",
                [self.run_id, *values],
            )

    def records(self, run_id: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [record for _, record in _rows(self._conn, run_id)]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, run_id={self.run_id!r})"


def _present(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(calls)")}


def _rows(conn: sqlite3.Connection, run_id: str | None) -> list[tuple[str, CallRecord]]:
    where, args = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    present = _present(conn)  # a version-1 ledger opened read-only has no split columns: they read as 0
    selected = ", ".join(c if c in present else f"0 AS {c}" for c in _COLUMNS)
    rows = conn.execute(f"SELECT run_id, {selected} FROM calls {where} ORDER BY id", args).fetchall()
    flags = ("cached", "estimated", "priced")
    return [
        (r[0], CallRecord(**{c: bool(v) if c in flags else v for c, v in zip(_COLUMNS, r[1:], strict=True)}))
        for r in rows
    ]


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def summarize_ledger(path: str | os.PathLike, run_id: str | None = None) -> dict[str, Any]:
    """Totals, breakdowns by model / stage / role, and one line per run; opens the file read-only."""
    path = Path(path)
    if not path.is_file():
        raise CopeInputError(f"no cost ledger at {path}: pass the file given as CostTracker(ledger=...)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = _rows(conn, run_id)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise CopeInputError(f"{path} is not a readable cope-dspy cost ledger: {exc}") from exc
    runs: dict[str, list[CallRecord]] = {}
    for rid, record in rows:
        runs.setdefault(rid, []).append(record)
    summary = {"path": str(path), **summarize_records([r for _, r in rows]), "runs": []}
    for rid, records in runs.items():
        start, end = min(r.time for r in records), max(r.time for r in records)
        summary["runs"].append(
            {"run_id": rid, "start": _iso(start), "end": _iso(end), **Usage.from_records(records).to_dict()}
        )
    return summary
