"""What the Orthanc callbacks share: set once at start-up by ``startup.start``."""

from __future__ import annotations

import json
import os
import sys
from collections import deque
import threading
import traceback
from dataclasses import dataclass, field
from typing import NoReturn
from pathlib import Path

import orthanc

from ..exchanges.find import FindSettings
from ..exchanges.orthanc_api import OrthancRelease
from ..exchanges.sends import SendJobs
from ..service import REJECTED, CoercionService, audit_json, audit_record, decision_fields, safe_message
from ..stores.forwards import ForwardQueue


@dataclass
class EdgeState:
    service: CoercionService | None = None
    orthanc_aet: str = "ORTHANC"
    scu_timeout: int = 10  # Orthanc's DicomScuTimeout
    stable_age: int = 60  # Orthanc's StableAge
    # AE title -> its DicomModalities host; ("key", rules.aet_key) -> the first one's, for variants
    modality_hosts: dict = field(default_factory=dict)
    sends: SendJobs = field(default_factory=SendJobs)  # coerced send jobs of this process
    forwards: ForwardQueue | None = None
    outgoing_registered: bool = False  # the plugin's store route and C-MOVE SCP replace Orthanc's
    routes_registered: bool = False  # change events feed the routes
    find_registered: bool = False  # the plugin's C-FIND SCP replaces Orthanc's
    query_registered: bool = False  # outgoing C-FIND routes go through the plugin
    find_settings: FindSettings = field(default_factory=FindSettings)
    worklists: object | None = None  # exchanges.worklist.WorklistFolder, when worklists are enabled
    worklist_settings: object | None = None  # edge.worklist.WorklistSettings
    mpps: object | None = None  # stores.mpps.MppsStore, when the MPPS SCP runs (or kept steps exist)
    mpps_exchange: object | None = None  # exchanges.mpps.MppsExchange over it
    config: dict = field(default_factory=dict)  # Orthanc's configuration, as the rule checks read it
    capabilities: object | None = None  # capabilities.Capabilities: what this Orthanc's SDK offers
    rule_warnings: list = field(default_factory=list)  # what the checks say of the active rules
    release_warnings: list = field(default_factory=list)  # what this Orthanc release keeps the rules from doing
    views: dict = field(default_factory=dict)  # configuration.ViewSettings by name (edge/views.py)
    view_tokens: dict = field(default_factory=dict)  # a view's credential, by view name: never logged
    view_of_user: dict = field(default_factory=dict)  # an Orthanc user a view names -> that view
    stow_route: object | None = None  # re.Pattern of the DICOMweb plugin's STOW-RS client route (edge/peers.py)
    dicomweb_root: str = "/dicom-web/"  # DicomWeb.Root


state = EdgeState()

# The client address of the HTTP request each thread serves, from the incoming-request filter
# (keyed by thread id: Orthanc's plugin gives each callback a fresh Python thread state, so
# threading.local() does not carry from one callback to the next in the same thread).
_client_addresses: dict[int, str | None] = {}


def remember_client_address(address: str | None) -> None:
    _client_addresses[threading.get_ident()] = address


def client_address() -> str | None:
    return _client_addresses.get(threading.get_ident())


def log_failure(what: str) -> None:
    """Log the exception being handled: where it happened, its kind, and its message only when
    it is the project's own or Orthanc's (a library's message may quote the data)."""
    exc = sys.exc_info()[1]
    frames = traceback.extract_tb(exc.__traceback__)[-3:] if exc is not None else []
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    message = str(exc) if isinstance(exc, orthanc.OrthancException) else safe_message(exc)
    orthanc.LogError(f"coercion: {what}: {type(exc).__name__}: {message} (at {where})")


class Refused(RuntimeError):
    """What a callback raises to make Orthanc fail an exchange. Orthanc's Python plugin logs the
    message of an exception that leaves a callback, so it is always one of the project's
    (another library's message may quote the data); the cause was logged by log_failure."""


# The last audit records of this process, for the administrator's page (GET /coercion/audit).
recent_audit: deque = deque(maxlen=1000)


def audit(event: str, refused: bool = False, **fields) -> None:
    """Log one audit record (service.audit_record: the one form of every audit line) and keep
    it among the recent ones; refusals are logged as errors."""
    record = audit_record(event, **fields)
    recent_audit.append(record)
    (orthanc.LogError if refused else orthanc.LogWarning)("coercion-audit " + audit_json(record))


def _refused(outcome) -> bool:
    return str(outcome or "").startswith(("refused", "aborted"))


def log_event(event: str, **fields) -> None:
    """An administrative audit line: the route, the client's address, the outcome (never PHI)."""
    audit(event, refused=_refused(fields.get("outcome")), client=client_address(), **fields)


def log_audit(decision, origin: str, calling_aet: str | None, called_aet: str | None = None) -> None:
    """The audit line of a coerced or refused instance (never PHI)."""
    audit("coercion", refused=decision.action == REJECTED, **decision_fields(decision, origin, calling_aet, called_aet))


def configured_host(aet: str | None) -> str | None:
    """The host DicomModalities gives a caller's AE title: that title's own, else (a variant
    Orthanc admits: case, padding) the first modality's with the same title as Orthanc compares."""
    if aet is None:
        return None
    if aet in state.modality_hosts:
        return state.modality_hosts[aet]
    return state.modality_hosts.get(("key", state.service.peers.key(aet)))


def modalities() -> dict[str, dict]:
    """Orthanc's DicomModalities as it knows them now, by symbolic name (PUT /modalities/{id}
    changes them while Orthanc runs): the one place the edge reads them."""
    return json.loads(orthanc.RestApiGet("/modalities?expand"))


_release: list[OrthancRelease] = []
_release_lock = threading.Lock()
# What runs once the release is known (in the callback that first asks for it): start-up may
# not call Orthanc's REST API itself, nor from a thread of its own while Orthanc starts (with
# orthanc-python 4.0 such a thread holds the interpreter inside Orthanc: a deadlock was seen).
release_hooks: list = []


def orthanc_release() -> OrthancRelease:
    """What this Orthanc says of itself (GET /system), read once: the REST API does not answer
    while the plugin initializes, so at the first request that needs it."""
    with _release_lock:
        if _release:
            return _release[0]
        found = OrthancRelease.of(json.loads(orthanc.RestApiGet("/system")))
        orthanc.LogWarning(f"coercion: Orthanc {'.'.join(map(str, found.version))}, "
                           f"ResourceFinder {'found' if found.resource_finder else 'absent'}")
        _release.append(found)
    for hook in release_hooks:
        hook(found)
    return found


def modality_exists(modality: str) -> bool:
    """Whether Orthanc knows a modality by this symbolic name."""
    return modality in modalities()


def stop_orthanc(message: str) -> NoReturn:
    """Stop Orthanc at start-up: running without the protection the rules promise is worse
    than not running at all."""
    text = f"coercion: refusing to start: {message}"
    orthanc.LogError(text)
    print(text, file=sys.stderr, flush=True)
    os._exit(78)  # EX_CONFIG


# The forwarding worker waits on this between its rounds; what arms a forward sets it.
forward_wakeup = threading.Event()
