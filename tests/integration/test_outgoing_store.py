"""What Orthanc sends: POST /modalities/{id}/store through the C_STORE_RQ / SCP rules.

The clinical Orthanc (with the plugin) keeps originals; RESEARCH is a second, plain Orthanc
that a rule de-identifies for; CLINIC is dcmtk's storescp, which no rule names."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import uuid

import pydicom
import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import SECRET, OrthancServer, PlainOrthanc, StoreSCP, free_port, needs_orthanc

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
RULES = """
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH, NOWHERE]
  uri: "deidentify:RetainPatientIDHashOption"
- name: mr-to-clinic
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [STORESCP]
  conditions: ["Modality=MR"]
  uri: "deidentify:"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("outgoing")
    research = PlainOrthanc(root / "research", "RESEARCH", {})
    clinic = StoreSCP(root / "clinic")
    main = OrthancServer(root / "main", rules=RULES, modalities={
        "RESEARCH": research.dicom_port, "STORESCP": clinic.port, "NOWHERE": free_port()}).start()
    yield main, research, clinic
    main.stop()
    research.stop()
    clinic.stop()


def upload_study(main, count=3, modality="CT"):
    study, series, patient = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}", f"MRN-{uuid.uuid4().hex[:8]}"
    originals = []
    for _ in range(count):
        ds = make_ct(patient_id=patient, study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        ds.Modality = modality
        answer = main.post("/instances", encode(ds))
        assert answer.ok, answer.text
        originals.append(ds)
    study_id = answer.json()["ParentStudy"]
    files = {main.lookup(ds.SOPInstanceUID): main.file(main.lookup(ds.SOPInstanceUID)) for ds in originals}
    return study_id, originals, files


def assert_unchanged(main, files):
    for instance_id, data in files.items():
        assert main.file(instance_id) == data  # Orthanc's copy is only ever read


def test_a_synchronous_send_to_a_matching_peer_leaves_coerced(site):
    main, research, _ = site
    study_id, originals, files = upload_study(main)
    answer = main.post("/modalities/research/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["InstancesCount"], body["FailedInstancesCount"], body["RemoteAet"]) == (3, 0, "RESEARCH")
    assert body["ParentResources"] == [study_id]
    assert body["Coercion"]["CoercedInstancesCount"] == 3 and body["Coercion"]["Rules"] == ["to-research"]
    for ds in originals:
        assert research.lookup(ds.SOPInstanceUID) is None
        received = pydicom.dcmread(io.BytesIO(research.file(research.lookup(KEYS.uid(ds.SOPInstanceUID)))))
        assert received.PatientID == KEYS.patient_id(ds.PatientID, ds.IssuerOfPatientID)
        assert received.PatientName == "" and received.PixelData == ds.PixelData
    assert_unchanged(main, files)
    audit = [line for line in main.log().splitlines() if '"origin":"C-STORE-SCU"' in line]
    assert len(audit) >= 3 and '"called_aet":"RESEARCH"' in audit[-1]


def test_every_body_form_orthanc_accepts(site):
    main, research, _ = site
    for make_body in (lambda i: i, lambda i: json.dumps(i), lambda i: json.dumps([i]),
                      lambda i: json.dumps({"Resources": [i]})):
        _, (ds,), files = upload_study(main, count=1)
        (instance_id,) = files
        answer = main.post("/modalities/research/store", make_body(instance_id))
        assert answer.status_code == 200, answer.text
        assert answer.json()["Coercion"]["CoercedInstancesCount"] == 1
        assert research.lookup(KEYS.uid(ds.SOPInstanceUID)) and research.lookup(ds.SOPInstanceUID) is None


def test_an_asynchronous_send_is_a_job_with_a_status(site):
    main, research, _ = site
    study_id, originals, files = upload_study(main, count=4)
    answer = main.post("/modalities/research/store", json.dumps({"Resources": [study_id], "Asynchronous": True}))
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["Path"] == f"/coercion/sends/{job['ID']}"
    for _ in range(300):
        status = main.get(job["Path"]).json()
        if status["State"] in ("Success", "Failure"):
            break
        time.sleep(0.1)
    assert status["State"] == "Success" and status["SentInstancesCount"] == 4 and status["CoercedInstancesCount"] == 4
    assert any(j["ID"] == job["ID"] for j in main.get("/coercion/sends").json())
    for ds in originals:
        assert research.lookup(KEYS.uid(ds.SOPInstanceUID)) and research.lookup(ds.SOPInstanceUID) is None
    assert_unchanged(main, files)


def test_a_send_no_rule_matches_is_orthancs_own(site):
    main, _, clinic = site
    study_id, originals, files = upload_study(main, count=2)  # CT: the clinic rule wants MR
    before = set(clinic.received())
    answer = main.post("/modalities/storescp/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert answer.status_code == 200, answer.text
    # Orthanc's answer (1.13 adds "Resources"), no coercion part
    assert {"Description", "FailedInstancesCount", "InstancesCount", "LocalAet", "ParentResources",
            "RemoteAet"} <= set(answer.json()) <= {"Description", "FailedInstancesCount", "InstancesCount", "LocalAet",
                                                   "ParentResources", "RemoteAet", "Resources"}
    received = [p for p in clinic.received() if p not in before]
    assert len(received) == 2
    sent = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID: data for data in files.values()}
    for path in received:
        ds = pydicom.dcmread(path)
        original = pydicom.dcmread(io.BytesIO(sent[ds.SOPInstanceUID]))
        assert ds == original and ds.PixelData == original.PixelData  # every attribute, as stored


def test_the_rule_sees_the_data_of_each_instance(site):
    main, _, clinic = site
    study_id, originals, files = upload_study(main, count=2, modality="MR")
    before = set(clinic.received())
    answer = main.post("/modalities/storescp/store", json.dumps([study_id]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["Coercion"]["Rules"] == ["mr-to-clinic"]
    received = [pydicom.dcmread(p) for p in clinic.received() if p not in before]
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(KEYS.uid(ds.SOPInstanceUID) for ds in originals)
    assert all(ds.PatientIdentityRemoved == "YES" for ds in received)


def test_a_failed_send_reports_the_instance_and_the_reason(site):
    main, _, _ = site
    study_id, _, files = upload_study(main, count=2)
    answer = main.post("/modalities/nowhere/store", json.dumps([study_id]))
    assert answer.status_code == 500
    body = answer.json()
    assert "was not sent" in body["Details"] and body["Coercion"]["State"] == "Failure"
    answer = main.post("/modalities/nowhere/store", json.dumps({"Resources": [study_id], "Permissive": True}))
    assert answer.status_code == 200 and answer.json()["FailedInstancesCount"] == 2
    assert_unchanged(main, files)


def test_errors_keep_orthancs_statuses(site):
    main, _, _ = site
    _, _, files = upload_study(main, count=1)
    (instance_id,) = files
    assert main.post("/modalities/unknown/store", instance_id).status_code == 404
    assert main.post("/modalities/research/store", "not-an-id").status_code == 400
    # An identifier Orthanc does not hold: 404 (Orthanc 1.13.0's own route fails it with a 500).
    unknown = main.post("/modalities/research/store", json.dumps(["0" * 8 + "-00000000" * 4]))
    version = tuple(int(p) for p in main.get("/system").json()["Version"].split(".")[:3])
    assert unknown.status_code == (500 if version >= (1, 13, 0) else 404)
    answer = main.post("/modalities/research/store", json.dumps({"Resources": [instance_id], "StorageCommitment": True}))
    assert answer.status_code == 400 and "StorageCommitment" in answer.json()["Details"]


def movescu(main, calling_aet, destination, study_uid):
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        ["movescu", "-v", "-S", "-aet", calling_aet, "-aec", "ORTHANC", "-aem", destination,
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(main.dicom_port)],
        capture_output=True, text=True, env=env, timeout=120)


def test_a_c_move_to_a_matching_peer_leaves_coerced(site):
    main, research, _ = site
    _, originals, files = upload_study(main, count=3)
    result = movescu(main, "RESEARCH", "RESEARCH", originals[0].StudyInstanceUID)
    assert "Final Move Response (Success)" in result.stdout + result.stderr, result.stdout + result.stderr
    for ds in originals:
        assert research.lookup(ds.SOPInstanceUID) is None
        received = pydicom.dcmread(io.BytesIO(research.file(research.lookup(KEYS.uid(ds.SOPInstanceUID)))))
        assert received.PatientIdentityRemoved == "YES" and received.PixelData == ds.PixelData
    assert_unchanged(main, files)


def test_a_c_move_no_rule_matches_sends_the_originals(site):
    main, _, clinic = site
    _, originals, _ = upload_study(main, count=2)  # CT: the clinic rule wants MR
    before = set(clinic.received())
    result = movescu(main, "RESEARCH", "STORESCP", originals[0].StudyInstanceUID)
    assert "Final Move Response (Success)" in result.stdout + result.stderr, result.stdout + result.stderr
    received = sorted(pydicom.dcmread(p).SOPInstanceUID for p in clinic.received() if p not in before)
    assert received == sorted(ds.SOPInstanceUID for ds in originals)


def test_a_c_move_that_cannot_be_sent_fails(site):
    main, research, _ = site
    _, originals, _ = upload_study(main, count=1)
    result = movescu(main, "RESEARCH", "NOWHERE", originals[0].StudyInstanceUID)
    # Orthanc reports the failed sub-operation of the plugin's C-MOVE as a warning.
    assert "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in result.stdout + result.stderr


def test_a_reload_needs_no_restart_when_outgoing_rules_were_there_at_start(site):
    main, _, _ = site
    assert main.admin_post("/coercion/rules/reload").status_code == 200


def test_outgoing_rules_routes_and_c_find_rules_added_at_run_time_need_a_restart(tmp_path):
    server = OrthancServer(tmp_path / "no-outgoing", rules="- {name: in, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}\n")
    server.start()
    try:
        (server.rules_dir / "more.yaml").write_text(
            "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [X], uri: 'deidentify:'}\n")
        answer = server.admin_post("/coercion/rules/reload")
        assert answer.status_code == 400 and "restart Orthanc" in answer.json()["error"]
        assert [r["name"] for r in server.get("/coercion/rules").json()["rules"]] == ["in"]
        (server.rules_dir / "more.yaml").write_text(
            "- {name: route, dimse: C_STORE_RQ, role: SCU, forward: {to: [X]}}\n")
        answer = server.admin_post("/coercion/rules/reload")
        assert answer.status_code == 400 and "routes (rules for C_STORE_RQ with 'forward') were added" in \
            answer.json()["error"]
        # An MPPS route needs no change callback: the MPPS SCP arms it, and the worker starts then.
        (server.rules_dir / "more.yaml").write_text(
            "- {name: mpps-route, dimse: N_CREATE_RQ, role: SCU, forward: {to: [X], when: received}}\n")
        assert server.admin_post("/coercion/rules/reload").status_code == 200
        for dimse, role, message in (("C_FIND_RSP", "SCU", "so that its C-FIND SCP applies them"),
                                     ("C_FIND_RQ", "SCP", "so that the queries it sends go through them")):
            (server.rules_dir / "more.yaml").write_text(
                f"- {{name: find, dimse: {dimse}, role: {role}, receiving-aet: [X], uri: 'deidentify:'}}\n")
            answer = server.admin_post("/coercion/rules/reload")
            assert answer.status_code == 400 and message in answer.json()["error"]
        (server.rules_dir / "more.yaml").unlink()
        assert server.admin_post("/coercion/rules/reload").status_code == 200
    finally:
        server.stop()


def test_peers_that_may_not_c_get_are_not_warned_of(site):
    # Every modality of this site is named by an outgoing rule and has "AllowGet": false (the
    # plugin refuses to start otherwise: tests/integration/test_cget_refusal.py).
    main, _, _ = site
    assert "may C-GET" not in main.log()


def test_a_destination_given_for_one_send_is_refused_where_rules_apply(site):
    """Orthanc 1.12 takes "CalledAet", "Host" and "Port" in a send's body: the data would go
    elsewhere than the modality the rules name, so a send the rules may touch, through the
    modality or the destination given, is refused with a clear error and nothing is sent."""
    main, _, clinic = site
    version = tuple(int(p) for p in main.get("/system").json()["Version"].split(".")[:2])
    if version < (1, 12):
        pytest.skip("Orthanc 1.10 has no destination of its own for one send")
    study_id, _, _ = upload_study(main, count=1, modality="MR")
    before = set(clinic.received())
    answer = main.post("/modalities/storescp/store", json.dumps({"Resources": [study_id], "CalledAet": "ELSEWHERE"}))
    assert answer.status_code == 400 and "CalledAet/Host/Port" in answer.json()["Details"], answer.text
    assert set(clinic.received()) == before
