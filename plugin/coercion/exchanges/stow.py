"""Coerced STOW-RS sends to a DICOMweb server of Orthanc's DICOMweb plugin (``DicomWeb.Servers``).

The DICOMweb plugin's own client (``POST /dicom-web/servers/{id}/stow``) sends what Orthanc
stores; a plugin cannot take that route over reliably, so coerced copies go out through the
plugin's route ``POST /coercion/dicom-web/servers/{id}/stow``, with the same body, and this
client (dicomweb-client over requests). The server is read from the configuration, where its
credentials are (the plugin's REST API does not give them out): a server added at run time is
refused, saying so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from .orthanc_api import NotJson, OrthancError, read_json_body
from .sends import FolderSpool


@dataclass(frozen=True)
class StowRequest:
    """``POST .../servers/{id}/stow`` as the DICOMweb plugin reads it (ParseStowRequest)."""

    resources: tuple[str, ...]
    http_headers: dict = field(default_factory=dict)
    synchronous: bool = True
    priority: int = 0


def read_stow_request(body: bytes) -> StowRequest:
    """The DICOMweb plugin's checks of the body; raises OrthancError as it answers."""
    try:
        value = read_json_body(bytes(body))
    except NotJson:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("Resources"), list):
        raise OrthancError.of("BadFileFormat", "A request to the DICOMweb STOW-RS client must provide a JSON object "
                                               'with the field "Resources" containing an array of resources to be sent')
    resources = value["Resources"]
    if not all(isinstance(r, str) for r in resources):
        raise OrthancError.of("BadFileFormat", "Resources must be given as Orthanc identifiers (strings)")
    headers = value.get("HttpHeaders", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise OrthancError.of("BadFileFormat", 'The field "HttpHeaders" must be a JSON object of strings')
    if "Synchronous" in value:
        synchronous = value["Synchronous"]
    elif "Asynchronous" in value:
        synchronous = not value["Asynchronous"] if isinstance(value["Asynchronous"], bool) else None
    else:
        synchronous = True
    priority = value.get("Priority", 0)
    if not isinstance(synchronous, bool) or isinstance(priority, bool) or not isinstance(priority, int):
        raise OrthancError.of("BadFileFormat", "Synchronous and Asynchronous must be booleans, Priority an integer")
    return StowRequest(tuple(r.strip() for r in resources), dict(headers), synchronous, priority)


@dataclass(frozen=True)
class DicomWebServer:
    """A server of ``DicomWeb.Servers``: its URL, credentials and HTTP headers."""

    name: str
    url: str
    username: str | None = None
    password: str | None = None
    headers: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # never the password
        return f"DicomWebServer(name={self.name!r}, url={self.url!r})"


def configured_server(servers: dict, name: str) -> DicomWebServer | None:
    """The server ``name`` of ``DicomWeb.Servers`` (a list [url, user, password] or an object
    with Url, Username, Password, HttpHeaders), None when the configuration has no such server.
    Raises ValueError naming the setting when the entry is malformed."""
    entry = servers.get(name)
    if entry is None:
        return None
    if isinstance(entry, list) and entry and all(isinstance(v, str) for v in entry[:3]):
        return DicomWebServer(name, entry[0], *(entry[1:3] if len(entry) >= 3 else (None, None)))
    if isinstance(entry, dict) and isinstance(entry.get("Url"), str):
        headers = entry.get("HttpHeaders") or {}
        return DicomWebServer(name, entry["Url"], entry.get("Username"), entry.get("Password"),
                              {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {})
    raise ValueError(f"DicomWeb.Servers.{name}: neither [url, username, password] nor an object with Url")


class StowSender(FolderSpool):
    """Instances kept in a private folder and sent in batches, one STOW-RS request each."""

    def __init__(self, server: DicomWebServer, folder: str | Path, headers: dict | None = None,
                 timeout: float = 60) -> None:
        super().__init__(folder)
        from dicomweb_client.api import DICOMwebClient  # requests: only where a server is sent to
        from dicomweb_client.session_utils import create_session, create_session_from_user_pass

        session = (create_session_from_user_pass(server.username, server.password)
                   if server.username else create_session())
        self.client = DICOMwebClient(server.url.rstrip("/"), session=session,
                                     headers={**server.headers, **(headers or {})}, timeout=timeout)

    def send(self, items: list[tuple[str, Path]]) -> list[tuple[str, str | None]]:
        """One STOW-RS request for the batch; per instance None (stored) or why not."""
        try:
            datasets = [pydicom.dcmread(io.BytesIO(path.read_bytes())) for _, path in items]
            answer = self.client.store_instances(datasets=datasets)
        except Exception as exc:  # the server refused or could not be reached: the batch failed
            return [(instance_id, f"sending failed: {_reason(exc)}") for instance_id, _ in items]
        finally:
            for _, path in items:
                path.unlink(missing_ok=True)
        failed = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("FailedSOPSequence", []) or []}
        outcome = []
        for (instance_id, _), ds in zip(items, datasets):
            refused = str(ds.get("SOPInstanceUID", "")) in failed
            outcome.append((instance_id, "sending failed: the server's STOW-RS answer lists it as failed"
                            if refused else None))
        return outcome


def _reason(exc: Exception) -> str:
    """A failure without the URL's credentials or a body: the type and the HTTP status."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


__all__ = ["DicomWebServer", "StowRequest", "StowSender", "configured_server", "read_stow_request"]
