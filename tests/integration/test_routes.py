"""Routes: what a rule matched on the way in is forwarded to peers, through the rules for
outgoing C-STORE, with retries and a status under /coercion/forwards."""

from __future__ import annotations

import io
import time
import uuid

import pydicom
import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import (SECRET, OrthancServer, PlainOrthanc, StoreSCP, free_port, needs_orthanc, store_statuses,
                            storescu)

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
RULES = """
- name: ct-to-research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [MODALITY]
  forward: {to: [research], when: received, conditions: ["Modality=CT"]}
- name: study-to-clinic
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [MODALITY]
  forward: {to: [STORESCP], when: stable-study}
- name: trial-in
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [TRIAL]
  uri: "deidentify:RetainPatientIDHashOption"
  forward: {to: [research], when: received}
- name: nowhere
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [LOST]
  forward: {to: [nowhere], when: received, retries: 1, retry-interval: 1}
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "deidentify:"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    research = PlainOrthanc(root / "research", "RESEARCH", {})
    clinic = StoreSCP(root / "clinic")
    main = OrthancServer(root / "main", rules=RULES, settings={"StableAge": 1}, modalities={
        "RESEARCH": research.dicom_port, "STORESCP": clinic.port, "NOWHERE": free_port(), "MODALITY": free_port(),
        "TRIAL": free_port(), "LOST": free_port()}).start()
    yield main, research, clinic
    main.stop()
    research.stop()
    clinic.stop()


def series(tmp_path, count, modality="CT"):
    study, patient = f"2.25.{uuid.uuid4().int}", f"MRN-{uuid.uuid4().hex[:8]}"
    out = []
    for _ in range(count):
        ds = make_ct(patient_id=patient, study_uid=study, sop_uid=f"2.25.{uuid.uuid4().int}")
        ds.Modality = modality
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(encode(ds))
        out.append((path, ds))
    return out


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def forwards(main, route):
    return [f for f in main.get("/coercion/forwards").json() if f["route"] == route]


def test_received_instances_are_forwarded_coerced_and_orthanc_keeps_the_originals(site, tmp_path):
    main, research, _ = site
    files = series(tmp_path, 2)
    assert store_statuses(storescu(main, "MODALITY", *(p for p, _ in files))) == ["Success", "Success"]
    for _, ds in files:
        instance = wait_for(lambda: research.lookup(KEYS.uid(ds.SOPInstanceUID)))
        received = pydicom.dcmread(io.BytesIO(research.file(instance)))
        assert received.PatientIdentityRemoved == "YES" and received.PixelData == ds.PixelData
        assert research.lookup(ds.SOPInstanceUID) is None
        assert pydicom.dcmread(io.BytesIO(main.file(main.lookup(ds.SOPInstanceUID)))).PatientName == ds.PatientName
    done = wait_for(lambda: [f for f in forwards(main, "ct-to-research") if f["state"] == "sent"])
    assert done[0]["level"] == "Instance" and done[0]["job"]


def test_the_forward_conditions_look_at_the_data(site, tmp_path):
    main, research, _ = site
    (path, ds), = series(tmp_path, 1, modality="MR")
    assert store_statuses(storescu(main, "MODALITY", path)) == ["Success"]
    time.sleep(2)
    assert research.lookup(KEYS.uid(ds.SOPInstanceUID)) is None and research.lookup(ds.SOPInstanceUID) is None


def test_a_study_is_forwarded_once_stable(site, tmp_path):
    main, _, clinic = site
    before = set(clinic.received())
    files = series(tmp_path, 3)
    storescu(main, "MODALITY", *(p for p, _ in files[:2]))
    storescu(main, "MODALITY", files[2][0])
    study = main.post("/tools/lookup", files[0][1].StudyInstanceUID).json()[0]["ID"]
    row = wait_for(lambda: [f for f in forwards(main, "study-to-clinic") if f["resource"] == study and f["state"] == "sent"])
    assert len(row) == 1 and row[0]["level"] == "Study"  # one forward for the study, not one per instance
    received = {pydicom.dcmread(p).SOPInstanceUID for p in clinic.received() if p not in before}
    assert {ds.SOPInstanceUID for _, ds in files} <= received  # the originals: no outgoing rule for it


def test_what_was_coerced_on_the_way_in_is_forwarded_as_stored(site, tmp_path):
    main, research, _ = site
    files = series(tmp_path, 2)
    storescu(main, "TRIAL", *(p for p, _ in files))
    for _, ds in files:
        stored_uid = KEYS.uid(ds.SOPInstanceUID)  # coerced on the way in
        assert main.lookup(stored_uid) and main.lookup(ds.SOPInstanceUID) is None
        # and again by the outgoing rule (basic profile) on the way to RESEARCH
        wait_for(lambda: research.lookup(KEYS.uid(stored_uid)))


def test_a_forward_that_cannot_be_sent_is_retried_then_fails_with_the_reason(site, tmp_path):
    main, _, _ = site
    (path, _), = series(tmp_path, 1)
    storescu(main, "LOST", path)
    failed = wait_for(lambda: [f for f in forwards(main, "nowhere") if f["state"] == "failed"], timeout=40)
    assert failed[0]["attempts"] == 2 and "sending failed" in failed[0]["last_error"]
    assert main.get(f"/coercion/forwards/{failed[0]['id']}").json()["state"] == "failed"
    # An administrator retries it: one more attempt, audited; without the credential, refused.
    assert main.post(f"/coercion/forwards/{failed[0]['id']}/retry").status_code == 403
    answer = main.admin_post(f"/coercion/forwards/{failed[0]['id']}/retry")
    assert answer.status_code == 200 and answer.json()["state"] == "pending"
    again = wait_for(lambda: [f for f in forwards(main, "nowhere")
                              if f["id"] == failed[0]["id"] and f["state"] == "failed" and f["attempts"] == 3], timeout=40)
    assert again
    assert main.admin_post("/coercion/forwards/999999/retry").status_code == 404
    assert '"event":"forward-retry"' in main.log()
