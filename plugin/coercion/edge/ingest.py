"""Everything that enters Orthanc: the ingest callbacks.

* IncomingHttpRequestFilter: remembers the client address of the request this thread serves
  (REST and DICOMweb uploads carry no AE title; rules may match on ``sending-host``).
* ReceivedInstanceCallback (before anything is stored, for every origin): uploads through
  REST ``POST /instances`` (single files and ZIP archives), DICOMweb STOW-RS, WebDAV, Lua and
  other plugins are coerced here with the C_STORE_RQ/SCU rules that name no sending AET.
  DICOM instances are decided here too, so that Orthanc parses and stores each once, but
  Orthanc does not tell this callback the calling AE title: when rules look at AE titles or
  hosts, the decision is made for the AE title that the C-STORE filter last saw in this
  thread (Orthanc serves each association in one worker thread) and checked by the filter.
* IncomingCStoreInstanceFilter (DICOM C-STORE, also the instances that C-MOVE retrieves
  bring in; called after the callback above, in the same thread, with the calling AE title):
  accepts a decision that was made for the right AE title (or one that picks the same rule)
  and the active rules. Otherwise (the first association of a worker thread, or another AE
  title than the thread's last) it decides again on the data as received, stores the right
  copy through ``POST /instances`` and discards what Orthanc holds with status B000
  ("Coercion of Data Elements"), so only the right copy is ever written. That path ingests
  the instance twice (bench/README.md); it costs the first instance of such an association.
  Orthanc 1.13 answers an instance it holds already (OverwriteInstances "Never", the default,
  or "IfChanged") with Success before any filter is called: a guess whose coerced copy Orthanc
  holds already is therefore not handed to Orthanc, and the filter decides as for a first
  association (else another AE title's C-STORE of the same file would be lost).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import orthanc

from ..engine.dicomio import DicomError, read_instance
from ..exchanges.crosssite import cross_site_refusal
from ..exchanges.orthanc_api import instance_id
from ..rules import RuleSet, Transaction
from ..service import COERCED, DISCARDED, REJECTED, UNCHANGED, Decision
from .peers import job_refusal, stow_refusal
from .views import view_user_refusal
from .state import (
    client_address,
    configured_host,
    log_audit,
    log_event,
    log_failure,
    orthanc_release,
    remember_client_address,
    state,
)

STATUS_COERCED = 0xB000  # Warning: Coercion of Data Elements
STATUS_DISCARDED = 0xB006  # Warning: Elements Discarded
STATUS_CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand (unreadable data)
STATUS_PROCESSING_FAILURE = 0x0110  # Failure: Processing failure

_ORIGIN_NAMES = {
    orthanc.InstanceOrigin.DICOM_PROTOCOL: "DICOM",
    orthanc.InstanceOrigin.REST_API: "REST",
    orthanc.InstanceOrigin.PLUGIN: "PLUGIN",
    orthanc.InstanceOrigin.LUA: "LUA",
    orthanc.InstanceOrigin.WEB_DAV: "WEBDAV",
    orthanc.InstanceOrigin.UNKNOWN: "UNKNOWN",
}

# Keyed by thread id (see state.client_address).
_reposting: set[int] = set()
_last_calling_aet: dict[int, str] = {}  # the AE title the C-STORE filter last saw in a thread


@dataclass(frozen=True)
class _Early:
    """A DICOM instance decided in the received-instance callback, for the C-STORE filter."""

    ruleset: RuleSet  # the rules it was decided with
    calling_aet: str | None  # the AE title it was decided for; None: no rule looks at one
    decision: Decision
    received: bytes | None  # what the SCU sent, kept while Orthanc holds something else


_early: dict[int, _Early] = {}


# How a received-instance callback refuses an instance in Orthanc 1.10: an exception would
# make Orthanc store the original (fail open), DISCARD answers the client with success; a
# "modified" instance that is not DICOM makes Orthanc refuse it: HTTP 400 for REST, a DIMSE
# failure (A700) for C-STORE, a failed instance for STOW-RS. The audit line says why.
_REFUSE = (orthanc.ReceivedInstanceAction.MODIFY, b"COERCION-REFUSED")


def _store_transaction(calling_aet: str | None, host: str | None = None) -> Transaction:
    if calling_aet is not None:
        host = configured_host(calling_aet)  # DICOM: the host configured for the AE title
    return Transaction("C_STORE_RQ", "SCU", calling_aet, state.orthanc_aet, host)


# -- callbacks ----------------------------------------------------------------------------


def on_http_request(uri, **request):
    """Every HTTP request Orthanc serves, before its route: remember the client's address, and
    refuse state-changing requests from other sites (exchanges/crosssite.py) on every route,
    Orthanc's own and /coercion's. Orthanc answers a refusal 403; the audit line says why."""
    try:
        remember_client_address(request.get("ip"))
        method = _method_name(request.get("method"))
        reason = cross_site_refusal(method, request.get("headers") or {}, state.service.settings.allowed_origins)
        if reason is not None:
            log_event("cross-site-request", outcome=f"refused: {reason}", method=method,
                      route=str(uri).split("?", 1)[0][:200])
            return False
        reason = view_user_refusal(str(uri), request.get("headers") or {})
        if reason is not None:  # a view's user reaches its view only
            log_event("view", outcome=f"refused: {reason}", method=method, route=str(uri)[:200])
            return False
        reason = stow_refusal(str(uri), method) or job_refusal(str(uri), method)
        if reason is not None:  # Orthanc answers 403; the audit line says why
            log_event("send", outcome=f"refused: {reason}", method=method, route=str(uri)[:200])
            return False
        return True
    except Exception:  # fail closed: an error here must not let a request through unchecked
        log_failure("HTTP request filter")
        return False


def _method_name(method) -> str:
    """Orthanc's HttpMethod (an enumeration value in the Python plugin) as its name."""
    for name in ("GET", "POST", "PUT", "DELETE"):
        if method == getattr(orthanc.HttpMethod, name, None):
            return name
    return str(method).rsplit(".", 1)[-1].upper()


