"""Reading and writing one attribute's value, and the dummy values a D action writes.

Shared by the element anonymizers; attributes are addressed by tag (no keyword look-ups on
the hot path).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE"})
# Coded entries are terminology, not free text; cleaning them would break the codes.
CODE_TAGS = frozenset(range(0x00080100, 0x00080123))
# D: a non-empty value valid for the VR, that says nothing.
DUMMY_STRINGS = {
    "AE": "ANONYMIZED", "AS": "000D", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED",
    "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000",
    "UC": "ANONYMIZED", "UR": "urn:oid:2.25.0", "UT": "ANONYMIZED",
}
DUMMY_NUMBERS = {"FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0}
DUMMY_BYTES = {"OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00" * 4, "OL": b"\x00" * 4,
               "OD": b"\x00" * 8, "OV": b"\x00" * 8, "UN": b"\x00\x00"}


def vr_of(ds: Dataset, tag: int) -> str:
    """The VR of an attribute as read (raw elements keep it), else the dictionary's."""
    raw = ds.get_item(tag)
    vr: str | None = getattr(raw, "VR", None)
    if vr:
        return vr
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if " or " in vr:  # ambiguous (US or SS, OB or OW): let pydicom decide from context
        return ds[tag].VR
    return vr


def values_of(value: object) -> list[Any]:
    """A value as a list of its values (none for an empty one)."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def text_of(ds: Dataset, tag: int) -> str:
    """The value of a single-valued string attribute, or ''."""
    elem = ds.get(tag)
    value = elem.value if elem is not None else None
    return str(value).strip() if value not in (None, "") else ""


def put(ds: Dataset, tag: int, vr: str, value: object) -> None:
    ds[tag] = DataElement(tag, vr, value)
