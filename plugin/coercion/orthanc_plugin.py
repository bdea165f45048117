"""The Orthanc edge: callbacks that turn Orthanc's events into plain calls of the service.

Imported by ``plugin/orthanc_entry.py`` inside Orthanc's Python plugin (API 4.0, Orthanc
1.10+). No rule logic lives here. The bindings, in the order data meets them:

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
  accepts a decision that was made for the right AE title and the active rules. Otherwise
  (the first association of a worker thread, or another AE title than the thread's last)
  it decides again on the data as received, stores the right copy through ``POST
  /instances`` and discards what Orthanc holds with status B000 ("Coercion of Data
  Elements"), so only the right copy is ever written. That path ingests the instance twice
  (bench/README.md); it costs the first instance of such an association, not the others.
* OnChangeCallback (only when routes exist at start-up): a new instance arms the routes
  (rules with ``forward``) that match it; a stable series or study makes its forwards due; a
  worker thread sends them.
* REST route ``/modalities/{id}/store`` (called instead of Orthanc's own): sends that an
  outgoing rule (C_STORE_RQ, role SCP) applies to are coerced and sent by storescu; the
  others go to Orthanc's route unchanged.
* MoveCallback (only when outgoing rules exist at start-up; it replaces Orthanc's C-MOVE
  SCP): C-MOVE retrieves go out the same way.
* REST routes under ``/coercion``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass

import orthanc

from ._quiet import quiet_pydicom
from .dicomio import DicomError, read_instance
from .forwarding import ForwardQueue
from .outgoing import RequestNotUnderstood, SendJob, SendJobs, parse_store_request, run_send_job
from .rules import RuleError, RuleSet, Transaction
from .storescu import Destination, SpoolingSender
from .service import (COERCED, DISCARDED, REJECTED, UNCHANGED, CoercionService, Decision, Settings,
                      audit_line)

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

service: CoercionService | None = None
_orthanc_aet = "ORTHANC"
_scu_timeout = 10  # Orthanc's DicomScuTimeout
_modality_hosts: dict[str, str] = {}
# Keyed by thread id: Orthanc's plugin gives each callback a fresh Python thread state, so
# threading.local() does not carry from one callback to the next in the same thread.
_client_host: dict[int, str | None] = {}
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


def _log_audit(decision, origin: str, calling_aet: str | None) -> None:
    line = audit_line(decision, origin, calling_aet)
    if decision.action == REJECTED:
        orthanc.LogError("coercion-audit " + line)
    else:
        orthanc.LogWarning("coercion-audit " + line)


def _store_transaction(calling_aet: str | None, host: str | None = None) -> Transaction:
    if calling_aet is not None:
        host = _modality_hosts.get(calling_aet)  # DICOM: the host configured for the AE title
    return Transaction("C_STORE_RQ", "SCU", calling_aet, _orthanc_aet, host)


# -- ingest -------------------------------------------------------------------------------


def on_http_request(uri, **request):
    _client_host[threading.get_ident()] = request.get("ip")
    return True


def on_received_instance(data, origin):
    try:
        return _received_instance(data, origin)
    except Exception:  # never let Orthanc see an exception here: it would store the original
        orthanc.LogError("coercion: refusing an instance after an internal error: " + traceback.format_exc(limit=3))
        return _REFUSE


def _received_instance(data, origin):
    me = threading.get_ident()
    _early.pop(me, None)  # every instance meets this callback first, in its own thread
    if me in _reposting:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None  # our own coerced copy
    if origin == orthanc.InstanceOrigin.DICOM_PROTOCOL:
        return _received_dicom(me, data)
    host = _client_host.get(me) if origin != orthanc.InstanceOrigin.LUA else None
    decision = service.coerce(data, _store_transaction(None, host))
    if decision.action == UNCHANGED:
        return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None
    _log_audit(decision, _ORIGIN_NAMES.get(origin, str(origin)), None)
    if decision.action == COERCED:
        return orthanc.ReceivedInstanceAction.MODIFY, decision.data
    if decision.action == DISCARDED:
        return orthanc.ReceivedInstanceAction.DISCARD, None
    return _REFUSE


def _received_dicom(me: int, data: bytes):
    ruleset = service.ruleset
    if ruleset.peer_independent("C_STORE_RQ", "SCU"):
        calling_aet = None  # the data alone decides
    else:
        calling_aet = _last_calling_aet.get(me)
        if calling_aet is None:
            return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None  # the filter decides
    # A guess of the AE title is provisional: counted and linked once the filter confirms it.
    decision = service.coerce(data, _store_transaction(calling_aet), ruleset, provisional=calling_aet is not None)
    if decision.action == COERCED:
        _early[me] = _Early(ruleset, calling_aet, decision, data)
        return orthanc.ReceivedInstanceAction.MODIFY, decision.data
    if calling_aet is None and decision.action in (REJECTED, DISCARDED):
        # Final (no AE title can change it): refuse here, whether or not a filter follows.
        _log_audit(decision, "DICOM", None)
        return _REFUSE if decision.action == REJECTED else (orthanc.ReceivedInstanceAction.DISCARD, None)
    # Unchanged, or refused for an AE title that may not be the caller's: the filter answers
    # the SCU with the DIMSE status that says why, or decides again for the right AE title.
    _early[me] = _Early(ruleset, calling_aet, decision, None)
    return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None


def on_cstore_instance(instance):
    try:
        return _cstore_instance(instance)
    except Exception:
        orthanc.LogError("coercion: refusing an instance after an internal error: " + traceback.format_exc(limit=3))
        return STATUS_PROCESSING_FAILURE


def _cstore_instance(instance):
    me = threading.get_ident()
    aet = instance.GetInstanceRemoteAet()
    _last_calling_aet[me] = aet
    early = _early.pop(me, None)
    if early and early.ruleset is service.ruleset and (early.calling_aet in (None, aet) or _same_rule(early, aet, instance)):
        if early.calling_aet is not None:
            service.confirm(early.decision)  # raises if the linkage store fails: Orthanc drops the copy
        return _answer(early.decision, aet, stored=True)
    # Not decided yet, or decided for another AE title or older rules: decide on what the
    # SCU sent. Orthanc holds the early copy: any status but 0 drops it.
    received = early.received if early and early.received is not None else instance.GetInstanceData()
    decision = service.coerce(received, _store_transaction(aet))
    if early is None or early.received is None:
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
    return service.rule_for(received, _store_transaction(aet), early.ruleset) is early.decision.rule


def _answer(decision, aet: str, stored: bool) -> int:
    """The DIMSE status for a decision; ``stored``: Orthanc holds the right copy already."""
    if decision.action == UNCHANGED:
        return 0
    if decision.action == COERCED:
        if stored:
            _log_audit(decision, "DICOM", aet)
            return 0
        return _repost(decision.data, decision, aet)
    _log_audit(decision, "DICOM", aet)
    if decision.action == DISCARDED:
        return STATUS_DISCARDED
    return STATUS_CANNOT_UNDERSTAND if "unreadable DICOM" in decision.reason else STATUS_PROCESSING_FAILURE


def _repost(data: bytes, decision, aet: str) -> int:
    """Store ``data`` through the REST API, uncoerced, and drop what Orthanc holds."""
    me = threading.get_ident()
    if service.ruleset.routes:  # routes look at who sent it; Orthanc records the REST API
        uid = decision.outcome.sop_instance_uid if decision is not None else _sop_instance_uid(data)
        _reposted_from[uid] = aet
    _reposting.add(me)
    try:
        orthanc.RestApiPost("/instances", data)
    except Exception as exc:  # storage failed: the SCU must not think it was stored
        orthanc.LogError(f"coercion: storing the instance failed: {exc}")
        return STATUS_PROCESSING_FAILURE
    finally:
        _reposting.discard(me)
    if decision is not None:
        _log_audit(decision, "DICOM", aet)
    return STATUS_COERCED


def _sop_instance_uid(data: bytes) -> str:
    try:
        return str(read_instance(data).header.get("SOPInstanceUID", ""))
    except DicomError:
        return ""


# -- routes: forwarding what was received ---------------------------------------------------

class _Bounded(OrderedDict):
    """A dict that forgets its oldest entries beyond ``limit`` (entries nobody collects)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)


