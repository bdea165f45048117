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

Reasons are derived from the resolved profile and its tables (profile.resolve_row), results
from what the two instances hold: an entry says what happened, not what was planned. Depth
is bounded as everywhere (limits.MAX_SEQUENCE_DEPTH), and so is the number of entries
(:data:`MAX_ENTRIES`; ``truncated`` says when more were left out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypedDict, cast

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset

from .dicomio import Instance, PixelElement
from .limits import MAX_SEQUENCE_DEPTH, too_deep
from .method import (
    DEIDENTIFICATION_METHOD,
    DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
    PATIENT_IDENTITY_REMOVED,
)
from .private import _NOT_PRIVATE_GROUPS, private_creators
from .profile import (
    ANIMAL_ONLY,
    CLEAN_GRAPHICS,
    CLEAN_STRUCTURED,
    CLEAN_TEXT,
    DUMMY,
    DUMMY_ITEMS,
    DUMMY_SUBTREES,
    EMPTY,
    KEEP,
    PATIENT_ID_HASH,
    REMOVE,
    SAFE_PRIVATE,
    SHIFT_DATES,
    UID,
    UNKNOWN_TYPE,
    VALUE_DEPENDENT,
    ItemTypes,
    Profile,
    nested_subtree,
    patient_is_animal,
    resolve_row,
)
from .structured import HAS_OBS_CONTEXT, RELATIONSHIP_TYPE
from .tags import SOP_CLASS_UID
from .uri import Option
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

# What an action does, said after the reason.
_MEANING = {
    KEEP: "kept",
    REMOVE: "removed",
    EMPTY: "kept without a value",
    DUMMY: "replaced by a dummy value (a sequence keeps its items, their values replaced)",
    UID: "UIDs replaced by their keyed pseudonyms (a sequence keeps its items, their UIDs mapped)",
    PATIENT_ID_HASH: "replaced by the keyed hash of (Issuer of Patient ID, Patient ID)",
    SHIFT_DATES: "dates moved by the patient's keyed number of days (times stay)",
    CLEAN_TEXT: "text cleaned by the descriptor rules (names, IDs, dates, addresses... removed)",
    CLEAN_STRUCTURED: "content kept and cleaned item by item (observation context items removed)",
    CLEAN_GRAPHICS: "graphic text cleaned by the descriptor rules",
}
_TYPES = {0: "Type 3 (or not defined at this place) in the IOD", 1: "Type 1 in the IOD",
          2: "Type 2 in the IOD", UNKNOWN_TYPE: "its type in the IOD not known here: the strongest alternative"}
_METHOD = {
    PATIENT_IDENTITY_REMOVED: "Patient Identity Removed: YES, stated by the de-identifier (PS3.15 E.1.1)",
    DEIDENTIFICATION_METHOD: "De-identification Method: the profile and options applied, stated by the "
                             "de-identifier after what earlier de-identifications stated",
    DEIDENTIFICATION_METHOD_CODE_SEQUENCE: "De-identification Method Code Sequence: a CID 7050 code for the "
                                           "profile and each option applied, stated by the de-identifier",
    LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED: "Longitudinal Temporal Information Modified: REMOVED, MODIFIED "
                                                "or UNMODIFIED as the date options say, stated by the de-identifier",
}
_FILE_META = ("file meta information: rebuilt from the de-identified dataset (SOP Class and Instance "
              "UIDs, transfer syntax, this implementation's UID and version); nothing else of the old one is kept")


class Reason(TypedDict):
    """Why an attribute got its action (see the module's docstring)."""

    source: str
    row: str | None
    basic: str | None
    options: list[str]
    text: str


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


def _unconditioned(tag: int) -> Reason:
    on = VALUE_DEPENDENT[tag]
    return _reason("not-in-table", f"not in PS3.15 Table E.1-1; Type 1C in the IOD, only while {tag_text(on)} "
                                   f"{keyword_of(on)} has a value, and it has none now: removed")


def _type_text(tag: int, level: int, place: _Place) -> str:
    """What the IOD's type says; for a conditional type the instance decides, its condition."""
    if place.top and tag in ANIMAL_ONLY and level != UNKNOWN_TYPE:
        return ("Type 2C in the IOD, required of an animal: the patient is one (a Patient Species is present)"
                if level else "Type 2C in the IOD, required of an animal only: no Patient Species, not one")
    return _TYPES[level]


class _Full(Exception):
    """MAX_ENTRIES reached."""


def _reason(source: str, text: str, row: str | None = None, basic: str | None = None,
            options: Iterable[Option] = ()) -> Reason:
    return {"source": source, "row": row, "basic": basic, "options": [getattr(o, "value", o) for o in options],
            "text": text}


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def keyword_of(tag: int) -> str:
    if tag >> 16 & 1:
        return "private"
    return keyword_for_tag(tag) or "unknown"


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
    """Where the comparison is, as the walk's Scope: the path of the enclosing item (with its
    ">"), the depth, the IOD's types at this place, the D or C subtree and what set it."""

    path: str = ""
    depth: int = 0
    top: bool = True
    types: ItemTypes | None = None
    subtree: str | None = None
    within: str = ""  # "the items of (0040,A730) ContentSequence (C:structured)"
    within_options: tuple[Option, ...] = ()
    # (result, action, reason) of every attribute here: gone or added whole
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


def _creators(datasets: Iterable[Dataset | PixelElement]) -> dict[tuple[int, int], str]:
    creators: dict[tuple[int, int], str] = {}
    for ds in datasets:
        if not isinstance(ds, PixelElement):
            creators.update(private_creators(ds))
    return creators


def _relationship(item: Dataset) -> str:
    elem = item.get(RELATIONSHIP_TYPE)
    return str(elem.value).strip() if elem is not None and elem.value is not None else ""


class _Explanation:
    def __init__(self, profile: Profile):
        self.profile = profile
        self.options = profile.options
        self.tables = profile.tables
        self.rows = {row.tag: row for row in self.tables.rows}
        self.shifts_dates = Option.RetainLongitudinalTemporalInformationModifiedDatesOption in self.options
        self.entries: list[Entry] = []

    # -- entries --------------------------------------------------------------------------

    def add(self, path: str, tag: int, vr: str, result: str, before: _Element | None, after: _Element | None,
            action: str | None, reason: Reason) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            raise _Full
        self.entries.append({
            "path": path, "tag": tag_text(tag), "keyword": keyword_of(tag), "vr": vr, "result": result,
            "before": display(before), "after": display(after), "action": action, "reason": reason,
        })

    def file_meta(self, before: FileMetaDataset, after: FileMetaDataset) -> None:
        old, new = _elements([before]), _elements([after])
        for tag in sorted(old.keys() | new.keys()):
            b, a = old.get(tag), new.get(tag)
            result = self.compared(b, a)
            if result == REPLACED and tag == MEDIA_STORAGE_SOP_INSTANCE_UID:
                result = UID_MAPPED
            vr = (b if b is not None else cast(_Element, a)).VR  # (the tag is in one of them)
            self.add(tag_text(tag), tag, vr, result, b, a, None, _reason("file-meta", _FILE_META))

    def level(self, before: dict[int, _Element], after: dict[int, _Element], creators: dict[tuple[int, int], str],
              place: _Place) -> None:
        """The attributes of one level (the top level or one item), in tag order."""
        overlay_groups: set[int] = set()
        if self.profile.overlay_data_action == REMOVE:
            overlay_groups = {t >> 16 for t in before if 0x6000 <= t >> 16 <= 0x601E and t & 0xFFFF == 0x3000}
        for tag in sorted(before.keys() | after.keys()):
            b, a = before.get(tag), after.get(tag)
            vr = (b if b is not None else cast(_Element, a)).VR  # (the tag is in one of them)
            path = place.path + tag_text(tag)
            if place.fate is not None:
                result, action, reason = place.fate
                child = place
            else:
                action, reason, child = self.why(tag, vr, place, creators, overlay_groups)
                if place.top and tag in VALUE_DEPENDENT and b is not None and a is None:
                    action, reason = REMOVE, _unconditioned(tag)
                result = self.result(b, a, action, vr, tag, place)
                reason = self.noted(reason, action, result)
            self.add(path, tag, vr, result, b, a, action, reason)
            if vr == "SQ":
                self.items(b, a, path, tag, result, action, child, place)

    def items(self, b: _Element | None, a: _Element | None, path: str, tag: int, result: str, action: str | None,
              child: _Place, place: _Place) -> None:
        before = list(b.value or []) if b is not None and b.VR == "SQ" else []
        after = list(a.value or []) if a is not None and a.VR == "SQ" else []
        if not before and not after:
            return
        if place.depth >= MAX_SEQUENCE_DEPTH:
            raise too_deep()
        base = replace(child, depth=place.depth + 1, top=False)
        if place.fate is None:
            if a is None or (not after and before):
                how = "removed with its sequence" if a is None else "removed: its sequence was emptied"
                gone = _reason("sequence", f"{how} {path}")
                base = replace(base, fate=(REMOVED, REMOVE, gone))
            elif b is None:
                base = replace(base, fate=(ADDED, None, self.added_reason(tag, path, place)))
        for index, old, new in self.pairs(before, after):
            item_path = f"{path}[{index}]>"
            item = replace(base, path=item_path)
            if base.fate is None and new is None:
                assert old is not None  # pairs: an item on one side at least
                item = replace(item, fate=(REMOVED, REMOVE, self.item_gone(old, item_path, base)))
            elif base.fate is None and old is None:
                item = replace(item, fate=(ADDED, None, self.added_reason(tag, item_path, place)))
            self.level(_elements([old]) if old is not None else {}, _elements([new]) if new is not None else {},
                       _creators([old]) if old is not None else {}, item)

    @staticmethod
    def pairs(before: list[Dataset], after: list[Dataset]) -> list[tuple[int, Dataset | None, Dataset | None]]:
        """(index, item before, item after): by position, unless observation context items were
        taken out of the sequence (structured.without_context): then the others in order."""
        if len(before) != len(after):
            kept = [i for i, item in enumerate(before) if _relationship(item) != HAS_OBS_CONTEXT]
            if len(kept) == len(after):
                matched = dict(zip(kept, after))
                return [(i, item, matched.get(i)) for i, item in enumerate(before)]
        count = max(len(before), len(after))
        return [(i, before[i] if i < len(before) else None, after[i] if i < len(after) else None)
                for i in range(count)]

    def item_gone(self, item: Dataset, path: str, place: _Place) -> Reason:
        if _relationship(item) == HAS_OBS_CONTEXT:
            return _reason("sequence", f"an observation context content item (HAS OBS CONTEXT: who observed, who "
                                       f"was observed), removed whole from {place.within or 'its sequence'}",
                           options=place.within_options)
        return _reason("sequence", f"removed with its item {path[:-1]}")

    def added_reason(self, tag: int, path: str, place: _Place) -> Reason:
        if place.top and tag in _METHOD:
            return _reason("method", f"added with {path.rstrip('>')}: {_METHOD[tag]}")
        return _reason("sequence", f"added with {path.rstrip('>')}")

    # -- why --------------------------------------------------------------------------------

    def why(self, tag: int, vr: str, place: _Place, creators: dict[tuple[int, int], str],
            overlay_groups: set[int]) -> tuple[str | None, Reason, _Place]:
        """(action, reason, the place of the items if it is a sequence), as the walk decides."""
        group, element = tag >> 16, tag & 0xFFFF
        profile = self.profile
        items = replace(place, subtree=nested_subtree(place.subtree),
                        types=place.types.children.get(tag) if place.types is not None else None)
        if group & 1:
            action, reason = self.private(group, element, creators)
            return action, reason, replace(items, subtree=None, types=None, within="", within_options=())
        if place.top and tag in _METHOD:
            return None, _reason("method", _METHOD[tag]), replace(items, subtree=None)
        entry = profile.by_tag.get(tag)
        if entry is not None:
            action = profile.valid_action(entry[0], tag, place.types)
            row = self.rows.get(tag_text(tag))
            if entry[0] == PATIENT_ID_HASH:
                basic = row.basic if row is not None else None
                reason = _reason("patient-id-hash", f"RetainPatientIDHashOption (dcm4chee): {_MEANING[action]}, "
                                 f"the same in every study, instead of the table's {basic}",
                                 tag_text(tag), basic, [Option.RetainPatientIDHashOption])
                return action, reason, items
            resolved, deciding = resolve_row(row, self.options) if row is not None else (entry[0], ())
            parts = [f"PS3.15 Table E.1-1 {tag_text(tag)} {entry[1]}: basic profile {row.basic if row else entry[0]}"]
            if deciding:
                assert row is not None  # options decide by the row
                parts.append(", ".join(f"{o.value} {row.options[o.value]}" for o in deciding) + f": {resolved}")
            if action != resolved:
                level = UNKNOWN_TYPE if place.types is None else place.types.required.get(tag, 0)
                parts.append(f"{_type_text(tag, level, place)}: {action}")
            parts.append(_MEANING.get(action, action))
            reason = _reason("table", "; ".join(parts), row.tag if row else None, row.basic if row else None,
                             deciding)
            return action, reason, self.subtree_of(items, action, tag, place.path + tag_text(tag), deciding)
        if 0x5000 <= group <= 0x501E:
            return self.repeating("(50XX,XXXX)", "curve (50xx)", profile.curve_action, items, tag, place)
        if 0x6000 <= group <= 0x601E:
            if element == 0x3000:
                return self.repeating("(60XX,3000)", "overlay (60xx)", profile.overlay_data_action, items, tag,
                                      place)
            if element == 0x4000:
                return self.repeating("(60XX,4000)", "overlay (60xx)", profile.overlay_comments_action, items, tag,
                                      place)
            if group in overlay_groups:
                row = self.rows["(60XX,3000)"]
                _, deciding = resolve_row(row, self.options)
                return REMOVE, _reason("repeating-group", "repeating group 60xx (overlay): the plane goes with its "
                                       "Overlay Data (60xx,3000), which is removed (its label or description may "
                                       "carry text)", row.tag, row.basic, deciding), items
        return self.unlisted(tag, vr, place, items)

    def subtree_of(self, items: _Place, action: str, tag: int, path: str, deciding: Iterable[Option]) -> _Place:
        """The place of a sequence's items: a D or a C makes them a subtree (identity.DummyValues,
        text.TextCleaner); the items of anything else stay in the enclosing one."""
        subtree = DUMMY_ITEMS if action == DUMMY else action if action in _CLEANINGS else None
        if subtree is None:
            return items
        return replace(items, subtree=subtree, within=f"the items of {path} {keyword_of(tag)} ({action})",
                       within_options=tuple(deciding))

    def repeating(self, row_tag: str, what: str, action: str, items: _Place, tag: int,
                  place: _Place) -> tuple[str, Reason, _Place]:
        row = self.rows[row_tag]
        resolved, deciding = resolve_row(row, self.options)
        parts = [f"repeating group {what}: PS3.15 Table E.1-1 {row.tag} {row.keyword}: basic profile {row.basic}"]
        if deciding:
            parts.append(", ".join(f"{o.value} {row.options[o.value]}" for o in deciding) + f": {resolved}")
        if resolved == CLEAN_GRAPHICS and action == REMOVE:
            parts.append("overlay bitmaps may carry burned-in text and are not cleaned without a pixel option: X")
        parts.append(_MEANING.get(action, action))
        reason = _reason("repeating-group", "; ".join(parts), row.tag, row.basic, deciding)
        return action, reason, self.subtree_of(items, action, tag, place.path + tag_text(tag), deciding)

    def private(self, group: int, element: int, creators: dict[tuple[int, int], str]) -> tuple[str, Reason]:
        rule = self.tables.private_rule
        if self.profile.private_action != SAFE_PRIVATE:
            return REMOVE, _reason("private", f"private attribute: PS3.15 Table E.1-1 Private Attributes: basic "
                                   f"profile {rule.basic}, removed (RetainSafePrivateOption would keep those "
                                   "Table E.3.10-1 lists)", rule.tag, rule.basic)
        option = [Option.RetainSafePrivateOption]
        safe = self.tables.safe_private
        if element < 0x0010 or group in _NOT_PRIVATE_GROUPS:
            return REMOVE, _reason("private", "private group length, or a group that cannot carry private data: "
                                   "removed", rule.tag, rule.basic, option)
        if element <= 0x00FF:
            creator: str | None = creators.get((group, element), "")  # (below: of the block, if any)
            if any((group, creator, low) in safe for low in range(256)):
                return KEEP, _reason("private", f"private creator {creator!r}: kept while its block keeps a safe "
                                     "attribute (RetainSafePrivateOption C)", rule.tag, rule.basic, option)
            return REMOVE, _reason("private", f"private creator {creator!r}: removed, Table E.3.10-1 lists no "
                                   "attribute of it", rule.tag, rule.basic, option)
        creator = creators.get((group, element >> 8))
        if creator is not None and (group, creator, element & 0xFF) in safe:
            return KEEP, _reason("private", f"private attribute {element & 0xFF:02X} of {creator!r}: safe in PS3.15 "
                                 "Table E.3.10-1, kept (RetainSafePrivateOption C)", rule.tag, rule.basic, option)
        of = f"of {creator!r}" if creator is not None else "without a private creator"
        return REMOVE, _reason("private", f"private attribute {of}: not in PS3.15 Table E.3.10-1, removed "
                               "(RetainSafePrivateOption keeps only those listed)", rule.tag, rule.basic, option)

    def unlisted(self, tag: int, vr: str, place: _Place, items: _Place) -> tuple[str, Reason, _Place]:
        subtree = place.subtree
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) and place.top:
            if Option.CleanPixelDataOption in self.options:
                return KEEP, _reason("pixel-data", "not in PS3.15 Table E.1-1; CleanPixelDataOption masks the "
                                     "burned-in text the settings find, frame by frame",
                                     options=[Option.CleanPixelDataOption]), items
            return KEEP, _reason("not-in-table", "not in PS3.15 Table E.1-1: kept (CleanPixelDataOption would "
                                 "mask burned-in text)"), items
        if subtree is None or vr == "SQ":
            text = "not in PS3.15 Table E.1-1: kept"
            if subtree is not None:
                text += f"; inside {place.within}, its items' values are handled in turn"
            return KEEP, _reason("not-in-table", text, options=place.within_options if subtree else ()), items
        if subtree in DUMMY_SUBTREES:
            return DUMMY, _reason("not-in-table", f"not in PS3.15 Table E.1-1, inside {place.within}: text, names, "
                                  "dates and URLs replaced by dummy values (codes, code strings, numbers and class "
                                  "UIDs stay; the date options keep or shift dates)",
                                  options=place.within_options), items
        return subtree, _reason("not-in-table", f"not in PS3.15 Table E.1-1, inside {place.within}: text cleaned, "
                                "names replaced, coded entries (terminology) kept", options=place.within_options), items

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

    def result(self, b: _Element | None, a: _Element | None, action: str | None, vr: str, tag: int,
               place: _Place) -> str:
        seen = self.compared(b, a)
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
        if action == DUMMY and vr in _DATE_VRS and self.shifts_dates and place.subtree in DUMMY_SUBTREES \
                and tag not in self.profile.by_tag:
            return SHIFTED  # a date inside a D subtree, shifted (identity.DummyValues.unlisted)
        if action in _CLEANINGS:
            return CLEANED if vr in TEXT_VRS or vr == "CS" else REPLACED
        if action in (DUMMY, PATIENT_ID_HASH, None):
            return REPLACED
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) and Option.CleanPixelDataOption in self.options:
            return CLEANED
        return UID_MAPPED if vr == "UI" else REPLACED

    @staticmethod
    def noted(reason: Reason, action: str | None, result: str) -> Reason:
        """A C that could not apply to the value (binary data, no date) fell back to the basic action."""
        if (action == SHIFT_DATES and result not in (SHIFTED, KEPT)) or (action in _CLEANINGS and result == REMOVED):
            return {**reason, "text": reason["text"] + "; this value could not be "
                    f"{'shifted' if action == SHIFT_DATES else 'cleaned'}: the basic profile's action applied"}
        return reason


