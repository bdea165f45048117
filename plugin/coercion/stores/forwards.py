"""The forwarding queue: what routes decided to send on, its state and its retries.

SQLite (or PostgreSQL, shared by several Orthancs), so that a forward decided before a restart is
still sent after it. Rows hold Orthanc resource IDs and modality names, never patient data.
States:

* waiting: armed by a received instance, waiting for its series or study to be stable;
* pending: to be sent (``next_attempt`` says when);
* sending: taken by one node's worker, under a lease (``owner``, ``lease_until``) that the node
  renews while it runs: a node that stops (or is killed) mid-send leaves it to the others once
  the lease has expired, and takes its own back at its next start;
* sent, failed (retries exhausted; ``last_error`` says why);
* merged: would have gone back to pending while another forward of the same route, destination
  and resource was open (armed meanwhile): that one sends the resource and carries on this
  one's attempts and back-off (``last_error`` names it).

Routes are armed from Orthanc's change log (shared by several Orthancs on one index), read in
order once across the nodes: ``route_changes`` writes the forwards of a batch of changes and
the position reached (``change_cursor``) in one transaction, so a change Orthanc logged when it
stored an instance is routed even if the node that stored it stopped right after.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from .backends import open_backend, postgres_ddl

MAX_RETRY_INTERVAL = 3600
LEASE_SECONDS = 120  # how long a node's hold on a forward it sends lasts without renewal

SCHEMA_VERSION = 3  # 0: the tables of 1, before schemas were versioned; 2: leases; 3: the change cursor

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
_LEASES = ["ALTER TABLE forward ADD COLUMN owner TEXT", "ALTER TABLE forward ADD COLUMN lease_until REAL"]
# Version 3, the same on both backends: how far the change log has been routed; the AE title
# that sent an instance the ingest re-posted through the REST API (Orthanc records no AE title
# for those), keyed by a hash of its SOP Instance UID, until its change is routed.
_CHANGES = [
    # seq: the last change routed; NULL: not placed yet, at the first change since ``since``
    # (when routes began to be followed; NULL: from the end of the log).
    "CREATE TABLE IF NOT EXISTS change_cursor (name TEXT PRIMARY KEY, seq BIGINT, since DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS reposted (uid_hash TEXT PRIMARY KEY, calling_aet TEXT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL)",
]
REPOSTED_KEPT_SECONDS = 7 * 86400  # a re-post that failed leaves its row: forgotten after a week

# PostgreSQL, version 2 at once: the same table (ids from a sequence), indexes and leases.
_PG_SCHEMA = [
    postgres_ddl(_SCHEMA[0]).replace("IF NOT EXISTS ", "").replace("id INTEGER PRIMARY KEY", "id BIGSERIAL PRIMARY KEY"),
    *(statement.replace("IF NOT EXISTS ", "") for statement in _SCHEMA[1:]),
    *(postgres_ddl(statement) for statement in _LEASES),
]


def _to_version_1(ex) -> None:
    for statement in _SCHEMA:
        ex(statement)


def _to_version_2(ex) -> None:
    for statement in _LEASES:
        ex(statement)


def _to_version_3(ex) -> None:
    for statement in _CHANGES:
        ex(statement)


def uid_hash(uid: str) -> str:
    """How ``reposted`` names an instance: not by its UID."""
    return hashlib.sha256(uid.encode()).hexdigest()


_COLUMNS = ("id, route, destination, level, resource, state, attempts, retries, retry_interval, next_attempt, "
            "last_error, job, created, updated, owner, lease_until")


class ForwardQueue:
    def __init__(self, location: str | Path, node: str | None = None, password_file: str | None = None,
                 lease_seconds: float = LEASE_SECONDS):
        """``location``: an SQLite file or a postgresql:// URL; ``node``: this Orthanc's name in
        the leases (default: host and process); ``lease_seconds``: how long a node's hold on
        what it sends lasts unrenewed (renewed every quarter of it)."""
        self.path = str(location)
        self.lease_seconds = lease_seconds
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"

        def create(ex):
            for statement in _PG_SCHEMA:
                ex(statement)

        self._backend = open_backend(location, "forwarding queue", "forwards", password_file, SCHEMA_VERSION,
                                     {0: _to_version_1, 1: _to_version_2, 2: _to_version_3},
                                     {0: create, 1: lambda ex: None, 2: _to_version_3})
        self.what = self._backend.what
        self._keeper: threading.Thread | None = None
        self._closing = threading.Event()
        # Taken by this node before it stopped (every one, in an embedded file: one node): send
        # again. Another node's are left to their leases.
        now = time.time()

        def recover(ex):
            if ex.postgres:
                rows = ex("SELECT id FROM forward WHERE state='sending' AND owner=%s FOR UPDATE SKIP LOCKED",
                          (self.node,)).fetchall()
            else:
                rows = ex("SELECT id FROM forward WHERE state='sending'").fetchall()
            for (forward_id,) in rows:
                reason = "Orthanc stopped while it was being sent"
                ex("UPDATE forward SET last_error=%s WHERE id=%s", (reason, forward_id))
                _back_to_pending(ex, forward_id, now, reason, now)

        try:
            self._backend.run(recover)
        except BaseException:
            self._backend.close()
            raise

    def _run(self, work):
        return self._backend.run(work)

    def arm(self, route: str, destination: str, level: str, resource: str, ready: bool, retries: int,
            retry_interval: int) -> None:
        """Open a forward unless one is open already; ``ready``: send now, else when stable."""
        self._run(lambda ex: Arming(ex).arm(route, destination, level, resource, ready, retries, retry_interval))

    def stable(self, level: str, resource: str) -> int:
        """A series or study became stable: its waiting forwards are due."""
        return self._run(lambda ex: Arming(ex).stable(level, resource))

    def note_reposted(self, sop_instance_uid: str, calling_aet: str) -> None:
        """The ingest is about to store an instance from ``calling_aet`` through the REST API."""
        now = time.time()
        self._run(lambda ex: (
            ex("DELETE FROM reposted WHERE created < %s", (now - REPOSTED_KEPT_SECONDS,)),
            ex("INSERT INTO reposted (uid_hash, calling_aet, created) VALUES (%s, %s, %s) ON CONFLICT (uid_hash)"
               " DO UPDATE SET calling_aet=excluded.calling_aet, created=excluded.created",
               (uid_hash(sop_instance_uid), calling_aet, now))))

    def follow_changes(self, since: float | None = None, name: str = "routes") -> None:
        """Routes are followed from now on (``since``, a time): the first batch starts at the first
        change logged since then, unless routing has a position already (a restart)."""
        since = time.time() if since is None else since
        self._run(lambda ex: ex(
            "INSERT INTO change_cursor (name, seq, since) VALUES (%s, NULL, %s) ON CONFLICT (name) DO UPDATE"
            " SET since=excluded.since WHERE change_cursor.seq IS NULL AND change_cursor.since IS NULL",
            (name, since)))

    def unfollow_changes(self, name: str = "routes") -> None:
        """No route is loaded: what is logged meanwhile is not for the routes a later start brings."""
        self._run(lambda ex: ex("UPDATE change_cursor SET seq=NULL, since=NULL WHERE name=%s", (name,)))

    def route_changes(self, place: Callable[[float | None], int], process: Callable[[int, "Arming"], int | None],
                      name: str = "routes") -> bool:
        """Route one batch of Orthanc's change log, once across the nodes sharing this queue.

        ``process(since, arming)`` handles the changes after sequence number ``since`` through
        ``arming`` and returns the last one it handled (None: nothing new). What it arms and
        the new position are committed together: a node that stops mid-batch leaves the whole
        batch to the next. A position not placed yet is placed by ``place(since)``: the last
        sequence number logged before the time ``since`` (None: the last one). False when
        nothing was handled, or another node is at it.
        """
        def work(ex):
            ex("INSERT INTO change_cursor (name, seq, since) VALUES (%s, NULL, NULL) ON CONFLICT DO NOTHING", (name,))
            row = ex("SELECT seq, since FROM change_cursor WHERE name=%s FOR UPDATE SKIP LOCKED", (name,)).fetchone()
            if row is None:
                return False  # another node holds it
            seq, since = row
            if seq is None:
                seq = place(since)
                ex("UPDATE change_cursor SET seq=%s WHERE name=%s", (seq, name))
            reached = process(seq, Arming(ex))
            if reached is None or reached <= seq:
                return False
            ex("UPDATE change_cursor SET seq=%s WHERE name=%s", (reached, name))
            return True

        return self._run(work)

    def take_due(self, limit: int = 10, now: float | None = None) -> list[dict]:
        """Up to ``limit`` due forwards, now this node's to send (each is given to one node:
        rows another node is taking are skipped). A forward whose sender's lease expired is
        first made pending again."""
        now = time.time() if now is None else now

        def work(ex):
            for (forward_id,) in ex("SELECT id FROM forward WHERE state='sending' AND lease_until < %s"
                                    " FOR UPDATE SKIP LOCKED", (now,)).fetchall():
                reason = "the node sending it stopped (its lease expired)"
                ex("UPDATE forward SET last_error=%s WHERE id=%s", (reason, forward_id))
                _back_to_pending(ex, forward_id, now, reason, now)
            ids = [r[0] for r in ex(
                "SELECT id FROM forward WHERE state='pending' AND next_attempt <= %s ORDER BY next_attempt, id"
                " LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit)).fetchall()]
            for forward_id in ids:
                ex("UPDATE forward SET state='sending', owner=%s, lease_until=%s, updated=%s WHERE id=%s",
                   (self.node, now + self.lease_seconds, now, forward_id))
            return [_as_dict(row) for row in (ex(f"SELECT {_COLUMNS} FROM forward WHERE id=%s", (i,)).fetchone()
                                               for i in ids)]

        taken = self._run(work)
        if taken:
            self._keep_leases()
        return taken

    def renew(self, now: float | None = None) -> int:
        """Extend the leases of what this node is sending."""
        now = time.time() if now is None else now
        return self._run(lambda ex: ex("UPDATE forward SET lease_until=%s WHERE state='sending' AND owner=%s",
                                       (now + self.lease_seconds, self.node)).rowcount)

    def _keep_leases(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            return

        def keep():
            while not self._closing.wait(self.lease_seconds / 4):
                try:
                    if not self.renew():
                        return  # nothing held: the next take starts another keeper
                except Exception:  # the database is away: the leases may run out, as for a dead node
                    continue

        self._keeper = threading.Thread(target=keep, name="coercion-forward-leases", daemon=True)
        self._keeper.start()

    def sent(self, forward_id: int, job: str | None = None) -> None:
        self._run(lambda ex: ex(
            "UPDATE forward SET state='sent', attempts=attempts+1, job=%s, last_error=NULL, owner=NULL,"
            " lease_until=NULL, updated=%s WHERE id=%s", (job, time.time(), forward_id)))

    def attempt_failed(self, forward_id: int, reason: str, job: str | None = None, retry: bool = True,
                       now: float | None = None) -> str:
        """Count a failed attempt; the forward is tried again later, or fails for good."""
        now = time.time() if now is None else now

        def work(ex):
            attempts, retries, interval = ex("SELECT attempts, retries, retry_interval FROM forward WHERE id=%s",
                                             (forward_id,)).fetchone()
            attempts += 1
            ex("UPDATE forward SET attempts=%s, last_error=%s, job=%s, owner=NULL, lease_until=NULL, updated=%s"
               " WHERE id=%s", (attempts, reason, job, now, forward_id))
            if retry and attempts <= retries:
                delay = min(interval * 2 ** (attempts - 1), MAX_RETRY_INTERVAL)
                return _back_to_pending(ex, forward_id, now + delay, reason, now)
            ex("UPDATE forward SET state='failed', next_attempt=NULL WHERE id=%s", (forward_id,))
            return "failed"

        return self._run(work)

    def retry(self, forward_id: int, now: float | None = None) -> dict | None:
        """An administrator's retry: the forward is due now, with one more attempt than it has
        had (a sent one is sent again); None if unknown. A forward being sent is left alone
        (the result says so by its state)."""
        now = time.time() if now is None else now

        def work(ex):
            row = ex("SELECT state FROM forward WHERE id=%s", (forward_id,)).fetchone()
            if row is not None and row[0] != "sending":
                ex("UPDATE forward SET retries=GREATEST(retries, attempts), last_error=NULL WHERE id=%s",
                   (forward_id,))
                _back_to_pending(ex, forward_id, now, "retried", now)
                open_one = ex(  # merged: the open forward is what is due now
                    "SELECT o.id FROM forward o JOIN forward f ON o.route=f.route AND o.destination=f.destination"
                    " AND o.level=f.level AND o.resource=f.resource WHERE f.id=%s AND o.state='pending'"
                    " ORDER BY o.id = f.id DESC", (forward_id,)).fetchone()
                if open_one is not None:
                    ex("UPDATE forward SET next_attempt=%s WHERE id=%s", (now, open_one[0]))

        self._run(work)
        return self.get(forward_id)

    def get(self, forward_id: int) -> dict | None:
        row = self._run(lambda ex: ex(f"SELECT {_COLUMNS} FROM forward WHERE id=%s", (forward_id,)).fetchone())
        return _as_dict(row) if row else None

    def list(self, state: str | None = None, limit: int = 500) -> list[dict]:
        query = f"SELECT {_COLUMNS} FROM forward" + (" WHERE state=%s" if state else "") + " ORDER BY id DESC LIMIT %s"
        rows = self._run(lambda ex: ex(query, (state, limit) if state else (limit,)).fetchall())
        return [_as_dict(row) for row in rows]

    def close(self) -> None:
        self._closing.set()
        self._backend.close()


class Arming:
    """What routing a change may do, inside the transaction that routes it."""

    def __init__(self, ex):
        self._ex = ex

    def arm(self, route: str, destination: str, level: str, resource: str, ready: bool, retries: int,
            retry_interval: int) -> None:
        now = time.time()
        self._ex(
            "INSERT INTO forward (route, destination, level, resource, state, retries, retry_interval,"
            " next_attempt, created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (route, destination, level, resource, "pending" if ready else "waiting", retries, retry_interval,
             now if ready else None, now, now))

    def stable(self, level: str, resource: str) -> int:
        now = time.time()
        return self._ex(
            "UPDATE forward SET state='pending', next_attempt=%s, updated=%s WHERE state='waiting' AND level=%s"
            " AND resource=%s", (now, now, level, resource)).rowcount

    def reposted_from(self, sop_instance_uid: str) -> str | None:
        """The AE title an instance the ingest re-posted came from (once: the row is gone after)."""
        key = uid_hash(sop_instance_uid)
        row = self._ex("SELECT calling_aet FROM reposted WHERE uid_hash=%s", (key,)).fetchone()
        if row is not None:
            self._ex("DELETE FROM reposted WHERE uid_hash=%s", (key,))
        return row[0] if row else None


def _back_to_pending(ex, forward_id: int, next_attempt: float, reason: str, now: float) -> str:
    """Make a forward pending again, or merge it into the open forward of its route,
    destination and resource (one open at a time); the state it is left in."""
    ex("UPDATE forward SET owner=NULL, lease_until=NULL WHERE id=%s", (forward_id,))
    open_one = ex(
        "SELECT o.id, o.state FROM forward o JOIN forward f ON o.route=f.route AND o.destination=f.destination"
        " AND o.level=f.level AND o.resource=f.resource WHERE f.id=%s AND o.id != f.id"
        " AND o.state IN ('waiting', 'pending')", (forward_id,)).fetchone()
    if open_one is None:
        ex("UPDATE forward SET state='pending', next_attempt=%s, updated=%s WHERE id=%s", (next_attempt, now, forward_id))
        return "pending"
    other, other_state = open_one
    attempts, retries = ex("SELECT attempts, retries FROM forward WHERE id=%s", (forward_id,)).fetchone()
    # The open one inherits the attempts and the back-off: a destination that keeps failing
    # is not tried at once again because a new instance arrived.
    ex("UPDATE forward SET attempts=GREATEST(attempts, %s), retries=GREATEST(retries, %s), updated=%s,"
       " next_attempt=CASE WHEN state='pending' THEN GREATEST(next_attempt, %s) ELSE next_attempt END WHERE id=%s",
       (attempts, retries, now, next_attempt, other))
    ex("UPDATE forward SET state='merged', next_attempt=NULL, last_error=%s, updated=%s WHERE id=%s",
       (f"{reason}; forward {other} ({other_state}) sends the same resource", now, forward_id))
    return "merged"


def _as_dict(row) -> dict:
    record = dict(zip([c.strip() for c in _COLUMNS.split(",")], row))
    for key in ("next_attempt", "created", "updated", "lease_until"):
        if record.get(key) is not None:
            record[key] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record[key]))
    return record
