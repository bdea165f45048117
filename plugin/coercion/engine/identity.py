"""Names and IDs: D writes a dummy valid for the VR; dcm4chee's RetainPatientIDHashOption
replaces the Patient ID by a keyed hash of (issuer, ID), the same in every study."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .dates import shift_date_value
from .profile import DUMMY, DUMMY_ITEMS, KEEP, SHIFT_DATES
from .record import DUMMY_VALUE, EMPTY_VALUE, FULL_DATES, NOT_TEXT, SHIFTED_DATE, TERMINOLOGY, TIMES_STAY
from .pseudonyms import Keys
from .tags import ISSUER_OF_PATIENT_ID
from .uri import Option
from .values import (
    CODE_TAGS,
    DUMMY_BYTES,
    DUMMY_NUMBERS,
    DUMMY_STRINGS,
    TEXT_VRS,
    put,
    text_of,
    values_of,
    vr_of,
)

if TYPE_CHECKING:
    from .context import Scope, Walk

_DATE_VRS = frozenset({"DA", "DT", "TM"})
# Dummies of attributes whose values have a form of their own (PS3.3).
_DUMMY_BY_TAG = {0x00080201: "+0000"}  # Timezone Offset From UTC: &ZZXX


class DummyValues:
    """D: a non-empty value that says nothing (a UID stays a valid, keyed UID).

    A D on a sequence keeps its items and their structure, every value replaced (PS3.15 E.1:
    "in the case of Sequences, the action is applicable to the Sequence and all of its
    contents"): the attributes the table lists get their own actions (UIDs mapped, dates as
    the date options say, X on a Type 1 attribute a dummy...), the others text, names, dates
    and URLs a dummy; codes of nested sequences (concept names, units), code strings, numbers
    and class UIDs stay, so that the items stay valid. An empty item, which is what a dummy
    sequence was before, breaks every sequence whose items have Type 1 attributes
    (Graphic Layer of a graphic annotation, Relationship Type of an SR content item).
    """

    def __init__(self, keys: Keys, walk: Walk | None = None, options: frozenset[Option] = frozenset()) -> None:
        self.keys = keys
        self.walk = walk
        self.full_dates = Option.RetainLongitudinalTemporalInformationFullDatesOption in options
        self.shifted_dates = Option.RetainLongitudinalTemporalInformationModifiedDatesOption in options

    def __call__(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
        vr = vr_of(ds, tag)
        if vr == "SQ":
            elem = ds[tag]
            if elem.value:
                assert self.walk is not None  # the Deidentifier gives its walk
                self.walk.walk_items(elem, scope.items(DUMMY_ITEMS, tag))
            return  # a sequence without items has nothing to replace
        value: str | int | float | bytes
        if vr == "UI":
            value = self.keys.dummy_uid(f"{tag:08X}")
        elif vr == "AT":
            value = 0
        elif tag in _DUMMY_BY_TAG:
            value = _DUMMY_BY_TAG[tag]
        elif vr in DUMMY_STRINGS:
            value = DUMMY_STRINGS[vr]
        elif vr in DUMMY_NUMBERS:
            value = DUMMY_NUMBERS[vr]
        else:
            value = DUMMY_BYTES.get(vr, b"\x00\x00")
            vr = vr if vr in DUMMY_BYTES else "UN"
        put(ds, tag, vr, value)

    def unlisted(self, ds: Dataset, tag: int, vr: str, scope: Scope) -> tuple[str, str]:
        """An attribute the table does not list, inside a D subtree: its value replaced. What
        was done: (action, why), for the walk's record."""
        value = ds[tag].value
        if value is None or value == "" or value == b"":
            return KEEP, EMPTY_VALUE
        if vr in TEXT_VRS or vr in ("PN", "UR"):
            if tag in CODE_TAGS and scope.subtree != DUMMY_ITEMS:
                return KEEP, TERMINOLOGY
            put(ds, tag, vr, DUMMY_STRINGS[vr])
            return DUMMY, DUMMY_VALUE
        if vr in _DATE_VRS:
            if self.full_dates:
                return KEEP, FULL_DATES
            if self.shifted_dates and vr == "TM":
                return KEEP, TIMES_STAY
            if self.shifted_dates:
                shifted = [shift_date_value(str(v), vr, scope.instance.date_shift) for v in values_of(value)]
                if None not in shifted:
                    put(ds, tag, vr, shifted[0] if len(shifted) == 1 else shifted)
                    return SHIFT_DATES, SHIFTED_DATE
            put(ds, tag, vr, DUMMY_STRINGS[vr])
            return DUMMY, DUMMY_VALUE
        return KEEP, NOT_TEXT


class PatientIDHasher:
    """P: the keyed hash of (Issuer of Patient ID, Patient ID); an item's patient ID is hashed
    with that item's issuer."""

    def __init__(self, keys: Keys):
        self.keys = keys

    def __call__(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
        original = str(ds[tag].value or "").strip()
        if not original:
            return  # no ID to hash: leaving it empty links nothing
        issuer = scope.instance.issuer if scope.top else text_of(ds, ISSUER_OF_PATIENT_ID)
        put(ds, tag, "LO", self.keys.patient_id(original, issuer))
