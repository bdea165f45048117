"""What leaves Orthanc: sends and C-MOVE retrieves, through the rules for role SCP.

* REST route ``/modalities/{id}/store`` (called instead of Orthanc's own): sends that an
  outgoing rule (C_STORE_RQ, role SCP) applies to are coerced and sent by storescu, a batch
  per association; the others go to Orthanc's route unchanged.
* The C-MOVE SCP (registered only when outgoing rules exist at start-up; it replaces Orthanc's):
  C-MOVE retrieves go out the same way, in Orthanc's four parts where the SDK has them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading

import orthanc

from ..exchanges.orthanc_api import JsonTooDeep, OrthancError, read_store_request
from ..exchanges.sends import SendJob, run_send_job
from ..exchanges.storescu import Destination, SpoolingSender
from ..rules import RuleSet, Transaction
from .answers import (
    answer_error,
    answer_json,
    guarded_route,
    orthanc_error,
    passthrough_post,
    run_as_orthanc_job,
)
from .state import (
    Refused,
    audit,
    log_audit,
    log_event,
    log_failure,
    modalities,
    modality_exists,
    orthanc_release,
    state,
)

# -- outgoing C-STORE ---------------------------------------------------------------------

def instances_of(resource_id: str) -> list[str]:
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


def resource_exists(resource_id: str) -> bool:
    try:
        instances_of(resource_id)
    except LookupError:
        return False
    return True


@guarded_route("outgoing store", "nothing more was sent")
def on_modality_store(output, uri, request):
    if request["method"] != "POST":
        return output.SendMethodNotAllowed("POST")
    modality, body = request["groups"][0], request.get("body", b"")
    ruleset = state.service.ruleset
    peer = modalities().get(modality)
    try:
        # Orthanc's checks first, in its order and with its answers, whoever the peer is.
        store = read_store_request(body, resource_exists, modality_exists, modality, orthanc_release())
    except OrthancError as error:
        return answer_error(output, "POST", uri, error)
    except JsonTooDeep as exc:  # Orthanc's own reader would crash on it: never handed on
        return orthanc_error(output, uri, "POST", "BadFileFormat", str(exc))
    transaction = outgoing_transaction(peer, store.local_aet)
    # A destination given for this send only is where the data would go: its rules count too.
    given = store.destination_overrides
    elsewhere = outgoing_transaction({**peer, "AET": str(given.get("CalledAet", peer["AET"])),
                                      "Host": str(given.get("Host", peer.get("Host")))}, store.local_aet)
    instances = [i for resource in store.resources for i in instances_of(resource)]
    planned = None
    if ruleset.may_match(transaction) or (store.destination_overrides and ruleset.may_match(elsewhere)):
        unsupported = [name for name, given in (("MoveOriginatorID", store.move_originator_id != 0),
                                                ("StorageCommitment", store.storage_commitment),
                                                ("CalledAet/Host/Port", bool(store.destination_overrides))) if given]
        if unsupported:
            return orthanc_error(output, uri, "POST", "BadRequest",
                                 f"coercion rules apply to modality {modality!r}; coerced sends do not support "
                                 f"{', '.join(unsupported)} yet: leave them out")
        try:
            planned = plan_send(modality, peer, transaction, instances, list(store.resources), store.permissive,
                                ruleset, store.timeout)
        except UnsupportedPeer as exc:
            return orthanc_error(output, uri, "POST", "BadRequest", str(exc))
    if planned is None:  # no rule coerces any of it: Orthanc's own send, answered as Orthanc answers
        if not store.synchronous:
            return passthrough_post(output, uri, body)
        return run_as_orthanc_job(output, uri, store.body)
    job, run = planned
    log_event("send", route=f"modalities/{modality}/store", outcome="started", job=job.id, modality=modality,
              instances=len(instances), synchronous=store.synchronous)
    return answer_send(output, uri, job, run, store.synchronous)


def answer_send(output, uri: str, job: SendJob, run, synchronous: bool) -> None:
    """A send job run now and answered as Orthanc answers a synchronous send, or started and
    answered with where to poll it."""
    if not synchronous:
        threading.Thread(target=run, name=f"coercion-send-{job.id}", daemon=True).start()
        return answer_json(output, {"ID": job.id, "Path": f"/coercion/sends/{job.id}"})
    run()
    if job.state == "Failure":
        reason = job.failures[0]["reason"]
        code = "BadRequest" if reason.startswith("coercion refused") else "NetworkProtocol" \
            if reason.startswith("sending failed") else "InternalError"
        return orthanc_error(output, uri, "POST", code, job.first_failure(), Coercion=job.as_dict())
    return answer_json(output, job.answer())


def outgoing_transaction(peer: dict, local_aet: str | None = None) -> Transaction:
    """Sending to ``peer``: our AE title as Orthanc chooses it, of the request's LocalAet, the
    modality's and DicomAet (up to 1.12 the modality's wins over the request's; since 1.13 the
    request's wins)."""
    if orthanc_release().request_local_aet_wins:
        calling = local_aet or peer.get("LocalAet") or state.orthanc_aet
    else:
        calling = peer.get("LocalAet") or local_aet or state.orthanc_aet
    return Transaction("C_STORE_RQ", "SCP", calling, peer["AET"], peer.get("Host"))


