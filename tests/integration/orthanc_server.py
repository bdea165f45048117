"""A real Orthanc with the plugin, started through `coercion serve` on free loopback ports.

Test modules import the `orthanc` fixture from here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SECRET = b"integration-secret-0123456789-abcdefghij"
TOKEN = "linkage-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
# Orthanc's REST API asks for HTTP Basic credentials (AuthenticationEnabled, as shipped): the
# plugin's own credentials go in X-Coercion-Token beside them.
ADMIN = {"X-Coercion-Token": ADMIN_TOKEN}
LINKAGE = {"X-Coercion-Token": TOKEN}
REST_USER, REST_PASSWORD = "coercion", "rest-password-0123456789abcdef"
REST_AUTH = (REST_USER, REST_PASSWORD)
AET = "ORTHANC"

needs_orthanc = pytest.mark.skipif(
    not (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists())
    or not Path("/usr/share/orthanc/plugins/libOrthancPython.so").exists()
    or not shutil.which("storescu"),
    reason="Orthanc, its Python plugin and dcmtk are installed by plugin/scripts/test.sh",
)


# Every process the helpers start, so that none outlives the test session even when a
# fixture fails half-way (tests/integration/conftest.py stops what is left).
STARTED: list[subprocess.Popen] = []


def stop_leftovers() -> None:
    for process in STARTED:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    STARTED.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RULES = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH, "RESEARCH_.*"]
  uri: "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
- name: uploads
  dimse: C_STORE_RQ
  role: SCU
  sending-host: ["127\\\\.0\\\\.0\\\\.1"]
  uri: "deidentify:RetainPatientIDHashOption"
- name: quarantine
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [DISCARDER]
  uri: "deidentify:"
  on-failure: discard
"""


def authenticated(config: dict) -> dict:
    """An Orthanc configuration that asks for the tests' HTTP credential, as the shipped one does."""
    return {**config, "AuthenticationEnabled": True, "RegisteredUsers": {REST_USER: REST_PASSWORD}}


class OrthancREST:
    """What the tests ask of an Orthanc over its REST API (``self.url``), with the credential."""

    url: str
    auth = REST_AUTH

    def get(self, path, **kwargs):
        return requests.get(self.url + path, timeout=30, **{"auth": self.auth, **kwargs})

    def post(self, path, data=None, **kwargs):
        return requests.post(self.url + path, data=data, timeout=60, **{"auth": self.auth, **kwargs})

    def put(self, path, data=None, **kwargs):
        return requests.put(self.url + path, data=data, timeout=30, **{"auth": self.auth, **kwargs})

    def delete(self, path, **kwargs):
        return requests.delete(self.url + path, timeout=30, **{"auth": self.auth, **kwargs})

    def admin_post(self, path, data=None, **kwargs):
        """A request with the administration credential (previews, reloads, send control)."""
        return self.post(path, data, headers={**ADMIN, **kwargs.pop("headers", {})}, **kwargs)

    def lookup(self, sop_instance_uid: str) -> str | None:
        answer = self.post("/tools/lookup", sop_instance_uid).json()
        ids = [a["ID"] for a in answer if a["Type"] == "Instance"]
        return ids[0] if ids else None

    def file(self, instance_id: str) -> bytes:
        response = self.get(f"/instances/{instance_id}/file")
        response.raise_for_status()
        return response.content

    def instance_count(self) -> int:
        return self.get("/statistics").json()["CountInstances"]