_reposted_from: dict[str, str] = _Bounded(10000)  # SOP Instance UID of a re-posted copy -> calling AET
_forwards: ForwardQueue | None = None
_forward_wakeup = threading.Event()
_LEVEL_OF_WHEN = {"received": "Instance", "stable-series": "Series", "stable-study": "Study"}


def on_change(change_type, level, resource_id):
    try:
        if change_type == orthanc.ChangeType.NEW_INSTANCE and service.ruleset.routes:
            _route_instance(resource_id)
        elif change_type in (orthanc.ChangeType.STABLE_SERIES, orthanc.ChangeType.STABLE_STUDY) and _forwards:
            kind = "Series" if change_type == orthanc.ChangeType.STABLE_SERIES else "Study"
            if _forwards.stable(kind, resource_id):
                _forward_wakeup.set()
    except Exception:  # a route that cannot be evaluated is logged; the instance stays stored
        orthanc.LogError("coercion: routing failed: " + traceback.format_exc(limit=2).splitlines()[-1])


def _route_instance(instance_id: str) -> None:
    instance = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}"))
    metadata = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}/metadata?expand"))
    uid = instance.get("MainDicomTags", {}).get("SOPInstanceUID", "")
    calling_aet = _reposted_from.pop(uid, None)
    if calling_aet is not None or metadata.get("Origin") == "DicomProtocol":
        calling_aet = calling_aet or metadata.get("RemoteAET")
        host = _modality_hosts.get(calling_aet)
    else:
        calling_aet, host = None, metadata.get("RemoteIP")
    transaction = Transaction("C_STORE_RQ", "SCU", calling_aet, _orthanc_aet, host)
    header: list = []

    def dataset():
        if not header:
            try:
                header.append(read_instance(orthanc.RestApiGet(f"/instances/{instance_id}/file")).header)
            except DicomError:
                header.append(None)
        return header[0]

    parents = {"Instance": instance_id, "Series": instance.get("ParentSeries")}
    for route in service.routes_for(transaction, dataset):
        forward = route.forward
        level = _LEVEL_OF_WHEN[forward.when]
        if level not in parents:
            parents["Study"] = json.loads(orthanc.RestApiGet(f"/series/{parents['Series']}")).get("ParentStudy")
        for destination in forward.to:
            _forwards.arm(route.name, destination, level, parents[level], forward.when == "received",
                          forward.retries, forward.retry_interval)
        if forward.when == "received":
            _forward_wakeup.set()


