"""The linkage store: which (issuer, original patient ID) each patient pseudonym stands for,
and which original UID each pseudonymous UID handed out to a peer stands for.

Pseudonyms are keyed hashes and cannot be inverted, so authorised re-linkage needs a record
of every pair handed out. The originals are kept sealed (AES-GCM, ``sealing.py``) and opened
only when a lookup asks for them; the pseudonyms, the lookup keys, stay in clear. The
interface is small: the embedded SQLite store and the PostgreSQL one (several Orthancs
sharing one database) behind it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..engine.pseudonyms import Keys
from .sealing import Sealer, open_in_store
from .sqlitefiles import (
    StoreError,
    closed_on_failure,
    connect_or_fail,
    migrate,
    prepare_owner_only,
    table_exists,
)

__all__ = ["Link", "LinkageStore", "PostgresLinkageStore", "SQLiteLinkageStore", "StoreError", "open_store"]


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


SCHEMA_VERSION = 1  # 0: the originals in clear (before sealing); 1: sealed

# Version 1. Sealed columns are bound to their row and column: (table, pseudonym, rule,
# column) for patient_link, (table, pseudonym, column) for uid_link.
_TABLES = [
    """CREATE TABLE patient_link (
        pseudonym      TEXT NOT NULL,  -- HMAC(secret, issuer, patient ID): names the pair
        rule           TEXT NOT NULL,
        issuer         BLOB NOT NULL,  -- sealed
        patient_id     BLOB NOT NULL,  -- sealed
        first_seen     REAL NOT NULL,
        last_seen      REAL NOT NULL,
        instance_count INTEGER NOT NULL,
        PRIMARY KEY (pseudonym, rule)
    ) WITHOUT ROWID""",
    """CREATE TABLE uid_link (
        pseudonym  TEXT PRIMARY KEY,
        original   BLOB NOT NULL,      -- sealed
        first_seen REAL NOT NULL
    ) WITHOUT ROWID""",
    # One constant sealed with the store's key, so that a wrong secret is told at open rather
    # than at the first lookup (or never, while new rows pile up under another key).
    # scrub_pending: a migration from clear text has not yet rewritten the files.
    """CREATE TABLE store_key (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        key_check     BLOB NOT NULL,
        scrub_pending INTEGER NOT NULL
    )""",
]
_KEY_CHECK = ("store_key", "1", "key_check")


class _SealedLinks:
    """How both backends seal and open the originals (``_sealer``, ``_what`` set by the store)."""

    def _seal_link(self, pseudonym: str, rule: str, column: str, value: str) -> bytes:
        return self._sealer.seal(value, "patient_link", pseudonym, rule, column)

    def _open(self, sealed, *context: str) -> str:
        return open_in_store(self._sealer, self._what, sealed, *context)


class SQLiteLinkageStore(_SealedLinks, LinkageStore):
    """An embedded SQLite file in WAL mode: safe across threads (one lock) and processes.

    Opening creates the file owner-only, migrates an earlier schema in place and checks that
    the site secret is the one the store was written with; it raises :class:`StoreError`
    (naming the file) when any of that fails, and never goes on with a store it cannot trust.
    """

    def __init__(self, path: str | Path, keys: Keys):
        self.path = Path(path)
        self._what = f"linkage store {self.path}"
        self._sealer = Sealer(keys.secret)
        self._lock = threading.Lock()
        prepare_owner_only(self.path, "linkage store")
        self._db = connect_or_fail(self.path, self._what)
        with closed_on_failure(self._db, self._what):
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Deleted content is overwritten with zeros, so that no original in clear outlives
            # its row (the migration from version 0 relies on it).
            self._db.execute("PRAGMA secure_delete=ON")
            migrate(self._db, self._what, SCHEMA_VERSION, {0: self._to_version_1})
            state = self._db.execute("SELECT key_check, scrub_pending FROM store_key WHERE id = 1").fetchone()
            if state is None:
                raise StoreError(f"{self._what}: its key check is missing (the file was altered)")
            self._open(state[0], *_KEY_CHECK)
            if state[1]:
                self._scrub()

    # -- schema -----------------------------------------------------------------------------

    def _to_version_1(self, db: sqlite3.Connection) -> None:
        """Seal the originals of a version 0 store (or create an empty store)."""
        legacy = table_exists(db, "patient_link")
        if legacy:
            if not table_exists(db, "uid_link"):  # a store older than handed-out UIDs
                db.execute("CREATE TABLE uid_link (pseudonym TEXT PRIMARY KEY, original TEXT, first_seen REAL)")
            for table in ("patient_link", "uid_link"):
                db.execute(f"ALTER TABLE {table} RENAME TO {table}_v0")
        for statement in _TABLES:
            db.execute(statement)
        db.execute("INSERT INTO store_key VALUES (1, ?, ?)", (self._sealer.seal("key check", *_KEY_CHECK), int(legacy)))
        if not legacy:
            return
        # Version 0 kept one row per (issuer, patient ID, rule); the pseudonym names the pair.
        db.executemany(
            "INSERT INTO patient_link VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((pseudonym, rule, self._seal_link(pseudonym, rule, "issuer", issuer),
              self._seal_link(pseudonym, rule, "patient_id", patient_id), first, last, count)
             for pseudonym, issuer, patient_id, rule, first, last, count in db.execute(
                "SELECT pseudonym, issuer, patient_id, rule, first_seen, last_seen, instance_count "
                "FROM patient_link_v0").fetchall()))
        db.executemany(
            "INSERT INTO uid_link VALUES (?, ?, ?)",
            ((pseudonym, self._sealer.seal(original, "uid_link", pseudonym, "original"), first)
             for pseudonym, original, first in db.execute(
                "SELECT pseudonym, original, first_seen FROM uid_link_v0").fetchall()))
        db.execute("DROP TABLE patient_link_v0")  # secure_delete: their pages are zeroed
        db.execute("DROP TABLE uid_link_v0")

    def _scrub(self) -> None:
        """Leave no page of the clear-text version in the files: VACUUM rewrites the database
        without free pages, and a TRUNCATE checkpoint writes it back and empties the -wal."""
        self._db.execute("VACUUM")
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreError(f"{self._what}: its originals are sealed now, but another process kept the old "
                             "pages from being cleared; stop the other users of the file and open it again")
        self._db.execute("UPDATE store_key SET scrub_pending = 0")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- the interface ----------------------------------------------------------------------

    def record(self, pseudonym: str, issuer: str, patient_id: str, rule: str, count: int = 1) -> None:
        now = time.time()
        row = (pseudonym, rule, self._seal_link(pseudonym, rule, "issuer", issuer),
               self._seal_link(pseudonym, rule, "patient_id", patient_id), now, now, count)
        with self._lock:
            self._db.execute(
                "INSERT INTO patient_link VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (pseudonym, rule) DO UPDATE SET "
                "last_seen = excluded.last_seen, instance_count = instance_count + excluded.instance_count",
                row,
            )

    def lookup(self, pseudonym: str) -> list[Link]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pseudonym, rule, issuer, patient_id, first_seen, last_seen, instance_count "
                "FROM patient_link WHERE pseudonym = ? ORDER BY first_seen, rule",
                (pseudonym,),
            ).fetchall()
        return [Link(pseudonym, self._open(issuer, "patient_link", pseudonym, rule, "issuer"),
                     self._open(patient_id, "patient_link", pseudonym, rule, "patient_id"), rule, first, last, count)
                for pseudonym, rule, issuer, patient_id, first, last, count in rows]

    def record_uids(self, pairs) -> None:
        now = time.time()
        rows = [(new, self._sealer.seal(old, "uid_link", new, "original"), now) for old, new in pairs]
        if rows:
            with self._lock:
                self._db.executemany("INSERT OR IGNORE INTO uid_link VALUES (?, ?, ?)", rows)

    def original_uids(self, pseudonyms) -> dict[str, str]:
        wanted = sorted(set(pseudonyms))
        rows = []
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start:start + 500]
                rows += self._db.execute(
                    f"SELECT pseudonym, original FROM uid_link WHERE pseudonym IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
        return {pseudonym: self._open(original, "uid_link", pseudonym, "original") for pseudonym, original in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


# Version 1 on PostgreSQL: the same tables (sealed columns bound the same way); the key check
# is linkage_key (the MPPS store has a key check of its own in the same database).
_PG_TABLES = [
    """CREATE TABLE patient_link (
        pseudonym      TEXT NOT NULL,
        rule           TEXT NOT NULL,
        issuer         BYTEA NOT NULL,
        patient_id     BYTEA NOT NULL,
        first_seen     DOUBLE PRECISION NOT NULL,
        last_seen      DOUBLE PRECISION NOT NULL,
        instance_count BIGINT NOT NULL,
        PRIMARY KEY (pseudonym, rule)
    )""",
    """CREATE TABLE uid_link (
        pseudonym  TEXT PRIMARY KEY,
        original   BYTEA NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE linkage_key (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        key_check BYTEA NOT NULL
    )""",
]


class PostgresLinkageStore(_SealedLinks, LinkageStore):
    """The linkage store in PostgreSQL, shared by several Orthancs: a pseudonym recorded on one
    node is found on every other. The originals are sealed as in the SQLite store."""

    def __init__(self, location, keys: Keys):
        from .postgres import PostgresDatabase

        self._sealer = Sealer(keys.secret)
        self._db = PostgresDatabase(location, "linkage store", "linkage", SCHEMA_VERSION, {0: self._to_version_1})
        self._what = self._db.what

        def check(cursor):
            cursor.execute("SELECT key_check FROM linkage_key WHERE id = 1")
            return cursor.fetchone()

        row = self._db.run(check)
        if row is None:
            self._db.close()
            raise StoreError(f"{self._what}: its key check is missing (the table was altered)")
        try:
            self._open(row[0], *_KEY_CHECK)
        except StoreError:
            self._db.close()
            raise

    def _to_version_1(self, cursor) -> None:
        for statement in _PG_TABLES:
            cursor.execute(statement)
        cursor.execute("INSERT INTO linkage_key VALUES (1, %s)", (self._sealer.seal("key check", *_KEY_CHECK),))

    def record(self, pseudonym: str, issuer: str, patient_id: str, rule: str, count: int = 1) -> None:
        now = time.time()
        row = (pseudonym, rule, self._seal_link(pseudonym, rule, "issuer", issuer),
               self._seal_link(pseudonym, rule, "patient_id", patient_id), now, now, count)
        self._db.run(lambda cursor: cursor.execute(
            "INSERT INTO patient_link VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (pseudonym, rule) DO UPDATE "
            "SET last_seen = excluded.last_seen, instance_count = patient_link.instance_count + excluded.instance_count",
            row))

    def lookup(self, pseudonym: str) -> list[Link]:
        def work(cursor):
            cursor.execute("SELECT pseudonym, rule, issuer, patient_id, first_seen, last_seen, instance_count "
                           "FROM patient_link WHERE pseudonym = %s ORDER BY first_seen, rule", (pseudonym,))
            return cursor.fetchall()

        return [Link(pseudonym, self._open(issuer, "patient_link", pseudonym, rule, "issuer"),
                     self._open(patient_id, "patient_link", pseudonym, rule, "patient_id"), rule, first, last, count)
                for pseudonym, rule, issuer, patient_id, first, last, count in self._db.run(work)]

    def record_uids(self, pairs) -> None:
        now = time.time()
        rows = [(new, self._sealer.seal(old, "uid_link", new, "original"), now) for old, new in pairs]
        if rows:
            self._db.run(lambda cursor: cursor.executemany(
                "INSERT INTO uid_link VALUES (%s, %s, %s) ON CONFLICT (pseudonym) DO NOTHING", rows))

    def original_uids(self, pseudonyms) -> dict[str, str]:
        wanted = sorted(set(pseudonyms))

        def work(cursor):
            cursor.execute("SELECT pseudonym, original FROM uid_link WHERE pseudonym = ANY(%s)", (wanted,))
            return cursor.fetchall()

        rows = self._db.run(work) if wanted else []
        return {pseudonym: self._open(original, "uid_link", pseudonym, "original") for pseudonym, original in rows}

    def close(self) -> None:
        self._db.close()


def open_store(location: str | Path, keys: Keys, password_file: str | None = None) -> LinkageStore:
    """A store from its configured location (a file path: SQLite; a postgresql:// URL:
    PostgreSQL, its password from ``password_file``), sealed with a key derived from ``keys``'
    site secret."""
    from .locations import PostgresLocation, parse_location

    where = parse_location(location, "linkage store", password_file)
    if isinstance(where, PostgresLocation):
        return PostgresLinkageStore(where, keys)
    return SQLiteLinkageStore(where, keys)
