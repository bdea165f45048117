"""C-FIND as Orthanc answers it, built on Orthanc's own lookup (``POST /tools/find``).

Orthanc's C-FIND SCP is replaced as a whole when a plugin registers a C-FIND callback, so a
caller that no rule matches must get what Orthanc itself would answer. This module rebuilds
``OrthancFindRequestHandler`` (Orthanc 1.10) on top of the REST API: the matching itself is
Orthanc's (``/tools/find`` runs the same ``DatabaseLookup``), and the answers are assembled
from the same sources in the same way (main DICOM tags of the levels up to the query level,
or the stored instance's tags when the query asks for anything else; computed counters;
sequences copied from the stored instance).

Nothing here imports ``orthanc``: ``rest`` is any object with ``get(path)`` and
``post(path, body)`` returning parsed JSON and ``get_text(path)`` (the plugin's in-process
API; any HTTP client would do).
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Iterator, Mapping, Protocol

from pydicom import dcmwrite
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from ..engine.implementation import IMPLEMENTATION_CLASS_UID
from .orthanc_api import OrthancRelease

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
MODALITIES_IN_STUDY = 0x00080061
SOP_CLASSES_IN_STUDY = 0x00080062
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_PATIENT_RELATED_SERIES = 0x00201202
NUMBER_OF_PATIENT_RELATED_INSTANCES = 0x00201204
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
TIMEZONE_OFFSET_FROM_UTC = 0x00080201

LEVELS = ("Patient", "Study", "Series", "Instance")
# Orthanc's StringToResourceType: singular and plural, any case.
_LEVEL_NAMES = {"PATIENT": "Patient", "PATIENTS": "Patient", "STUDY": "Study", "STUDIES": "Study",
                "SERIES": "Series", "IMAGE": "Instance", "IMAGES": "Instance", "INSTANCE": "Instance",
                "INSTANCES": "Instance"}

# Orthanc 1.10's main DICOM tags (database schema 6, DicomMap.cpp): what its index stores per
# level. A query naming only these (and the computed tags) is answered from the index alone.
MAIN_DICOM_TAGS = {
    "Patient": frozenset({0x00100030, 0x00100020, 0x00100010, 0x00100040, 0x00101000}),
    "Study": frozenset({0x00080020, 0x00080030, 0x00200010, 0x00081030, 0x00080050, 0x0020000D,
                        0x00321060, 0x00080080, 0x00321032, 0x00080090}),
    "Series": frozenset({0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x00081010, 0x0008103E,
                         0x00180015, 0x00180024, 0x00181030, 0x00200011, 0x00181090, 0x00201002,
                         0x00200105, 0x00541081, 0x00540101, 0x0020000E, 0x00200037, 0x00541000,
                         0x00081070, 0x00400254, 0x00181400, 0x00180010}),
    "Instance": frozenset({0x00080012, 0x00080013, 0x00200012, 0x00541330, 0x00200013, 0x00280008,
                           0x00200100, 0x00080018, 0x00200032, 0x00204000, 0x00200037}),
}
ALL_MAIN_DICOM_TAGS = frozenset().union(*MAIN_DICOM_TAGS.values())

# The main DICOM tags Orthanc 1.10 indexes as identifiers (ServerToolbox.cpp): its database
# compares them normalized (ASCII only, upper case), before the full match.
IDENTIFIER_TAGS = frozenset({0x00100020, 0x00100010, 0x00100030, 0x0020000D, 0x00080050, 0x00081030,
                             0x00080020, 0x0020000E, 0x00080018})

COUNTER_TAGS = {
    "Patient": (NUMBER_OF_PATIENT_RELATED_STUDIES, NUMBER_OF_PATIENT_RELATED_SERIES,
                NUMBER_OF_PATIENT_RELATED_INSTANCES),
    "Study": (NUMBER_OF_STUDY_RELATED_SERIES, NUMBER_OF_STUDY_RELATED_INSTANCES, SOP_CLASSES_IN_STUDY,
              MODALITIES_IN_STUDY),
    "Series": (NUMBER_OF_SERIES_RELATED_INSTANCES,),
    "Instance": (),
}
_SPECIAL_TAGS = frozenset(t for tags in COUNTER_TAGS.values() for t in tags) | {
    SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL}

# Wildcards are matching only for these VRs (PS3.4 C.2.2.2.4, as Orthanc >= 1.6 applies it).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "DT", "TM"})
_BINARY_NUMBER_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int, "FL": float,
                      "FD": float}
# Orthanc reads stored instances with values longer than this replaced by "TooLong".
MAX_TAG_LENGTH = 256


class FindError(ValueError):
    """A query Orthanc itself would refuse (the C-FIND fails)."""


class Rest(Protocol):
    def get(self, path: str): ...
    def post(self, path: str, body: dict): ...
    def get_text(self, path: str) -> str: ...


@lru_cache(maxsize=4096)
def vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        if _is_private_creator(tag):
            return "LO"
        return "UN"


def tag_key(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


@lru_cache(maxsize=4096)
def parse_tag_key(key: str) -> int:
    group, element = key.split(",")
    return (int(group, 16) << 16) | int(element, 16)


@dataclass(frozen=True)
class QueryKey:
    tag: int
    value: str  # "" for a return key (and for a sequence: Orthanc gives plugins no items)


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND identifier as Orthanc hands it to plugins: (tag, value) pairs, in tag order."""

    keys: tuple[QueryKey, ...]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, str]]) -> "FindRequest":
        return cls(tuple(QueryKey(tag, value) for tag, value in pairs))

    def value(self, tag: int) -> str | None:
        return next((k.value for k in self.keys if k.tag == tag), None)

    @property
    def level(self) -> str:
        raw = self.value(QUERY_RETRIEVE_LEVEL)
        if raw is None:
            raise FindError("C-FIND request without the tag 0008,0052 (QueryRetrieveLevel)")
        level = _LEVEL_NAMES.get(raw.strip().upper())
        if level is None:
            raise FindError(f"C-FIND at the query/retrieve level {raw.strip()!r} is not supported")
        return level

    @property
    def sequences(self) -> tuple[int, ...]:
        return tuple(k.tag for k in self.keys if vr_of(k.tag) == "SQ")

    def constraints(self, case_sensitive_pn: bool = False) -> list["Constraint"]:
        """The matching keys, as Orthanc's C-FIND SCP turns them into a lookup."""
        found = []
        for key in self.keys:
            if key.tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET) or not key.value:
                continue
            if key.tag & 0xFFFF == 0:  # group lengths are never constraints
                continue
            vr = vr_of(key.tag)
            found.append(Constraint(key.tag, key.value, vr, case_sensitive_pn if vr == "PN" else True))
        return found

    def needs_instance_tags(self) -> bool:
        """Whether Orthanc reads the stored instance (sequences, or tags its index lacks)."""
        return bool(self.sequences) or any(
            k.tag not in ALL_MAIN_DICOM_TAGS and k.tag not in _SPECIAL_TAGS for k in self.keys)


