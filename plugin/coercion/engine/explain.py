"""What de-identification did to each attribute of an instance, and why: the preview's account.

:func:`explain` compares an instance as received with the same instance de-identified (both
as :func:`dicomio.read_instance` reads them) and gives one entry per attribute, at any depth of
sequences, in file order (the file meta, then the dataset; a sequence is followed by the
attributes of its items)::

    {"path": "(0008,1140)[0]>(0008,1155)", "tag": "(0008,1155)",
     "keyword": "ReferencedSOPInstanceUID", "vr": "UI", "result": "uid-mapped",
     "before": "1.2.826.0.1.3680043.8.498.1.1.1.100", "after": "2.25.1234...", "action": "U",
     "reason": {"source": "table", "row": "(0008,1155)", "basic": "U", "options": [],
                "text": "PS3.15 Table E.1-1 (0008,1155) ReferencedSOPInstanceUID: basic profile U; ..."}}

``path``: tags as (GGGG,EEEE); ``[i]`` after a sequence's tag is its item i (from 0, counted
among the items of the uploaded file; an item only in the result is counted among the
result's); ``>`` goes into the item. ``result`` is one of :data:`RESULTS`; for a sequence it
says what happened to the sequence itself (its action: a D keeps the items and replaces their
values, a U maps their UIDs), its items' attributes have entries of their own. ``before`` and
``after`` are short display strings (at most :data:`MAX_DISPLAY` characters; binary values as
``<OB, 524288 bytes>``, sequences as ``<SQ, 2 items>``; null where the attribute is absent).
``action`` is the profile's action code as it applied there (K, X, Z, D, U, P for the
patient ID hash, C:dates, C:text, C:structured, C:graphics), null for what the de-identifier
writes itself (the method attributes, the file meta). ``reason.source`` is one of "table"
(a row of PS3.15 Table E.1-1), "repeating-group" (its rows for curves 50xx and overlays 60xx),
"private" (its Private Attributes row, and Table E.3.10-1 under RetainSafePrivateOption),
"patient-id-hash" (RetainPatientIDHashOption), "not-in-table", "sequence" (removed or added
with an enclosing sequence or item), "method" (Patient Identity Removed, De-identification
Method and its Code Sequence, Longitudinal Temporal Information Modified), "file-meta" or
"pixel-data"; ``row`` and ``basic`` are the table row and its basic-profile code, ``options``
the options that changed the basic action.

Actions and reasons are the walk's own record of its decisions (record.py), taken where it
took them; results are what the two instances hold. An attribute with no decision of its own
went or came with its sequence or item (source "sequence"), or belongs to the file meta. Depth
is bounded as everywhere (limits.MAX_SEQUENCE_DEPTH), and so is the number of entries
(:data:`MAX_ENTRIES`, and the record's; ``truncated`` says when more were left out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypedDict, cast

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset

from .dicomio import Instance, PixelElement
from .limits import MAX_SEQUENCE_DEPTH, too_deep
from .method import STATED
from .profile import CLEAN_GRAPHICS, CLEAN_STRUCTURED, CLEAN_TEXT, DUMMY, PATIENT_ID_HASH, SHIFT_DATES, UID
from .record import Reason, Record, keyword_of, reason, tag_text
from .values import TEXT_VRS, values_of

KEPT = "kept"
REMOVED = "removed"
EMPTIED = "emptied"
REPLACED = "replaced"
SHIFTED = "shifted"
UID_MAPPED = "uid-mapped"
CLEANED = "cleaned"
ADDED = "added"
RESULTS = (KEPT, REMOVED, EMPTIED, REPLACED, SHIFTED, UID_MAPPED, CLEANED, ADDED)

MAX_DISPLAY = 64  # characters of a before or after value
MAX_ENTRIES = 20000  # entries of one answer (an enhanced multi-frame instance has many items)

MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_CLEANINGS = frozenset({CLEAN_TEXT, CLEAN_STRUCTURED, CLEAN_GRAPHICS})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DATE_VRS = frozenset({"DA", "DT"})
_CONTROL = {code: " " for code in range(32)}
_FILE_META = ("file meta information: rebuilt from the de-identified dataset (SOP Class and Instance "
              "UIDs, transfer syntax, this implementation's UID and version); nothing else of the old one is kept")
# An attribute the walk left no decision for (a test makes sure there is none).
UNRECORDED = "unrecorded"


class Entry(TypedDict):
    """One attribute's entry (see the module's docstring)."""

    path: str
    tag: str
    keyword: str
    vr: str
    result: str
    before: str | None
    after: str | None
    action: str | None
    reason: Reason


class Account(TypedDict):
    """What :func:`explain` answers."""

    edition: str
    attributes: list[Entry]
    summary: dict[str, int]
    truncated: bool


class _Full(Exception):
    """MAX_ENTRIES reached, or the record's end."""


