"""The forwarding queue: what routes decided to send on, its state and its retries.

SQLite, so that a forward decided before a restart is still sent after it. Rows hold Orthanc
resource IDs and modality names, never patient data. States:

* waiting: armed by a received instance, waiting for its series or study to be stable;
* pending: to be sent (``next_attempt`` says when);
* sending: taken by the worker (back to pending at start-up if Orthanc stopped meanwhile);
* sent, failed (retries exhausted; ``last_error`` says why).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from .sqlitefiles import closed_on_failure, connect_or_fail, migrate, prepare_owner_only

MAX_RETRY_INTERVAL = 3600

SCHEMA_VERSION = 1  # 0: the same tables, before schemas were versioned

# Version 1 (version 0 had the same tables, hence IF NOT EXISTS: adopting one is creating none).
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS forward (
        id INTEGER PRIMARY KEY,
        route TEXT NOT NULL,
        destination TEXT NOT NULL,
        level TEXT NOT NULL,
        resource TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL,
        retry_interval INTEGER NOT NULL,
        next_attempt REAL,
        last_error TEXT,
        job TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    # One open forward per route, destination and resource: a study that keeps receiving
    # instances is sent once it is stable, not once per instance.
    """CREATE UNIQUE INDEX IF NOT EXISTS forward_open ON forward (route, destination, level, resource)
        WHERE state IN ('waiting', 'pending')""",
    "CREATE INDEX IF NOT EXISTS forward_due ON forward (state, next_attempt)",
]


def _to_version_1(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)


class ForwardQueue:
    def __init__(self, path: str | Path):
        self.path = str(path)
        what = f"forwarding queue {self.path}"
        if self.path != ":memory:":
            prepare_owner_only(Path(self.path), "forwarding queue")
        self._db = connect_or_fail(self.path, what)
        self._lock = threading.Lock()
        with closed_on_failure(self._db, what):
            migrate(self._db, what, SCHEMA_VERSION, {0: _to_version_1})
            # Taken by a worker that did not finish (Orthanc stopped): send again.
            self._db.execute("UPDATE forward SET state='pending', updated=? WHERE state='sending'", (time.time(),))

    def arm(self, route: str, destination: str, level: str, resource: str, ready: bool, retries: int,
            retry_interval: int) -> None:
        """Open a forward unless one is open already; ``ready``: send now, else when stable."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO forward (route, destination, level, resource, state, retries, retry_interval,"
                " next_attempt, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (route, destination, level, resource, "pending" if ready else "waiting", retries, retry_interval,
                 now if ready else None, now, now))

    def stable(self, level: str, resource: str) -> int:
        """A series or study became stable: its waiting forwards are due."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "UPDATE forward SET state='pending', next_attempt=?, updated=? WHERE state='waiting' AND level=?"
                " AND resource=?", (now, now, level, resource))
            return cursor.rowcount

    def take_due(self, limit: int = 10, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM forward WHERE state='pending' AND next_attempt <= ? ORDER BY next_attempt, id LIMIT ?",
                (now, limit)).fetchall()
            ids = [r[0] for r in rows]
            if ids:
                self._db.executemany("UPDATE forward SET state='sending', updated=? WHERE id=?",
                                     [(now, i) for i in ids])
        return [self.get(i) for i in ids]

    def sent(self, forward_id: int, job: str | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE forward SET state='sent', attempts=attempts+1, job=?, last_error=NULL,"
                             " updated=? WHERE id=?", (job, time.time(), forward_id))

    def attempt_failed(self, forward_id: int, reason: str, job: str | None = None, retry: bool = True,
                       now: float | None = None) -> str:
        """Count a failed attempt; the forward is tried again later, or fails for good."""
        now = time.time() if now is None else now
        with self._lock:
            attempts, retries, interval = self._db.execute(
                "SELECT attempts, retries, retry_interval FROM forward WHERE id=?", (forward_id,)).fetchone()
            attempts += 1
            if retry and attempts <= retries:
                delay = min(interval * 2 ** (attempts - 1), MAX_RETRY_INTERVAL)
                state, next_attempt = "pending", now + delay
            else:
                state, next_attempt = "failed", None
            self._db.execute("UPDATE forward SET state=?, attempts=?, next_attempt=?, last_error=?, job=?, updated=?"
                             " WHERE id=?", (state, attempts, next_attempt, reason, job, now, forward_id))
        return state

    def retry(self, forward_id: int, now: float | None = None) -> dict | None:
        """An administrator's retry: the forward is due now, with one more attempt than it has
        had (a sent one is sent again); None if unknown. A forward being sent is left alone
        (the result says so by its state)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "UPDATE forward SET state='pending', next_attempt=?, retries=MAX(retries, attempts), "
                "last_error=NULL, updated=? WHERE id=? AND state != 'sending'", (now, now, forward_id))
        return self.get(forward_id)

    def get(self, forward_id: int) -> dict | None:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM forward WHERE id=?", (forward_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        return _as_dict(names, row) if row else None

    def list(self, state: str | None = None, limit: int = 500) -> list[dict]:
        query = "SELECT * FROM forward" + (" WHERE state=?" if state else "") + " ORDER BY id DESC LIMIT ?"
        with self._lock:
            cursor = self._db.execute(query, (state, limit) if state else (limit,))
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        return [_as_dict(names, row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _as_dict(names: list[str], row) -> dict:
    record = dict(zip(names, row))
    for key in ("next_attempt", "created", "updated"):
        if record.get(key) is not None:
            record[key] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record[key]))
    return record