@dataclass(frozen=True)
class Constraint:
    """One matching key with DICOM's semantics (PS3.4 C.2.2.2), as Orthanc's DatabaseLookup
    applies them: range for DA/DT/TM, list (backslash), wildcard for text VRs, else equal."""

    tag: int
    value: str
    vr: str
    case_sensitive: bool = True

    @property
    def kind(self) -> str:
        if self.vr in _RANGE_VRS and "-" in self.value:
            return "range"
        if self.tag == MODALITIES_IN_STUDY or "\\" in self.value:
            return "list"
        if self.vr in _WILDCARD_VRS and ("*" in self.value or "?" in self.value):
            return "wildcard"
        return "equal"

    @property
    def case_dependent(self) -> bool:
        """Whether case sensitivity can change this constraint's result."""
        return self.kind != "range" and self.value.upper() != self.value.lower()

    def matches(self, stored: str | None) -> bool:
        if stored is None:
            return False
        kind = self.kind
        if kind == "range":
            lower, _, upper = self.value.partition("-")
            return (not lower or stored >= lower) and (not upper or stored <= upper)
        fold = (lambda s: s) if self.case_sensitive else _fold
        if kind == "list":
            wanted = {fold(v) for v in self.value.split("\\")}
            if self.tag == MODALITIES_IN_STUDY:
                return any(fold(v) in wanted for v in stored.split("\\"))
            return fold(stored) in wanted
        if kind == "wildcard":
            return _wildcard(fold(self.value)).fullmatch(fold(stored)) is not None
        return fold(stored) == fold(self.value)


