"""Names and IDs: D writes a dummy valid for the VR; dcm4chee's RetainPatientIDHashOption
replaces the Patient ID by a keyed hash of (issuer, ID), the same in every study."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .pseudonyms import Keys
from .values import DUMMY_BYTES, DUMMY_NUMBERS, DUMMY_STRINGS, put, text_of, vr_of

ISSUER_OF_PATIENT_ID = 0x00100021


class DummyValues:
    """D: a non-empty value that says nothing (a UID stays a valid, keyed UID)."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def __call__(self, ds, tag, keyword, scope) -> None:
        vr = vr_of(ds, tag)
        if vr == "SQ":
            value = Sequence([Dataset()])
        elif vr == "UI":
            value = self.keys.dummy_uid(f"{tag:08X}")
        elif vr == "AT":
            value = 0
        elif vr in DUMMY_STRINGS:
            value = DUMMY_STRINGS[vr]
        elif vr in DUMMY_NUMBERS:
            value = DUMMY_NUMBERS[vr]
        else:
            value = DUMMY_BYTES.get(vr, b"\x00\x00")
            vr = vr if vr in DUMMY_BYTES else "UN"
        put(ds, tag, vr, value)


class PatientIDHasher:
    """P: the keyed hash of (Issuer of Patient ID, Patient ID); an item's patient ID is hashed
    with that item's issuer."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def __call__(self, ds, tag, keyword, scope) -> None:
        original = str(ds[tag].value or "").strip()
        if not original:
            return  # no ID to hash: leaving it empty links nothing
        issuer = scope.instance.issuer if scope.top else text_of(ds, ISSUER_OF_PATIENT_ID)
        put(ds, tag, "LO", self.keys.patient_id(original, issuer))
