"""The MPPS store: every Modality Performed Procedure Step received, its messages as kept, and
how far each was forwarded to each destination.

What a listing needs is kept in clear and holds no patient data: the step's SOP Instance UID as
kept, its status, the calling AE title, when it was created and updated, how many series and
instances it names, the rules that coerced it. Everything else is sealed (AES-GCM,
``sealing.py``): the kept dataset (patient name and ID unless a rule coerced them), each kept
message, and the scheduled steps as the peer named them (the worklist follows them). A peer
names its step by the UID it chose; the store finds it by a keyed hash of that UID, so a step
kept under a pseudonymous UID is found again without keeping the peer's UID.

The store, not memory, knows each step: an N-SET after a restart finds its N-CREATE. The
store is an embedded SQLite file or PostgreSQL, shared by several Orthancs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..engine.pseudonyms import Keys
from .backends import open_backend, postgres_ddl
from .sealing import Sealer, open_in_store
from .sqlitefiles import StoreError

__all__ = ["Delivery", "DuplicateStep", "Kept", "MppsStore", "SealedMppsStore", "Step", "StoreError",
           "UnknownStep", "open_mpps_store"]

LOOKUP_LABEL = b"coercion mpps store: keyed lookup of the UIDs peers use, version 1"


class DuplicateStep(LookupError):
    """An N-CREATE of a SOP Instance UID the store holds already."""


class UnknownStep(LookupError):
    """An N-SET of a SOP Instance UID the store does not hold."""


@dataclass(frozen=True)
class Step:
    """What a listing shows of a step: no patient data."""

    uid: str  # the SOP Instance UID as kept (what a rule made of the peer's, or the peer's)
    status: str
    calling_aet: str
    rule: str | None = None  # the rule that coerced its N-CREATE
    set_rule: str | None = None  # the rule that coerced its last N-SET
    series: int = 0
    instances: int = 0
    messages: int = 1  # the N-CREATE and the N-SETs kept
    created: float = 0.0
    updated: float = 0.0

    def as_dict(self) -> dict:
        return {"uid": self.uid, "status": self.status, "calling_aet": self.calling_aet, "rule": self.rule,
                "set_rule": self.set_rule, "series": self.series, "instances": self.instances,
                "messages": self.messages, "created": _iso(self.created), "updated": _iso(self.updated)}


@dataclass(frozen=True)
class Kept:
    """A step with what is sealed: ``dataset`` (DICOM JSON, as kept) and ``scheduled`` (the
    scheduled steps as the peer named them) are PHI: never log them."""

    step: Step
    dataset: dict
    scheduled: list

    def __repr__(self) -> str:
        return f"Kept({self.step!r})"


@dataclass(frozen=True)
class Delivery:
    """How far a step was forwarded to one destination: messages ``0 .. delivered - 1`` reached
    it; ``in_flight``, the message an attempt was sending when it ended without an answer (it
    may have reached the peer); ``peer_uid``, the UID the destination was given; ``queued``,
    how many of the step's messages a queued forward covers (start-up queues the rest)."""

    uid: str
    destination: str
    route: str
    delivered: int = 0
    in_flight: int | None = None
    peer_uid: str | None = None
    rule: str | None = None  # the rule that coerced what the destination got in the N-CREATE
    queued: int = 0

    def as_dict(self) -> dict:
        return {"destination": self.destination, "route": self.route, "delivered": self.delivered}


