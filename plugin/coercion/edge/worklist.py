"""The Modality Worklist SCP: worklist C-FIND answered from the folder Orthanc's configuration
names (``Worklists``: ``Enable``, ``Database``, ``FilterIssuerAet``, ``LimitAnswers``, the
settings of Orthanc's ModalityWorklists sample plugin), and ``/coercion/worklists``.

A caller no rule names is answered as the sample plugin answers: the items matched by
Orthanc's own matcher, in the folder's order, the answers extracted by Orthanc, the same
limit. A caller that C_FIND_RQ / C_FIND_RSP rules for the worklist match asks and is answered
in its de-identified world: every item is de-identified with the rule's profile (so the
pseudonymous Patient ID, Study Instance UID and date shift are those the caller gets by
C-STORE), the caller's query is matched against that by Orthanc's matcher, and what it is
given is linked so that it can query and send back by it.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass

import orthanc
from pydicom import dcmread

from ..exchanges.worklist import (
    ITEM_ID,
    ItemViews,
    WorklistError,
    WorklistFolder,
    encode,
    handed_out,
    item_from_json_body,
    query_station,
    read_item,
    station_only,
    station_query,
    without_station,
)
from ..rules import MODALITY_WORKLIST_FIND
from .state import Refused, audit, log_failure, state

_views = ItemViews()


@dataclass(frozen=True)
class WorklistSettings:
    """The ``Worklists`` section of orthanc.json, read as the sample plugin reads it."""

    folder: str
    filter_issuer_aet: bool = False
    limit_answers: int = 0


def worklist_settings(config: dict) -> WorklistSettings | None:
    """None when worklists are not enabled; ValueError for settings the sample plugin refuses."""
    section = config.get("Worklists") or {}
    if not isinstance(section, dict) or section.get("Enable") is not True:
        return None
    folder = section.get("Database")
    if not isinstance(folder, str) or not folder:
        raise ValueError('the configuration option "Worklists.Database" must contain a path')
    limit = section.get("LimitAnswers", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError('the configuration option "Worklists.LimitAnswers" must be a whole number of at least 0')
    filter_issuer = section.get("FilterIssuerAet", False)
    if not isinstance(filter_issuer, bool):
        raise ValueError('the configuration option "Worklists.FilterIssuerAet" must be true or false')
    return WorklistSettings(folder, filter_issuer, limit)


def find_matcher(query: bytes):
    """Orthanc's C-FIND matcher for ``query``: its match function (``FindMatcherIsMatch`` up to
    orthanc-python 5, ``IsMatch`` since the wrapper is generated from Orthanc's code model)."""
    matcher = orthanc.CreateFindMatcher(query)
    return getattr(matcher, "IsMatch", None) or matcher.FindMatcherIsMatch


def on_worklist_connection(answers, query, connection) -> None:
    """The worklist callback with the DICOM connection (orthanc-python 7.0): the caller's host too."""
    on_worklist(answers, query, connection.GetConnectionRemoteAet(), connection.GetConnectionCalledAet(),
                connection.GetConnectionRemoteIp())


def on_worklist(answers, query, issuer_aet, called_aet, host: str | None = None) -> None:
    try:
        _answer(answers, query, issuer_aet, called_aet, host)
    except Exception:  # fail closed: the C-FIND fails rather than answer unmodified
        log_failure(f"worklist C-FIND from {issuer_aet!r} failed")
        raise Refused("the worklist C-FIND failed; nothing was answered") from None


