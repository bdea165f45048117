"""De-identified DICOMweb views: QIDO-RS and WADO-RS in the pseudonyms of one outgoing rule.

A view (``Coercion.Views``) is served under ``/coercion/dicom-web/{view}/``, as a viewer or
dicomweb-client reads a DICOMweb server:

* QIDO-RS (``studies``, ``series``, ``instances``, and below a study or series): the C-FIND path
  of a caller in the rule's world (``find_coercion``): a search by a pseudonym, a hashed patient
  ID or a shifted date finds the original, and every answer is de-identified with the rule;
* WADO-RS: a study, series or instance as multipart DICOM (each instance coerced with the rule
  as it is sent: one instance in memory at a time), ``metadata`` (the coerced headers as DICOM
  JSON, without the pixel data), ``frames/{n}`` (of the coerced instance: Clean Pixel Data
  applies).

Only what was handed out can be retrieved: a pseudonymous UID is mapped back through the
linkage store, which knows the UIDs the view's answers gave. A view opens with its credential
(``X-Coercion-Token``) or for the Orthanc users it names, who reach nothing else of Orthanc
(the HTTP filter refuses every other route for them).
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path

import orthanc
from pydicom.datadict import tag_for_keyword

from ..checks import rest_api_authenticated
from ..configuration import ViewSettings
from ..exchanges.find import QUERY_RETRIEVE_LEVEL, FindBehaviour, FindError, FindRequest, OrthancFind
from ..exchanges.find_coercion import coerced_answers
from ..rules import Rule
from ..service import COERCED
from .answers import answer_json
from .find import PluginRest, find_settings
from .state import audit, log_event, orthanc_release, state

PREFIX = "/coercion/dicom-web/"
DICOM_JSON = "application/dicom+json"
_LEVELS = {"studies": "Study", "series": "Series", "instances": "Instance"}
_LEVEL_NAMES = {"Study": "STUDY", "Series": "SERIES", "Instance": "IMAGE"}
# What Orthanc's DICOMweb plugin answers at each level (QidoRs.cpp, PS3.18 Table 6.7.1-2):
# Retrieve URL and Specific Character Set are added to each answer.
_RETURNED = {
    "Study": (0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00080201, 0x00100010,
              0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010, 0x00201206, 0x00201208),
    "Series": (0x00080060, 0x00080201, 0x0008103E, 0x0020000E, 0x00200011, 0x00201209, 0x00400244, 0x00400245,
               0x00400275),
    "Instance": (0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00200013, 0x00280010, 0x00280011, 0x00280100,
                 0x00280008),
}
_UID_OF = {"Study": 0x0020000D, "Series": 0x0020000E, "Instance": 0x00080018}
_LEFT_OUT = (QUERY_RETRIEVE_LEVEL, 0x00080054)  # Query/Retrieve Level, Retrieve AE Title: C-FIND's, not QIDO's
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
MAX_LIMIT = 1000  # answers of one search without a limit of its own


class ViewError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def load_views(views: dict[str, ViewSettings], config: dict) -> None:
    """The views and their credentials (read from their files once, at start-up). A view's
    users must be Orthanc's own (RegisteredUsers, with its authentication on): the plugin trusts
    the user name of a request only because Orthanc checked its password."""
    users = (config.get("RegisteredUsers") or {}) if rest_api_authenticated(config) else {}
    for view in views.values():
        unknown = [user for user in view.users if user not in users]
        if unknown:
            raise ValueError(f"Coercion.Views.{view.name}.Users: {', '.join(map(repr, unknown))} not among "
                             "RegisteredUsers of an Orthanc whose AuthenticationEnabled is true: a view's user is "
                             "one Orthanc authenticates")
    state.views = views
    state.view_tokens = {}
    for view in views.values():
        if view.token_file:
            token = Path(view.token_file).read_text(encoding="utf-8").strip()
            if len(token) < 16:
                raise ValueError(f"Coercion.Views.{view.name}.TokenFile: the credential must be at least 16 "
                                 "characters")
            state.view_tokens[view.name] = token
    state.view_of_user = {user: view.name for view in views.values() for user in view.users}


def _basic_user(headers: dict) -> str | None:
    auth = str(headers.get("authorization", ""))
    if not auth.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(auth[6:].strip()).decode("utf-8").split(":", 1)[0]
    except (ValueError, UnicodeDecodeError):
        return None


def view_user_refusal(uri: str, headers: dict) -> str | None:
    """Why a request of an Orthanc user a view names is refused (anything but its view), or None."""
    if not state.view_of_user:
        return None
    user = _basic_user(headers)
    view = state.view_of_user.get(user) if user is not None else None
    if view is None or uri.startswith(f"{PREFIX}{view}/") or uri.rstrip("/") == f"{PREFIX}{view}":
        return None
    return f"user of view {view!r}: only {PREFIX}{view}/ is open to it"


def _may_open(view: ViewSettings, headers: dict) -> bool:
    token = state.view_tokens.get(view.name)
    given = str(headers.get("x-coercion-token", "")).strip()
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return True
    return _basic_user(headers) in view.users


def view_request(output, request, route, match):
    """``/coercion/dicom-web/{view}/...``: the view's credential, then QIDO-RS or WADO-RS."""
    view = state.views.get(match.group("view"))
    if view is None:
        return answer_json(output, {"error": f"no view {match.group('view')!r}", "status": 404}, 404)
    if not _may_open(view, request.get("headers", {})):
        log_event("view", route=route[:200], outcome="refused: bad or missing credential", view=view.name)
        return answer_json(output, {"error": "this view's credential (X-Coercion-Token) or a user it names is "
                                             "required", "status": 403}, 403)
    if request["method"] != "GET":
        return output.SendMethodNotAllowed("GET")
    rule = state.service.ruleset.by_name(view.rule)
    if rule is None or rule.dimse != "C_STORE_RQ" or rule.role != "SCP" or rule.uri is None:
        return answer_json(output, {"error": f"view {view.name!r}: its rule {view.rule!r} is not an active "
                                             "outgoing rule (C_STORE_RQ, role SCP, with a uri)", "status": 503}, 503)
    parts = [p for p in match.group("path").split("/") if p]
    base = f"{PREFIX}{view.name}"
    try:
        if parts and parts[-1] in _LEVELS and len(parts) in (1, 3, 5):
            return _search(output, request, parts, rule, base, view)
        return _retrieve(output, parts, rule, view)
    except ViewError as exc:
        return answer_json(output, {"error": str(exc), "status": exc.status}, exc.status)