def _is_private_creator(tag: int) -> bool:
    return bool((tag >> 16) & 1) and 0x10 <= (tag & 0xFFFF) <= 0xFF


def _normalize_identifier(value: str) -> str:
    """Orthanc's NormalizeIdentifier: printable ASCII only, % and _ as spaces, upper case, trimmed."""
    kept = "".join(" " if c in "%_" else c for c in value
                   if c in "%_" or (c.isascii() and c.isprintable()))
    return kept.upper().strip()


def _fold(text: str) -> str:
    """Orthanc's case-insensitive comparison (Toolbox::ToUpperCaseWithAccents): upper case,
    accents kept ("Müller" is not "MULLER"), a character at a time ("ß" stays "ß")."""
    return "".join(upper if len(upper := c.upper()) == 1 else c for c in text)


def _wildcard(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


# -- values as Orthanc's JSON gives them ---------------------------------------------------

def values_from_short(tags: Mapping[str, object]) -> dict[int, str | None]:
    """Main DICOM tags in Orthanc's "short" JSON ({"0010,0010": "NAME"})."""
    return {parse_tag_key(k): (v if isinstance(v, str) else None) for k, v in tags.items()}


def values_from_full(tags: Mapping[str, dict]) -> dict[int, str | None]:
    """A stored instance's tags in Orthanc's "full" JSON: strings only, as Orthanc's DicomMap
    keeps them (sequences, binary and over-long values count as having no value)."""
    values: dict[int, str | None] = {}
    for key, entry in tags.items():
        value = entry.get("Value") if entry.get("Type") == "String" else None
        values[parse_tag_key(key)] = value if isinstance(value, str) else None
    return values


def sequence_from_full(entry: Mapping) -> Sequence | None:
    """A sequence of a stored instance (full JSON) as Orthanc copies it into an answer: the
    strings of each item, recursively; binary, over-long and empty values become empty."""
    if not (isinstance(entry, Mapping) and entry.get("Type") == "Sequence" and isinstance(entry.get("Value"), list)):
        return None
    items = []
    for raw_item in entry["Value"]:
        item = Dataset()
        for key, sub in sorted(raw_item.items()):
            tag = parse_tag_key(key)
            if sub.get("Type") == "Sequence":
                item[tag] = DataElement(tag, "SQ", sequence_from_full(sub) or Sequence())
            else:
                value = sub.get("Value") if sub.get("Type") == "String" else None
                _put(item, tag, value if isinstance(value, str) else "")
        items.append(item)
    return Sequence(items)


def _put(ds: Dataset, tag: int, value: str, private_as_un: bool = False) -> None:
    vr = "UN" if private_as_un and (tag >> 16) & 1 else vr_of(tag)
    if vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", Sequence())
        return
    if vr in _BINARY_NUMBER_VRS:
        convert = _BINARY_NUMBER_VRS[vr]
        try:
            numbers = [convert(v) for v in value.split("\\")] if value else []
        except ValueError:
            numbers = []
        ds[tag] = DataElement(tag, vr, numbers[0] if len(numbers) == 1 else (numbers or None))
        return
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "AT"):
        ds[tag] = DataElement(tag, "UN" if vr == "AT" else vr, value.encode("utf-8"))
        return
    ds[tag] = DataElement(tag, vr, value)


