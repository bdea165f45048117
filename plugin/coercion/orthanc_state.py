"""What the Orthanc callbacks share: set once at start-up by ``orthanc_plugin.start``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orthanc

from .find import FindSettings
from .forwarding import ForwardQueue
from .outgoing import SendJobs
from .service import REJECTED, CoercionService, audit_line


@dataclass
class EdgeState:
    service: CoercionService | None = None
    orthanc_aet: str = "ORTHANC"
    scu_timeout: int = 10  # Orthanc's DicomScuTimeout
    modality_hosts: dict = field(default_factory=dict)  # AE title -> the host DicomModalities gives it
    sends: SendJobs = field(default_factory=SendJobs)  # coerced send jobs of this process
    forwards: ForwardQueue | None = None
    move_registered: bool = False  # the plugin's C-MOVE SCP replaces Orthanc's
    routes_registered: bool = False  # change events feed the routes
    find_registered: bool = False  # the plugin's C-FIND SCP replaces Orthanc's
    query_registered: bool = False  # outgoing C-FIND routes go through the plugin
    find_settings: FindSettings = field(default_factory=FindSettings)


state = EdgeState()


def log_audit(decision, origin: str, calling_aet: str | None, called_aet: str | None = None) -> None:
    """The structured audit line of a coerced or refused instance (never PHI)."""
    line = "coercion-audit " + audit_line(decision, origin, calling_aet, called_aet)
    (orthanc.LogError if decision.action == REJECTED else orthanc.LogWarning)(line)


def answer_json(output, value, status: int = 200) -> None:
    body = json.dumps(value, indent=2)
    if status == 200:
        output.AnswerBuffer(body, "application/json")
    else:
        output.SendHttpStatus(status, body, len(body.encode()))
