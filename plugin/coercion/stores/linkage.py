"""The linkage store: which (issuer, original patient ID) each patient pseudonym stands for,
and which original UID each pseudonymous UID handed out to a peer stands for.

Pseudonyms are keyed hashes and cannot be inverted, so authorised re-linkage needs a record
of every pair handed out. The interface is small so that a PostgreSQL store can follow the
embedded SQLite one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Link:
    """One pseudonym's origin, as one rule saw it. ``patient_id`` is PHI: never log it."""

    pseudonym: str
    issuer: str
    patient_id: str
    rule: str
    first_seen: float
    last_seen: float
    instance_count: int

    def __repr__(self) -> str:
        return f"Link(pseudonym={self.pseudonym!r}, rule={self.rule!r}, instances={self.instance_count})"

    def as_dict(self) -> dict:
        return {
            "pseudonym": self.pseudonym, "issuer": self.issuer, "patient_id": self.patient_id,
            "rule": self.rule, "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen),
            "instance_count": self.instance_count,
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class LinkageStore(ABC):
    @abstractmethod
    def record(self, pseudonym: str, issuer: str, patient_id: str, rule: str, count: int = 1) -> None:
        """Remember that ``rule`` gave ``pseudonym`` to (issuer, patient_id), ``count`` more times."""

    @abstractmethod
    def lookup(self, pseudonym: str) -> list[Link]:
        """Every origin recorded for ``pseudonym`` (normally one, seen by one or more rules)."""

    @abstractmethod
    def record_uids(self, pairs) -> None:
        """Remember (original UID, pseudonymous UID) pairs handed out to peers."""

    @abstractmethod
    def original_uids(self, pseudonyms) -> dict[str, str]:
        """The original of each pseudonymous UID that was handed out (unknown ones are absent)."""

    def close(self) -> None:  # pragma: no cover - nothing to release by default
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS patient_link (
    pseudonym      TEXT NOT NULL,
    issuer         TEXT NOT NULL,
    patient_id     TEXT NOT NULL,
    rule           TEXT NOT NULL,
    first_seen     REAL NOT NULL,
    last_seen      REAL NOT NULL,
    instance_count INTEGER NOT NULL,
    PRIMARY KEY (issuer, patient_id, rule)
);
CREATE INDEX IF NOT EXISTS patient_link_pseudonym ON patient_link (pseudonym);
CREATE TABLE IF NOT EXISTS uid_link (
    pseudonym  TEXT PRIMARY KEY,
    original   TEXT NOT NULL,
    first_seen REAL NOT NULL
) WITHOUT ROWID;
"""


class SQLiteLinkageStore(LinkageStore):
    """An embedded SQLite file in WAL mode: safe across threads (one lock) and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def record(self, pseudonym: str, issuer: str, patient_id: str, rule: str, count: int = 1) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO patient_link VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (issuer, patient_id, rule) DO UPDATE SET "
                "last_seen = excluded.last_seen, instance_count = instance_count + excluded.instance_count, "
                "pseudonym = excluded.pseudonym",
                (pseudonym, issuer, patient_id, rule, now, now, count),
            )

    def lookup(self, pseudonym: str) -> list[Link]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pseudonym, issuer, patient_id, rule, first_seen, last_seen, instance_count "
                "FROM patient_link WHERE pseudonym = ? ORDER BY first_seen, rule",
                (pseudonym,),
            ).fetchall()
        return [Link(*row) for row in rows]

    def record_uids(self, pairs) -> None:
        rows = [(new, old, time.time()) for old, new in pairs]
        if rows:
            with self._lock:
                self._db.executemany("INSERT OR IGNORE INTO uid_link VALUES (?, ?, ?)", rows)

    def original_uids(self, pseudonyms) -> dict[str, str]:
        wanted = sorted(set(pseudonyms))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start:start + 500]
                found.update(self._db.execute(
                    f"SELECT pseudonym, original FROM uid_link WHERE pseudonym IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall())
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(location: str | Path) -> LinkageStore:
    """A store from its configured location: a file path means SQLite."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        raise ValueError("a PostgreSQL linkage store is not implemented yet; use a file path for SQLite")
    return SQLiteLinkageStore(text)
