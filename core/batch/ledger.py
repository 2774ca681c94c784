"""OUTDIR/ledger.sqlite: one row per model, what a resumed batch trusts.

SQLite in WAL mode, and every change is one transaction, so a batch killed at any instant
(even SIGKILL) leaves each row either as it was or as it was meant to be. A row is
``running`` from the moment its model is handed to a worker; a batch that finds such rows
at start knows the previous run died with them and marks them ``interrupted``. Only the
driver writes the ledger; workers send their outcomes back to it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxsmith.batch.jobs import Job
from onnxsmith.batch.outcome import NUMBER_KEYS, Outcome

__all__ = ["LEDGER_NAME", "Ledger"]

LEDGER_NAME = "ledger.sqlite"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    path TEXT PRIMARY KEY,           -- artifact path relative to OUTDIR
    source TEXT NOT NULL,            -- the model as given (path or package.module:factory)
    model_hash TEXT NOT NULL,        -- sha256 of the .onnx and its external data
    recipe_hash TEXT NOT NULL,       -- sha256 of the resolved recipe JSON, sorted keys
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,        -- unix time the current/last run of this model began
    finished_at REAL,
    seconds REAL,                    -- wall time over all attempts
    bytes_before INTEGER, bytes_after INTEGER,
    latency_before_ms REAL, latency_after_ms REAL, latency_ratio REAL,
    latency_ratio_p25 REAL, latency_ratio_p75 REAL,  -- the spread of the per-round ratios (schema 2)
    drift REAL
)
"""


class Ledger:
    """The batch's record of every model: open it, ask what is done, record outcomes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # explicit transactions only
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an ok row survives a power cut too
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._transaction():
            self._db.execute(_SCHEMA)
            # A ledger of an earlier schema (a batch resumed after an upgrade) gets the number columns it lacks.
            have = {row["name"] for row in self._db.execute("PRAGMA table_info(models)")}
            for key in NUMBER_KEYS:
                if key not in have:
                    self._db.execute(f"ALTER TABLE models ADD COLUMN {key} REAL")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def is_done(self, job: Job) -> bool:
        """Whether ``job`` already succeeded on the same model bytes with the same recipe."""
        row = self._db.execute(
            "SELECT 1 FROM models WHERE path=? AND status='ok' AND model_hash=? AND recipe_hash=?",
            (job.key, job.model_hash, job.recipe_hash),
        ).fetchone()
        return row is not None

    def mark_running(self, job: Job, attempt: int) -> None:
        """The job went to a worker; the first attempt resets what a previous run left."""
        now = time.time()
        with self._transaction():
            if attempt == 1:
                self._db.execute("DELETE FROM models WHERE path=?", (job.key,))
                self._db.execute(
                    "INSERT INTO models (path, source, model_hash, recipe_hash, status, attempts, started_at)"
                    " VALUES (?, ?, ?, ?, 'running', 1, ?)",
                    (job.key, job.source, job.model_hash, job.recipe_hash, now),
                )
            else:
                self._db.execute("UPDATE models SET status='running', attempts=? WHERE path=?", (attempt, job.key))

    def record(self, job: Job, outcome: Outcome, seconds: float) -> None:
        """The final outcome of ``job`` (after its retries), with its report's numbers."""
        numbers = [outcome.numbers.get(k) for k in NUMBER_KEYS]
        assignments = ", ".join(f"{k}=?" for k in NUMBER_KEYS)
        with self._transaction():
            self._db.execute(
                f"UPDATE models SET status=?, error=?, finished_at=?, seconds=?, {assignments} WHERE path=?",
                (outcome.status, outcome.error, time.time(), seconds, *numbers, job.key),
            )

    def interrupt_running(self, reason: str) -> int:
        """Mark rows still ``running`` as ``interrupted``; return how many there were."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE models SET status='interrupted', error=?, finished_at=? WHERE status='running'",
                (reason, time.time()),
            )
        return cursor.rowcount

    def row(self, key: str) -> dict[str, Any] | None:
        found = self._db.execute("SELECT * FROM models WHERE path=?", (key,)).fetchone()
        return dict(found) if found is not None else None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE ... COMMIT``, rolled back if anything in it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