# -- answers --------------------------------------------------------------------------------

def answer_values(request: FindRequest, match: Mapping[int, str | None], counters: Mapping[int, str],
                  retrieve_aet: str) -> dict[int, str]:
    """One answer's values as Orthanc's AddAnswer() sets them: Retrieve AE Title, then every
    query key (the level as asked, the character set left to the encoder, others from
    ``match`` or empty), then the counters."""
    result: dict[int, str] = {RETRIEVE_AE_TITLE: retrieve_aet}
    for key in request.keys:
        if key.tag == QUERY_RETRIEVE_LEVEL:
            result[key.tag] = key.value
        elif key.tag != SPECIFIC_CHARACTER_SET and vr_of(key.tag) != "SQ":
            # (Orthanc's own SCP never sees sequences among the keys: they are copied below.)
            value = match.get(key.tag)
            result[key.tag] = value if value is not None else ""
    result.update(counters)
    return result


def build_answer(request: FindRequest, match: Mapping[int, str | None], counters: Mapping[int, str],
                 retrieve_aet: str, sequences: Mapping[int, Sequence] | None = None) -> Dataset:
    """One answer as a dataset (:func:`answer_values`), sequences copied from the stored instance."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # values are UTF-8; Orthanc re-encodes as configured
    for tag, value in sorted(answer_values(request, match, counters, retrieve_aet).items()):
        if tag in (sequences or {}):
            continue
        _put(ds, tag, value, private_as_un=True)  # as Orthanc answers them: it has no private dictionary
    for tag, items in (sequences or {}).items():
        if tag not in ds:  # Orthanc inserts a sequence only where the answer has none
            ds[tag] = DataElement(tag, "SQ", items)
    return ds


def query_dataset(request: FindRequest) -> Dataset:
    """The query as a dataset (what a rule's conditions look at)."""
    ds = Dataset()
    for key in request.keys:
        if key.tag != SPECIFIC_CHARACTER_SET:
            _put(ds, key.tag, key.value)
    return ds


# -- the answer as a file ------------------------------------------------------------------
# A study list of 1,000 answers through pydicom's writer costs half a second; answers without
# sequences are flat strings, written here directly (same bytes; tests compare with pydicom).

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_PACK = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "UV": "<Q", "SV": "<q", "FL": "<f", "FD": "<d"}
_ANSWER_SOP_CLASS = b"1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R - FIND