class UnsupportedPeer(ValueError):
    """A peer the plugin cannot send coerced data to (it says why)."""


def plan_send(modality: str, peer: dict, transaction: Transaction, instances: list[str], resources: list[str],
               permissive: bool, ruleset: RuleSet, timeout: int | None = None):
    """A send job and the function that runs it, or None when no rule coerces any of the
    instances for this peer (Orthanc's own send is then exactly right)."""
    if not ruleset.may_match(transaction):
        return None
    if no_rule_applies(transaction, instances, ruleset):
        return None
    if peer.get("UseDicomTls"):
        raise UnsupportedPeer(f"modality {modality!r} uses DICOM TLS, which coerced sends do not support yet; "
                              "nothing was sent")
    destination = Destination(peer["AET"], peer["Host"], int(peer["Port"]), transaction.calling_aet,
                              int(timeout or peer.get("Timeout") or state.scu_timeout))
    job = state.sends.add(SendJob(modality, peer["AET"], transaction.calling_aet, instances, resources, permissive))
    return job, job_runner(job, transaction, ruleset, lambda folder: SpoolingSender(destination, folder),
                           "C-STORE-SCU", peer["AET"], modality=modality)


def no_rule_applies(transaction: Transaction, instances: list[str], ruleset: RuleSet) -> bool:
    """When only the data can tell (every rule for this receiver has conditions or SOP classes),
    whether none applies to any of the instances: a send no rule applies to stays Orthanc's own
    (its answer, its job). The instances that match are read twice."""
    return all(r.conditions or r.sop_classes for r in ruleset.for_peers(transaction)) and not any(
        state.service.rule_for(fetch_instance(instance), transaction, ruleset) for instance in instances)


def fetch_instance(instance: str) -> bytes:
    return orthanc.RestApiGet(f"/instances/{instance}/file")


def job_runner(job: SendJob, transaction: Transaction, ruleset: RuleSet, make_sender, origin: str,
               receiver: str, **named):
    """The function that runs a send job: each instance fetched from Orthanc and coerced (an
    unchanged one too waits in the folder), sent by ``make_sender(folder)``'s sender from a
    private folder, audited as ``origin`` to ``receiver``; ``named``: how the audit line at the
    end names the receiver."""

    def run():
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix="coercion-send-")  # 0700: what waits to be sent
            sender = make_sender(folder)
            run_send_job(
                job, fetch=fetch_instance, coerce=lambda data: state.service.coerce(data, transaction, ruleset),
                spool=sender.spool, send=sender.send, batch_size=state.service.settings.send_batch_size,
                audit=lambda decision: log_audit(decision, origin, transaction.calling_aet, receiver),
            )
        except Exception as exc:  # the job must end, and say why, whatever failed around it
            log_failure("send job failed")
            job.abort(f"{type(exc).__name__}: the send could not run")
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        ended = job.as_dict()
        audit("send-ended", refused=job.state == "Failure", job=job.id, **named, outcome=job.state.lower(),
              sent=ended["SentInstancesCount"], failed=ended["FailedInstancesCount"])

    return run


# -- C-MOVE SCP ---------------------------------------------------------------------------
# Registered only when rules coerce outgoing C-STORE (it replaces Orthanc's own C-MOVE SCP).
# Where the SDK has it (orthanc-python 4.2), in Orthanc's four parts: the request is looked up
# before any sub-operation (its errors fail the C-MOVE as Orthanc's own SCP fails it) and every
# instance is a sub-operation, as Orthanc counts them. Orthanc-python 4.0 has only the simple
# callback: one sub-operation, made before the plugin sees the request.

_MOVE_KEYS = {"PATIENT": ("PatientID", "Patient"), "STUDY": ("StudyInstanceUID", "Study"),
              "SERIES": ("SeriesInstanceUID", "Series"), "INSTANCE": ("SOPInstanceUID", "Instance")}