@dataclass
class OrthancServer(OrthancREST):
    root: Path
    rules: str = RULES
    modalities: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # more orthanc.json settings
    admin_token: bool = True  # configure Coercion.AdminTokenFile
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen | None = None
    coercion: dict = field(default_factory=dict)  # more settings of the Coercion section
    storage: Path | None = None  # default: root/storage (a cluster's nodes share one)
    linkage_db: str | Path | None = None  # default: root/linkage.sqlite (a postgresql:// URL for a cluster)
    environment: dict = field(default_factory=dict)  # more environment variables for Orthanc

    def __post_init__(self):
        self._ports_chosen = not (self.http_port or self.dicom_port)  # free_port's: may be taken meanwhile
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        self.storage = self.storage or self.root / "storage"
        self.rules_dir = self.root / "rules"
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        (self.rules_dir / "rules.yaml").write_text(self.rules)
        self.secret_file = self.root / "site.key"
        for path, content in ((self.secret_file, SECRET), (self.root / "linkage.token", f"{TOKEN}\n".encode()),
                              (self.root / "admin.token", f"{ADMIN_TOKEN}\n".encode()),
                              (self.root / "rest.credential", f"{REST_USER}:{REST_PASSWORD}\n".encode())):
            path.touch(mode=0o600)  # owner-only, as the set-up makes them
            path.write_bytes(content)
        self.linkage_db = self.linkage_db or self.root / "linkage.sqlite"
        self.log_path = self.root / "orthanc.log"
        config = json.loads((REPO / "orthanc.json").read_text())
        # The SCPs of the example configuration are for a site: a test asks for those it needs.
        config.pop("Worklists", None)
        config["Coercion"].pop("Mpps", None)
        # No C-GET for the tests' peers: the plugin refuses to start when a peer an outgoing rule
        # names may C-GET (it would retrieve originals around the rules).
        config["DicomModalities"] = {
            aet.lower(): {"AET": aet, "Host": "127.0.0.1", "Port": port, "AllowGet": False}
            for aet, port in self.modalities.items()
        }
        config["DicomAlwaysAllowStore"] = True  # the tests call from many AETs
        config["PythonScript"] = str(REPO / "plugin" / "orthanc_entry.py")
        config["Coercion"]["LinkageTokenFile"] = str(self.root / "linkage.token")
        config["Coercion"]["RestCredentialFile"] = str(self.root / "rest.credential")
        if self.admin_token:
            config["Coercion"]["AdminTokenFile"] = str(self.root / "admin.token")
        config["Coercion"].update(self.coercion)
        config.update(self.settings)
        self.config = self.root / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, *extra) -> list[str]:
        return [
            sys.executable, "-m", "coercion.cli", "serve", "--config", str(self.config),
            "--http-port", str(self.http_port), "--dicom-port", str(self.dicom_port),
            "--storage", str(self.storage), "--rules", str(self.rules_dir),
            "--secret-file", str(self.secret_file), "--linkage-db", str(self.linkage_db), *extra,
        ]

    def start(self, timeout: float = 30) -> "OrthancServer":
        """Start Orthanc; ports free_port chose that another process took in the meantime (the
        platform runs share loopback with the host's tests) are chosen again, twice at most."""
        for attempt in range(3):
            started_at = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                return self._start(timeout)
            except RuntimeError:
                # Orthanc's own bind failure (coercion serve's check before it, exit 78, is what
                # tests of a taken port ask for: it is not retried)
                taken = "is privileged or already in use" in self.log()[started_at:]
                if not (self._ports_chosen and taken and attempt < 2):
                    raise
                self._log.close()
                self.http_port, self.dicom_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "OrthancServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("COERCION_")} | self.environment
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        STARTED.append(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/system", timeout=1, auth=self.auth).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])



class PlainOrthanc(OrthancREST):
    """Orthanc without any plugin, as a peer."""

    def __init__(self, root, aet, peers, settings: dict | None = None):
        self.root, self.http_port, self.dicom_port = root, free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = authenticated({
            "Name": aet, "DicomAet": aet, "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False, "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"), "Plugins": [], "DicomAlwaysAllowStore": True,
            "DicomModalities": {name.lower(): [name, "127.0.0.1", port] for name, port in peers.items()}})
        config.update(settings or {})
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("wb")
        orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.process = subprocess.Popen([orthanc, str(root / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
        STARTED.append(self.process)
        self.url = f"http://127.0.0.1:{self.http_port}"
        for _ in range(300):
            try:
                if requests.get(self.url + "/system", timeout=1, auth=self.auth).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the peer Orthanc did not start")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.log.close()


class StoreSCP:
    """dcmtk's storescp writing what it receives to a folder."""

    def __init__(self, folder, aet="STORESCP"):
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", aet, "-od", str(folder), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"))
        STARTED.append(self.process)
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def received(self) -> list:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def storescu(server: OrthancServer, calling_aet: str, *files, options: tuple = ()) -> subprocess.CompletedProcess:
    """``options``: more of storescu's (``-xy``: propose JPEG Baseline, for files in it)."""
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        ["storescu", "-v", *options, "-aet", calling_aet, "-aec", AET, "127.0.0.1", str(server.dicom_port),
         *map(str, files)],
        capture_output=True, text=True, env=env, timeout=120,
    )


# A coerced instance is answered Success when Orthanc stored the coerced copy directly, and
# Warning B000 (Coercion of Data Elements) when the plugin had to store it through the REST API
# (the first instance that a worker thread receives from a new AE title): both mean "stored
# coerced"; the tests check what was stored.
COERCED_STATUSES = ("Success", "Warning: CoercionOfDataElements")


def store_statuses(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Received Store Response \(([^)]*)\)", result.stdout + result.stderr)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()
