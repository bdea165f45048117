"""The stores: what the archive remembers, each behind a small interface.

``linkage`` (pseudonyms -> originals, for re-identification and for a peer's query by a
pseudonym it was given; the originals sealed by ``sealing``), ``forwards`` (the forwarding
queue of routes), ``mpps`` (performed procedure steps, their messages sealed, and what each
destination has had), ``activity`` (statistics per rule and calling AE title). Embedded SQLite files by default, owner-only, with versioned schemas
(``sqlitefiles``); PostgreSQL where a location is a ``postgresql://`` URL (``locations``,
``postgres``, ``backends``: several Orthancs on one database).

May import: the standard library, ``cryptography``, ``psycopg``, the engine, and this subpackage; never
``orthanc``.
"""