class MppsStore(ABC):
    @abstractmethod
    def create(self, peer_uid: str, kept: Kept, destinations=()) -> None:
        """Keep a new step, its N-CREATE as message 0, and a delivery to each (destination,
        route); raises DuplicateStep if the peer's UID or the kept UID is known already."""

    @abstractmethod
    def find(self, peer_uid: str) -> Kept | None:
        """The step a peer names by its UID."""

    @abstractmethod
    def known(self, peer_uid: str) -> bool:
        """Whether a step is kept under the UID a peer names it by (nothing is unsealed)."""

    @abstractmethod
    def update(self, peer_uid: str, change: Callable[[Kept], tuple[Kept, dict]]) -> tuple[Kept, list[Delivery]]:
        """Apply an N-SET atomically: ``change`` gets the step as kept and gives the step as it
        becomes and the message to keep (it may raise to change nothing); raises UnknownStep.
        Returns the new step and its deliveries."""

    @abstractmethod
    def get(self, uid: str) -> Kept | None:
        """A step by its kept UID."""

    @abstractmethod
    def steps(self, status: str | None = None, limit: int = 500) -> list[Step]:
        """The newest steps first."""

    @abstractmethod
    def messages(self, uid: str, start: int = 0) -> list[tuple[int, str, dict]]:
        """(number, N-CREATE or N-SET, the kept message as DICOM JSON) from ``start`` on."""

    @abstractmethod
    def deliveries(self, uid: str | None = None, unqueued: bool = False) -> list[Delivery]:
        """The deliveries of a step (of every step if None); ``unqueued``: those with messages
        no queued forward covers (Orthanc stopped between keeping a message and queueing)."""

    @abstractmethod
    def queued(self, uid: str, destination: str, messages: int) -> None:
        """A forward covering the first ``messages`` messages is queued."""

    @abstractmethod
    def sending(self, uid: str, destination: str, number: int | None) -> None:
        """Message ``number`` is about to be sent to ``destination`` (None: the peer answered it,
        refusing it: it is not on its way any more)."""

    @abstractmethod
    def delivered(self, uid: str, destination: str, number: int, peer_uid: str | None = None,
                  rule: str | None = None) -> None:
        """Message ``number`` reached ``destination`` (with the N-CREATE: the UID and rule it got)."""

    def close(self) -> None:  # pragma: no cover - nothing to release by default
        pass


SCHEMA_VERSION = 1

# Version 1. Sealed columns are bound to their row and column: (table, uid, column) for mpps,
# (table, uid, number, column) for mpps_message.
_TABLES = [
    """CREATE TABLE mpps (
        uid         TEXT PRIMARY KEY,
        peer_ref    TEXT NOT NULL UNIQUE,  -- keyed hash of the UID the calling peer uses
        status      TEXT NOT NULL,
        calling_aet TEXT NOT NULL,
        rule        TEXT,
        set_rule    TEXT,
        series      INTEGER NOT NULL,
        instances   INTEGER NOT NULL,
        messages    INTEGER NOT NULL,
        created     REAL NOT NULL,
        updated     REAL NOT NULL,
        dataset     BLOB NOT NULL,         -- sealed: the kept dataset, DICOM JSON
        scheduled   BLOB NOT NULL          -- sealed: the scheduled steps as the peer named them
    ) WITHOUT ROWID""",
    "CREATE INDEX mpps_updated ON mpps (updated)",
    """CREATE TABLE mpps_message (
        uid      TEXT NOT NULL,
        number   INTEGER NOT NULL,         -- 0: the N-CREATE; 1, 2...: the N-SETs in order
        kind     TEXT NOT NULL,
        received REAL NOT NULL,
        dataset  BLOB NOT NULL,            -- sealed: the message as kept, DICOM JSON
        PRIMARY KEY (uid, number)
    ) WITHOUT ROWID""",
    """CREATE TABLE mpps_delivery (
        uid         TEXT NOT NULL,
        destination TEXT NOT NULL,
        route       TEXT NOT NULL,
        delivered   INTEGER NOT NULL,
        in_flight   INTEGER,
        peer_uid    TEXT,
        rule        TEXT,
        queued      INTEGER NOT NULL,
        PRIMARY KEY (uid, destination)
    ) WITHOUT ROWID""",
    """CREATE TABLE store_key (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        key_check BLOB NOT NULL
    )""",
]
_KEY_CHECK = ("store_key", "1", "key_check")
_STEP_COLUMNS = "uid, status, calling_aet, rule, set_rule, series, instances, messages, created, updated"
_DELIVERY_COLUMNS = "uid, destination, route, delivered, in_flight, peer_uid, rule, queued"