def _answer(answers, query, issuer_aet: str, called_aet: str, host: str | None) -> None:
    started = time.perf_counter()
    service, settings = state.service, state.worklist_settings
    query_bytes = query.WorklistGetDicomQuery()
    parsed: list = []

    def query_dataset():
        if not parsed:
            parsed.append(dcmread(io.BytesIO(query_bytes), force=True))
        return parsed[0]

    rq, rsp = service.find_rules(issuer_aet, called_aet, query_dataset, sop_class_uid=MODALITY_WORKLIST_FIND,
                                 host=host)
    world = service.deidentifier(rq or rsp) if (rq or rsp) else None
    if world is None:  # Orthanc's sample plugin, to the letter
        if settings.filter_issuer_aet:
            # Matching with the query narrowed to the caller's station; the answers are still
            # extracted by the query as asked (Orthanc's WorklistAddAnswer).
            matches = find_matcher(encode(station_query(query_dataset(), issuer_aet)))
        else:
            matches = query.WorklistIsMatch
        station_matches = None
    else:
        # The caller asks in its de-identified world: its query is matched against each item as
        # the rule's profile shows it, but for the Scheduled Station AE Title, which names the
        # modality (the caller itself, with calling-aet-as-station), not the patient: matched
        # against the item as scheduled, whatever the profile shows of it.
        station = issuer_aet if (settings.filter_issuer_aet or (rq is not None and rq.calling_aet_as_station)) \
            else query_station(query_dataset())
        station_matches = find_matcher(encode(station_only(station))) \
            if station else None
        if query_station(query_dataset()) is not None:
            matches = find_matcher(encode(without_station(query_dataset())))
        else:
            matches = query.WorklistIsMatch
    shown = service.deidentifier(rsp) if rsp else world
    found, given = 0, []
    for item in state.worklists.items():
        if station_matches is not None and not station_matches(item.data):
            continue
        if world is None:
            seen = sent = item.data
        else:
            seen, outcome = _views.view(item, world)
            sent, outcome = (seen, outcome) if shown is world else _views.view(item, shown)
        if not matches(seen):
            continue
        answers.WorklistAddAnswer(query, sent)
        if world is not None:
            given.extend(handed_out(outcome))
        if settings.limit_answers and found >= settings.limit_answers:
            # The sample plugin counts after adding: LimitAnswers + 1 answers, marked incomplete.
            answers.WorklistMarkIncomplete()
            break
        found += 1
    if world is not None:
        rule = rsp or rq
        service.record_find(rule, found, given, time.perf_counter() - started, issuer_aet)
        audit("worklist-c-find", rule=rule.name, request_rule=rq.name if rq else None,
              calling_aet=issuer_aet, called_aet=called_aet, answers=found)


# -- /coercion/worklists --------------------------------------------------------------------

def worklists_route(route: str, method: str, request: dict):
    """(status, JSON-able answer) for /coercion/worklists[/{id}]; None if the route is not one.
    A refused item is answered with its status (413: too large, 400: not an item, too many
    elements, too deep), a folder gone with 503, each naming the limit or the path."""
    match = re.fullmatch(r"worklists(?:/([^/]+))?", route)
    if match is None:
        return None
    if state.worklists is None:
        return 404, {"error": 'worklists are not enabled: set "Worklists": {"Enable": true, "Database": "..."} '
                              "in the configuration", "status": 404}
    try:
        return _worklists(match.group(1), method, request)
    except WorklistError as exc:
        return exc.status, {"error": str(exc), "status": exc.status}


def _worklists(item_id: str | None, method: str, request: dict):
    if item_id is None:
        if method == "GET":
            expand = "expand" in (request.get("get") or {})
            return 200, [_describe(item, expand) for item in state.worklists.items()]
        if method == "POST":
            new = state.worklists.add(_item_of(request))
            return 200, {"ID": new, "Path": f"/coercion/worklists/{new}"}
        return 405, "GET, POST"
    if not ITEM_ID.fullmatch(item_id):
        return 404, {"error": f"no worklist item {item_id!r}", "status": 404}
    if method == "GET":
        item = state.worklists.get(item_id)
        return (200, _describe(item, True)) if item else (404, {"error": f"no worklist item {item_id}", "status": 404})
    if method == "DELETE":
        if state.worklists.delete(item_id):
            return 200, {}
        return 404, {"error": f"no worklist item {item_id}", "status": 404}
    return 405, "GET, DELETE"


def _item_of(request: dict):
    """The item a POST gives, DICOM or DICOM JSON; both forms are bounded, size first."""
    body = request.get("body", b"") or b""
    kind = (request.get("headers") or {}).get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/json", "application/dicom+json") or body[:1] in (b"{", b"["):
        return item_from_json_body(body)
    return read_item(body)


def _describe(item, expand: bool) -> dict:
    described = {"ID": item.id, "File": item.path.name, "Size": item.version[0]}
    if expand:
        try:
            described["Item"] = dcmread(io.BytesIO(item.data), force=True).to_json_dict()
        except Exception:
            described["Item"] = None  # unreadable: the RIS's to mend
    return described


def start_worklists(config: dict) -> bool:
    """Read the settings and register the worklist SCP; False when worklists are not enabled."""
    settings = worklist_settings(config)
    if settings is None:
        return False
    folder = WorklistFolder(settings.folder)
    if folder.prepare():  # FolderUnavailable (its parent is missing too): start-up stops, naming it
        orthanc.LogWarning(f"coercion: made the worklist folder {folder.folder.absolute()} (owner-only)")
    state.worklist_settings = settings
    state.worklists = folder
    if state.capabilities is not None and state.capabilities.worklist_with_connection:
        orthanc.RegisterWorklistCallback2(on_worklist_connection)  # the caller's host, for sending-host
    else:
        orthanc.RegisterWorklistCallback(on_worklist)
    orthanc.LogWarning(f"coercion: the worklist SCP answers from {settings.folder}")
    return True
