"""The search journal: one SQLite file that makes a search durable (kill -9 at any moment, then ``--resume``).

Tables:

* ``meta``: the search configuration (space, strategy, reward, seed) as JSON, checked on resume;
* ``trials``: one row per asked architecture -- decisions, ``spinenet-arch/1`` JSON, status (``running`` while
  evaluated, then ``done`` or ``failed``), reward, metrics JSON, MACs, params, seed, wall time, attempts, error;
* ``strategy``: the strategy's state after the latest ask or tell (one row, overwritten).

Every change is one transaction that also stores the strategy state, so the journal never holds a finished
trial the strategy has not been told about, nor an asked trial it has no row for. SQLite runs in WAL mode with
``synchronous=FULL``: a committed trial survives a kill of the process (and a power cut).
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import json_safe

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    decisions TEXT NOT NULL,
    arch TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    reward REAL,
    metrics TEXT,
    macs INTEGER,
    params INTEGER,
    seed INTEGER NOT NULL,
    wall_time REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS strategy (id INTEGER PRIMARY KEY CHECK (id = 0), state BLOB NOT NULL);
"""


@dataclass
class Trial:
    id: int
    decisions: list[int]
    arch: dict[str, Any]
    status: str
    reward: float | None
    metrics: dict[str, Any]
    macs: int | None
    params: int | None
    seed: int
    wall_time: float | None
    attempts: int
    error: str | None
    started: float
    finished: float | None


def _dump_state(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _load_state(blob: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(blob), weights_only=True)


class Journal:
    """SQLite journal of one search (``DIR/journal.sqlite``)."""

    FILE = "journal.sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -------------------------------------------------------------------------------------------- meta
    def set_config(self, config: dict[str, Any]) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (json.dumps(config, sort_keys=True),))

    def config(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        return json.loads(row[0]) if row else None

    # ------------------------------------------------------------------------------------------ trials
    def add_trial(self, decisions: list[int], arch: dict[str, Any], seed: int, state: dict[str, Any]) -> int:
        """Record an asked trial as ``running`` together with the strategy state after the ask."""
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO trials (decisions, arch, status, seed, started) VALUES (?, ?, 'running', ?, ?)",
                (json.dumps(decisions), json.dumps(arch), seed, time.time()))
            self._save_state(state)
            return int(cur.lastrowid)

    def retry(self, trial_id: int) -> None:
        """An interrupted trial starts again: one more attempt, new start time."""
        with self._tx():
            self.db.execute("UPDATE trials SET attempts = attempts + 1, started = ? WHERE id = ?",
                            (time.time(), trial_id))

    def finish(self, trial_id: int, *, reward: float | None, metrics: dict[str, Any] | None, macs: int | None,
               params: int | None, wall_time: float, error: str | None, state: dict[str, Any]) -> None:
        """Commit a finished (``done``) or failed trial together with the strategy state after its tell."""
        status = "failed" if error is not None else "done"
        with self._tx():
            self.db.execute(
                "UPDATE trials SET status = ?, reward = ?, metrics = ?, macs = ?, params = ?, wall_time = ?, "
                "error = ?, finished = ? WHERE id = ?",
                (status, reward, json.dumps(json_safe(metrics or {})), macs, params, wall_time, error, time.time(),
                 trial_id))
            self._save_state(state)

    def trials(self, status: str | None = None) -> list[Trial]:
        query = "SELECT * FROM trials" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        rows = self.db.execute(query, (status,) if status else ()).fetchall()
        return [Trial(r[0], json.loads(r[1]), json.loads(r[2]), r[3], r[4], json.loads(r[5]) if r[5] else {},
                      r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13]) for r in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def best(self) -> Trial | None:
        done = [t for t in self.trials("done") if t.reward is not None]
        return max(done, key=lambda t: (t.reward, -t.id)) if done else None

    # ------------------------------------------------------------------------------------------ state
    def _save_state(self, state: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO strategy VALUES (0, ?)", (_dump_state(state),))

    def strategy_state(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT state FROM strategy WHERE id = 0").fetchone()
        return _load_state(row[0]) if row else None

    def _tx(self):
        journal = self

        class _Tx:
            def __enter__(self):
                journal.db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                journal.db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()
