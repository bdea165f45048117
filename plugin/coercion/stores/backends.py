"""One store's code on both backends: every call a transaction, its statements written for
PostgreSQL (``%s`` placeholders, ``GREATEST``, ``FOR UPDATE SKIP LOCKED``) and run on SQLite
as SQLite reads them.

A store gives ``run`` a function of an :class:`Executor`; the embedded backend serializes the
calls on one connection (``BEGIN IMMEDIATE``: other processes wait for the write lock), the
PostgreSQL one runs them in its connection's transaction (``postgres.PostgresDatabase``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from .sqlitefiles import closed_on_failure, connect_or_fail, migrate, prepare_owner_only


class Executor:
    """Runs a statement written for PostgreSQL on the backend at hand; returns its cursor."""

    def __init__(self, execute, postgres: bool):
        self._execute, self.postgres = execute, postgres

    def __call__(self, sql: str, params=()):
        if not self.postgres:
            sql = sql.replace("%s", "?").replace("GREATEST(", "MAX(").replace(" FOR UPDATE SKIP LOCKED", "")
        return self._execute(sql, params)

    def many(self, sql: str, rows) -> None:
        for row in rows:
            self(sql, row)


def postgres_ddl(statement: str) -> str:
    """A CREATE statement written for SQLite, as PostgreSQL reads it."""
    return (statement.replace(" BLOB", " BYTEA").replace(" REAL", " DOUBLE PRECISION")
            .replace(") WITHOUT ROWID", ")"))


class SQLiteBackend:
    postgres = False

    def __init__(self, path: str | Path, label: str, version: int, steps: dict[int, Callable[[Executor], None]],
                 pragmas: tuple[str, ...] = ()):
        """``label``: what the store is called in messages ("MPPS store"); ``steps[v]``: the
        migration from version v to v + 1."""
        path = str(path)
        self.what = f"{label} {path}"
        if path != ":memory:":
            prepare_owner_only(Path(path), label)
        self.db = connect_or_fail(path, self.what)
        self._lock = threading.Lock()
        with closed_on_failure(self.db, self.what):
            for pragma in pragmas:
                self.db.execute(f"PRAGMA {pragma}")
            migrate(self.db, self.what, version,
                    {v: (lambda db, step=step: step(Executor(db.execute, False))) for v, step in steps.items()})

    def run(self, work: Callable[[Executor], object]):
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work(Executor(self.db.execute, False))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result

    def close(self) -> None:
        with self._lock:
            self.db.close()


class PostgresBackend:
    postgres = True

    def __init__(self, location, label: str, store: str, version: int, steps: dict[int, Callable[[Executor], None]]):
        from .postgres import PostgresDatabase

        self._database = PostgresDatabase(
            location, label, store, version,
            {v: (lambda cursor, step=step: step(Executor(cursor.execute, True))) for v, step in steps.items()})
        self.what = self._database.what

    def run(self, work: Callable[[Executor], object]):
        return self._database.run(lambda cursor: work(Executor(cursor.execute, True)))

    def close(self) -> None:
        self._database.close()


def open_backend(location, label: str, store: str, password_file: str | None, version: int,
                 sqlite_steps: dict, postgres_steps: dict, pragmas: tuple[str, ...] = ()):
    """The backend ``location`` names (a path or a postgresql:// URL)."""
    from .locations import PostgresLocation, parse_location

    where = parse_location(location, label, password_file)
    if isinstance(where, PostgresLocation):
        return PostgresBackend(where, label, store, version, postgres_steps)
    return SQLiteBackend(where, label, version, sqlite_steps, pragmas)
