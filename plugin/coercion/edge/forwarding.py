"""Routes: what a rule with ``forward`` matched on the way in is sent on to peers.

Orthanc logs a change for every instance it stores, in the same transaction (in the shared
index when several Orthancs run on one database). The forwarding worker reads that log in
order (``ForwardQueue.route_changes``: once across the nodes, the forwards and the position
committed together): a new instance arms the routes that match it; a stable series or study
makes its forwards due. So an instance Orthanc acknowledged is routed even when its node
stopped right after. The change callback (registered only when routes exist at start-up)
only wakes the worker, which sends through the rules for what Orthanc sends, and retries.
"""

from __future__ import annotations

import calendar
import json
import threading
import time

import orthanc

from ..engine.dicomio import DicomError, read_instance
from ..exchanges.mpps import find_modality
from ..exchanges.orthanc_api import OrthancError
from ..rules import DICOMWEB_DESTINATION, PEER_DESTINATION, Transaction
from .answers import orthanc_job
from .mpps import send_mpps_forward
from .outgoing import UnsupportedPeer, instances_of, outgoing_transaction, plan_send
from .peers import dicomweb_transaction, peer_transaction, peers, plan_peer_send, plan_stow_send
from .state import configured_host, forward_wakeup, log_failure, modalities, state

_LEVEL_OF_WHEN = {"received": "Instance", "stable-series": "Series", "stable-study": "Study"}
_CHANGES_PER_BATCH = 100
# Several Orthancs write the change log at once: a sequence number can show up after a later
# one was read (its transaction committed later), or never (rolled back). A gap is waited for
# this long (by the change's date) before the log is read past it.
GAP_SECONDS = 10


def on_change(change_type, level, resource_id):
    if change_type in (orthanc.ChangeType.NEW_INSTANCE, orthanc.ChangeType.STABLE_SERIES,
                       orthanc.ChangeType.STABLE_STUDY):
        forward_wakeup.set()


def _first_change_after(seq: int) -> dict | None:
    changes = json.loads(orthanc.RestApiGet(f"/changes?since={seq}&limit=1")).get("Changes", [])
    return changes[0] if changes else None


def place_in_changes(since: float | None) -> int:
    """The last sequence number Orthanc logged before the time ``since`` (None: the last one),
    found by bisection: the log may be long, and is in order of time."""
    last = int(json.loads(orthanc.RestApiGet("/changes?last")).get("Last", 0))
    if since is None:
        return last
    low, high = 0, last  # the answer lies between: every change up to ``low`` is older
    while low < high:
        middle = (low + high + 1) // 2
        change = _first_change_after(middle - 1)
        if change is None or _orthanc_time(change.get("Date", "")) >= since - 1:  # Date has whole seconds
            high = middle - 1
        else:
            low = min(max(middle, change["Seq"]), high)
    return low


def route_changes(since: int, arming) -> int | None:
    """Route the changes after ``since`` (one batch); the last sequence number handled."""
    log = json.loads(orthanc.RestApiGet(f"/changes?since={since}&limit={_CHANGES_PER_BATCH}"))
    reached, now = since, None
    for change in log.get("Changes", []):
        if change["Seq"] != reached + 1:  # a gap: wait for it a while (see GAP_SECONDS)
            now = now or _orthanc_time(orthanc.RestApiGet("/tools/now").decode().strip('"\n '))
            if now - _orthanc_time(change.get("Date", "")) < GAP_SECONDS:
                break
        kind = change.get("ChangeType")
        if kind == "NewInstance" and state.service.ruleset.store_routes:
            _route_instance(change["ID"], arming)
        elif kind in ("StableSeries", "StableStudy"):
            arming.stable(change["ResourceType"], change["ID"])
        reached = change["Seq"]
    return reached if reached > since else None


def _route_instance(instance_id: str, arming) -> None:
    try:
        instance = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}"))
        metadata = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}/metadata?expand"))
    except Exception:  # deleted since: nothing to forward
        return
    uid = instance.get("MainDicomTags", {}).get("SOPInstanceUID", "")
    calling_aet = arming.reposted_from(uid) if metadata.get("Origin") != "DicomProtocol" else None
    if calling_aet is not None or metadata.get("Origin") == "DicomProtocol":
        calling_aet = calling_aet or metadata.get("RemoteAET")
        host = configured_host(calling_aet)
    else:
        calling_aet, host = None, metadata.get("RemoteIP")

    def dataset():  # read only if a route looks at the data
        try:
            return read_instance(orthanc.RestApiGet(f"/instances/{instance_id}/file")).header
        except DicomError:
            return None

    transaction = Transaction("C_STORE_RQ", "SCU", calling_aet, state.orthanc_aet, host, dataset=dataset)

    parents = {"Instance": instance_id, "Series": instance.get("ParentSeries")}
    for route in state.service.ruleset.matching_routes(transaction):
        forward = route.forward
        level = _LEVEL_OF_WHEN[forward.when]
        if level not in parents:
            parents["Study"] = json.loads(orthanc.RestApiGet(f"/series/{parents['Series']}")).get("ParentStudy")
        for destination in forward.destinations():
            arming.arm(route.name, destination, level, parents[level], forward.when == "received",
                       forward.retries, forward.retry_interval)


_worker_lock = threading.Lock()
_worker: list[threading.Thread] = []


def start_forward_worker() -> None:
    """Start the forwarding worker unless it runs (at start-up with routes, or at the first
    forward armed or retried after a reload brought the first MPPS route)."""
    with _worker_lock:
        if not _worker:
            _worker.append(threading.Thread(target=forward_worker, name="coercion-forwards", daemon=True))
            _worker[0].start()