def _forward_worker() -> None:
    while True:
        _forward_wakeup.wait(timeout=1.0)
        _forward_wakeup.clear()
        try:
            for row in _forwards.take_due():
                _send_forward(row)
        except Exception:
            orthanc.LogError("coercion: forwarding worker: " + traceback.format_exc(limit=2).splitlines()[-1])


def _send_forward(row: dict) -> None:
    modalities = json.loads(orthanc.RestApiGet("/modalities?expand"))
    found = [(name, m) for name, m in sorted(modalities.items()) if row["destination"] in (name, m.get("AET"))]
    if not found:
        _forwards.attempt_failed(row["id"], f"no modality named {row['destination']!r} in DicomModalities")
        return
    modality, peer = found[0]
    try:
        instances = _instances_of(row["resource"])
    except LookupError:
        _forwards.attempt_failed(row["id"], "the resource is no longer in Orthanc", retry=False)
        return
    try:
        planned = _plan_send(modality, peer, _outgoing_transaction(peer), instances, [row["resource"]], False,
                             service.ruleset)
    except UnsupportedPeer as exc:
        _forwards.attempt_failed(row["id"], str(exc), retry=False)
        return
    if planned is None:  # no outgoing rule applies: Orthanc's own send
        try:
            orthanc.RestApiPost(f"/modalities/{modality}/store",
                                json.dumps({"Resources": [row["resource"]], "Synchronous": True}))
        except orthanc.OrthancException as exc:
            state = _forwards.attempt_failed(row["id"], f"sending failed: {exc.args[1] if len(exc.args) > 1 else exc}")
            orthanc.LogWarning(f"coercion: forward {row['id']} to {modality}: attempt failed, now {state}")
            return
        _forwards.sent(row["id"])
        return
    job, run = planned
    run()
    if job.state == "Failure":
        state = _forwards.attempt_failed(row["id"], job.first_failure(), job.id)
        orthanc.LogWarning(f"coercion: forward {row['id']} to {modality}: attempt failed, now {state}")
    else:
        _forwards.sent(row["id"], job.id)


