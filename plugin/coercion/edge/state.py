"""What the Orthanc callbacks share: set once at start-up by ``startup.start``."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import orthanc

from ..exchanges.find import FindSettings
from ..exchanges.sends import SendJobs
from ..service import REJECTED, CoercionService, audit_line, safe_message
from ..stores.forwards import ForwardQueue


@dataclass
class EdgeState:
    service: CoercionService | None = None
    orthanc_aet: str = "ORTHANC"
    scu_timeout: int = 10  # Orthanc's DicomScuTimeout
    modality_hosts: dict = field(default_factory=dict)  # AE title -> the host DicomModalities gives it
    sends: SendJobs = field(default_factory=SendJobs)  # coerced send jobs of this process
    forwards: ForwardQueue | None = None
    outgoing_registered: bool = False  # the plugin's store route and C-MOVE SCP replace Orthanc's
    routes_registered: bool = False  # change events feed the routes
    find_registered: bool = False  # the plugin's C-FIND SCP replaces Orthanc's
    query_registered: bool = False  # outgoing C-FIND routes go through the plugin
    find_settings: FindSettings = field(default_factory=FindSettings)


state = EdgeState()


def log_failure(what: str) -> None:
    """Log the exception being handled: where it happened, its kind, and its message only when
    it is the project's own or Orthanc's (a library's message may quote the data)."""
    exc = sys.exc_info()[1]
    frames = traceback.extract_tb(exc.__traceback__)[-3:] if exc is not None else []
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    message = str(exc) if isinstance(exc, orthanc.OrthancException) else safe_message(exc)
    orthanc.LogError(f"coercion: {what}: {type(exc).__name__}: {message} (at {where})")


def log_audit(decision, origin: str, calling_aet: str | None, called_aet: str | None = None) -> None:
    """The structured audit line of a coerced or refused instance (never PHI)."""
    line = "coercion-audit " + audit_line(decision, origin, calling_aet, called_aet)
    (orthanc.LogError if decision.action == REJECTED else orthanc.LogWarning)(line)