class _Bytes:
    """A value shown and compared by its bytes: top-level pixel data (dicomio.PixelElement), or
    a value pydicom cannot convert."""

    __slots__ = ("VR", "value", "undefined_length")

    def __init__(self, vr: str | None, value: bytes | memoryview, undefined_length: bool = False) -> None:
        self.VR, self.value, self.undefined_length = vr or "UN", value, undefined_length


# An attribute as compared: pydicom's element, or its bytes.
_Element = DataElement | _Bytes
# What two values are compared by: a sequence's number of items, bytes, or the values as text.
_Key = int | bytes | memoryview | tuple[str, ...]


def display(elem: _Element | None) -> str | None:
    """A short display string of an element's value (None: the element is absent)."""
    if elem is None:
        return None
    vr, value = elem.VR, elem.value
    if isinstance(elem, _Bytes) and elem.undefined_length:
        return f"<{vr}, encapsulated, {len(value)} bytes>"
    if vr == "SQ":
        count = len(value or [])
        return f"<SQ, {count} item{'' if count == 1 else 's'}>"
    if vr in _BINARY_VRS or isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{vr}, {len(value) if value is not None else 0} bytes>"
    if vr == "AT":
        text = "\\".join(tag_text(int(v)) for v in values_of(value))
    else:
        text = "\\".join(str(v) for v in values_of(value)).translate(_CONTROL)
    return text if len(text) <= MAX_DISPLAY else text[:MAX_DISPLAY - 1] + "…"


def _key(elem: _Element) -> _Key:
    """What two values are compared by (the number of items of a sequence: its items have entries)."""
    if elem.VR == "SQ":
        return len(elem.value or [])
    value = elem.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value if isinstance(value, memoryview) else bytes(value)
    return tuple(str(v).strip() for v in values_of(value))


def _empty(key: _Key) -> bool:
    return not (len(key) if not isinstance(key, int) else key)


@dataclass(frozen=True)
class _Place:
    """Where the comparison is: the path of the enclosing item (with its ">"), the depth, and
    (result, action, reason) of every attribute here when it is gone or added whole."""

    path: str = ""
    depth: int = 0
    top: bool = True
    fate: tuple[str, str | None, Reason] | None = None


def _elements(datasets: Iterable[Dataset | PixelElement]) -> dict[int, _Element]:
    """tag -> element of a level (the top level: every dataset of the instance and its pixel data)."""
    found: dict[int, _Element] = {}
    for ds in datasets:
        if isinstance(ds, PixelElement):
            found[ds.tag] = _Bytes(ds.vr, ds.value, ds.undefined_length)
            continue
        for tag in ds.keys():
            try:
                found[tag] = ds[tag]
            except Exception:  # a value pydicom cannot convert: shown by its raw bytes
                raw = ds.get_item(tag)
                found[tag] = _Bytes(getattr(raw, "VR", None), bytes(getattr(raw, "value", b"") or b""))
    return found