# -- QIDO-RS ---------------------------------------------------------------------------------

def _tag(key: str) -> int | None:
    key = key.strip()
    if len(key) == 8:
        try:
            return int(key, 16)
        except ValueError:
            pass
    return tag_for_keyword(key)


def _search(output, request, parts: list[str], rule: Rule, base: str, view: ViewSettings):
    level = _LEVELS[parts[-1]]
    if len(parts) > 1 and (parts[0] != "studies" or (len(parts) == 5 and parts[2] != "series")
                           or (len(parts) == 3 and level == "Study")):
        raise ViewError(404, "no such QIDO-RS resource")
    keys, limit, offset = _query(level, parts, request.get("get", {}) or {})
    started = time.perf_counter()
    query = FindRequest.from_pairs(sorted([(QUERY_RETRIEVE_LEVEL, _LEVEL_NAMES[level]), *keys.items()]))
    service = state.service
    finder = OrthancFind(PluginRest, state.find_settings if state.find_registered else find_settings(state.config),
                         FindBehaviour.of(orthanc_release()))
    world = service.deidentifier(rule)
    try:
        datasets, _, handed_out = coerced_answers(finder, query, world, world, service.store,
                                                  offset + (limit or MAX_LIMIT), present_only=True)
    except FindError as exc:
        raise ViewError(400, str(exc)) from None
    service.record_find(rule, len(datasets), handed_out, time.perf_counter() - started, None)
    online = orthanc_release().resource_finder
    answers = []
    for ds in datasets[offset:offset + (limit or MAX_LIMIT)]:
        entry = {k: v for k, v in ds.to_json_dict().items() if int(k, 16) not in _LEFT_OUT}
        entry["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        entry["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base, ds, level)]}
        if level == "Instance" and online:  # a tag Orthanc's ResourceFinder computes (1.12.5)
            entry["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        answers.append(dict(sorted(entry.items())))
    audit("view-search", view=view.name, rule=rule.name, level=level, answers=len(answers))
    return output.AnswerBuffer(json.dumps(answers), DICOM_JSON)


def _query(level: str, parts: list[str], args: dict) -> tuple[dict[int, str], int, int]:
    """A QIDO-RS search as C-FIND keys (tag: value, "" for a return key), limit and offset, read
    as Orthanc's DICOMweb plugin reads them (QidoRs.cpp)."""
    keys: dict[int, str] = {tag: "" for tag in _RETURNED[level]}
    for tag in _UID_OF.values():
        if tag == _UID_OF[level] or (level != "Study" and tag != _UID_OF["Instance"]):
            keys.setdefault(tag, "")
    try:
        limit, offset = int(args.get("limit", 0) or 0), int(args.get("offset", 0) or 0)
    except ValueError:
        raise ViewError(400, "limit and offset are whole numbers") from None
    if limit < 0 or offset < 0:
        raise ViewError(400, "limit and offset are whole numbers")
    filtered: set[int] = set()
    for key, value in args.items():
        if key in ("limit", "offset", "fuzzymatching"):
            continue
        if key == "includefield":
            keys.update({tag: "" for tag in map(_tag, str(value).split(",")) if tag is not None and tag not in keys})
            continue
        tag = _tag(key)
        if tag is None:
            raise ViewError(400, f"not a DICOM attribute: {key!r}")
        keys[tag] = str(value).replace("\\", "").replace(",", "\\")
        filtered.add(tag)
    # A series or instance search not filtered on the study by a query key (the path's does not
    # count) answers the study's attributes too, an instance search not filtered on the series
    # the series' too.
    if level in ("Series", "Instance") and _UID_OF["Study"] not in filtered:
        keys.update({tag: "" for tag in _RETURNED["Study"] if tag not in keys})
    if level == "Instance" and _UID_OF["Series"] not in filtered:
        keys.update({tag: "" for tag in _RETURNED["Series"] if tag not in keys})
    if len(parts) >= 3:
        keys[_UID_OF["Study"]] = parts[1]
    if len(parts) == 5:
        keys[_UID_OF["Series"]] = parts[3]
    return keys, limit, offset


def _retrieve_url(base: str, ds, level: str) -> str:
    url = f"{base}/studies/{ds.get('StudyInstanceUID', '')}"
    if level in ("Series", "Instance"):
        url += f"/series/{ds.get('SeriesInstanceUID', '')}"
    if level == "Instance":
        url += f"/instances/{ds.get('SOPInstanceUID', '')}"
    return url


# -- WADO-RS ---------------------------------------------------------------------------------

def _instances(parts: list[str]) -> list[str]:
    """The Orthanc IDs of the instances a WADO-RS path names by its pseudonymous UIDs (404 for
    a UID the view never handed out, or a series or instance not in the study named)."""
    uids = [parts[i] for i in (1, 3, 5) if i < len(parts)]
    originals = state.service.store.original_uids(uids)
    if any(uid not in originals for uid in uids):
        raise ViewError(404, "no such resource in this view (a UID it has not handed out)")
    levels = ("Study", "Series", "Instance")[:len(uids)]
    ids: list[str] = []
    for uid, level in zip(uids, levels):
        found = [a["ID"] for a in json.loads(orthanc.RestApiPost("/tools/lookup", originals[uid]))
                 if a.get("Type") == level]
        if not found:
            raise ViewError(404, "no such resource in this view")
        ids.append(found[0])
    for parent, child, kind in zip(ids, ids[1:], ("series", "instances")):  # each in the one before
        resource = json.loads(orthanc.RestApiGet(f"/{kind}/{child}"))
        if resource.get("ParentStudy" if kind == "series" else "ParentSeries") != parent:
            raise ViewError(404, "no such resource in this view")
    folder = {"Study": "studies", "Series": "series"}.get(levels[-1])
    if folder is None:
        return [ids[-1]]
    return [i["ID"] for i in json.loads(orthanc.RestApiGet(f"/{folder}/{ids[-1]}/instances"))]


class _Handed:
    """The UIDs a retrieve hands out, recorded in the linkage store once, at its end."""

    def __init__(self) -> None:
        self.uids: list[tuple[str, str]] = []

    def __enter__(self) -> "_Handed":
        return self

    def __exit__(self, *_) -> None:
        if self.uids:
            state.service.store.record_uids(self.uids)


def _coerced(instance: str, rule: Rule, view: ViewSettings, handed: _Handed, header_only: bool = False):
    """The instance in the view's pseudonyms (its bytes, or its header): never the original."""
    decision = state.service.coerce_with(rule, orthanc.RestApiGet(f"/instances/{instance}/file"), linked=False,
                                         header_only=header_only)
    if decision.action != COERCED:
        audit("view-retrieve", refused=True, view=view.name, rule=rule.name, instance=instance,
              outcome=f"refused: {decision.reason}")
        raise ViewError(500, f"an instance could not be de-identified ({decision.reason}); nothing of it was sent")
    handed.uids.extend(decision.outcome.uids)
    return decision.header if header_only else decision.data


def _resource(parts: list[str]) -> bool:
    """Whether ``parts`` name a study, a series of it or an instance of that."""
    return (len(parts) in (2, 4, 6) and parts[0] == "studies" and (len(parts) < 4 or parts[2] == "series")
            and (len(parts) < 6 or parts[4] == "instances"))


def _retrieve(output, parts: list[str], rule: Rule, view: ViewSettings):
    if parts[-1:] == ["metadata"] and _resource(parts[:-1]):
        return _metadata(output, parts[:-1], rule, view)
    if len(parts) == 8 and parts[6] == "frames" and _resource(parts[:6]):
        return _frames(output, parts[:6], parts[7], rule, view)
    if not _resource(parts):
        raise ViewError(404, "no such WADO-RS resource")
    instances = _instances(parts)
    with _Handed() as handed:
        first = _coerced(instances[0], rule, view, handed)  # a failure before anything is sent is answered
        output.StartMultipartAnswer("related", "application/dicom")
        output.SendMultipartItem(first)
        for instance in instances[1:]:
            try:
                output.SendMultipartItem(_coerced(instance, rule, view, handed))
            except ViewError:  # fail closed: the answer stops here, without the instance
                break
    audit("view-retrieve", view=view.name, rule=rule.name, instances=len(instances))


def _metadata(output, parts: list[str], rule: Rule, view: ViewSettings):
    answers = []
    with _Handed() as handed:
        headers = [_coerced(instance, rule, view, handed, header_only=True) for instance in _instances(parts)]
    for header in headers:
        for tag in _PIXEL_TAGS:
            if tag in header:
                del header[tag]
        answers.append(dict(sorted(header.to_json_dict().items())))
    audit("view-metadata", view=view.name, rule=rule.name, instances=len(answers))
    return output.AnswerBuffer(json.dumps(answers), DICOM_JSON)


def _frames(output, parts: list[str], numbers: str, rule: Rule, view: ViewSettings):
    import io

    import pydicom
    from pydicom.encaps import generate_frames

    try:
        wanted = [int(n) for n in numbers.split(",")]
    except ValueError:
        raise ViewError(400, "frame numbers are whole numbers from 1, separated by commas") from None
    (instance,) = _instances(parts)
    with _Handed() as handed:
        ds = pydicom.dcmread(io.BytesIO(_coerced(instance, rule, view, handed)))
    if "PixelData" not in ds:
        raise ViewError(404, "the instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if any(not 1 <= n <= count for n in wanted):
        raise ViewError(404, f"the instance has {count} frame(s)")
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    else:
        size = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * ds.BitsAllocated // 8
        frames = [ds.PixelData[i * size:(i + 1) * size] for i in range(count)]
    output.StartMultipartAnswer("related", "application/octet-stream")
    for n in wanted:
        output.SendMultipartItem(bytes(frames[n - 1]))
    audit("view-frames", view=view.name, rule=rule.name, frames=len(wanted))