# -- outgoing C-STORE ---------------------------------------------------------------------

# How Orthanc turns its error codes into HTTP statuses (the rest are 500).
_HTTP_STATUS_OF_ERROR_NAME = {
    "INEXISTENT_FILE": 404, "INEXISTENT_ITEM": 404, "INEXISTENT_TAG": 404, "UNKNOWN_RESOURCE": 404,
    "BAD_FILE_FORMAT": 400, "BAD_PARAMETER_TYPE": 400, "BAD_REQUEST": 400, "PARAMETER_OUT_OF_RANGE": 400,
    "URI_SYNTAX": 400, "UNAUTHORIZED": 401, "FORBIDDEN_ACCESS": 403, "NOT_IMPLEMENTED": 501,
}
_HTTP_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                 500: "Internal Server Error", 501: "Not Implemented"}
_sends = SendJobs()


def _orthanc_error(output, uri: str, method: str, status: int, message: str, details: str | None = None,
                   **extra) -> None:
    """An error shaped like Orthanc's own, so that clients of the core route read it alike."""
    body = {"HttpError": _HTTP_REASONS.get(status, "Error"), "HttpStatus": status, "Message": message,
            "Method": method, "Uri": uri, **extra}
    if details:
        body["Details"] = details
    text = json.dumps(body, indent=3)
    output.SendHttpStatus(status, text, len(text.encode()))


def _passthrough_post(output, uri: str, body: bytes) -> None:
    """Let Orthanc's own route answer (a plugin's RestApiPost reaches the core route)."""
    try:
        answer = orthanc.RestApiPost(uri, body)
    except orthanc.OrthancException as exc:
        code, message = (exc.args + (None, ""))[:2]
        status = next((s for name, s in _HTTP_STATUS_OF_ERROR_NAME.items()
                       if getattr(orthanc.ErrorCode, name, None) == code), 500)
        # Orthanc 1.10 gives plugins the error code and message, not its details.
        return _orthanc_error(output, uri, "POST", status, str(message), OrthancError=str(message),
                              OrthancStatus=code)
    output.AnswerBuffer(answer, "application/json")


def _instances_of(resource_id: str) -> list[str]:
    """The instances of a patient, study, series or instance, by Orthanc ID."""
    for level in ("instances", "series", "studies", "patients"):
        try:
            orthanc.RestApiGet(f"/{level}/{resource_id}")  # 404 unless the ID is of this level
        except orthanc.OrthancException:
            continue
        if level == "instances":
            return [resource_id]
        return [i["ID"] for i in json.loads(orthanc.RestApiGet(f"/{level}/{resource_id}/instances"))]
    raise LookupError(resource_id)


