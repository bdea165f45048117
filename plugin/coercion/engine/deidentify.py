"""The de-identifier: PS3.15 Annex E applied to a dataset, a byte string or a file.

    >>> from coercion import Deidentifier, Keys
    >>> deid = Deidentifier.from_uri("deidentify:RetainPatientIDHashOption", Keys(secret))
    >>> coerced = deid.deidentify_bytes(received)          # bytes in, bytes out
    >>> deid.deidentify_file("in.dcm", "out.dcm")          # file in, file out

Every attribute of every dataset, at any depth of sequences, gets the action that the
resolved profile gives its tag. Pixel data is never parsed (see dicomio).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from .clean import IDENTIFYING_KEYWORDS, Identifiers, date_forms, person_name_values
from .dicomio import DicomError, Instance, read_instance, write_instance
from .implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from .profile import (
    CLEAN_GRAPHICS,
    CLEAN_STRUCTURED,
    CLEAN_TEXT,
    COMPOUND,
    DUMMY,
    EMPTY,
    KEEP,
    PATIENT_ID_HASH,
    PATIENT_ID_TAG,
    REMOVE,
    SAFE_PRIVATE,
    SHIFT_DATES,
    UID,
    Profile,
    resolve_profile,
)
from .pseudonyms import Keys
from .uri import DeidentifyURI, Option, parse_uri

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE"})
STRING_VRS = TEXT_VRS | {"PN", "CS", "DA", "DT", "TM", "AS", "DS", "IS", "UI", "UR"}
# Coded entries are terminology, not free text; cleaning them would break the codes.
CODE_TAGS = frozenset(range(0x00080100, 0x00080123))
DUMMY_STRINGS = {
    "AE": "ANONYMIZED", "AS": "000D", "CS": "ANONYMIZED", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED",
    "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000",
    "UC": "ANONYMIZED", "UR": "urn:oid:2.25.0", "UT": "ANONYMIZED",
}
DUMMY_NUMBERS = {"FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0}
DUMMY_BYTES = {"OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00" * 4, "OL": b"\x00" * 4,
               "OD": b"\x00" * 8, "OV": b"\x00" * 8, "UN": b"\x00\x00"}
HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
_PN_TAGS_FOR_IDENTIFIERS = "PN"


# Study, Series and SOP Instance UID: the UIDs a C-FIND or C-MOVE names.
QUERY_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)


def _replaced(before: list[str], after: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((old, new) for old, new in zip(before, after) if old and new and old != new)


class DeidentificationError(RuntimeError):
    """De-identification of one instance failed; nothing must be stored or sent."""


@dataclass(frozen=True)
class Outcome:
    """What was done to one instance. ``original_patient_id`` is PHI: never log it."""

    sop_class_uid: str
    sop_instance_uid: str
    patient_pseudonym: str | None
    original_patient_id: str | None
    issuer_of_patient_id: str
    # (original, pseudonym) of the Study, Series and SOP Instance UIDs that were replaced:
    # what a peer may query by later (the linkage store keeps them, keyed hashes cannot be inverted)
    uids: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # keep PHI out of logs and tracebacks
        return (f"Outcome(sop_class_uid={self.sop_class_uid!r}, "
                f"sop_instance_uid={self.sop_instance_uid!r}, "
                f"patient_pseudonym={self.patient_pseudonym!r})")


def _vr_of(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr:
        return vr
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if " or " in vr:  # ambiguous (US or SS, OB or OW): let pydicom decide from context
        return ds[tag].VR
    return vr


def _values(value) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _shift_da(value: str, days: int) -> str | None:
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return (date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def _shift_dt(value: str, days: int) -> str | None:
    text = value.strip()
    if len(text) < 8:
        return None  # a year or year-month alone cannot be shifted by days
    shifted = _shift_da(text[:8], days)
    return None if shifted is None else shifted + text[8:]


def shift_date_value(value: str, vr: str, days: int) -> str | None:
    """Shift one DA/DT value, or a range ``a-b`` of them (as C-FIND queries carry)."""
    shift = _shift_da if vr == "DA" else _shift_dt
    if vr == "DA" and "-" in value:
        parts = value.split("-")
        if len(parts) != 2:
            return None
        out = [shift(p, days) if p.strip() else "" for p in parts]
        return None if None in out else "-".join(out)
    return shift(value, days)


def _text(ds: Dataset, tag: int) -> str:
    """The value of a single-valued string attribute, or '' (by tag: no keyword look-up)."""
    elem = ds.get(tag)
    value = elem.value if elem is not None else None
    return str(value).strip() if value not in (None, "") else ""


class _Context:
    """Per-instance facts gathered before any attribute is touched."""

    def __init__(self, header: Dataset, keys: Keys, needs_identifiers: bool):
        self.keys = keys
        self.sop_class_uid = _text(header, 0x00080016)
        self.patient_id = _text(header, 0x00100020)
        self.issuer = _text(header, 0x00100021)
        self._study_uid = _text(header, 0x0020000D)
        self.identifiers = _collect_identifiers(header) if needs_identifiers else _NO_IDENTIFIERS
        self.overlays_removed = False

    @cached_property
    def date_shift(self) -> int:
        if self.patient_id:
            return self.keys.date_shift_days(self.patient_id, self.issuer)
        # Without a patient ID, keep at least the intervals within the study.
        return self.keys.date_shift_days("StudyInstanceUID:" + self._study_uid)


_NO_IDENTIFIERS = Identifiers(set())


def _collect_identifiers(ds: Dataset) -> Identifiers:
    values: set[str] = set()
    wanted = set(IDENTIFYING_KEYWORDS)

    def visit(d: Dataset) -> None:
        for elem in d:
            if elem.tag.group & 1:
                continue
            if elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
                continue
            if elem.VR == "PN":
                for v in _values(elem.value):
                    values.update(person_name_values(str(v)))
            elif elem.keyword in wanted:
                for v in _values(elem.value):
                    text = str(v)
                    values.add(text)
                    if elem.VR in ("DA", "DT"):
                        values.update(date_forms(text[:8]))

    visit(ds)
    return Identifiers(values)


class Deidentifier:
    """Applies one ``deidentify:`` URI with one set of keys; reusable and thread-safe."""

    def __init__(self, uri: DeidentifyURI | str, keys: Keys, tables: str | None = None):
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.keys = keys
        self.profile: Profile = resolve_profile(self.uri, tables)
        opts = self.uri.options
        self._needs_identifiers = bool(
            opts
            & {
                Option.CleanDescriptorsOption,
                Option.CleanStructuredContentOption,
                Option.CleanGraphicsOption,
                Option.RetainPatientCharacteristicsOption,
                Option.RetainDeviceIdentityOption,
            }
        )
        self._method = self._method_attributes()
        self._encoded_codes: dict = {}
        if Option.RetainLongitudinalTemporalInformationFullDatesOption in self.uri:
            self._longitudinal = "UNMODIFIED"
        elif Option.RetainLongitudinalTemporalInformationModifiedDatesOption in self.uri:
            self._longitudinal = "MODIFIED"
        else:
            self._longitudinal = "REMOVED"

    @classmethod
    def from_uri(cls, uri: str, keys: Keys, tables: str | None = None) -> "Deidentifier":
        return cls(parse_uri(uri), keys, tables)

    # -- public API -------------------------------------------------------------------------

    def deidentify_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        chunks, _ = self.deidentify_chunks(data)
        return b"".join(chunks)

    def deidentify_chunks(self, data: bytes | bytearray | memoryview) -> tuple[list, Outcome]:
        """The de-identified instance as byte chunks (to write without joining) and the outcome."""
        instance = read_instance(data, drop_private=self.removes_private)
        outcome = self.deidentify_instance(instance)
        return self.encode(instance), outcome

    def deidentify_file(self, src: str | os.PathLike, dst: str | os.PathLike) -> Outcome:
        """Read ``src``, write the result to ``dst`` atomically; ``src`` is never modified."""
        chunks, outcome = self.deidentify_chunks(Path(src).read_bytes())
        dst = Path(dst)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".coercion-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fp:
                for chunk in chunks:
                    fp.write(chunk)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return outcome

    @property
    def removes_private(self) -> bool:
        """Whether every private attribute goes (they need not even be read)."""
        return self.profile.private_action != SAFE_PRIVATE

    def deidentify_instance(self, instance: Instance) -> Outcome:
        header = instance.header
        ctx = _Context(header, self.keys, self._needs_identifiers)
        before = [_text(header, tag) for tag in QUERY_UID_TAGS]
        for segment in instance.datasets():
            self._walk(segment, ctx, top=True, subtree=None)
        self._mark(header, ctx)
        return Outcome(
            sop_class_uid=ctx.sop_class_uid,
            sop_instance_uid=str(header.get("SOPInstanceUID", "") or ""),
            patient_pseudonym=(str(header.get("PatientID", "")) or None)
            if Option.RetainPatientIDHashOption in self.uri
            else None,
            original_patient_id=ctx.patient_id or None,
            issuer_of_patient_id=ctx.issuer,
            uids=_replaced(before, [_text(header, tag) for tag in QUERY_UID_TAGS]),
        )

    def deidentify_dataset(self, ds: Dataset) -> Outcome:
        """De-identify a dataset in place (a query, a worklist item, a decoded instance)."""
        ctx = _Context(ds, self.keys, self._needs_identifiers)
        before = [_text(ds, tag) for tag in QUERY_UID_TAGS]
        self._walk(ds, ctx, top=True, subtree=None)
        self._mark(ds, ctx)
        pseudonym = _text(ds, PATIENT_ID_TAG) if Option.RetainPatientIDHashOption in self.uri else ""
        return Outcome(ctx.sop_class_uid, str(ds.get("SOPInstanceUID", "") or ""),
                       pseudonym or None, ctx.patient_id or None, ctx.issuer,
                       _replaced(before, [_text(ds, tag) for tag in QUERY_UID_TAGS]))

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, ds: Dataset, ctx: _Context, top: bool, subtree: str | None) -> None:
        profile = self.profile
        by_tag = profile.by_tag
        removed_overlay_groups = set()
        private_creators = None
        for tag in list(ds.keys()):
            group = tag >> 16
            if group & 1:
                if self.profile.private_action != SAFE_PRIVATE:
                    del ds[tag]
                    continue
                if private_creators is None:
                    private_creators = self._private_creators(ds)
                self._private(ds, tag, private_creators, ctx)
                continue
            entry = by_tag.get(tag)
            if entry is not None:
                self._apply(ds, tag, entry[0], entry[1], ctx, top, subtree)
                continue
            if 0x5000 <= group <= 0x501E and not group & 1:
                self._apply(ds, tag, profile.curve_action, None, ctx, top, subtree)
            elif 0x6000 <= group <= 0x601E:
                element = tag & 0xFFFF
                if element == 0x3000:
                    if profile.overlay_data_action == REMOVE:
                        removed_overlay_groups.add(group)
                    self._apply(ds, tag, profile.overlay_data_action, None, ctx, top, subtree)
                elif element == 0x4000:
                    self._apply(ds, tag, profile.overlay_comments_action, None, ctx, top, subtree)
                else:
                    self._keep(ds, tag, ctx, subtree)
            else:
                self._keep(ds, tag, ctx, subtree)
        if removed_overlay_groups:
            # An overlay plane without its data is broken, and its label or description
            # may carry text: the whole group goes.
            ctx.overlays_removed = True
            for tag in [t for t in ds.keys() if (t >> 16) in removed_overlay_groups]:
                del ds[tag]

    def _keep(self, ds: Dataset, tag: int, ctx: _Context, subtree: str | None) -> None:
        """An attribute the table does not list: kept, its items cleaned, its text cleaned in a C subtree."""
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            self._walk_items(ds[tag], ctx, subtree)
        elif subtree and tag not in CODE_TAGS:
            if vr == "PN":
                self._set(ds, tag, vr, DUMMY_STRINGS["PN"])
            elif vr in TEXT_VRS:
                self._clean_text(ds, tag, vr, ctx)

    def _walk_items(self, elem: DataElement, ctx: _Context, subtree: str | None) -> None:
        items = elem.value or []
        if subtree == CLEAN_STRUCTURED:
            # Observer and subject context (TID 1001-1024) hangs under HAS OBS CONTEXT.
            kept = [i for i in items if str(i.get("RelationshipType", "")).strip() != HAS_OBS_CONTEXT]
            if len(kept) != len(items):
                elem.value = Sequence(kept)
                items = kept
        for item in items:
            self._walk(item, ctx, top=False, subtree=subtree)

    def _apply(self, ds, tag, action, keyword, ctx, top, subtree) -> None:
        if action in COMPOUND:
            action = self.profile.compound_choice(action, ctx.sop_class_uid if top else None, keyword if top else None)
        if action == KEEP:
            self._keep(ds, tag, ctx, subtree)
        elif action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            vr = _vr_of(ds, tag)
            self._set(ds, tag, vr, Sequence() if vr == "SQ" else (b"" if vr in DUMMY_BYTES else None))
        elif action == DUMMY:
            self._dummy(ds, tag, ctx)
        elif action == UID:
            self._uid(ds, tag, ctx, subtree)
        elif action == PATIENT_ID_HASH:
            self._patient_id(ds, tag, ctx, top)
        elif action in (CLEAN_TEXT, CLEAN_STRUCTURED, CLEAN_GRAPHICS):
            self._clean(ds, tag, action, keyword, ctx, top, subtree)
        elif action == SHIFT_DATES:
            self._shift(ds, tag, keyword, ctx, top, subtree)
        else:
            raise DeidentificationError(f"no implementation for action {action!r} on {Tag(tag)}")

    def _fallback(self, ds, tag, keyword, ctx, top, subtree) -> None:
        """A C that cannot apply to this value (binary data, an unparseable date): the basic action."""
        basic = self._basic_action(tag)
        self._apply(ds, tag, basic, keyword, ctx, top, subtree)

    def _basic_action(self, tag: int) -> str:
        group = tag >> 16
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            return REMOVE
        for row in self.profile.tables.rows:  # rare path: only for values a C cannot clean
            if row.tag == f"({group:04X},{tag & 0xFFFF:04X})":
                return row.basic
        return REMOVE

    # -- actions ----------------------------------------------------------------------------

    @staticmethod
    def _set(ds: Dataset, tag: int, vr: str, value) -> None:
        ds[tag] = DataElement(tag, vr, value)

    def _dummy(self, ds: Dataset, tag: int, ctx: _Context) -> None:
        vr = _vr_of(ds, tag)
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
        self._set(ds, tag, vr, value)

    def _uid(self, ds: Dataset, tag: int, ctx: _Context, subtree) -> None:
        elem = ds[tag]
        if elem.VR == "SQ":  # X/Z/U*: keep the sequence, its UIDs are replaced item by item
            self._walk_items(elem, ctx, subtree)
            return
        if elem.VR != "UI":
            self._dummy(ds, tag, ctx)
            return
        values = [self.keys.uid(str(v)) for v in _values(elem.value) if str(v).strip("\x00 ")]
        self._set(ds, tag, "UI", values[0] if len(values) == 1 else (values or None))

    def _patient_id(self, ds: Dataset, tag: int, ctx: _Context, top: bool) -> None:
        original = str(ds[tag].value or "").strip()
        if not original:
            return  # no ID to hash: leaving it empty links nothing
        issuer = ctx.issuer if top else str(ds.get("IssuerOfPatientID", "") or "").strip()
        self._set(ds, tag, "LO", self.keys.patient_id(original, issuer))

    def _clean(self, ds, tag, action, keyword, ctx, top, subtree) -> None:
        vr = _vr_of(ds, tag)
        if vr == "SQ":
            self._walk_items(ds[tag], ctx, action if action != CLEAN_TEXT else CLEAN_TEXT)
        elif vr in TEXT_VRS or vr == "CS":
            self._clean_text(ds, tag, vr, ctx)
        elif action == CLEAN_GRAPHICS and vr not in ("PN",):
            pass  # curve data and other non-text graphics are kept as they are
        else:
            self._fallback(ds, tag, keyword, ctx, top, subtree)

    def _clean_text(self, ds: Dataset, tag: int, vr: str, ctx: _Context) -> None:
        elem = ds[tag]
        values = [ctx.identifiers.clean(str(v)) for v in _values(elem.value)]
        if vr in ("LT", "ST", "UT"):
            value = values[0] if values else ""
        else:
            values = [v for v in values if v]
            value = values[0] if len(values) == 1 else (values or "")
        self._set(ds, tag, vr, value)

    def _shift(self, ds, tag, keyword, ctx, top, subtree) -> None:
        vr = _vr_of(ds, tag)
        if vr == "TM":
            return  # a whole-day shift leaves times as they are, and every interval with them
        if vr not in ("DA", "DT"):
            self._fallback(ds, tag, keyword, ctx, top, subtree)
            return
        values = _values(ds[tag].value)
        shifted = [shift_date_value(str(v), vr, ctx.date_shift) for v in values]
        if None in shifted:
            self._fallback(ds, tag, keyword, ctx, top, subtree)
            return
        self._set(ds, tag, vr, shifted[0] if len(shifted) == 1 else (shifted or None))

    # -- private attributes -----------------------------------------------------------------

    @staticmethod
    def _private_creators(ds: Dataset) -> dict:
        creators = {}
        for tag in ds.keys():
            if tag >> 16 & 1 and 0x0010 <= tag & 0xFFFF <= 0x00FF:
                creators[(tag >> 16, tag & 0xFF)] = str(ds[tag].value or "").strip()
        return creators

    def _private(self, ds: Dataset, tag: int, creators: dict, ctx: _Context) -> None:
        """RetainSafePrivateOption: keep what Table E.3.10-1 lists for the block's creator."""
        group, element = tag >> 16, tag & 0xFFFF
        safe = self.profile.tables.safe_private
        if element < 0x0010 or group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF):
            del ds[tag]  # group length and the groups that cannot carry private data
            return
        if element <= 0x00FF:
            block = element
            if not any((group, creators[(group, block)], low) in safe for low in range(256)):
                del ds[tag]  # the block keeps its creator only while it keeps an attribute
            return
        creator = creators.get((group, element >> 8))
        if creator is None or (group, creator, element & 0xFF) not in safe:
            del ds[tag]
            return
        if _vr_of(ds, tag) == "SQ":
            self._walk_items(ds[tag], ctx, None)

    # -- what was done ----------------------------------------------------------------------

    def _method_attributes(self) -> tuple[list[str], list[dict]]:
        cid = self.profile.tables.cid_7050
        names = ["BasicApplicationConfidentialityProfile"]
        names += [o.value for o in Option if o in self.uri.options and o.value in cid]
        codes = [cid[n] for n in names]
        texts = [c["meaning"] for c in codes]
        if Option.RetainPatientIDHashOption in self.uri:
            texts.append("dcm4chee RetainPatientIDHashOption (keyed)")
        return texts, codes

    def _code_items(self) -> list[Dataset]:
        items = []
        for code in self._method[1]:
            item = Dataset()
            item[0x00080100] = DataElement(0x00080100, "SH", code["value"])
            item[0x00080102] = DataElement(0x00080102, "SH", code["scheme"])
            item[0x00080104] = DataElement(0x00080104, "LO", code["meaning"])
            items.append(item)
        return items

    def _code_sequence(self, ds: Dataset):
        """De-identification Method Code Sequence, encoded once per encoding and reused.

        It is the same for every instance of an option set; a raw element with no source
        position (value_tell -1) is written as it is and parsed by pydicom if anyone reads it.
        """
        implicit, little = ds.original_encoding
        if implicit is None:
            return DataElement(0x00120064, "SQ", Sequence(self._code_items()))
        key = (implicit, little)
        value = self._encoded_codes.get(key)
        if value is None:
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = implicit, little
            write_data_element(out, DataElement(0x00120064, "SQ", Sequence(self._code_items())), ["iso8859"])
            value = out.getvalue()[8 if implicit else 12:]
            self._encoded_codes[key] = value
        return RawDataElement(Tag(0x00120064), None if implicit else "SQ", len(value), value, -1, implicit, little)

    def _mark(self, ds: Dataset, ctx: _Context) -> None:
        texts, codes = self._method
        if ctx.overlays_removed and Option.CleanGraphicsOption in self.uri:
            texts = [*texts, "Overlay bitmaps removed, not cleaned"]
        previous = ds.get(0x00120063)
        previous_texts = [str(v) for v in _values(previous.value)] if previous is not None else []
        previous_codes = ds.get(0x00120064)
        if previous_codes is not None and previous_codes.value:
            items = list(previous_codes.value) + self._code_items()
            ds[0x00120064] = DataElement(0x00120064, "SQ", Sequence(items))
        else:
            ds[0x00120064] = self._code_sequence(ds)
        ds[0x00120062] = DataElement(0x00120062, "CS", "YES")  # Patient Identity Removed
        ds[0x00120063] = DataElement(0x00120063, "LO", previous_texts + list(texts))  # De-identification Method
        ds[0x00280303] = DataElement(0x00280303, "CS", self._longitudinal)

    def encode(self, instance: Instance) -> list:
        """A de-identified instance as byte chunks, with its rebuilt file meta."""
        return write_instance(instance, self._file_meta(instance))

    def _file_meta(self, instance: Instance) -> dict[int, str | bytes]:
        """The file meta of the output, rebuilt from the dataset (nothing of the old one is copied
        but the transfer syntax: source AE titles and private meta information go)."""
        header = instance.header
        old = instance.file_meta
        meta: dict[int, str | bytes] = {0x00020001: b"\x00\x01"}
        sop_class = _text(header, 0x00080016) or _text(old, 0x00020002)
        if sop_class:
            meta[0x00020002] = sop_class
        instance_uid = _text(header, 0x00080018)
        if not instance_uid and _text(old, 0x00020003):
            original = _text(old, 0x00020003)
            instance_uid = original if Option.RetainUIDsOption in self.uri else self.keys.uid(original)
        if instance_uid:
            meta[0x00020003] = instance_uid
        meta[0x00020010] = str(instance.transfer_syntax)
        meta[0x00020012] = IMPLEMENTATION_CLASS_UID
        meta[0x00020013] = IMPLEMENTATION_VERSION_NAME
        return meta


__all__ = ["Deidentifier", "DeidentificationError", "DicomError", "Outcome"]
