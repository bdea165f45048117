"""What the stores' PostgreSQL backend shares: a connection, versioned schemas, failing closed.

Several Orthancs may share one database: each store's schema version is a row of
``coercion_schema``, migrated at open under an advisory lock (the second node to start waits,
then finds nothing left to do). A store holds one connection (psycopg 3), used by one thread at
a time; every call is one transaction. A database lost while running fails the call with a
:class:`StoreError` (so that the caller fails closed: a matched instance is refused, nothing is
stored unlinked) and the next call connects again: the store recovers when the server is back.
Messages name the URL without a password and never a value.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from .locations import PostgresLocation
from .sqlitefiles import StoreError

T = TypeVar("T")
Step = Callable[[object], None]  # a migration step, given a cursor
CONNECT_TIMEOUT = 5  # seconds: a start-up with an unreachable server fails fast
_SCHEMA_LOCK = 0x636F6572  # pg_advisory_xact_lock key of the schema table ("coer")


def _reason(exc: Exception) -> str:
    """What went wrong, without values: the first line of a connection error (it names the
    server), else the kind of error and its SQLSTATE."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError) and not getattr(exc, "sqlstate", None):
        first = str(exc).strip().splitlines()
        return first[0].strip() if first else type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else "")


class PostgresDatabase:
    def __init__(self, location: PostgresLocation, what: str, store: str, version: int, steps: dict[int, Step]):
        self.location, self.what = location, f"{what} {location.shown}"
        self._store, self._version, self._steps = store, version, steps
        self._lock = threading.Lock()
        self._connection = None
        with self._lock:
            self._connect()
            self._migrate()

    # -- the connection ---------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{self.what}: PostgreSQL needs the Python package psycopg (pip install "
                             "'psycopg[binary]')") from None
        try:
            self._connection = psycopg.connect(self.location.url, password=self.location.password(),
                                               autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                               application_name=f"coercion {self._store}")
        except psycopg.Error as exc:
            raise StoreError(f"{self.what} cannot be opened: {_reason(exc)}") from None

    def run(self, work: Callable[[object], T]) -> T:
        """``work(cursor)`` in one transaction; StoreError when the database fails (the
        transaction is rolled back, the next call connects again)."""
        import psycopg

        with self._lock:
            if self._connection is None or self._connection.closed:
                self._connect()
            try:
                with self._connection.transaction(), self._connection.cursor() as cursor:
                    return work(cursor)
            except psycopg.OperationalError as exc:
                self._drop()
                raise StoreError(f"{self.what}: the database failed: {_reason(exc)}") from None
            except psycopg.Error as exc:
                if self._connection.broken:
                    self._drop()
                raise StoreError(f"{self.what}: {_reason(exc)}") from None

    def _drop(self) -> None:
        try:
            self._connection.close()
        except Exception:  # already gone
            pass
        self._connection = None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._drop()

    # -- the schema -------------------------------------------------------------------------

    def _migrate(self) -> None:
        def work(cursor):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cursor.execute("CREATE TABLE IF NOT EXISTS coercion_schema (store TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            cursor.execute("SELECT version FROM coercion_schema WHERE store = %s", (self._store,))
            row = cursor.fetchone()
            version = row[0] if row else 0
            if version > self._version:
                raise StoreError(f"{self.what} has schema version {version}; this version of coercion knows up "
                                 f"to {self._version} (written by a newer one?)")
            for step in range(version, self._version):
                self._steps[step](cursor)
            cursor.execute("INSERT INTO coercion_schema VALUES (%s, %s) ON CONFLICT (store) DO UPDATE "
                           "SET version = excluded.version", (self._store, self._version))

        import psycopg

        try:
            with self._connection.transaction(), self._connection.cursor() as cursor:
                work(cursor)
        except psycopg.Error as exc:
            self._drop()
            raise StoreError(f"{self.what} cannot be opened: {_reason(exc)}") from None
        except BaseException:
            self._drop()
            raise