def on_modality_store(output, uri, **request):
    try:
        return _modality_store(output, uri, request)
    except Exception:  # never send anything after an internal error; say so
        orthanc.LogError("coercion: outgoing store error: " + traceback.format_exc(limit=3))
        return _orthanc_error(output, uri, request.get("method", "POST"), 500,
                              "Internal error in the coercion plugin; nothing more was sent")


def _modality_store(output, uri, request):
    if request["method"] != "POST":
        return output.SendMethodNotAllowed("POST")
    modality, body = request["groups"][0], request.get("body", b"")
    ruleset = service.ruleset
    if not any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in ruleset.rules):
        return _passthrough_post(output, uri, body)  # nothing to coerce on the way out
    peer = json.loads(orthanc.RestApiGet("/modalities?expand")).get(modality)
    try:
        store = parse_store_request(body)
    except RequestNotUnderstood:
        peer = None
    if peer is None:
        return _passthrough_post(output, uri, body)  # Orthanc answers its own error
    transaction = _outgoing_transaction(peer, store.options.get("LocalAet"))
    if not ruleset.may_match(transaction):
        return _passthrough_post(output, uri, body)
    unsupported = store.unsupported()
    if unsupported:
        return _orthanc_error(output, uri, "POST", 400, "Bad request",
                              f"coercion rules apply to modality {modality!r}; coerced sends do not support "
                              f"{', '.join(unsupported)} yet: leave them out")
    instances = []
    for resource in store.resources:
        try:
            instances.extend(_instances_of(resource))
        except LookupError:
            return _orthanc_error(output, uri, "POST", 404, "Unknown resource", f"no resource with ID {resource}")
    try:
        planned = _plan_send(modality, peer, transaction, instances, list(store.resources), store.permissive, ruleset,
                             store.options.get("Timeout"))
    except UnsupportedPeer as exc:
        return _orthanc_error(output, uri, "POST", 400, "Bad request", str(exc))
    if planned is None:
        return _passthrough_post(output, uri, body)
    job, run = planned
    if not store.synchronous:
        threading.Thread(target=run, name=f"coercion-send-{job.id}", daemon=True).start()
        return _answer_json(output, {"ID": job.id, "Path": f"/coercion/sends/{job.id}"})
    run()
    if job.state == "Failure":
        reason = job.failures[0]["reason"]
        return _orthanc_error(output, uri, "POST", 500, "Error in the network protocol" if
                              reason.startswith("sending failed") else "Coercion failed", job.first_failure(),
                              Coercion=job.as_dict())
    return _answer_json(output, job.answer())


def _outgoing_transaction(peer: dict, local_aet: str | None = None) -> Transaction:
    """Sending to ``peer``: our AE title is the request's LocalAet, the modality's, or Orthanc's."""
    calling = local_aet or peer.get("LocalAet") or _orthanc_aet
    return Transaction("C_STORE_RQ", "SCP", calling, peer["AET"], peer.get("Host"))


class UnsupportedPeer(ValueError):
    """A peer the plugin cannot send coerced data to (it says why)."""


def _plan_send(modality: str, peer: dict, transaction: Transaction, instances: list[str], resources: list[str],
               permissive: bool, ruleset: RuleSet, timeout: int | None = None):
    """A send job and the function that runs it, or None when no rule coerces any of the
    instances for this peer (Orthanc's own send is then exactly right)."""
    if not ruleset.may_match(transaction):
        return None
    fetch = lambda instance: orthanc.RestApiGet(f"/instances/{instance}/file")  # noqa: E731
    if all(r.conditions or r.sop_classes for r in ruleset.for_peers(transaction)) and not any(
            service.rule_for(fetch(instance), transaction, ruleset) for instance in instances):
        return None  # the data decides, and no instance matched
    if peer.get("UseDicomTls"):
        raise UnsupportedPeer(f"modality {modality!r} uses DICOM TLS, which coerced sends do not support yet; "
                              "nothing was sent")
    destination = Destination(peer["AET"], peer["Host"], int(peer["Port"]), transaction.calling_aet,
                              int(timeout or peer.get("Timeout") or _scu_timeout))
    job = _sends.add(SendJob(modality, peer["AET"], transaction.calling_aet, instances, resources, permissive))

    def run():
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix="coercion-send-")  # 0700: unchanged instances are spooled too
            sender = SpoolingSender(destination, folder)
            run_send_job(
                job, fetch=fetch, coerce=lambda data: service.coerce(data, transaction, ruleset),
                spool=sender.spool, send=sender.send, batch_size=service.settings.send_batch_size,
                audit=lambda decision: _log_audit_out(decision, transaction.calling_aet, peer["AET"]),
            )
        except Exception as exc:  # the job must end, and say why, whatever failed around it
            orthanc.LogError("coercion: send job failed: " + traceback.format_exc(limit=2).splitlines()[-1])
            job.abort(f"{type(exc).__name__}: the send could not run")
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    return job, run


