"""The experiment journal: one SQLite file recording every run of an experiment folder (survives ``kill -9``).

``meta`` holds the experiment's name, seeds, settings and overrides (checked on ``--resume``); ``runs`` one row
per planned run -- its spec, status (``running`` while it trains, then ``done`` or ``failed``), result, attempts,
wall time and the commit it finished on. WAL mode with ``synchronous=FULL``: a committed row survives a kill.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    wall_time REAL,
    commit_hash TEXT,
    started REAL NOT NULL,
    finished REAL
);
"""


@dataclass
class RunRecord:
    key: str
    kind: str
    spec: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    wall_time: float | None
    commit: str | None


class ExperimentJournal:
    FILE = "experiment.sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def config(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM meta WHERE key='config'").fetchone()
        return json.loads(row[0]) if row else None

    def set_config(self, config: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (json.dumps(config, sort_keys=True),))

    def start(self, key: str, kind: str, spec: dict[str, Any]) -> int:
        """Mark ``key`` running (a new row, or another attempt of an interrupted one); returns the attempt number."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT attempts FROM runs WHERE key=?", (key,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO runs (key, kind, spec, status, attempts, started) VALUES "
                                "(?, ?, ?, 'running', 1, ?)", (key, kind, json.dumps(spec), time.time()))
                return 1
            self.db.execute("UPDATE runs SET status='running', attempts=attempts+1, spec=? WHERE key=?",
                            (json.dumps(spec), key))
            return int(row[0]) + 1

    def finish(self, key: str, *, result: dict[str, Any] | None, error: str | None, wall_time: float,
               commit: str | None) -> None:
        status = "failed" if error else "done"
        self.db.execute("UPDATE runs SET status=?, result=?, error=?, wall_time=?, commit_hash=?, finished=? "
                        "WHERE key=?", (status, json.dumps(result) if result is not None else None, error,
                                        wall_time, commit, time.time(), key))

    def runs(self) -> dict[str, RunRecord]:
        out = {}
        for key, kind, spec, status, result, error, attempts, wall, commit in self.db.execute(
                "SELECT key, kind, spec, status, result, error, attempts, wall_time, commit_hash FROM runs "
                "ORDER BY started, key"):
            out[key] = RunRecord(key, kind, json.loads(spec), status, json.loads(result) if result else None, error,
                                 attempts, wall, commit)
        return out
