"""The forwarding queue: what routes decided to send on, its state and its retries.

SQLite, so that a forward decided before a restart is still sent after it. Rows hold Orthanc
resource IDs and modality names, never patient data. States:

* waiting: armed by a received instance, waiting for its series or study to be stable;
* pending: to be sent (``next_attempt`` says when);
* sending: taken by the worker (back to pending at start-up if Orthanc stopped meanwhile);
* sent, failed (retries exhausted; ``last_error`` says why);
* merged: would have gone back to pending while another forward of the same route, destination
  and resource was open (armed meanwhile): that one sends the resource and carries on this
  one's attempts and back-off (``last_error`` names it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from .sqlitefiles import StoreError, closed_on_failure, connect_or_fail, migrate, prepare_owner_only

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
        from .locations import is_url, without_password

        self.path = str(path)
        if is_url(self.path):
            raise StoreError(f"forwarding queue {without_password(self.path)}: the forwarding queue is kept in "
                             "SQLite only (PostgreSQL: not yet); set Coercion.ForwardsDatabase to a file path")
        what = f"forwarding queue {self.path}"
        if self.path != ":memory:":
            prepare_owner_only(Path(self.path), "forwarding queue")
        self._db = connect_or_fail(self.path, what)
        self._lock = threading.Lock()
        with closed_on_failure(self._db, what):
            migrate(self._db, what, SCHEMA_VERSION, {0: _to_version_1})
            # Taken by a worker that did not finish (Orthanc stopped): send again.
            now = time.time()
            for (forward_id,) in self._db.execute("SELECT id FROM forward WHERE state='sending'").fetchall():
                self._back_to_pending(forward_id, now, "Orthanc stopped while it was being sent", now)

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
            self._db.execute("UPDATE forward SET attempts=?, last_error=?, job=?, updated=? WHERE id=?",
                             (attempts, reason, job, now, forward_id))
            if state == "pending":
                return self._back_to_pending(forward_id, next_attempt, reason, now)
            self._db.execute("UPDATE forward SET state='failed', next_attempt=NULL WHERE id=?", (forward_id,))
        return state

    def _back_to_pending(self, forward_id: int, next_attempt: float, reason: str, now: float) -> str:
        """Make a forward pending again, or merge it into the open forward of its route,
        destination and resource (one open at a time); the state it is left in."""
        open_one = self._db.execute(
            "SELECT o.id, o.state FROM forward o JOIN forward f ON o.route=f.route AND o.destination=f.destination"
            " AND o.level=f.level AND o.resource=f.resource WHERE f.id=? AND o.id != f.id"
            " AND o.state IN ('waiting', 'pending')", (forward_id,)).fetchone()
        if open_one is None:
            self._db.execute("UPDATE forward SET state='pending', next_attempt=?, updated=? WHERE id=?",
                             (next_attempt, now, forward_id))
            return "pending"
        other, other_state = open_one
        attempts, retries = self._db.execute("SELECT attempts, retries FROM forward WHERE id=?",
                                             (forward_id,)).fetchone()
        # The open one inherits the attempts and the back-off: a destination that keeps failing
        # is not tried at once again because a new instance arrived.
        self._db.execute(
            "UPDATE forward SET attempts=MAX(attempts, ?), retries=MAX(retries, ?), updated=?,"
            " next_attempt=CASE WHEN state='pending' THEN MAX(next_attempt, ?) ELSE next_attempt END WHERE id=?",
            (attempts, retries, now, next_attempt, other))
        self._db.execute("UPDATE forward SET state='merged', next_attempt=NULL, last_error=?, updated=? WHERE id=?",
                         (f"{reason}; forward {other} ({other_state}) sends the same resource", now, forward_id))
        return "merged"

    def retry(self, forward_id: int, now: float | None = None) -> dict | None:
        """An administrator's retry: the forward is due now, with one more attempt than it has
        had (a sent one is sent again); None if unknown. A forward being sent is left alone
        (the result says so by its state)."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute("SELECT state FROM forward WHERE id=?", (forward_id,)).fetchone()
            if row is not None and row[0] != "sending":
                self._db.execute("UPDATE forward SET retries=MAX(retries, attempts), last_error=NULL WHERE id=?",
                                 (forward_id,))
                self._back_to_pending(forward_id, now, "retried", now)
                open_one = self._db.execute(  # merged: the open forward is what is due now
                    "SELECT o.id FROM forward o JOIN forward f ON o.route=f.route AND o.destination=f.destination"
                    " AND o.level=f.level AND o.resource=f.resource WHERE f.id=? AND o.state='pending'"
                    " ORDER BY o.id = f.id DESC", (forward_id,)).fetchone()
                if open_one is not None:
                    self._db.execute("UPDATE forward SET next_attempt=? WHERE id=?", (now, open_one[0]))
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
