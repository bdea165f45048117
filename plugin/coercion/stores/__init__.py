"""The stores: what the archive remembers, each behind a small interface.

``linkage`` (pseudonyms -> originals, for re-identification and for a peer's query by a
pseudonym it was given; the originals sealed by ``sealing``), ``forwards`` (the forwarding
queue of routes), ``mpps`` (performed procedure steps, their messages sealed, and what each
destination has had). Embedded SQLite files by default, owner-only, with versioned schemas
(``sqlitefiles``).

May import: the standard library, ``cryptography``, the engine, and this subpackage; never
``orthanc``.
"""