def on_received_instance(data, origin):
    try:
        return _received_instance(data, origin)
    except Exception:  # never let Orthanc see an exception here: it would store the original
        log_failure("refusing an instance after an internal error")
        return _REFUSE


def _received_instance(data, origin):
    me = threading.get_ident()
    _early.pop(me, None)  # every instance meets this callback first, in its own thread
    if me in _reposting:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None  # our own coerced copy
    if origin == orthanc.InstanceOrigin.DICOM_PROTOCOL:
        return _received_dicom(me, data)
    host = client_address() if origin != orthanc.InstanceOrigin.LUA else None
    decision = state.service.coerce(data, _store_transaction(None, host))
    if decision.action == UNCHANGED:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
    log_audit(decision, _ORIGIN_NAMES.get(origin, str(origin)), None)
    if decision.action == COERCED:
        return orthanc.ReceivedInstanceAction.MODIFY, decision.data
    if decision.action == DISCARDED:
        return orthanc.ReceivedInstanceAction.DISCARD, None
    return _REFUSE


def _received_dicom(me: int, data: bytes):
    ruleset = state.service.ruleset
    if ruleset.peer_independent("C_STORE_RQ", "SCU"):
        calling_aet = None  # the data alone decides
    else:
        calling_aet = _last_calling_aet.get(me)
        if calling_aet is None:
            return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None  # the filter decides
    # A guess of the AE title is provisional: counted and linked once the filter confirms it.
    # Without a guess, what is coerced is linked now and counted by the filter, which knows
    # the calling AE title (statistics are per AE title); a refusal here is counted without one.
    decision = state.service.coerce(data, _store_transaction(calling_aet), ruleset, provisional=calling_aet is not None,
                                    counted=calling_aet is not None)
    if decision.action == COERCED:
        if calling_aet is not None and orthanc_release().known_instances_skip_filters \
                and _already_stored(decision.data):
            # Orthanc 1.13 (OverwriteInstances "Never" or "IfChanged") answers an instance it
            # holds already with Success before any filter: the guess would never be checked
            # (a wrong one loses what the caller sent). The filter decides, as for a first
            # association; if Orthanc holds the original too, neither copy needs storing.
            return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
        _early[me] = _Early(ruleset, calling_aet, decision, data)
        return orthanc.ReceivedInstanceAction.MODIFY, decision.data
    if calling_aet is None and decision.action in (REJECTED, DISCARDED):
        # Final (no AE title can change it): refuse here, whether or not a filter follows.
        log_audit(decision, "DICOM", None)
        return _REFUSE if decision.action == REJECTED else (orthanc.ReceivedInstanceAction.DISCARD, None)
    # Unchanged, or refused for an AE title that may not be the caller's: the filter answers
    # the SCU with the DIMSE status that says why, or decides again for the right AE title.
    _early[me] = _Early(ruleset, calling_aet, decision, None)
    return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None