def wake_forwards() -> None:
    """Make the worker look for due forwards now (a forward armed, an administrator's retry)."""
    start_forward_worker()
    forward_wakeup.set()


def forward_worker() -> None:
    swept = 0.0
    while True:
        forward_wakeup.wait(timeout=1.0)
        forward_wakeup.clear()
        try:
            if state.routes_registered:
                while state.forwards.route_changes(place_in_changes, route_changes):
                    pass
            if time.monotonic() - swept >= _SWEEP_SECONDS:
                swept = time.monotonic()
                _sweep_waiting()
            for row in state.forwards.take_due():
                _send_forward(row)
        except Exception:
            log_failure("forwarding worker")


_SWEEP_SECONDS = 10


def _sweep_waiting() -> None:
    """Make due the waiting forwards of series and studies that no Orthanc will declare stable:
    their instances came in through a node that stopped before they were stable (several nodes
    on one database) or before this node restarted (Orthanc keeps stability in memory). The
    index says when one last changed: quiet for twice StableAge, it is stable."""
    waiting = state.forwards.list(state="waiting")
    if not waiting:
        return
    now = _orthanc_time(orthanc.RestApiGet("/tools/now").decode().strip('"\n '))
    for row in waiting:
        folder = {"Series": "series", "Study": "studies"}.get(row["level"])
        if folder is None:
            continue
        try:
            resource = json.loads(orthanc.RestApiGet(f"/{folder}/{row['resource']}"))
        except Exception:  # gone: the send finds it so and says why
            continue
        last = resource.get("LastUpdate")
        if last and now - _orthanc_time(last) >= 2 * state.stable_age and \
                state.forwards.stable(row["level"], row["resource"]):
            forward_wakeup.set()


def _orthanc_time(text: str) -> float:
    """Seconds of an Orthanc time stamp (YYYYMMDDTHHMMSS, as /tools/now and LastUpdate give it)."""
    return calendar.timegm(time.strptime(text[:15], "%Y%m%dT%H%M%S"))


def _send_forward(row: dict) -> None:
    if row["level"] == "MPPS":  # a performed procedure step: its messages, in order
        return send_mpps_forward(row)
    destination = row["destination"]
    try:
        instances = instances_of(row["resource"])
    except LookupError:
        state.forwards.attempt_failed(row["id"], "the resource is no longer in Orthanc", retry=False)
        return
    ruleset, resources = state.service.ruleset, [row["resource"]]
    try:
        if destination.startswith(PEER_DESTINATION):
            name = destination.removeprefix(PEER_DESTINATION)
            if name not in peers():
                state.forwards.attempt_failed(row["id"], f"no peer named {name!r} in OrthancPeers")
                return
            transaction = peer_transaction(name, ruleset)
            planned = plan_peer_send(name, transaction, instances, resources, False, ruleset) \
                if ruleset.may_match(transaction) else None
            return _run_forward(row, planned, f"/peers/{name}/store")
        if destination.startswith(DICOMWEB_DESTINATION):
            name = destination.removeprefix(DICOMWEB_DESTINATION)
            transaction = dicomweb_transaction(name, ruleset)
            try:
                planned = plan_stow_send(name, transaction, instances, resources, ruleset) \
                    if ruleset.may_match(transaction) else None
            except (OrthancError, ValueError) as exc:  # not in DicomWeb.Servers, or malformed there
                state.forwards.attempt_failed(row["id"], str(exc), retry=False)
                return
            return _run_forward(row, planned, f"{state.dicomweb_root}servers/{name}/stow",
                                orthanc.RestApiPostAfterPlugins)
        # A route names a modality by its symbolic name or by AE title, compared as Orthanc compares.
        found = find_modality(modalities(), destination, state.service.peers.strict)
        if not found:
            state.forwards.attempt_failed(row["id"], f"no modality named {destination!r} in DicomModalities")
            return
        modality, peer = found
        planned = plan_send(modality, peer, outgoing_transaction(peer), instances, resources, False, ruleset)
        return _run_forward(row, planned, f"/modalities/{modality}/store")
    except UnsupportedPeer as exc:  # cannot be sent so: retrying will not help
        state.forwards.attempt_failed(row["id"], str(exc), retry=False)


def _run_forward(row: dict, planned, native: str, post=None) -> None:
    """Send one due forward: the coerced send job planned, or (None: no outgoing rule applies)
    Orthanc's own job route ``native``; the queue learns how it ended."""
    if planned is None:
        try:
            job = orthanc_job(native, {"Resources": [row["resource"]]}, post)
        except orthanc.OrthancException as exc:
            job = {"State": "Failure", "ErrorDescription": exc.args[1] if len(exc.args) > 1 else str(exc)}
        if job["State"] == "Failure":
            reason = job.get("ErrorDescription", "")
            if job.get("ErrorDetails"):
                reason += f" ({job['ErrorDetails']})"
            now = state.forwards.attempt_failed(row["id"], f"sending failed: {reason}", job.get("ID"))
            orthanc.LogWarning(f"coercion: forward {row['id']} to {row['destination']}: attempt failed, now {now}")
            return
        state.forwards.sent(row["id"], job.get("ID"))
        return
    job, run = planned
    run()
    if job.state == "Failure":
        now = state.forwards.attempt_failed(row["id"], job.first_failure(), job.id)
        orthanc.LogWarning(f"coercion: forward {row['id']} to {row['destination']}: attempt failed, now {now}")
    else:
        state.forwards.sent(row["id"], job.id)