class _Explanation:
    def __init__(self, record: Record):
        self.record = record
        self.entries: list[Entry] = []

    # -- entries --------------------------------------------------------------------------

    def add(self, path: str, tag: int, vr: str, result: str, before: _Element | None, after: _Element | None,
            action: str | None, why: Reason) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            raise _Full
        self.entries.append({
            "path": path, "tag": tag_text(tag), "keyword": keyword_of(tag), "vr": vr, "result": result,
            "before": display(before), "after": display(after), "action": action, "reason": why,
        })

    def file_meta(self, before: FileMetaDataset, after: FileMetaDataset) -> None:
        old, new = _elements([before]), _elements([after])
        for tag in sorted(old.keys() | new.keys()):
            b, a = old.get(tag), new.get(tag)
            result = self.compared(b, a)
            if result == REPLACED and tag == MEDIA_STORAGE_SOP_INSTANCE_UID:
                result = UID_MAPPED
            vr = (b if b is not None else cast(_Element, a)).VR  # (the tag is in one of them)
            self.add(tag_text(tag), tag, vr, result, b, a, None, reason("file-meta", _FILE_META))

    def level(self, before: dict[int, _Element], after: dict[int, _Element], place: _Place) -> None:
        """The attributes of one level (the top level or one item), in tag order: each with the
        walk's decision on it, or the fate of its item."""
        for tag in sorted(before.keys() | after.keys()):
            b, a = before.get(tag), after.get(tag)
            vr = (b if b is not None else cast(_Element, a)).VR  # (the tag is in one of them)
            path = place.path + tag_text(tag)
            if place.fate is not None:
                result, action, why = place.fate
            else:
                decision = self.record.get(path)
                if decision is None:
                    if self.record.truncated:
                        raise _Full  # the record stopped before this attribute
                    action, why = None, reason(UNRECORDED, "the walk left no record of this attribute")
                else:
                    action, why = decision.action, decision.reason
                result = self.result(b, a, action, vr, why["source"])
            self.add(path, tag, vr, result, b, a, action, why)
            if vr == "SQ":
                self.items(b, a, path, tag, place)

    def items(self, b: _Element | None, a: _Element | None, path: str, tag: int, place: _Place) -> None:
        before = list(b.value or []) if b is not None and b.VR == "SQ" else []
        after = list(a.value or []) if a is not None and a.VR == "SQ" else []
        if not before and not after:
            return
        if place.depth >= MAX_SEQUENCE_DEPTH:
            raise too_deep()
        base = replace(place, depth=place.depth + 1, top=False)
        if place.fate is None:
            if a is None or (not after and before):
                how = "removed with its sequence" if a is None else "removed: its sequence was emptied"
                base = replace(base, fate=(REMOVED, "X", reason("sequence", f"{how} {path}")))
            elif b is None:
                base = replace(base, fate=(ADDED, None, self.added_reason(tag, path, place)))
        for index, old, new in self.pairs(path, before, after):
            item_path = f"{path}[{index}]>"
            item = replace(base, path=item_path)
            if base.fate is None and new is None:
                decision = self.record.get(item_path[:-1])  # an item the walk removed whole
                gone = (decision.reason if decision is not None
                        else reason("sequence", f"removed with its item {item_path[:-1]}"))
                item = replace(item, fate=(REMOVED, "X", gone))
            elif base.fate is None and old is None:
                item = replace(item, fate=(ADDED, None, self.added_reason(tag, item_path, place)))
            self.level(_elements([old]) if old is not None else {}, _elements([new]) if new is not None else {}, item)

    def pairs(self, path: str, before: list[Dataset],
              after: list[Dataset]) -> list[tuple[int, Dataset | None, Dataset | None]]:
        """(index, item before, item after): by position, unless the walk removed items whole
        (observation context items): then the others in order."""
        if len(before) != len(after):
            kept = [i for i in range(len(before)) if self.record.get(f"{path}[{i}]") is None]
            if len(kept) == len(after):
                matched = dict(zip(kept, after))
                return [(i, item, matched.get(i)) for i, item in enumerate(before)]
        count = max(len(before), len(after))
        return [(i, before[i] if i < len(before) else None, after[i] if i < len(after) else None)
                for i in range(count)]

    @staticmethod
    def added_reason(tag: int, path: str, place: _Place) -> Reason:
        if place.top and tag in STATED:
            return reason("method", f"added with {path.rstrip('>')}: {STATED[tag]}")
        return reason("sequence", f"added with {path.rstrip('>')}")

    # -- what happened ----------------------------------------------------------------------

    @staticmethod
    def compared(b: _Element | None, a: _Element | None) -> str:
        if b is None:
            return ADDED
        if a is None:
            return REMOVED
        old, new = _key(b), _key(a)
        if old == new:
            return KEPT
        return EMPTIED if _empty(new) else REPLACED

    @staticmethod
    def result(b: _Element | None, a: _Element | None, action: str | None, vr: str, source: str) -> str:
        """What the values show was done, in the words of the decided action."""
        seen = _Explanation.compared(b, a)
        if vr == "SQ" and seen not in (ADDED, REMOVED, EMPTIED) and b is not None and b.value:
            if action == DUMMY:
                return REPLACED
            if action == UID:
                return UID_MAPPED
            if action in _CLEANINGS or seen == REPLACED:  # fewer items: observation context removed
                return CLEANED
            return KEPT
        if seen != REPLACED:
            return seen
        if action == UID:
            return UID_MAPPED if vr == "UI" else REPLACED
        if action == SHIFT_DATES:
            return SHIFTED if vr in _DATE_VRS else REPLACED
        if action in _CLEANINGS:
            return CLEANED if vr in TEXT_VRS or vr == "CS" else REPLACED
        if action in (DUMMY, PATIENT_ID_HASH, None):
            return REPLACED
        if source == "pixel-data":
            return CLEANED
        return UID_MAPPED if vr == "UI" else REPLACED


def explain(original: Instance, coerced: Instance, record: Record) -> Account:
    """The account of what a de-identification made of ``original`` (``coerced``: the result,
    read back; ``record``: the walk's decisions, Deidentifier.deidentify_recorded).

    ``{"edition": "2025", "attributes": [entry, ...], "summary": {"kept": n, ...},
    "truncated": false}``; entries as the module's docstring says. The entries show values of
    the instance: answer them to whoever sent it, never log them."""
    explanation = _Explanation(record)
    truncated = False
    try:
        explanation.file_meta(original.file_meta, coerced.file_meta)
        # Both as read_instance reads them: datasets and pixel elements (no cleaned stream).
        before = cast("list[Dataset | PixelElement]", original.segments)
        after = cast("list[Dataset | PixelElement]", coerced.segments)
        explanation.level(_elements(before), _elements(after), _Place())
    except _Full:
        truncated = True
    entries = explanation.entries
    return {
        "edition": record.profile.tables.edition,
        "attributes": entries,
        "summary": dict(Counter(entry["result"] for entry in entries)),
        "truncated": truncated or record.truncated,
    }


__all__ = ["RESULTS", "MAX_DISPLAY", "MAX_ENTRIES", "UNRECORDED", "display", "explain"]