def _already_stored(data: bytes) -> bool:
    """Whether Orthanc holds an instance with the identifiers of ``data`` (the same patient ID
    and UIDs, whatever else it holds). Unsure (unreadable, not found, an error): False."""
    try:
        header = read_instance(data).header
        orthanc.RestApiGet("/instances/" + instance_id(*(str(header.get(name) or "").strip() for name in (
            "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))))
    except Exception:  # not stored (Orthanc answers 404), or not known: as before
        return False
    return True


def on_cstore_instance(instance):
    try:
        return _cstore_instance(instance)
    except Exception:
        log_failure("refusing an instance after an internal error")
        return STATUS_PROCESSING_FAILURE


def _cstore_instance(instance):
    me = threading.get_ident()
    aet = instance.GetInstanceRemoteAet()
    _last_calling_aet[me] = aet
    early = _early.pop(me, None)
    if early and early.ruleset is state.service.ruleset and (early.calling_aet in (None, aet) or _same_rule(early, aet, instance)):
        if early.calling_aet is not None:  # counted for the caller (_same_rule: another AE title than guessed)
            state.service.confirm(replace(early.decision, calling_aet=aet))  # raises if the linkage store fails: Orthanc drops the copy
        elif early.decision.action == COERCED:  # linked already; counted now that the AE title is known
            state.service.count(replace(early.decision, calling_aet=aet))
        return _answer(early.decision, aet, stored=True)
    # Not decided yet, or decided for another AE title or older rules: decide on what the
    # SCU sent. Orthanc holds the early copy: any status but 0 drops it.
    received = early.received if early and early.received is not None else instance.GetInstanceData()
    decision = state.service.coerce(received, _store_transaction(aet))
    if early is None or early.received is None:
        del received  # the re-post below holds the coerced copy: not both (a cine is large)
        return _answer(decision, aet, stored=False)
    if decision.action == UNCHANGED:  # an early coerced copy of data that no rule wants coerced
        return _repost(received, None, aet)
    return _answer(decision, aet, stored=False)


def _same_rule(early: _Early, aet: str, instance) -> bool:
    """Decided for another AE title, but the right one picks the same rule (or none): the
    coercion depends on the rule and the data only, so what Orthanc holds is right."""
    if early.decision.action not in (UNCHANGED, COERCED):
        return False
    received = early.received if early.received is not None else instance.GetInstanceData()
    return state.service.rule_for(received, _store_transaction(aet), early.ruleset) is early.decision.rule


def _answer(decision, aet: str, stored: bool) -> int:
    """The DIMSE status for a decision; ``stored``: Orthanc holds the right copy already."""
    if decision.action == UNCHANGED:
        return 0
    if decision.action == COERCED:
        if stored:
            log_audit(decision, "DICOM", aet)
            return 0
        return _repost(decision.data, decision, aet)
    log_audit(decision, "DICOM", aet)
    if decision.action == DISCARDED:
        return STATUS_DISCARDED
    return STATUS_CANNOT_UNDERSTAND if "unreadable DICOM" in decision.reason else STATUS_PROCESSING_FAILURE


def _repost(data: bytes, decision, aet: str) -> int:
    """Store ``data`` through the REST API, uncoerced, and drop what Orthanc holds."""
    me = threading.get_ident()
    _reposting.add(me)
    try:
        if state.routes_registered:  # routes look at who sent it; Orthanc records the REST API
            uid = decision.outcome.sop_instance_uid if decision is not None else _sop_instance_uid(data)
            state.forwards.note_reposted(uid, aet)  # before it is stored: its change may be routed at once
        orthanc.RestApiPost("/instances", data)
    except Exception as exc:  # storage failed: the SCU must not think it was stored
        orthanc.LogError(f"coercion: storing the instance failed: {exc}")
        return STATUS_PROCESSING_FAILURE
    finally:
        _reposting.discard(me)
    if decision is not None:
        log_audit(decision, "DICOM", aet)
    return STATUS_COERCED


def _sop_instance_uid(data: bytes) -> str:
    try:
        return str(read_instance(data).header.get("SOPInstanceUID", ""))
    except DicomError:
        return ""
