"""Rules that look only at the data (no AE title, no host): DICOM instances are coerced in the
received-instance callback, so Orthanc ingests each instance once."""

from __future__ import annotations

import io
import uuid

import pydicom
import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import SECRET, OrthancServer, needs_orthanc, store_statuses, storescu

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
RULES = """
- name: ct-only
  dimse: C_STORE_RQ
  role: SCU
  conditions: ["Modality=CT"]
  uri: "deidentify:RetainPatientIDHashOption"
"""


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("direct"), rules=RULES).start()
    yield server
    server.stop()


def write(tmp_path, **kwargs):
    ds = make_ct(study_uid=f"2.25.{uuid.uuid4().int}", sop_uid=f"2.25.{uuid.uuid4().int}", **kwargs)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(encode(ds))
    return path, ds


def test_matching_data_from_any_aet_is_stored_coerced(direct, tmp_path):
    path, original = write(tmp_path)
    assert store_statuses(storescu(direct, "ANYBODY", path)) == ["Success"]
    assert direct.lookup(original.SOPInstanceUID) is None
    stored = pydicom.dcmread(io.BytesIO(direct.file(direct.lookup(KEYS.uid(original.SOPInstanceUID)))))
    assert stored.PatientID == KEYS.patient_id(original.PatientID, original.IssuerOfPatientID)
    assert stored.PixelData == original.PixelData


def test_other_data_is_stored_unchanged(direct, tmp_path):
    path, original = write(tmp_path)
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    ds.save_as(path)
    assert store_statuses(storescu(direct, "ANYBODY", path)) == ["Success"]
    assert pydicom.dcmread(io.BytesIO(direct.file(direct.lookup(original.SOPInstanceUID)))).PatientName == original.PatientName


def test_rest_uploads_follow_the_same_rule(direct, tmp_path):
    path, original = write(tmp_path)
    assert direct.post("/instances", path.read_bytes()).status_code == 200
    assert direct.lookup(KEYS.uid(original.SOPInstanceUID)) and direct.lookup(original.SOPInstanceUID) is None


def test_a_refused_instance_is_an_error_for_the_client_and_is_not_stored(direct, tmp_path):
    path, original = write(tmp_path, rows=64)  # 8 KB of pixel data: the cut falls inside it
    data = path.read_bytes()
    answer = direct.post("/instances", data[:-1000])
    assert answer.status_code == 400
    assert direct.lookup(original.SOPInstanceUID) is None and direct.lookup(KEYS.uid(original.SOPInstanceUID)) is None
    assert direct.get("/system").ok
    audit = [line for line in direct.log().splitlines() if '"action":"rejected"' in line]
    assert audit and "pixel data is truncated" in audit[-1]  # refused by the plugin, not by Orthanc

