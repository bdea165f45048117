"""Instances that a C-MOVE retrieve brings in: Orthanc asks a peer (a second, plain Orthanc
named RESEARCH) to send a study to it; the peer's C-STORE sub-operations meet the same rules
as any C-STORE. (Orthanc 1.10 has no C-GET SCU; newer releases bring C-GET retrieves in
through the same callbacks, untested here.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pydicom
import pytest
import requests

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import SECRET, OrthancServer, free_port, needs_orthanc

pytestmark = needs_orthanc
KEYS = Keys(SECRET)


class PlainOrthanc:
    """Orthanc without any plugin, as a peer."""

    def __init__(self, root, aet, peers):
        self.root, self.http_port, self.dicom_port = root, free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {"Name": aet, "DicomAet": aet, "HttpPort": self.http_port, "DicomPort": self.dicom_port,
                  "RemoteAccessAllowed": False, "StorageDirectory": str(root / "storage"),
                  "IndexDirectory": str(root / "storage"), "Plugins": [], "DicomAlwaysAllowStore": True,
                  "DicomModalities": {name.lower(): [name, "127.0.0.1", port] for name, port in peers.items()}}
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("wb")
        orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.process = subprocess.Popen([orthanc, str(root / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
        self.url = f"http://127.0.0.1:{self.http_port}"
        for _ in range(300):
            try:
                if requests.get(self.url + "/system", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the peer Orthanc did not start")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieve")
    main_dicom_port = free_port()
    peer = PlainOrthanc(root / "peer", "RESEARCH", {"ORTHANC": main_dicom_port})
    main = OrthancServer(root / "main", modalities={"RESEARCH": peer.dicom_port})
    main.dicom_port = main_dicom_port
    main.start()
    yield main, peer
    main.stop()
    peer.stop()


def test_a_study_retrieved_with_c_move_from_a_matching_peer_is_stored_coerced(pair):
    main, peer = pair
    study = f"2.25.{uuid.uuid4().int}"
    originals = [make_ct(study_uid=study, sop_uid=f"2.25.{uuid.uuid4().int}") for _ in range(3)]
    for ds in originals:
        assert requests.post(peer.url + "/instances", data=encode(ds), timeout=30).ok
    answer = main.post("/modalities/research/move", json.dumps(
        {"Level": "Study", "Resources": [{"StudyInstanceUID": study}], "TargetAet": "ORTHANC"}))
    assert answer.ok, answer.text
    for ds in originals:
        assert main.lookup(ds.SOPInstanceUID) is None
        stored = pydicom.dcmread(io.BytesIO(main.file(main.lookup(KEYS.uid(ds.SOPInstanceUID)))))
        assert stored.PatientID == KEYS.patient_id(ds.PatientID, ds.IssuerOfPatientID)
        assert stored.PixelData == ds.PixelData
    stats = main.get("/coercion/stats").json()
    assert stats["research"]["coerced"] >= 3
