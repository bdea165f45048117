"""Sending files to a DICOM peer with dcmtk's storescu: one association per batch.

Why not Orthanc's own ``/modalities/{id}/store-straight``: it opens one association per
instance, and Orthanc's Python plugin holds the interpreter lock for the whole call, so
sends cannot overlap with each other or with coercion (measured: about 110 instances/s
whatever the number of threads). A storescu process sends a whole batch in one association
at DCMTK's speed while the plugin coerces the next batch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .sends import FolderSpool

_SENDING = re.compile(r"^I: Sending file: (?P<path>.+)$")
_RESPONSE = re.compile(r"^I: Received Store Response \((?P<status>.*)\)$")


@dataclass(frozen=True)
class Destination:
    """A peer as Orthanc's DicomModalities describe it."""

    aet: str
    host: str
    port: int
    calling_aet: str
    timeout: int = 0  # seconds for connection, ACSE and DIMSE; 0: dcmtk's defaults


def storescu_command(destination: Destination, paths: list[str], executable: str = "storescu") -> list[str]:
    command = [executable, "-v", "--no-halt", "-aet", destination.calling_aet, "-aec", destination.aet]
    if destination.timeout:
        command += ["-to", str(destination.timeout), "-ta", str(destination.timeout), "-td", str(destination.timeout)]
    return [*command, destination.host, str(destination.port), *paths]


def parse_storescu_output(text: str, paths: list[str]) -> dict[str, str | None]:
    """For each path: None when the peer took it (Success or a Warning), else why not.

    The reasons never hold file names (they are ours) nor attribute values (storescu prints
    none at this verbosity).
    """
    outcome: dict[str, str | None] = {}
    current: str | None = None
    association_error = None
    for line in text.splitlines():
        line = line.rstrip()
        sending = _SENDING.match(line)
        if sending:
            current = sending.group("path")
            continue
        response = _RESPONSE.match(line)
        if response and current is not None:
            status = response.group("status")
            outcome[current] = None if status == "Success" or status.startswith("Warning") else f"the peer answered {status}"
            current = None
        elif line.startswith(("E: ", "F: ")):
            message = line[3:]
            for path in paths:
                message = message.replace(path, "the instance")
            if current is not None:
                outcome[current] = message
                current = None
            elif association_error is None:
                association_error = message
    reason = association_error or "storescu stopped before sending it"
    return {path: outcome[path] if path in outcome else reason for path in paths}


def send_files(destination: Destination, paths: list[str], executable: str | None = None,
               timeout: float | None = None) -> dict[str, str | None]:
    """Send ``paths`` in one association; for each path, None or the reason it was not sent."""
    executable = executable or shutil.which("storescu") or "/usr/bin/storescu"
    env = dict(os.environ, TCP_NODELAY="1")  # Debian's DCMTK waits ~40 ms per message without it
    try:
        result = subprocess.run(storescu_command(destination, paths, executable), capture_output=True,
                                text=True, errors="replace", env=env, timeout=timeout)
    except FileNotFoundError:
        return {path: "dcmtk's storescu is not installed" for path in paths}
    except subprocess.TimeoutExpired:
        return {path: f"storescu did not finish within {timeout:.0f} s" for path in paths}
    return parse_storescu_output(result.stdout + result.stderr, paths)


class SpoolingSender(FolderSpool):
    """Writes instances to a private folder, sends them in batches (storescu), removes them."""

    def __init__(self, destination: Destination, folder: str | Path, timeout: float | None = None):
        super().__init__(folder)
        self.destination = destination
        self.timeout = timeout

    def send(self, items: list[tuple[str, Path]]) -> list[tuple[str, str | None]]:
        try:
            outcome = send_files(self.destination, [str(path) for _, path in items], timeout=self.timeout)
            return [(instance_id, outcome[str(path)]) for instance_id, path in items]
        finally:
            for _, path in items:
                Path(path).unlink(missing_ok=True)
