"""The stores: what the archive remembers, each behind a small interface.

``linkage`` (pseudonyms -> originals, for re-identification and for a peer's query by a
pseudonym it was given), ``forwards`` (the forwarding queue of routes). Embedded SQLite files
by default.

May import: the standard library, the engine, and this subpackage; never ``orthanc``.
"""