# -- C-MOVE SCP ---------------------------------------------------------------------------
# Registered only when rules coerce outgoing C-STORE (it replaces Orthanc's own C-MOVE SCP,
# and the Python plugin 4.0 reports one sub-operation per C-MOVE whatever was sent).

_MOVE_KEYS = {"PATIENT": ("PatientID", "Patient"), "STUDY": ("StudyInstanceUID", "Study"),
              "SERIES": ("SeriesInstanceUID", "Series"), "INSTANCE": ("SOPInstanceUID", "Instance")}
_move_registered = False
_routes_registered = False


def on_move(**request):
    try:
        _move(request)
    except Exception:
        # An exception fails the C-MOVE: nothing more is sent. The log names no patient.
        orthanc.LogError("coercion: C-MOVE refused: " + traceback.format_exc(limit=2).splitlines()[-1])
        raise


def _move(request: dict) -> None:
    target = request.get("TargetAET", "")
    modalities = json.loads(orthanc.RestApiGet("/modalities?expand"))
    found = [(name, m) for name, m in sorted(modalities.items()) if m.get("AET") == target]
    if not found:
        raise LookupError(f"unknown C-MOVE destination {target!r}: not in DicomModalities")
    modality, peer = found[0]
    resources = _move_resources(request)
    if not resources:
        return
    instances = [i for r in resources for i in _instances_of(r)]
    ruleset = service.ruleset
    planned = _plan_send(modality, peer, _outgoing_transaction(peer), instances, resources, False, ruleset)
    if planned is None:  # what Orthanc's own C-MOVE SCP does
        orthanc.RestApiPost(f"/modalities/{modality}/store", json.dumps({
            "Resources": resources, "Synchronous": True, "MoveOriginatorAet": request.get("OriginatorAET", ""),
            "MoveOriginatorID": int(request.get("OriginatorID") or 0)}))
        return
    job, run = planned
    run()
    if job.state == "Failure":
        raise RuntimeError(f"C-MOVE to {target}: {job.first_failure()}")


def _move_resources(request: dict) -> list[str]:
    """The Orthanc IDs a C-MOVE asks for, found as Orthanc's own C-MOVE SCP finds them."""
    level = str(request.get("Level", "")).upper()
    if level not in _MOVE_KEYS:
        raise ValueError(f"unknown C-MOVE level {level!r}")
    key, kind = _MOVE_KEYS[level]
    values = [v.strip() for v in str(request.get(key) or "").split("\\") if v.strip()]
    if level == "STUDY" and not values and request.get("AccessionNumber"):
        query = {"Level": "Study", "Query": {"AccessionNumber": request["AccessionNumber"]}}
        return json.loads(orthanc.RestApiPost("/tools/find", json.dumps(query)))
    found: list[str] = []
    for value in values:
        answer = json.loads(orthanc.RestApiPost("/tools/lookup", value))
        found.extend(a["ID"] for a in answer if a["Type"] == kind and a["ID"] not in found)
    return found