class SealedMppsStore(MppsStore):
    """The MPPS store in an embedded SQLite file (WAL mode, owner-only) or in PostgreSQL (several
    Orthancs: an N-SET finds its N-CREATE whichever node kept it); every call a transaction."""

    def __init__(self, location: str | Path, keys: Keys, password_file: str | None = None):
        self._sealer = Sealer(keys.secret)
        self._lookup = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LOOKUP_LABEL).derive(keys.secret)
        self._key_table = "store_key"

        def sqlite_tables(ex):
            self._create(ex, _TABLES)

        def postgres_tables(ex):
            self._create(ex, [postgres_ddl(t).replace("store_key", "mpps_key") for t in _TABLES])

        from .locations import PostgresLocation, parse_location

        if isinstance(parse_location(location, "MPPS store", password_file), PostgresLocation):
            self._key_table = "mpps_key"  # beside the linkage store's in the same database
        self._backend = open_backend(location, "MPPS store", "mpps", password_file, SCHEMA_VERSION,
                                     {0: sqlite_tables}, {0: postgres_tables},
                                     pragmas=("synchronous=NORMAL", "secure_delete=ON"))
        self._what = self._backend.what
        try:
            row = self._backend.run(lambda ex: ex(f"SELECT key_check FROM {self._key_table} WHERE id = 1").fetchone())
            if row is None:
                raise StoreError(f"{self._what}: its key check is missing (the store was altered)")
            self._open(row[0], *_KEY_CHECK)
        except BaseException:
            self._backend.close()
            raise

    def _create(self, ex, tables) -> None:
        for statement in tables:
            ex(statement)
        ex(f"INSERT INTO {'mpps_key' if ex.postgres else 'store_key'} VALUES (1, %s)",
           (self._sealer.seal("key check", *_KEY_CHECK),))

    # -- sealing ----------------------------------------------------------------------------

    def _ref(self, peer_uid: str) -> str:
        return hmac.new(self._lookup, peer_uid.encode("utf-8"), hashlib.sha256).hexdigest()

    def _seal(self, value, *context: str) -> bytes:
        return self._sealer.seal(json.dumps(value, separators=(",", ":")), *context)

    def _open(self, sealed, *context: str) -> str:
        return open_in_store(self._sealer, self._what, sealed, *context)

    def _unseal(self, sealed, *context: str):
        return json.loads(self._open(sealed, *context))

    def _kept(self, row) -> Kept:
        step = Step(*row[:10])
        return Kept(step, self._unseal(row[10], "mpps", step.uid, "dataset"),
                    self._unseal(row[11], "mpps", step.uid, "scheduled"))

    @staticmethod
    def _delivery(row) -> Delivery:
        return Delivery(*row)

    def _insert_message(self, ex, uid: str, number: int, kind: str, message: dict, now: float) -> None:
        ex("INSERT INTO mpps_message VALUES (%s, %s, %s, %s, %s)",
           (uid, number, kind, now, self._seal(message, "mpps_message", uid, str(number), "dataset")))

    # -- the interface ----------------------------------------------------------------------

    def create(self, peer_uid: str, kept: Kept, destinations=()) -> None:
        now = time.time()
        step = replace(kept.step, messages=1, created=now, updated=now)
        ref = self._ref(peer_uid)

        def work(ex):
            if ex("SELECT 1 FROM mpps WHERE uid = %s OR peer_ref = %s", (step.uid, ref)).fetchone():
                raise DuplicateStep("a step with this SOP Instance UID is kept already")
            ex(f"INSERT INTO mpps ({_STEP_COLUMNS}, peer_ref, dataset, scheduled) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
               (step.uid, step.status, step.calling_aet, step.rule, step.set_rule, step.series,
                step.instances, step.messages, step.created, step.updated, ref,
                self._seal(kept.dataset, "mpps", step.uid, "dataset"),
                self._seal(kept.scheduled, "mpps", step.uid, "scheduled")))
            self._insert_message(ex, step.uid, 0, "N-CREATE", kept.dataset, now)
            ex.many("INSERT INTO mpps_delivery VALUES (%s, %s, %s, 0, NULL, NULL, NULL, 0) ON CONFLICT DO NOTHING",
                    [(step.uid, destination, route) for destination, route in destinations])

        self._backend.run(work)

    def _select(self, ex, where: str, value) -> Kept | None:
        row = ex(f"SELECT {_STEP_COLUMNS}, dataset, scheduled FROM mpps WHERE {where} = %s", (value,)).fetchone()
        return self._kept(row) if row else None

    def find(self, peer_uid: str) -> Kept | None:
        return self._backend.run(lambda ex: self._select(ex, "peer_ref", self._ref(peer_uid)))

    def known(self, peer_uid: str) -> bool:
        return self._backend.run(
            lambda ex: ex("SELECT 1 FROM mpps WHERE peer_ref = %s", (self._ref(peer_uid),)).fetchone()) is not None

    def get(self, uid: str) -> Kept | None:
        return self._backend.run(lambda ex: self._select(ex, "uid", uid))

    def update(self, peer_uid: str, change) -> tuple[Kept, list[Delivery]]:
        ref = self._ref(peer_uid)

        def work(ex):
            # Locked until the transaction ends: two nodes' N-SETs of one step go one after the other.
            row = ex(f"SELECT {_STEP_COLUMNS}, dataset, scheduled FROM mpps WHERE peer_ref = %s"
                     + (" FOR UPDATE" if ex.postgres else ""), (ref,)).fetchone()
            if row is None:
                raise UnknownStep("no step is kept with this SOP Instance UID")
            current = self._kept(row)
            new, message = change(current)
            now = time.time()
            step = replace(new.step, uid=current.step.uid, messages=current.step.messages + 1,
                           created=current.step.created, updated=now)
            ex("UPDATE mpps SET status = %s, set_rule = %s, series = %s, instances = %s, messages = %s, "
               "updated = %s, dataset = %s WHERE uid = %s",
               (step.status, step.set_rule, step.series, step.instances, step.messages, step.updated,
                self._seal(new.dataset, "mpps", step.uid, "dataset"), step.uid))
            self._insert_message(ex, step.uid, current.step.messages, "N-SET", message, now)
            deliveries = ex(f"SELECT {_DELIVERY_COLUMNS} FROM mpps_delivery WHERE uid = %s ORDER BY destination",
                            (step.uid,)).fetchall()
            return Kept(step, new.dataset, current.scheduled), [self._delivery(r) for r in deliveries]

        return self._backend.run(work)

    def steps(self, status: str | None = None, limit: int = 500) -> list[Step]:
        query = f"SELECT {_STEP_COLUMNS} FROM mpps" + (" WHERE status = %s" if status else "") + \
            " ORDER BY updated DESC, uid LIMIT %s"
        rows = self._backend.run(lambda ex: ex(query, (status, limit) if status else (limit,)).fetchall())
        return [Step(*row) for row in rows]

    def messages(self, uid: str, start: int = 0) -> list[tuple[int, str, dict]]:
        rows = self._backend.run(lambda ex: ex(
            "SELECT number, kind, dataset FROM mpps_message WHERE uid = %s AND number >= %s ORDER BY number",
            (uid, start)).fetchall())
        return [(number, kind, self._unseal(sealed, "mpps_message", uid, str(number), "dataset"))
                for number, kind, sealed in rows]

    def deliveries(self, uid: str | None = None, unqueued: bool = False) -> list[Delivery]:
        columns = ", ".join(f"d.{c.strip()}" for c in _DELIVERY_COLUMNS.split(","))
        query = f"SELECT {columns} FROM mpps_delivery d JOIN mpps m ON m.uid = d.uid WHERE TRUE"
        args: list = []
        if uid is not None:
            query += " AND d.uid = %s"
            args.append(uid)
        if unqueued:
            query += " AND d.queued < m.messages"
        rows = self._backend.run(lambda ex: ex(query + " ORDER BY d.uid, d.destination", args).fetchall())
        return [self._delivery(r) for r in rows]

    def queued(self, uid: str, destination: str, messages: int) -> None:
        self._backend.run(lambda ex: ex(
            "UPDATE mpps_delivery SET queued = GREATEST(queued, %s) WHERE uid = %s AND destination = %s",
            (messages, uid, destination)))

    def sending(self, uid: str, destination: str, number: int | None) -> None:
        self._backend.run(lambda ex: ex("UPDATE mpps_delivery SET in_flight = %s WHERE uid = %s AND destination = %s",
                                        (number, uid, destination)))

    def delivered(self, uid: str, destination: str, number: int, peer_uid: str | None = None,
                  rule: str | None = None) -> None:
        self._backend.run(lambda ex: ex(
            "UPDATE mpps_delivery SET delivered = %s, in_flight = NULL, peer_uid = COALESCE(%s, peer_uid), "
            "rule = COALESCE(%s, rule) WHERE uid = %s AND destination = %s AND delivered = %s",
            (number + 1, peer_uid, rule, uid, destination, number)))

    def close(self) -> None:
        self._backend.close()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def open_mpps_store(location: str | Path, keys: Keys, password_file: str | None = None) -> MppsStore:
    """A store from its configured location (a file path: SQLite; a postgresql:// URL:
    PostgreSQL, its password from ``password_file``)."""
    return SealedMppsStore(location, keys, password_file)
