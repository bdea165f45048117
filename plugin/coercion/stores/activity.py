"""Activity statistics per rule and per calling AE title, kept across restarts, shared by nodes.

One row per (rule, calling AE title): how many instances (MPPS messages, C-FIND queries) the
rule matched, coerced (for a C-FIND rule: answers), rejected and discarded, the bytes in and
out, the seconds spent, when the pair was first and last seen, and its last failure (when, and
why: a ``Decision.reason``, which never holds attribute values, cut to ``REASON_LENGTH``). No
patient data: rule names, AE titles, counts and times.

The calling AE title is the transaction's: the peer's for what comes in (role SCU), the one
this Orthanc calls with for what it sends (role SCP). What carries none (uploads through REST,
DICOMweb, WebDAV, Lua: Orthanc knows an address, not an AE title) is kept under ``""`` (a key
column cannot be NULL and still add up: NULLs never conflict in an upsert) and reported as
``null``.

Counting never waits for the store: :class:`Activity` counts in memory, and a daemon thread
adds what was counted since (the deltas) to the store every ``FLUSH_SECONDS``, and once more
at :meth:`Activity.close`, with upserts (``x = x + excluded.x``): several Orthancs on one
PostgreSQL database add up, and each reads back everyone's totals in the same transaction. A
store that is away (a database lost, a file locked) keeps the deltas in memory, added to at
the next attempt: nothing is lost to a transient error, and ingest never waits or fails for
statistics. A process killed loses at most the last ``FLUSH_SECONDS`` of counts (and a
commit whose acknowledgement a lost connection swallows is added again: statistics, not
linkage). Other nodes' counts show within ``FLUSH_SECONDS``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .backends import open_backend, postgres_ddl
from .sqlitefiles import StoreError

SCHEMA_VERSION = 1
FLUSH_SECONDS = 5.0
REASON_LENGTH = 200  # a failure reason is cut to this many characters
NO_AET = ""  # the key of what came with no calling AE title

COUNTERS = ("matched", "coerced", "rejected", "discarded", "bytes_in", "bytes_out", "seconds")

_SCHEMA = """CREATE TABLE rule_activity (
    rule TEXT NOT NULL,
    calling_aet TEXT NOT NULL,
    matched BIGINT NOT NULL DEFAULT 0,
    coerced BIGINT NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0,
    discarded BIGINT NOT NULL DEFAULT 0,
    bytes_in BIGINT NOT NULL DEFAULT 0,
    bytes_out BIGINT NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_failure_at REAL,
    last_failure_reason TEXT,
    PRIMARY KEY (rule, calling_aet)
) WITHOUT ROWID"""

_COLUMNS = ("rule, calling_aet, matched, coerced, rejected, discarded, bytes_in, bytes_out, seconds, first_seen, "
            "last_seen, last_failure_at, last_failure_reason")
# A newer failure replaces the last one (a NULL time never does); both sides read the old row.
_NEWER_FAILURE = "excluded.last_failure_at >= COALESCE(rule_activity.last_failure_at, excluded.last_failure_at)"
_UPSERT = (
    f"INSERT INTO rule_activity ({_COLUMNS}) VALUES ({', '.join(['%s'] * 13)}) "
    "ON CONFLICT (rule, calling_aet) DO UPDATE SET "
    + ", ".join(f"{name} = rule_activity.{name} + excluded.{name}" for name in COUNTERS)
    + ", first_seen = CASE WHEN excluded.first_seen < rule_activity.first_seen THEN excluded.first_seen"
      " ELSE rule_activity.first_seen END"
      ", last_seen = GREATEST(rule_activity.last_seen, excluded.last_seen)"
      f", last_failure_at = CASE WHEN {_NEWER_FAILURE} THEN excluded.last_failure_at"
      " ELSE rule_activity.last_failure_at END"
      f", last_failure_reason = CASE WHEN {_NEWER_FAILURE} THEN excluded.last_failure_reason"
      " ELSE rule_activity.last_failure_reason END"
)

Key = tuple  # (rule, calling AE title; NO_AET for none)


def _iso(moment: float | None) -> str | None:
    return None if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def bounded_reason(reason: str | None) -> str | None:
    if not reason:
        return None
    return reason if len(reason) <= REASON_LENGTH else reason[: REASON_LENGTH - 1] + "…"


@dataclass
class Counts:
    """The counts of one (rule, calling AE title): a delta or a total."""

    matched: int = 0
    coerced: int = 0
    rejected: int = 0
    discarded: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    first_seen: float | None = None
    last_seen: float | None = None
    last_failure_at: float | None = None
    last_failure_reason: str | None = None

    def add(self, other: "Counts") -> "Counts":
        """Add ``other`` to these counts (in place, as the store's upsert does); these counts."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.first_seen is not None and (self.first_seen is None or other.first_seen < self.first_seen):
            self.first_seen = other.first_seen
        if other.last_seen is not None and (self.last_seen is None or other.last_seen > self.last_seen):
            self.last_seen = other.last_seen
        if other.last_failure_at is not None and (self.last_failure_at is None
                                                  or other.last_failure_at >= self.last_failure_at):
            self.last_failure_at, self.last_failure_reason = other.last_failure_at, other.last_failure_reason
        return self

    def copy(self) -> "Counts":
        return replace(self)

    def as_dict(self) -> dict:
        """The counters, the times in ISO 8601 (UTC) and the last failure's reason."""
        answer = {name: getattr(self, name) for name in COUNTERS}
        answer["seconds"] = round(self.seconds, 6)
        answer.update(first_seen=_iso(self.first_seen), last_seen=_iso(self.last_seen),
                      last_failure_at=_iso(self.last_failure_at), last_failure_reason=self.last_failure_reason)
        return answer


def summed(counts) -> Counts:
    total = Counts()
    for one in counts:
        total.add(one)
    return total


def _row(key: Key, counts: Counts) -> tuple:
    rule, calling_aet = key
    return (rule, calling_aet, *(getattr(counts, name) for name in COUNTERS), counts.first_seen, counts.last_seen,
            counts.last_failure_at, bounded_reason(counts.last_failure_reason))


def _read(ex) -> dict[Key, Counts]:
    totals = {}
    for row in ex(f"SELECT {_COLUMNS} FROM rule_activity").fetchall():
        rule, calling_aet, *values = row
        totals[(rule, calling_aet)] = Counts(*values[:6], float(values[6]), *values[7:])
    return totals


class ActivityStore:
    """The totals per (rule, calling AE title), in an SQLite file (owner-only) or PostgreSQL."""

    def __init__(self, location: str | Path, password_file: str | None = None):
        self.path = str(location)

        def create(ex):
            ex(_SCHEMA if not ex.postgres else postgres_ddl(_SCHEMA))

        self._backend = open_backend(location, "activity store", "activity", password_file, SCHEMA_VERSION,
                                     {0: create}, {0: create})
        self.what = self._backend.what

    def add(self, deltas: dict[Key, Counts]) -> dict[Key, Counts]:
        """Add ``deltas`` to the totals, and read every total back, in one transaction."""
        def work(ex):
            ex.many(_UPSERT, [_row(key, counts) for key, counts in sorted(deltas.items())])
            return _read(ex)

        return self._backend.run(work)

    def totals(self) -> dict[Key, Counts]:
        return self._backend.run(_read)

    def close(self) -> None:
        self._backend.close()


def _reason(exc: Exception) -> str:
    """Why a flush failed, without values: the stores' own messages name the store and the
    reason; SQLite's name what went wrong (locked, I/O); another library's, only its kind."""
    if isinstance(exc, (StoreError, sqlite3.Error)):
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return type(exc).__name__


def _flush_every(ref: "weakref.ref[Activity]", stop: threading.Event, interval: float) -> None:
    """The flusher: holds its Activity only while flushing (a dropped one ends the thread)."""
    while not stop.wait(interval):
        activity = ref()
        if activity is None:
            return
        activity.flush()
        del activity


class Activity:
    """Counts kept in memory, flushed to an :class:`ActivityStore` every ``interval`` seconds
    by a daemon thread (and by :meth:`close`); without a store, in memory only. Thread-safe:
    :meth:`count` only takes a lock held for dictionary updates, never the store's."""

    def __init__(self, store: ActivityStore | None, interval: float = FLUSH_SECONDS, start: bool = True):
        """``start``: run the flusher (False: only :meth:`flush` and :meth:`close` write)."""
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()  # the dictionaries below
        self._flushing = threading.Lock()  # one flush at a time
        self._totals: dict[Key, Counts] = store.totals() if store is not None else {}
        self._in_flight: dict[Key, Counts] = {}  # being added to the store
        self._pending: dict[Key, Counts] = {}  # counted since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed_at: float | None = None
        self.last_error: str | None = None  # why the last flush failed; None once one succeeds
        self.failing_since: float | None = None
        # Told (from the flusher's thread) when flushing starts failing (the message) and when
        # it works again (None): the edge logs it.
        self.notify: Callable[[str | None], None] | None = None
        if store is not None and start:
            self._thread = threading.Thread(target=_flush_every, args=(weakref.ref(self), self._stop, interval),
                                            name="coercion-activity-flush", daemon=True)
            self._thread.start()

    def count(self, rule: str, calling_aet: str | None, failure: str | None = None, matched: int = 1,
              **increments) -> None:
        """Count one decision of ``rule`` for ``calling_aet`` (None: no AE title): ``matched``
        and ``increments`` (coerced, rejected, discarded, bytes_in, bytes_out, seconds);
        ``failure``: why it was refused (a Decision.reason, never a value)."""
        now = time.time()
        key = (rule, calling_aet or NO_AET)
        with self._lock:
            counts = self._pending.get(key)
            if counts is None:
                counts = self._pending[key] = Counts(first_seen=now)
            counts.matched += matched
            for name, value in increments.items():
                setattr(counts, name, getattr(counts, name) + value)
            counts.last_seen = now
            if failure is not None:
                counts.last_failure_at, counts.last_failure_reason = now, bounded_reason(failure)

    def flush(self) -> bool:
        """Add what was counted since the last flush to the store and read the totals back
        (everyone's, on a shared database); on failure the counts wait for the next flush.
        Never raises; whether the store was written."""
        if self.store is None:
            return True
        with self._flushing:
            with self._lock:
                self._in_flight, self._pending = self._pending, {}
            try:
                totals = self.store.add(self._in_flight)
            except Exception as exc:
                with self._lock:
                    for key, counts in self._pending.items():  # counted meanwhile: after the older ones
                        self._in_flight.setdefault(key, Counts()).add(counts)
                    self._in_flight, self._pending = {}, self._in_flight
                self._failed(_reason(exc))
                return False
            with self._lock:
                self._totals, self._in_flight = totals, {}
            self.flushed_at = time.time()
            if self.last_error is not None:
                self.last_error = self.failing_since = None
                self._tell(None)
            return True

    def _failed(self, reason: str) -> None:
        first = self.last_error is None
        self.last_error = reason
        if first:
            self.failing_since = time.time()
            where = "" if self.store.what in reason else f"{self.store.what}: "
            self._tell(f"{where}statistics could not be written ({reason}); they are kept in memory "
                       f"and written at the next attempt, every {self.interval:g} s")

    def _tell(self, message: str | None) -> None:
        if self.notify is not None:
            try:
                self.notify(message)
            except Exception:  # a log that fails must not stop the flusher
                pass

    def rows(self) -> dict[Key, Counts]:
        """The totals as last read from the store, plus what this process counted since."""
        with self._lock:
            rows = {key: counts.copy() for key, counts in self._totals.items()}
            for source in (self._in_flight, self._pending):
                for key, counts in source.items():
                    rows.setdefault(key, Counts()).add(counts)
        return rows

    def unflushed(self) -> int:
        """How many (rule, calling AE title) have counts not yet in the store."""
        with self._lock:
            return len(self._in_flight.keys() | self._pending.keys())

    def summary(self) -> dict:
        """``rules``: per rule, its counts summed over the calling AE titles and the AE titles
        it matched; ``calling_aets``: per calling AE title (null: none), its counts summed over
        the rules and each rule's own; ``flush``: how the store is kept up to date (its
        location is not said: this is an open read). Counts, times and failure reasons only."""
        rows = self.rows()
        rules: dict[str, list] = {}
        aets: dict[str, list] = {}
        for (rule, aet), counts in rows.items():
            rules.setdefault(rule, []).append((aet, counts))
            aets.setdefault(aet, []).append((rule, counts))

        def aet_order(aet: str):
            return aet == NO_AET, aet

        return {
            "rules": [{"rule": rule, **summed(c for _, c in entries).as_dict(),
                       "calling_aets": [aet or None for aet, _ in sorted(entries, key=lambda e: aet_order(e[0]))]}
                      for rule, entries in sorted(rules.items())],
            "calling_aets": [{"calling_aet": aet or None, **summed(c for _, c in entries).as_dict(),
                              "rules": [{"rule": rule, **counts.as_dict()} for rule, counts in sorted(entries)]}
                             for aet, entries in sorted(aets.items(), key=lambda item: aet_order(item[0]))],
            "flush": {"interval_seconds": self.interval, "flushed_at": _iso(self.flushed_at),
                      "unflushed": self.unflushed(), "failing_since": _iso(self.failing_since),
                      "error": self.last_error.split(":", 1)[0] if self.last_error else None},
        }

    def close(self) -> bool:
        """Stop the flusher, flush once more, close the store; whether the last flush worked
        (counts made after this stay in memory)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.store is None:
            return True
        done = self.flush()
        with self._flushing:
            self.store.close()
            self.store = None
        return done


def open_activity(location: str | Path, password_file: str | None = None, interval: float = FLUSH_SECONDS) -> Activity:
    """The counts of the store at ``location`` (an SQLite file or a postgresql:// URL)."""
    return Activity(ActivityStore(location, password_file), interval)


__all__ = ["Activity", "ActivityStore", "Counts", "FLUSH_SECONDS", "NO_AET", "REASON_LENGTH", "open_activity",
           "summed"]