def _element(tag: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in _LONG_VRS:
        return head + struct.pack("<2xI", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _meta() -> bytes:
    elements = (_element(0x00020001, "OB", b"\0\1") + _element(0x00020002, "UI", _ANSWER_SOP_CLASS)
                + _element(0x00020003, "UI", b"2.25.0") + _element(0x00020010, "UI", ExplicitVRLittleEndian.encode())
                + _element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()))
    return b"\0" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<I", len(elements))) + elements


_META = _meta()


def _value_bytes(vr: str, value: str) -> bytes | None:
    if vr in _PACK:
        convert = float if vr in ("FL", "FD") else int
        try:
            return b"".join(struct.pack(_PACK[vr], convert(v)) for v in value.split("\\")) if value else b""
        except (ValueError, struct.error):
            return b""
    data = value.encode("utf-8")
    return data if len(data) <= 0xFFFF or vr in _LONG_VRS else None


def encode_values(values: Mapping[int, str]) -> bytes:
    """A flat answer (:func:`answer_values`) as a DICOM file, the form the plugin SDK takes."""
    parts = [_META, _element(SPECIFIC_CHARACTER_SET, "CS", b"ISO_IR 192")]
    for tag in sorted(values):
        vr = "UN" if (tag >> 16) & 1 else vr_of(tag)
        if vr == "AT":
            vr = "UN"
        data = _value_bytes(vr, values[tag])
        if data is None:  # too long for its VR's length field: let pydicom decide
            ds = Dataset()
            for t in sorted(values):
                _put(ds, t, values[t], private_as_un=True)
            ds.SpecificCharacterSet = "ISO_IR 192"
            return encode_answer(ds)
        parts.append(_element(tag, vr, data))
    return b"".join(parts)


def encode_answer(ds: Dataset) -> bytes:
    """An answer as a DICOM file, the form the plugin SDK takes."""
    ds.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R - FIND
    meta.MediaStorageSOPInstanceUID = "2.25.0"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# -- the lookup -----------------------------------------------------------------------------

@dataclass
class FindSettings:
    retrieve_aet: str = "ORTHANC"
    case_sensitive_pn: bool = False  # Orthanc's CaseSensitivePN
    limit_results: int = 0  # LimitFindResults
    limit_instances: int = 0  # LimitFindInstances
    storage_access: str = "Always"  # StorageAccessOnFind: "Never" answers from the index alone


@dataclass(frozen=True)
class FindBehaviour:
    """How the running Orthanc's own C-FIND SCP (``OrthancFindRequestHandler``) answers, where
    releases differ (each release's NEWS): ``resource_finder`` as the REST API reports it, the
    rest changed only inside the handler (:class:`OrthancRelease`)."""

    # 1.12.5: the lookup and the answers come from ResourceFinder, the engine of /tools/find
    # (requested tags, computed tags, storage access as configured); before, from the index
    # and the stored instance's JSON, rebuilt here by OrthancFind's own code.
    resource_finder: bool = False
    # 1.12.5 to 1.12.10 ignore LimitFindResults/LimitFindInstances (fixed in 1.12.11).
    scp_applies_limits: bool = True
    # 1.13.0: a requested sequence the resource holds is copied; before, none was answered for
    # it (an empty one when the resource had none).
    copies_sequences: bool = False
    # 1.13.0: private creators (gggg,0010) of the query are no longer matched.
    matches_private_creators: bool = True

    @classmethod
    def of(cls, release: OrthancRelease) -> "FindBehaviour":
        if not release.resource_finder:
            return cls()
        return cls(resource_finder=True, scp_applies_limits=release.at_least(1, 12, 11),
                   copies_sequences=release.at_least(1, 13, 0), matches_private_creators=not release.at_least(1, 13, 0))


@dataclass
class Match:
    """One matching resource: its Orthanc ID and what Orthanc would build its answer from."""

    resource: str
    values: dict[int, str | None]
    counters: dict[int, str] = field(default_factory=dict)
    sequences: dict[int, Sequence] = field(default_factory=dict)


@dataclass
class FindResult:
    matches: list[Match]
    complete: bool


class OrthancFind:
    """Orthanc's C-FIND lookup through its REST API."""

    def __init__(self, rest: Rest, settings: FindSettings, behaviour: FindBehaviour = FindBehaviour()):
        self.rest = rest
        self.settings = settings
        self.behaviour = behaviour
        self.cut = False  # whether the last matches() stopped at Orthanc's own limit

    def find(self, request: FindRequest) -> FindResult:
        """The resources Orthanc's C-FIND SCP answers, with their values, and whether it would
        call the answer complete (``LimitFindResults`` / ``LimitFindInstances``)."""
        level = request.level
        constraints = request.constraints(self.settings.case_sensitive_pn)
        limit = self.settings.limit_instances if level == "Instance" else self.settings.limit_results
        if self.behaviour.resource_finder:
            return self._finder_find(request, constraints, limit)
        matches: list[Match] = []
        complete = True
        for match in self.matches(request, constraints, limit=limit + 1 if limit else 0):
            if limit and len(matches) >= limit:
                complete = False  # one more than Orthanc answers tells it was cut
                break
            matches.append(match)
        if complete and limit and self._more_candidates_than(level, constraints, limit):
            complete = False
        return FindResult(matches, complete)

    def matches(self, request: FindRequest, constraints: list[Constraint], limit: int = 0,
                context: bool = False) -> Iterator[Match]:
        """The resources that match ``constraints`` at the request's level, one at a time (what
        a match needs is read only when it is reached). ``limit``: what Orthanc's lookup may
        return (0: all). ``context``: read every match's stored instance (a coercion needs the
        patient and study of an answer, whatever the query asks)."""
        level = request.level
        body, recheck = self._lookup_body(level, constraints)
        body["Short"] = True
        if limit and not recheck:  # (with keys applied here, Orthanc's first few may not match)
            body["Limit"] = limit
        # With StorageAccessOnFind "Never", Orthanc answers from its index alone (no sequences).
        read_instance = context or (request.needs_instance_tags() and self.settings.storage_access != "Never")
        asked = {k.tag for k in request.keys}
        parents = _ParentCache(self.rest)
        found = 0
        cap = self.settings.limit_instances if level == "Instance" else self.settings.limit_results
        resources = self.rest.post("/tools/find", body)
        # Orthanc 1.12.5's /tools/find stops at Orthanc's own limit: what it cut is not read
        # (a caller's limit is never more than Orthanc's), the caller is told it was cut.
        self.cut = bool(self.behaviour.resource_finder and cap and self._maybe_cut(body, resources, cap))
        for resource in resources:
            if read_instance:
                tags = self.rest.get(f"/instances/{self._sample_instance(level, resource, parents)}/tags")
                values = values_from_full(tags)
                sequences = {t: s for t in request.sequences if (s := sequence_from_full(tags.get(tag_key(t)))) is not None}
            else:
                values = parents.main_tags(level, resource)
                sequences = {}
            counters = self._counters(level, resource, request, {c.tag for c in recheck})
            if any(not c.matches(counters.get(c.tag, values.get(c.tag))) for c in recheck):
                continue
            yield Match(resource["ID"], values, {t: v for t, v in counters.items() if t in asked}, sequences)
            found += 1
            if limit and found >= limit:
                return

    def _more_candidates_than(self, level: str, constraints: list[Constraint], limit: int) -> bool:
        """Whether Orthanc's database pre-selection (main DICOM tags only, identifiers without
        case) finds more than ``limit`` candidates: Orthanc then calls its answer incomplete
        even when fewer of them match in full. Only asked when it can differ from the matches."""
        pre = [c for c in constraints if c.tag in ALL_MAIN_DICOM_TAGS or c.tag == MODALITIES_IN_STUDY]
        if len(pre) == len(constraints) and not any(c.case_dependent or not c.value.isascii() for c in pre):
            return False  # the pre-selection is the lookup itself
        query = {tag_key(c.tag): _normalize_identifier(c.value) if c.tag in IDENTIFIER_TAGS else c.value
                 for c in pre}
        body = {"Level": level, "CaseSensitive": False, "Limit": limit + 1,
                "Query": {k: v for k, v in query.items() if v.strip()}}
        return len(self.rest.post("/tools/find", body)) > limit

    # -- Orthanc 1.12.5 and later: ResourceFinder ------------------------------------------

    def _finder_find(self, request: FindRequest, constraints: list[Constraint], limit: int) -> FindResult:
        """What the SCP of an Orthanc with ResourceFinder answers: /tools/find runs the same
        lookup with the same requested tags, so its answers hold what the SCP's hold."""
        if not self.behaviour.matches_private_creators:
            constraints = [c for c in constraints if not _is_private_creator(c.tag)]
        constraints = [c for c in constraints if c.tag != TIMEZONE_OFFSET_FROM_UTC]  # never matched
        requested = sorted({k.tag for k in request.keys} - {QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET,
                                                             TIMEZONE_OFFSET_FROM_UTC})
        body, recheck = self._lookup_body(request.level, constraints)
        body.update(RequestedTags=[tag_key(t) for t in requested], Full=True)
        found = self.rest.post("/tools/find", body)  # Orthanc's limit applies as in its SCP...
        complete = not limit or len(found) <= limit
        if limit and not self.behaviour.scp_applies_limits and self._maybe_cut(body, found, limit):
            # ...but this SCP ignores it (1.12.5 to 1.12.10), /tools/find does not.
            found, recheck, complete = self._past_the_limit(body, constraints, limit), constraints, True
        matches = []
        for resource in found:
            values = values_from_full(resource.get("MainDicomTags", {}))
            values.update(values_from_full(resource.get("PatientMainDicomTags", {})))
            values.update(values_from_full(resource.get("RequestedTags", {})))
            if any(not c.matches(values.get(c.tag)) for c in recheck):
                continue
            sequences = {}
            for tag in request.sequences:
                stored = sequence_from_full(resource.get("RequestedTags", {}).get(tag_key(tag)))
                if stored is None:
                    sequences[tag] = Sequence()  # an empty one where the resource has none
                elif self.behaviour.copies_sequences:
                    sequences[tag] = stored
            matches.append(Match(resource["ID"], values, {}, sequences))
        return FindResult(matches, complete)

    def _lookup_body(self, level: str, constraints: list[Constraint]) -> tuple[dict, list[Constraint]]:
        """/tools/find's body for ``constraints``, and those to apply here: /tools/find has one
        case switch for all keys, the C-FIND SCP one per VR (then the lookup is made without
        case, a superset, and the case-sensitive keys are applied to its answers)."""
        sensitivities = {c.case_sensitive for c in constraints if c.case_dependent}
        body: dict = {"Level": level, "Expand": True, "Query": {tag_key(c.tag): c.value for c in constraints}}
        if len(sensitivities) > 1:
            body["CaseSensitive"] = False
            return body, [c for c in constraints if c.case_sensitive and c.case_dependent]
        body["CaseSensitive"] = sensitivities.pop() if sensitivities else True
        return body, []

    def _maybe_cut(self, body: dict, found: list, limit: int) -> bool:
        """Whether Orthanc's limit may have cut what /tools/find found: its database cuts its
        candidates before the full match (keys it does not index, case), so a short answer
        proves nothing; the candidates' count does (/tools/count-resources counts them
        without case, a superset)."""
        if len(found) >= limit:
            return True
        try:
            counted = self.rest.post("/tools/count-resources", {"Level": body["Level"], "Query": body["Query"]})
            return int(counted["Count"]) > limit
        except Exception:  # noqa: BLE001 - no count: read on, to be sure
            return True

    def _past_the_limit(self, body: dict, constraints: list[Constraint], limit: int) -> Iterator[dict]:
        """Every match of an SCP that answers past Orthanc's limit, which /tools/find never
        does, once the query as asked came back cut. Orthanc's database cuts its candidates
        before the full match, and pages ("Since") count candidates or matches depending on
        the database: so every resource of the level is read, a page at a time, and matched
        here as Orthanc matches (only what matches is kept). The price of a limit this SCP
        ignores; Orthanc 1.12.11 applies it again."""
        return self._pages({key: value for key, value in body.items() if key != "Limit"} | {"Query": {}}, limit)

    def _pages(self, body: dict, limit: int) -> Iterator[dict]:
        """Every resource ``body`` finds, ``limit`` at a time (Orthanc's own limit caps each
        page), until a page is short or brings nothing new."""
        since, last = 0, None
        while True:
            page = self.rest.post("/tools/find", {**body, "Since": since, "Limit": limit})
            if not page or page[0].get("ID") == last:
                return
            yield from page
            if len(page) < limit:
                return
            since, last = since + len(page), page[0].get("ID")

    def answers(self, request: FindRequest) -> tuple[list[bytes], bool]:
        """What Orthanc's own C-FIND SCP answers, encoded, and whether the answer is complete."""
        result = self.find(request)
        aet = self.settings.retrieve_aet
        return [encode_answer(build_answer(request, m.values, m.counters, aet, m.sequences)) if m.sequences
                else encode_values(answer_values(request, m.values, m.counters, aet))
                for m in result.matches], result.complete

    def _sample_instance(self, level: str, resource: dict, parents: "_ParentCache") -> str:
        while level != "Instance":
            child_key = {"Patient": "Studies", "Study": "Series", "Series": "Instances"}[level]
            level = LEVELS[LEVELS.index(level) + 1]
            resource = parents.resource(level, resource[child_key][0]) if level != "Instance" else {
                "ID": resource[child_key][0]}
        return resource["ID"]

    def _counters(self, level: str, resource: dict, request: FindRequest, also: set = frozenset()) -> dict[int, str]:
        asked = ({k.tag for k in request.keys} | also) & set(COUNTER_TAGS[level])
        if not asked:
            return {}
        rid = resource["ID"]
        counters: dict[int, str] = {}
        if level == "Series":
            counters[NUMBER_OF_SERIES_RELATED_INSTANCES] = str(len(resource["Instances"]))
        elif level == "Study":
            counters.update(self._study_counters(rid, resource, asked))
        elif level == "Patient":
            counters[NUMBER_OF_PATIENT_RELATED_STUDIES] = str(len(resource["Studies"]))
            if asked - {NUMBER_OF_PATIENT_RELATED_STUDIES}:
                series = self.rest.get(f"/patients/{rid}/series")
                counters[NUMBER_OF_PATIENT_RELATED_SERIES] = str(len(series))
                counters[NUMBER_OF_PATIENT_RELATED_INSTANCES] = str(sum(len(s["Instances"]) for s in series))
        return {t: v for t, v in counters.items() if t in asked}

    def _study_counters(self, rid: str, resource: dict, asked: set) -> dict[int, str]:
        counters = {NUMBER_OF_STUDY_RELATED_SERIES: str(len(resource["Series"]))}
        if asked & {MODALITIES_IN_STUDY, NUMBER_OF_STUDY_RELATED_INSTANCES, SOP_CLASSES_IN_STUDY}:
            series = self.rest.get(f"/studies/{rid}/series?short")
            modalities = {s["MainDicomTags"].get(tag_key(0x00080060)) for s in series}
            counters[MODALITIES_IN_STUDY] = "\\".join(sorted(m for m in modalities if isinstance(m, str)))
            counters[NUMBER_OF_STUDY_RELATED_INSTANCES] = str(sum(len(s["Instances"]) for s in series))
            if SOP_CLASSES_IN_STUDY in asked:
                classes = {self.rest.get_text(f"/instances/{i}/metadata/SopClassUid")
                           for s in series for i in s["Instances"]}
                counters[SOP_CLASSES_IN_STUDY] = "\\".join(sorted(c for c in classes if c))
        return counters


class _ParentCache:
    """Main DICOM tags of the levels above a resource, read once per query."""

    _PARENT = {"Study": ("ParentPatient", "Patient"), "Series": ("ParentStudy", "Study"),
               "Instance": ("ParentSeries", "Series")}
    _ROUTE = {"Patient": "patients", "Study": "studies", "Series": "series", "Instance": "instances"}

    def __init__(self, rest: Rest):
        self.rest = rest
        self._resources: dict[str, dict] = {}

    def resource(self, level: str, rid: str) -> dict:
        found = self._resources.get(rid)
        if found is None:
            found = self._resources[rid] = self.rest.get(f"/{self._ROUTE[level]}/{rid}?short")
        return found

    def main_tags(self, level: str, resource: dict) -> dict[int, str | None]:
        """The main DICOM tags of ``resource`` and every level above it (Orthanc's Case 1)."""
        values = values_from_short(resource.get("MainDicomTags", {}))
        if "PatientMainDicomTags" in resource:  # a study carries its patient's
            values.update(values_from_short(resource["PatientMainDicomTags"]))
            return values
        while level in self._PARENT:
            key, level = self._PARENT[level]
            resource = self.resource(level, resource[key])
            values.update(values_from_short(resource.get("MainDicomTags", {})))
            if "PatientMainDicomTags" in resource:
                values.update(values_from_short(resource["PatientMainDicomTags"]))
                break
        return values