def explain(original: Instance, coerced: Instance, profile: Profile) -> Account:
    """The account of what ``profile`` made of ``original`` (``coerced``: the result, read back).

    ``{"edition": "2025", "attributes": [entry, ...], "summary": {"kept": n, ...},
    "truncated": false}``; entries as the module's docstring says. The entries show values of
    the instance: answer them to whoever sent it, never log them."""
    explanation = _Explanation(profile)
    truncated = False
    try:
        explanation.file_meta(original.file_meta, coerced.file_meta)
        sop_class = original.header.get(SOP_CLASS_UID)
        types = profile.tables.item_types(str(sop_class.value).strip() if sop_class is not None else None,
                                          patient_is_animal(original.header))
        # Both as read_instance reads them: datasets and pixel elements (no cleaned stream).
        before = cast("list[Dataset | PixelElement]", original.segments)
        after = cast("list[Dataset | PixelElement]", coerced.segments)
        explanation.level(_elements(before), _elements(after), _creators(before), _Place(types=types))
    except _Full:
        truncated = True
    entries = explanation.entries
    return {
        "edition": profile.tables.edition,
        "attributes": entries,
        "summary": dict(Counter(entry["result"] for entry in entries)),
        "truncated": truncated,
    }


__all__ = ["RESULTS", "MAX_DISPLAY", "MAX_ENTRIES", "display", "explain"]