class MoveDriver:
    """One C-MOVE: the instances it sends, one sub-operation each. The send itself runs at the
    first sub-operation (a coerced send goes in batches, an association each, as any coerced
    send; Orthanc's own goes in one); each sub-operation then reports its own instance."""

    def __init__(self, request: dict):
        self.target = request.get("TargetAET", "")
        self.instances, self._send = _plan_move(request)
        self._unsent: set[str] | None = None
        self._next = 0

    def size(self) -> int:
        return len(self.instances)

    def apply(self) -> None:
        if self._unsent is None:
            try:
                self._unsent = self._send()
            except Exception:
                log_failure(f"C-MOVE to {self.target!r} failed")
                self._unsent = set(self.instances)
        instance = self.instances[self._next]
        self._next += 1
        if instance in self._unsent:
            raise Refused("the C-MOVE sub-operation failed: its instance was not sent")


def _plan_move(request: dict):
    """The instances a C-MOVE sends, and the function that sends them (it returns those that
    were not sent). Raises when Orthanc's own C-MOVE SCP would fail the request."""
    target = request.get("TargetAET", "")
    # Orthanc's own C-MOVE SCP resolves the destination by AE title, as it compares them.
    found = [(name, m) for name, m in sorted(modalities().items()) if state.service.peers.same(m.get("AET"), target)]
    if not found:
        raise LookupError(f"unknown C-MOVE destination {target!r}: not in DicomModalities")
    modality, peer = found[0]
    # Pseudonyms handed out (by a coerced send or C-FIND answer) may name what to move when
    # what moves leaves coerced: the destination is under an outgoing rule.
    resources = _move_resources(request, pseudonyms=state.service.ruleset.may_match(outgoing_transaction(peer)))
    if not resources:  # Orthanc's own C-MOVE SCP fails too ("No DICOM identifier provided...")
        raise LookupError("no resource matches the identifiers of the C-MOVE request")
    instances = [i for r in resources for i in instances_of(r)]

    def send() -> set[str]:
        # Planned only now: a C-MOVE the caller gives up before its first sub-operation
        # leaves no send job behind.
        planned = plan_send(modality, peer, outgoing_transaction(peer), instances, resources, False,
                            state.service.ruleset)
        if planned is None:  # what Orthanc's own C-MOVE SCP does: every instance tried
            answer = json.loads(orthanc.RestApiPost(f"/modalities/{modality}/store", json.dumps({
                "Resources": resources, "Synchronous": True, "Permissive": True,
                "MoveOriginatorAet": request.get("OriginatorAET", ""),
                "MoveOriginatorID": int(request.get("OriginatorID") or 0)})))
            # Orthanc says how many failed, not which: the count is what the caller is told.
            failed = int(answer.get("FailedInstancesCount", 0))
            return set(instances[len(instances) - failed:]) if failed else set()
        job, run = planned
        run()
        if job.state == "Failure":
            orthanc.LogError(f"coercion: C-MOVE to {target}: {job.first_failure()}")
        return set(instances) - job.settled
    return instances, send


def on_move(**request):
    """The simple callback (orthanc-python 4.0): the whole C-MOVE in one sub-operation."""
    try:
        unsent = _plan_move(request)[1]()
    except Exception:
        # An exception fails the C-MOVE: nothing more is sent. The log names no patient.
        log_failure("C-MOVE refused")
        raise Refused("the C-MOVE failed; nothing more was sent") from None
    if unsent:
        raise Refused(f"the C-MOVE failed: {len(unsent)} instance(s) not sent")


def on_move_driver(**request) -> MoveDriver:
    """Orthanc's four-part C-MOVE (orthanc-python 4.2): the driver, looked up now."""
    try:
        return MoveDriver(request)
    except Exception:
        log_failure("C-MOVE refused")
        raise Refused("the C-MOVE failed; nothing was sent") from None


def on_move_connection(connection, **request) -> MoveDriver:
    """The same with the DICOM connection (orthanc-python 7.0): the caller and the called AE
    title come from it."""
    request.update(OriginatorAET=connection.GetConnectionRemoteAet(), SourceAET=connection.GetConnectionCalledAet())
    return on_move_driver(**request)


def _move_resources(request: dict, pseudonyms: bool = False) -> list[str]:
    """The Orthanc IDs a C-MOVE asks for, found as Orthanc's own C-MOVE SCP finds them, and by
    the original of a pseudonym handed out when ``pseudonyms``."""
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
        answer = [a for a in json.loads(orthanc.RestApiPost("/tools/lookup", value)) if a["Type"] == kind]
        if not answer and pseudonyms:
            for original in _originals(level, value):
                answer += [a for a in json.loads(orthanc.RestApiPost("/tools/lookup", original)) if a["Type"] == kind]
        found.extend(a["ID"] for a in answer if a["ID"] not in found)
    return found


def _originals(level: str, pseudonym: str) -> list[str]:
    store = state.service.store
    if level == "PATIENT":
        return sorted({link.patient_id for link in store.lookup(pseudonym)})
    return list(store.original_uids([pseudonym]).values())
