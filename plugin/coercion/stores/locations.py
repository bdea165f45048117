"""Where a store lives: a file path (embedded SQLite) or a ``postgresql://`` URL.

A value that looks like a URL (``scheme://...``) is never taken for a path: a mistyped or
unsupported scheme is an error, not a folder named ``postgresql:`` holding an SQLite file. A
PostgreSQL URL names the server, the user and the database; its password never comes from the
URL (it would sit in ``orthanc.json``): from the file ``password_file`` names
(``Coercion.DatabasePasswordFile``, ``COERCION_DATABASE_PASSWORD_FILE``), or libpq's own
``PGPASSWORD`` and ``PGPASSFILE`` (``~/.pgpass``). Messages show a URL without its password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .sqlitefiles import StoreError

POSTGRESQL_SCHEMES = ("postgresql", "postgres")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class PostgresLocation:
    url: str  # without a password
    password_file: str | None = None

    @property
    def shown(self) -> str:
        return self.url

    def password(self) -> str | None:
        if not self.password_file:
            return None
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"the database password file {self.password_file} cannot be read: "
                             f"{exc.strerror or exc}") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise StoreError(f"the database password file {self.password_file} is empty")
        return lines[0]


def is_url(location: str | Path) -> bool:
    return bool(_URL.match(str(location)))


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_location(location: str | Path, what: str, password_file: str | None = None) -> Path | PostgresLocation:
    """A store's location: a Path (SQLite) or a PostgresLocation; StoreError for a URL that is
    not PostgreSQL's or that carries a password."""
    text = str(location)
    if not is_url(text):
        return Path(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in POSTGRESQL_SCHEMES:
        raise StoreError(f"{what} {without_password(text)}: a URL of an unknown kind ({scheme}://); a store is a "
                         "file path (SQLite) or a postgresql:// URL")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise StoreError(f"{what} {without_password(text)}: not a valid URL ({exc})") from None
    if parts.password is not None:
        raise StoreError(f"{what} {without_password(text)}: the URL holds a password; put it in the file "
                         "Coercion.DatabasePasswordFile names (or PGPASSWORD, PGPASSFILE), not in the configuration")
    if not parts.hostname and "host=" not in parts.query:
        raise StoreError(f"{what} {text}: the URL names no server (postgresql://user@host:port/database)")
    return PostgresLocation(text, password_file)


def beside(location: str | Path, filename: str) -> str:
    """The default location of another store: beside a file, or in the same database (each
    store keeps its own tables)."""
    text = str(location)
    return text if is_url(text) else str(Path(text).parent / filename)
