"""Instances that a C-MOVE retrieve brings in: Orthanc asks a peer (a second, plain Orthanc
named RESEARCH) to send a study to it; the peer's C-STORE sub-operations meet the same rules
as any C-STORE. (Orthanc 1.10 has no C-GET SCU; newer releases bring C-GET retrieves in
through the same callbacks, untested here.)"""

from __future__ import annotations

import io
import json
import uuid

import pydicom
import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import SECRET, OrthancServer, PlainOrthanc, free_port, needs_orthanc

pytestmark = needs_orthanc
KEYS = Keys(SECRET)


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
        assert peer.post("/instances", encode(ds)).ok
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
