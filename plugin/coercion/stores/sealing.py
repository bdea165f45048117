"""Sealing of the originals a store keeps: AES-256-GCM with a key of its own.

The key is derived from the site secret by HKDF-SHA256 under a label naming its purpose and
version, so it is independent of the pseudonym key (HMAC with the raw secret): knowing one
tells nothing of the other. Each ciphertext is bound to where it is stored (its table, row and
column) by GCM's associated data, so a ciphertext moved to another row or column is refused
like a tampered one.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_LABEL = b"coercion linkage store sealing: AES-256-GCM key, version 1"
# 96 bits, random for each value sealed. NIST SP 800-38D allows 2^32 random nonces per key;
# a linkage store holds a tiny fraction of that.
NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value cannot be opened: another key, or altered. Never holds the value."""


class Sealer:
    """Seals and opens str values, each bound to a context (table, row key, column)."""

    def __init__(self, secret: bytes):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_LABEL).derive(secret)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never show the key
        return "Sealer(<AES-256-GCM>)"

    def seal(self, value: str, *context: str) -> bytes:
        """nonce || ciphertext || tag of ``value``, bound to ``context``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode("utf-8"), _associated(context))

    def open(self, sealed: bytes, *context: str) -> str:
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _associated(context))
        except (InvalidTag, ValueError, TypeError):
            raise SealError("a sealed value does not open with this key in this place") from None
        return plain.decode("utf-8")


def _associated(context: tuple[str, ...]) -> bytes:
    # NUL cannot occur in table or column names nor in pseudonyms: the join is unambiguous.
    return "\x00".join(context).encode("utf-8")


def open_in_store(sealer: Sealer, what: str, sealed, *context: str) -> str:
    """``sealer.open`` for a store named ``what``: a value that does not open is a StoreError
    naming the store (never the value)."""
    from .sqlitefiles import StoreError

    try:
        return sealer.open(bytes(sealed), *context)
    except SealError:
        raise StoreError(f"{what}: a sealed value does not open with this site secret: the store was "
                         "written with another secret, or it was altered") from None
