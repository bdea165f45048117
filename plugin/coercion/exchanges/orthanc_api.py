"""Orthanc's own REST semantics, for the routes the plugin stands in for.

When the plugin's route replaces one of Orthanc's, a client must get Orthanc's answer to every
request, the errors included. Orthanc's SDK hands a plugin only the code of an error that its
core raises (not its details), so the checks Orthanc makes on a request body are made here, in
Orthanc's order and with its messages (ported from OrthancRestModalities.cpp, Toolbox.cpp,
SerializationToolbox.cpp and OrthancRestApi.cpp of Orthanc 1.10.1), before anything else;
where a later release answers otherwise, :class:`OrthancRelease` says which.
Plain code: what it needs of Orthanc (does a resource exist) comes in as a function.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Callable, Mapping

from ..engine.tags import ACCESSION_NUMBER, PATIENT_ID, SERIES_INSTANCE_UID, STUDY_INSTANCE_UID

# Orthanc's ErrorCode: number, description (Enumerations.cpp), HTTP status (ConvertErrorCodeToHttpStatus).
ERRORS = {
    "InternalError": (-1, "Internal error", 500),
    "Plugin": (1, "Error encountered within the plugin engine", 500),
    "ParameterOutOfRange": (3, "Parameter out of range", 400),
    "BadParameterType": (5, "Bad type for a parameter", 400),
    "InexistentItem": (7, "Accessing an inexistent item", 404),
    "BadRequest": (8, "Bad request", 400),
    "NetworkProtocol": (9, "Error in the network protocol", 500),
    "BadFileFormat": (15, "Bad file format", 400),
    "UnknownResource": (17, "Unknown resource", 404),
}
# Every error code that Orthanc 1.10 answers with another status than 500.
_HTTP_STATUS_OF_CODE = {0: 200, 3: 400, 5: 400, 7: 404, 8: 400, 12: 400, 13: 404, 15: 400, 17: 404, 21: 404,
                        28: 400, 29: 401, 34: 406, 36: 503, 41: 416, 42: 503, 43: 409, 2019: 400, 2020: 400,
                        2021: 400, 2022: 400, 2023: 400, 2024: 400, 2025: 400, 3000: 415}
HTTP_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 415: "Unsupported Media Type",
                416: "Requested Range Not Satisfiable", 500: "Internal Server Error", 501: "Not Implemented",
                503: "Service Unavailable"}

_SHA1 = re.compile(r"[A-Za-z0-9]{8}(?:-[A-Za-z0-9]{8}){4}")
# Toolbox::IsSHA1 and StripSpaces trim what C's isspace() calls space (and IsSHA1 NULs too).
_SPACES = " \t\n\v\f\r"


@dataclass(frozen=True)
class OrthancRelease:
    """What the running Orthanc says of itself (``GET /system``), for what its own routes and
    SCP do differently from release to release. A feature the API reports is read from the
    report; what changed only inside the core, which no API shows, is read from the version
    (each release's NEWS; a build of the mainline counts as the newest)."""

    version: tuple[int, ...] = (1, 10, 1)
    # 1.12.5's ResourceFinder: /system reports the database's "Capabilities" since.
    resource_finder: bool = False

    @classmethod
    def of(cls, system: Mapping) -> "OrthancRelease":
        try:
            version = tuple(int(part) for part in str(system.get("Version", "")).split(".")[:3])
        except ValueError:
            version = (9999,)
        return cls(version=version, resource_finder="Capabilities" in system)

    def at_least(self, *version: int) -> bool:
        return self.version >= version

    # Each below: the release where it was seen first. Sources of 1.12.8 to 1.12.11 were not
    # at hand: what 1.13.0 does is taken to start with it.

    @property
    def details_invalid_levels(self) -> bool:
        """1.11.2: an unknown resource type is refused with its name in the details."""
        return self.at_least(1, 11, 2)

    @property
    def store_destination_overrides(self) -> bool:
        """1.12.0: /store takes "CalledAet", "Host" and "Port" for this send only."""
        return self.at_least(1, 12, 0)

    @property
    def request_local_aet_wins(self) -> bool:
        """1.13.0: a request's "LocalAet" overrides the modality's (before, the modality's won)."""
        return self.at_least(1, 13, 0)

    @property
    def known_instances_skip_filters(self) -> bool:
        """An instance Orthanc holds already is answered Success before any filter or callback
        that could tell who sent it (OverwriteInstances "Never" or "IfChanged": ServerContext
        checks before the filters since 1.13.0, "reduced disk and DB operations")."""
        return self.at_least(1, 13, 0)

    @property
    def store_modality_first(self) -> bool:
        """1.13.0: /store looks the modality up before it reads the body's other fields."""
        return self.at_least(1, 13, 0)

    def unsigned_error(self, key: str) -> "OrthancError":
        """A negative value where Orthanc reads an unsigned integer (SerializationToolbox)."""
        if self.at_least(1, 13, 0):
            return OrthancError.of("BadParameterType", f"Negative value found while expecting an unsigned int in field '{key}'")
        return OrthancError.of("BadFileFormat", f"Unsigned integer value expected in field: {key}")

    def unknown_resource_error(self) -> "OrthancError":
        """/store of an identifier Orthanc does not hold: 1.13.0's index lookup fails as an
        internal error (its details name the source line)."""
        if self.at_least(1, 13, 0):
            return OrthancError(-1, "Internal error", "ErrorCode_InternalError triggered from ServerContext.cpp:2148")
        return OrthancError.of("UnknownResource")


def http_status_of(code: int) -> int:
    return _HTTP_STATUS_OF_CODE.get(code, 500)


@dataclass
class OrthancError(Exception):
    """An error as Orthanc answers it: its ErrorCode (number, description) and details."""

    code: int
    description: str
    details: str | None = None

    @classmethod
    def of(cls, name: str, details: str | None = None) -> "OrthancError":
        code, description, _ = ERRORS[name]
        return cls(code, description, details)

    @property
    def status(self) -> int:
        return http_status_of(self.code)

    def body(self, method: str, uri: str) -> dict:
        """The JSON body of Orthanc's error answer (HttpServer.cpp)."""
        answer = {"HttpError": HTTP_REASONS.get(self.status, "Internal Server Error"), "HttpStatus": self.status,
                  "Message": self.description, "Method": method, "OrthancError": self.description,
                  "OrthancStatus": self.code, "Uri": uri}
        if self.details:
            answer["Details"] = self.details
        return dict(sorted(answer.items()))


def is_sha1(text: str) -> bool:
    """Toolbox::IsSHA1: an Orthanc identifier, surrounding spaces and NULs aside."""
    return bool(_SHA1.fullmatch(text.strip(_SPACES + "\0")))


def instance_id(patient_id: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """An instance's Orthanc identifier (DicomInstanceHasher::HashInstance): the SHA-1 of its
    PatientID, StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID joined by "|", as five
    groups of eight hex digits (Toolbox::ComputeSHA1)."""
    digest = hashlib.sha1("|".join((patient_id, study_uid, series_uid, sop_instance_uid)).encode("utf-8")).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


# Orthanc 1.10 itself crashes (SIGSEGV in jsoncpp, on its HTTP thread's stack) on a JSON body
# nested about 200 levels deep; real request bodies nest two or three.
MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    """A JSON body nested deeper than MAX_JSON_DEPTH (never handed to any JSON reader)."""


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text``, measured without recursion (strings aside)."""
    brackets = [c for c in _JSON_STRING.sub("", text) if c in _BRACKETS]
    return max(accumulate(map(_BRACKETS.__getitem__, brackets)), default=0)


def _jsoncpp_dialect(text: str) -> str:
    """What jsoncpp's default reader takes besides JSON, made JSON: a byte order mark, comments
    (// and /* */) and trailing commas go (text after the value is ignored by the caller)."""
    out: list[str] = []
    text = text.lstrip("\ufeff")
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i:end + 1])
            i = end + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char in "]}":
            while out and out[-1].isspace():
                out.pop()
            if out and out[-1] == ",":
                out.pop()
            out.append(char)
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


class NotJson(ValueError):
    """A body that Orthanc's JSON reader refuses."""


def read_json_body(body: bytes):
    """The body as Orthanc's ParseJsonRequest (jsoncpp's default reader) reads it."""
    text = bytes(body).decode("utf-8", errors="replace")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise JsonTooDeep(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, strict=False)
    except ValueError:
        pass
    try:
        return json.JSONDecoder(strict=False).raw_decode(_jsoncpp_dialect(text).lstrip())[0]
    except ValueError:
        raise NotJson("the body is not JSON") from None


def _has(request: dict, key: str, kind) -> bool:
    """Toolbox's HasField: absent is False; present with another JSON type is BadParameterType."""
    if key not in request:
        return False
    value = request[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise OrthancError.of("BadParameterType")
    return True


def _read_boolean(request: dict, key: str) -> bool:
    value = request.get(key)
    if not isinstance(value, bool):
        raise OrthancError.of("BadFileFormat", f"Boolean value expected in field: {key}")
    return value


def _read_integer(request: dict, key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OrthancError.of("BadFileFormat", f"Integer value expected in field: {key}")
    return value


@dataclass(frozen=True)
class StoreRequest:
    """``POST /modalities/{id}/store`` after Orthanc's checks: what to send and how."""

    resources: tuple[str, ...]
    arguments: dict = field(default_factory=dict)  # the JSON object's other fields (empty for a list)
    local_aet: str | None = None
    move_originator_aet: str | None = None
    move_originator_id: int = 0
    storage_commitment: bool = False
    timeout: int | None = None
    permissive: bool = False
    synchronous: bool = True
    priority: int = 0
    # "CalledAet", "Host", "Port" given for this send only (Orthanc 1.12): as given.
    destination_overrides: dict = field(default_factory=dict)

    @property
    def body(self) -> dict:
        """The request as a JSON object that Orthanc's own route reads the same way."""
        return {**self.arguments, "Resources": list(self.resources)}


def read_store_request(body: bytes, exists: Callable[[str], bool],
                       modality_exists: Callable[[str], bool], modality: str,
                       release: OrthancRelease = OrthancRelease()) -> StoreRequest:
    """Orthanc's DicomStore checks, in its order (GetInstancesToExport, the fields, the modality,
    SubmitCommandsJob); raises OrthancError as Orthanc answers, or JsonTooDeep."""
    request, found = _instances_to_export(body, exists, release)
    if release.store_modality_first and not modality_exists(modality):
        raise OrthancError.of("InexistentItem", f"No modality with symbolic name: {modality}")
    local_aet = request["LocalAet"] if _has(request, "LocalAet", str) else None
    originator_aet = request["MoveOriginatorAet"] if _has(request, "MoveOriginatorAet", str) else None
    originator_id = request["MoveOriginatorID"] if _has(request, "MoveOriginatorID", int) else 0
    if not modality_exists(modality):
        raise OrthancError.of("InexistentItem", f"No modality with symbolic name: {modality}")
    commitment = request["StorageCommitment"] if _has(request, "StorageCommitment", bool) else False
    timeout = None
    if "Timeout" in request:
        timeout = _read_integer(request, "Timeout")
        if timeout < 0:
            raise release.unsigned_error("Timeout")
    permissive, synchronous, priority = _job_options(request)
    arguments = {k: v for k, v in request.items() if k != "Resources"}
    overrides = {k: request[k] for k in ("CalledAet", "Host", "Port") if k in request} \
        if release.store_destination_overrides else {}
    return StoreRequest(tuple(found), arguments, local_aet, originator_aet, originator_id, commitment, timeout,
                        permissive, synchronous, priority, overrides)


def read_peer_store_request(body: bytes, exists: Callable[[str], bool], peer_exists: Callable[[str], bool],
                            peer: str, release: OrthancRelease = OrthancRelease()) -> StoreRequest:
    """Orthanc's PeerStore checks, in its order (GetInstancesToExport, Transcode, Compress, the
    peer, SubmitCommandsJob); raises OrthancError as Orthanc answers, or JsonTooDeep."""
    request, found = _instances_to_export(body, exists, release)
    if "Transcode" in request and not isinstance(request["Transcode"], str):
        raise OrthancError.of("BadFileFormat", "String value expected in field: Transcode")
    if "Compress" in request:
        _read_boolean(request, "Compress")
    if not peer_exists(peer):
        raise OrthancError.of("UnknownResource", f"No peer with symbolic name: {peer}")
    permissive, synchronous, priority = _job_options(request)
    arguments = {k: v for k, v in request.items() if k != "Resources"}
    return StoreRequest(tuple(found), arguments, permissive=permissive, synchronous=synchronous, priority=priority)


def _job_options(request: dict) -> tuple[bool, bool, int]:
    """SubmitCommandsJob's options: Permissive, Synchronous (else not Asynchronous; synchronous
    by default), Priority."""
    permissive = _read_boolean(request, "Permissive") if "Permissive" in request else False
    if "Synchronous" in request:
        synchronous = _read_boolean(request, "Synchronous")
    elif "Asynchronous" in request:
        synchronous = not _read_boolean(request, "Asynchronous")
    else:
        synchronous = True
    priority = _read_integer(request, "Priority") if "Priority" in request else 0
    return permissive, synchronous, priority


def _instances_to_export(body: bytes, exists: Callable[[str], bool],
                         release: OrthancRelease) -> tuple[dict, list[str]]:
    """GetInstancesToExport: the request's other fields and the resources, each checked."""
    raw = bytes(body)
    text = raw.decode("latin-1")
    if is_sha1(text):  # a bare identifier (Orthanc <= 0.5.1)
        request, resources = {}, [text.strip(_SPACES)]
    else:
        try:
            value = read_json_body(raw)
        except NotJson:
            raise OrthancError.of("BadFileFormat", "Must provide a JSON value") from None
        if isinstance(value, str):
            value = [value]
        elif not isinstance(value, (list, dict)):
            raise OrthancError.of("BadFileFormat", "Must provide a JSON object, or a JSON array of strings")
        if isinstance(value, list):
            request, resources = {}, value
        else:
            if "Resources" not in value:
                raise OrthancError.of("BadFileFormat", 'Missing field in JSON: "Resources"')
            resources = value["Resources"]
            if not isinstance(resources, list):
                raise OrthancError.of("BadFileFormat", 'JSON field "Resources" must contain an array')
            request = dict(value)
    found = []
    for resource in resources:
        if not isinstance(resource, str):
            raise OrthancError.of("BadFileFormat",
                                  "Resources to be exported must be specified as a JSON array of strings")
        stripped = resource.strip(_SPACES)
        if not is_sha1(stripped):
            raise OrthancError.of("BadFileFormat", f"This string is not a valid Orthanc identifier: {stripped}")
        if not exists(stripped):
            raise release.unknown_resource_error()
        found.append(stripped)
    return request, found


# -- POST /modalities/{id}/query (OrthancRestModalities.cpp, DicomQuery) ----------------------

_LEVELS = {"PATIENT": "Patient", "PATIENTS": "Patient", "STUDY": "Study", "STUDIES": "Study", "SERIES": "Series",
           "INSTANCE": "Instance", "INSTANCES": "Instance", "IMAGE": "Instance", "IMAGES": "Instance"}
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{4},?[0-9A-Fa-f]{4}")


def read_query_request(body: bytes, modality_exists: Callable[[str], bool], modality: str,
                       known_key: Callable[[str], bool], release: OrthancRelease = OrthancRelease()) -> dict:
    """Orthanc's checks of a ``/query`` body, in its order; the body as a JSON object, or
    OrthancError as Orthanc answers (JsonTooDeep for what its reader would crash on).
    ``known_key(name)``: whether a key names a DICOM tag (hexadecimal or a keyword)."""
    try:
        request = read_json_body(body)
    except NotJson:
        request = None
    if not isinstance(request, dict):
        raise OrthancError.of("BadFileFormat", "Must provide a JSON object")
    if not isinstance(request.get("Level"), str):
        raise OrthancError.of("BadFileFormat", "The JSON body must contain field Level")
    if "Normalize" in request and not isinstance(request["Normalize"], bool):
        raise OrthancError.of("BadFileFormat", "The field Normalize must contain a Boolean")
    if "Query" in request and not isinstance(request["Query"], dict):
        raise OrthancError.of("BadFileFormat", "The field Query must contain a JSON object")
    if "LocalAet" in request and not isinstance(request["LocalAet"], str):
        raise OrthancError.of("BadFileFormat", "The field LocalAet must contain a string")
    if not modality_exists(modality):
        raise OrthancError.of("InexistentItem", f"No modality with symbolic name: {modality}")
    if request["Level"].upper() not in _LEVELS:
        details = f"Invalid resource type '{request['Level']}'" if release.details_invalid_levels else None
        raise OrthancError.of("ParameterOutOfRange", details)
    for key, value in (request.get("Query") or {}).items():
        if not (_HEX_TAG.fullmatch(key) or known_key(key)) or not isinstance(value, str):
            raise OrthancError.of("BadFileFormat", "Associative array of DICOM tags to strings expected in field: Query")
    if "Timeout" in request:
        if _read_integer(request, "Timeout") < 0:
            raise release.unsigned_error("Timeout")
    return request


# -- the older find-* routes (DicomFindPatient... DicomFind, MergeQueryAndTemplate) -----------
# They answer nothing at all (HTTP 400, no body) when the body is not a JSON object, or when
# the constraints that identify the level are shorter than three characters.

_PATIENT_ID, _ACCESSION_NUMBER, _STUDY_UID, _SERIES_UID = PATIENT_ID, ACCESSION_NUMBER, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID
_IDENTIFYING = {
    "find-study": ((_ACCESSION_NUMBER, _PATIENT_ID),),
    "find-series": ((_ACCESSION_NUMBER, _PATIENT_ID), (_STUDY_UID,)),
    "find-instance": ((_ACCESSION_NUMBER, _PATIENT_ID), (_STUDY_UID,), (_SERIES_UID,)),
}


def _as_string(value) -> str:
    """jsoncpp's asString() of a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def older_find_answers_nothing(route: str, value, tag_of: Callable[[str], int | None]) -> bool:
    """Whether Orthanc's older ``route`` returns without an answer for this parsed body.
    ``tag_of(key)``: the tag a key names (hexadecimal or keyword), None if none."""
    if not isinstance(value, dict):
        return True
    given = {tag_of(key): _as_string(v) for key, v in value.items() if not isinstance(v, (list, dict))}
    # each group: at least one of its tags must have more than two characters
    return any(all(len(given.get(tag, "")) <= 2 for tag in group) for group in _IDENTIFYING.get(route, ()))
