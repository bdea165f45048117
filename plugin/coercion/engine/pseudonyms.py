"""Keyed, stateless pseudonyms: every value derives from HMAC-SHA256 with the site secret.

A pseudonym is a pure function of (secret, original value), so every instance, run and
cluster node computes the same one without shared state, and nobody without the secret
can recompute (or brute-force) it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

MIN_SECRET_BYTES = 32
SECRET_ENV = "COERCION_SECRET"
SECRET_FILE_ENV = "COERCION_SECRET_FILE"
DEFAULT_DATE_SHIFT_WINDOW = (-1095, 1095)  # days; 0 is never chosen

# Domain labels keep the inputs of the different pseudonyms disjoint. UIDs are hashed
# without a label (as the product spec fixes it); a UID is only digits and dots, so it
# never collides with a labelled input.
_PATIENT_ID = b"PatientID\x00"
_DATE_SHIFT = b"DateShift\x00"
_DUMMY_UID = b"DummyUID\x00"


class SecretError(ValueError):
    """The site secret is missing or unusable. The message never contains the secret."""


class KeysOptions(TypedDict, total=False):
    """The fields of Keys besides the secret, as from_file and from_env pass them on."""

    date_shift_window: tuple[int, int]


def _strip_line_end(data: bytes) -> bytes:
    # A secret written by an editor or `echo` ends with a newline that is not part of it.
    return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data


@dataclass(frozen=True, repr=False)
class Keys:
    """The site secret and the pseudonym functions keyed by it."""

    secret: bytes
    date_shift_window: tuple[int, int] = DEFAULT_DATE_SHIFT_WINDOW

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes):
            raise SecretError("the site secret must be bytes")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise SecretError(
                f"the site secret is {len(self.secret)} bytes long; at least "
                f"{MIN_SECRET_BYTES} are required"
            )
        low, high = self.date_shift_window
        if low > high or (low == 0 and high == 0):
            raise ValueError(f"date shift window {self.date_shift_window} holds no day but 0")

    def __repr__(self) -> str:  # never show the secret
        return f"Keys(secret=<{len(self.secret)} bytes>, date_shift_window={self.date_shift_window})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Unpack[KeysOptions]) -> "Keys":
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise SecretError(f"secret file {path} does not exist") from None
        except OSError as exc:
            raise SecretError(f"secret file {path} cannot be read: {exc.strerror}") from None
        try:
            return cls(_strip_line_end(data), **kwargs)
        except SecretError as exc:
            raise SecretError(f"secret file {path}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Unpack[KeysOptions]) -> "Keys":
        """The secret from ``COERCION_SECRET``, else from the file ``COERCION_SECRET_FILE``."""
        environ = os.environ if environ is None else environ
        if environ.get(SECRET_ENV):
            try:
                return cls(environ[SECRET_ENV].encode("utf-8"), **kwargs)
            except SecretError as exc:
                raise SecretError(f"{SECRET_ENV}: {exc}") from None
        if environ.get(SECRET_FILE_ENV):
            return cls.from_file(environ[SECRET_FILE_ENV], **kwargs)
        raise SecretError(f"no site secret: set {SECRET_ENV} or {SECRET_FILE_ENV}")

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.`` + the decimal of the first 128 bits of HMAC(secret, original UID)."""
        value = original.strip("\x00 ").encode("ascii", "replace")
        return "2.25." + str(int.from_bytes(self._mac(value)[:16], "big"))

    def dummy_uid(self, context: str) -> str:
        """A valid UID for a D action on a UI attribute, stable for the same context."""
        return "2.25." + str(int.from_bytes(self._mac(_DUMMY_UID + context.encode())[:16], "big"))

    def patient_id(self, patient_id: str, issuer: str = "") -> str:
        """A keyed hash of (issuer, patient ID): 26 base32 characters (130 bits), fits LO."""
        message = _PATIENT_ID + issuer.strip().encode("utf-8") + b"\x00" + patient_id.strip().encode("utf-8")
        return base64.b32encode(self._mac(message)[:17]).decode("ascii")[:26]

    def date_shift_days(self, patient_id: str, issuer: str = "") -> int:
        """A whole number of days inside the window, never 0, the same for every study of a patient."""
        low, high = self.date_shift_window
        span = high - low + 1 - (1 if low <= 0 <= high else 0)
        message = _DATE_SHIFT + issuer.strip().encode("utf-8") + b"\x00" + patient_id.strip().encode("utf-8")
        index = int.from_bytes(self._mac(message)[:8], "big") % span
        days = low + index
        if low <= 0 <= high and days >= 0:
            days += 1  # skip 0: a shift of nothing would leave the dates as they were
        return days