def _check_restart_needed(ruleset: RuleSet) -> None:
    """Callbacks are registered at start-up only, and only those the rules need (an idle
    change callback still competes with ingest for the interpreter): a reload that needs
    one more is refused."""
    if not _move_registered and any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in ruleset.rules):
        raise RuleError("rules for C_STORE_RQ with role SCP were added while Orthanc runs without them: restart "
                        "Orthanc so that C-MOVE retrieves are coerced too (the old rules stay active)")
    if not _routes_registered and ruleset.routes:
        raise RuleError("routes (rules with 'forward') were added while Orthanc runs without them: restart Orthanc "
                        "so that what it receives can be forwarded (the old rules stay active)")


def _log_audit_out(decision, local_aet: str, remote_aet: str) -> None:
    line = audit_line(decision, "C-STORE-SCU", local_aet, remote_aet)
    (orthanc.LogError if decision.action == REJECTED else orthanc.LogWarning)("coercion-audit " + line)


# -- REST API -----------------------------------------------------------------------------


def _answer_json(output, value, status: int = 200) -> None:
    body = json.dumps(value, indent=2)
    if status == 200:
        output.AnswerBuffer(body, "application/json")
    else:
        output.SendHttpStatus(status, body, len(body.encode()))


def _error(output, status: int, message: str, **extra) -> None:
    _answer_json(output, {"error": message, "status": status, **extra}, status)


def _credential(headers: dict) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-coercion-token")


def on_rest(output, uri, **request):
    method = request["method"]
    route = request["groups"][0] if request.get("groups") else ""
    args = request.get("get", {})
    try:
        if route == "rules" and method == "GET":
            return _answer_json(output, service.rules_report())
        if route == "rules/reload":
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            try:
                service.reload()
            except RuleError as exc:
                return _error(output, 400, f"the new rules were refused; the previous rules stay active: {exc}")
            return _answer_json(output, service.rules_report())
        if route == "stats" and method == "GET":
            return _answer_json(output, service.stats())
        preview = re.fullmatch(r"preview(?:/(rule|uri)/(.+))?", route)
        if preview:
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            # Orthanc 1.10 drops the query string of POST requests before plugins see it:
            # /coercion/preview/rule/NAME and /coercion/preview/uri/URI say the same thing.
            headers = request.get("headers", {})
            chosen = {"rule": args.get("rule") or headers.get("x-coercion-rule"),
                      "uri": args.get("uri") or headers.get("x-coercion-uri")}
            if preview.group(1):
                chosen[preview.group(1)] = urllib.parse.unquote(preview.group(2))
            try:
                data, outcome = service.preview(request.get("body", b""), chosen["rule"], chosen["uri"])
            except LookupError as exc:
                return _error(output, 404, str(exc))
            except ValueError as exc:  # URIError, DicomError and bad arguments
                return _error(output, 400, str(exc))
            return output.AnswerBuffer(data, "application/dicom")
        if route == "sends" and method == "GET":
            return _answer_json(output, [job.as_dict() for job in _sends.all()])
        match = re.fullmatch(r"sends/([^/]+)", route)
        if match and method == "GET":
            job = _sends.get(match.group(1))
            if job is None:
                return _error(output, 404, f"no send job {match.group(1)} (jobs are kept in memory until a restart)")
            return _answer_json(output, job.as_dict())
        if route == "forwards" and method == "GET":
            return _answer_json(output, _forwards.list(args.get("state") or None))
        match = re.fullmatch(r"forwards/([0-9]+)", route)
        if match and method == "GET":
            row = _forwards.get(int(match.group(1)))
            return _answer_json(output, row) if row else _error(output, 404, f"no forward {match.group(1)}")
        match = re.fullmatch(r"linkage/([^/]+)", route)
        if match:
            if method != "GET":
                return output.SendMethodNotAllowed("GET")
            if not service.settings.linkage_token:
                return _error(output, 403, "re-identification is disabled: no linkage credential is configured")
            if not service.authorised(_credential(request.get("headers", {}))):
                return _error(output, 403, "a valid linkage credential is required (Authorization: Bearer ...)")
            links = service.linkage(match.group(1))
            if not links:
                return _error(output, 404, "no patient is linked to this pseudonym")
            orthanc.LogWarning("coercion-audit " + json.dumps({"event": "re-identification", "pseudonym": match.group(1)}))
            return _answer_json(output, {"pseudonym": match.group(1), "links": links})
        return _error(output, 404, f"no such route: /coercion/{route} ({method}); see GET /coercion/rules")
    except Exception as exc:  # never leak a traceback with values to the client
        orthanc.LogError("coercion: REST error: " + traceback.format_exc(limit=3))
        return _error(output, 500, f"internal error: {type(exc).__name__}")


