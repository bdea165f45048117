"""What the stores' SQLite files share: owner-only files and versioned schemas.

A store's file is created 0600 before SQLite opens it (SQLite gives its -wal, -shm and
-journal files the main file's mode), in a folder created 0700. The schema version is SQLite's
``PRAGMA user_version``; a store of an earlier version is brought up to date at open, all
steps in one transaction, so that a process dying halfway leaves the store as it was.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

SIDECARS = ("-wal", "-shm", "-journal")


class StoreError(RuntimeError):
    """A store cannot be opened, migrated or read. Names the file and the reason, never a value."""


def prepare_owner_only(path: Path, what: str) -> None:
    """Create ``path`` (and the folders missing on the way) owner-only, or tighten it."""
    missing = [p for p in reversed(path.parents) if not p.exists()]
    try:
        for folder in missing:
            folder.mkdir(mode=0o700, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(descriptor)
        # A store file that group or others may read or write (one made by an earlier version,
        # or copied in) is tightened to owner-only, and so are its SQLite side files.
        for candidate in [path, *(Path(f"{path}{suffix}") for suffix in SIDECARS)]:
            if candidate.exists():
                mode = stat.S_IMODE(candidate.stat().st_mode)
                if mode & 0o077:
                    candidate.chmod(mode & 0o700)
    except OSError as exc:
        raise StoreError(f"{what} {path}: cannot be created owner-only: {exc.strerror}") from None


def connect_or_fail(path: Path | str, what: str) -> sqlite3.Connection:
    """One connection in WAL mode, shared by the threads (the stores serialize its use)."""
    try:
        db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{what} cannot be opened: {exc}") from None
    with closed_on_failure(db, what):
        db.execute("PRAGMA journal_mode=WAL")
    return db


@contextmanager
def closed_on_failure(db: sqlite3.Connection, what: str):
    """While a store opens: on any failure, close ``db``; SQLite's errors become StoreError."""
    try:
        yield
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"{what} cannot be opened: {exc}") from None
    except BaseException:
        db.close()
        raise


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


Step = Callable[[sqlite3.Connection], None]


def migrate(db: sqlite3.Connection, what: str, current: int, steps: dict[int, Step]) -> None:
    """Run ``steps[v]`` (version v to v + 1) from the store's version up to ``current``, in one
    transaction. Another process migrating at the same time waits for the write lock, then
    finds nothing left to do. A store of a newer version is refused, never written to."""
    if schema_version(db) == current:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(db)
        if version > current:
            raise StoreError(f"{what} has schema version {version}; this version of coercion knows "
                             f"up to {current} (written by a newer one?)")
        for step in range(version, current):
            steps[step](db)
        db.execute(f"PRAGMA user_version = {current}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