# -- start-up -----------------------------------------------------------------------------


def _stop_orthanc(message: str) -> None:
    # Running without the protection the rules promise is worse than not running at all.
    text = f"coercion: refusing to start: {message}"
    orthanc.LogError(text)
    print(text, file=sys.stderr, flush=True)
    os._exit(78)  # EX_CONFIG


def start() -> None:
    global service, _orthanc_aet, _move_registered, _scu_timeout, _forwards, _routes_registered
    quiet_pydicom()
    try:
        config = json.loads(orthanc.GetConfiguration())
        _orthanc_aet = config.get("DicomAet", "ORTHANC")
        _scu_timeout = int(config.get("DicomScuTimeout", 10))
        for value in (config.get("DicomModalities") or {}).values():
            if isinstance(value, list) and len(value) >= 2:
                _modality_hosts[value[0]] = value[1]
            elif isinstance(value, dict) and "AET" in value:
                _modality_hosts[value["AET"]] = value.get("Host")
        service = CoercionService(Settings.from_configuration(config))
    except Exception as exc:  # RuleError, SecretError, bad settings: all stop Orthanc
        _stop_orthanc(str(exc))
        return
    orthanc.RegisterIncomingHttpRequestFilter(on_http_request)
    orthanc.RegisterReceivedInstanceCallback(on_received_instance)
    orthanc.RegisterIncomingCStoreInstanceFilter(on_cstore_instance)
    orthanc.RegisterRestCallback("/coercion/(.*)", on_rest)
    # Called instead of Orthanc's own route; sends no rule applies to go to Orthanc's route.
    orthanc.RegisterRestCallback("/modalities/([^/]+)/store", on_modality_store)
    if any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in service.ruleset.rules):
        orthanc.RegisterMoveCallback(on_move)
        _move_registered = True
    service.validators.append(_check_restart_needed)
    _forwards = ForwardQueue(service.settings.forwards_database)  # its status stays readable
    if service.ruleset.routes:
        orthanc.RegisterOnChangeCallback(on_change)
        _routes_registered = True
        threading.Thread(target=_forward_worker, name="coercion-forwards", daemon=True).start()
    orthanc.LogWarning(
        f"coercion: {len(service.ruleset.rules)} rule(s) active from {service.settings.rules_directory}"
    )
    _warn_about_c_get(config)


def _warn_about_c_get(config: dict) -> None:
    """C-GET retrieves bypass the rules (no plugin hook): say so for each peer they concern."""
    outgoing = [r for r in service.ruleset.rules if r.dimse == "C_STORE_RQ" and r.role == "SCP"]
    for name, value in (config.get("DicomModalities") or {}).items():
        if isinstance(value, list) and len(value) >= 3:
            value = {"AET": value[0], "Host": value[1]}
        if not isinstance(value, dict) or value.get("AllowGet") is False:
            continue
        peer = Transaction("C_STORE_RQ", "SCP", _orthanc_aet, value.get("AET"), value.get("Host"))
        if any(r.matches_peers(peer) for r in outgoing):
            orthanc.LogWarning(f"coercion: modality {name!r} may C-GET, and C-GET retrieves do not go through the "
                               "rules: set \"AllowGet\": false for it in DicomModalities")
