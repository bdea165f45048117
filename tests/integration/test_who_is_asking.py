"""Who is asking, as Orthanc decides it: a caller Orthanc admits under a modality's AE title
(letter case, padding: StrictAetComparison false, as by default) meets the rules that name
that AE title or that modality, on every path; and nothing around the plugin is left open
(Orthanc's REST API needs its credential, cross-site requests that change state are refused).

One Orthanc with the plugin, DicomAlwaysAllowStore false (only listed modalities are admitted),
and dcmtk's tools as the peers."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pydicom
import pytest
import requests

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import (
    AET, SECRET, OrthancServer, StoreSCP, free_port, needs_orthanc, store_statuses, storescu,
)
from worklists import worklist_item, write_folder

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
URI = "deidentify:RetainPatientIDHashOption"
RULES = f"""
- name: from-research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH_CT]
  uri: "{URI}"
- name: from-scanner-by-name
  dimse: C_STORE_RQ
  role: SCU
  sending-modality: [scanner]
  uri: "{URI}"
- name: research-asks
  dimse: C_FIND_RQ
  role: SCU
  sending-aet: ["RESEARCH_C."]
  uri: "{URI}"
- name: research-sees
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: ["RESEARCH_C."]
  uri: "{URI}"
- name: router
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [ROUTER]
  forward: {{to: [RESEARCH_OUT], when: received, retries: 0}}
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH_CT, RESEARCH_OUT]
  uri: "{URI}"
"""
# The AE titles Orthanc admits as the modality RESEARCH_CT, none of them equal to it as text.
VARIANTS = ["research_ct", "Research_Ct", "RESEARCH_CT  "]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("who-is-asking")
    research = StoreSCP(root / "research-received", aet="RESEARCH_CT")
    out = StoreSCP(root / "out-received", aet="research_out")
    folder = root / "worklists"
    write_folder(folder, [worklist_item("MRN-W1", "Worklist^Wanda", "ACC-W1", "CT", "RESEARCH_CT", "20241120")])
    server = OrthancServer(
        root / "orthanc", rules=RULES,
        settings={"DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
                  "Worklists": {"Enable": True, "Database": str(folder)}, "DicomAlwaysAllowFindWorklist": False,
                  "DicomModalities": {
                      "research-ct": {"AET": "RESEARCH_CT", "Host": "127.0.0.1", "Port": research.port,
                                      "AllowGet": False},
                      # a destination whose AE title the rule names in other letters
                      "research-out": {"AET": "research_out", "Host": "127.0.0.1", "Port": out.port,
                                       "AllowGet": False},
                      "scanner": {"AET": "SCANNER_7", "Host": "127.0.0.1", "Port": free_port(), "AllowGet": False},
                      "router": {"AET": "ROUTER", "Host": "127.0.0.1", "Port": free_port(), "AllowGet": False},
                      "clinic": {"AET": "CLINIC", "Host": "127.0.0.1", "Port": free_port(), "AllowGet": False},
                  }})
    try:
        server.start()
        yield server, research, out
    finally:
        server.stop()
        research.stop()
        out.stop()


def patient_ids_stored(server, patient_id: str) -> list[str]:
    """The Patient IDs Orthanc holds for studies sent as ``patient_id`` (original or pseudonym)."""
    found = []
    for candidate in (patient_id, KEYS.patient_id(patient_id, "HOSPITAL_A")):
        answer = server.post("/tools/find", json.dumps({"Level": "Patient", "Query": {"PatientID": candidate}}))
        if answer.json():
            found.append(candidate)
    return found


def store_as(server, calling: str, tmp_path) -> tuple[str, list[str]]:
    """A CT of a new patient sent by C-STORE as ``calling``: (its Patient ID, the store statuses)."""
    patient = f"P-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{patient}.dcm"
    path.write_bytes(encode(make_ct(patient_id=patient)))
    result = storescu(server, calling, path)
    return patient, store_statuses(result) if result.returncode == 0 else []


@pytest.mark.parametrize("calling", VARIANTS)
def test_c_store_from_a_case_or_padding_variant_is_coerced(site, tmp_path, calling):
    server, _, _ = site
    patient, statuses = store_as(server, calling, tmp_path)
    assert statuses
    assert patient_ids_stored(server, patient) == [KEYS.patient_id(patient, "HOSPITAL_A")]


def test_a_rule_may_name_the_modality_instead_of_its_ae_title(site, tmp_path):
    server, _, _ = site
    patient, statuses = store_as(server, "scanner_7", tmp_path)
    assert statuses and patient_ids_stored(server, patient) == [KEYS.patient_id(patient, "HOSPITAL_A")]


def test_a_caller_no_rule_names_keeps_the_original_and_an_unknown_one_is_not_admitted(site, tmp_path):
    server, _, _ = site
    patient, statuses = store_as(server, "clinic", tmp_path)
    assert statuses and patient_ids_stored(server, patient) == [patient]
    stranger, statuses = store_as(server, "RESEARCH_CTX", tmp_path)
    assert not statuses and patient_ids_stored(server, stranger) == []


def findscu(server, calling: str, keys: list[str], model: str = "-S") -> list[pydicom.Dataset]:
    out = tempfile.mkdtemp(prefix="findscu-")
    args = ["findscu", model, "-aet", calling, "-aec", AET, "127.0.0.1", str(server.dicom_port), "-X", "-od", out]
    for key in keys:
        args += ["-k", key]
    subprocess.run(args, capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    return [pydicom.dcmread(p) for p in sorted(Path(out).iterdir())]


def test_c_find_from_a_case_variant_is_answered_in_pseudonyms(site, tmp_path):
    server, _, _ = site
    patient = f"F-{uuid.uuid4().hex[:8]}"
    assert server.post("/instances", encode(make_ct(patient_id=patient, patient_name="Find^Fiona"))).ok
    keys = ["QueryRetrieveLevel=STUDY", f"PatientID={patient}", "PatientName"]
    assert [a.PatientID for a in findscu(server, "clinic", keys)] == [patient]  # the query matches
    # A patient stored in clear whose pseudonym was handed out by a coerced send to research-ct.
    linked = f"L-{uuid.uuid4().hex[:8]}"
    study_id = server.post("/instances", encode(make_ct(patient_id=linked))).json()["ParentStudy"]
    sent = server.post("/modalities/research-ct/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert sent.status_code == 200, sent.text
    pseudonym = KEYS.patient_id(linked, "HOSPITAL_A")
    for calling in ("research_ct", "RESEARCH_CT "):
        answers = findscu(server, calling, keys)
        assert all(a.PatientID != patient and "Fiona" not in str(a.PatientName) for a in answers), calling
        by_pseudonym = findscu(server, calling, ["QueryRetrieveLevel=STUDY", f"PatientID={pseudonym}"])
        assert [a.PatientID for a in by_pseudonym] == [pseudonym], calling  # admitted, answered, coerced


def test_worklist_query_from_a_case_variant_is_answered_in_pseudonyms(site):
    server, _, _ = site
    keys = ["PatientID", "PatientName", "ScheduledProcedureStepSequence[0].Modality=CT"]
    clear = findscu(server, "clinic", keys, model="-W")
    assert "MRN-W1" in [a.PatientID for a in clear]
    for calling in ("research_ct", "Research_CT "):
        answers = findscu(server, calling, keys, model="-W")
        assert answers and "MRN-W1" not in [a.PatientID for a in answers], calling
        assert all("Wanda" not in str(a.PatientName) for a in answers)


def test_a_send_to_a_destination_named_in_other_letters_is_coerced(site):
    server, _, out = site
    patient = f"O-{uuid.uuid4().hex[:8]}"
    study = f"2.25.{uuid.uuid4().int}"
    assert server.post("/instances", encode(make_ct(patient_id=patient, study_uid=study))).ok
    study_id = server.post("/tools/lookup", study).json()[0]["ID"]
    answer = server.post("/modalities/research-out/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert answer.status_code == 200, answer.text
    (received,) = [pydicom.dcmread(p) for p in out.received() if pydicom.dcmread(p).StudyInstanceUID == KEYS.uid(study)]
    assert received.PatientID == KEYS.patient_id(patient, "HOSPITAL_A")


def test_a_route_from_a_case_variant_forwards_to_a_destination_named_in_other_letters(site, tmp_path):
    server, _, out = site
    patient = f"R-{uuid.uuid4().hex[:8]}"
    study = f"2.25.{uuid.uuid4().int}"
    path = tmp_path / "ct.dcm"
    path.write_bytes(encode(make_ct(patient_id=patient, study_uid=study)))
    assert storescu(server, "Router ", path).returncode == 0
    assert patient_ids_stored(server, patient) == [patient]  # the route coerces nothing on the way in
    for _ in range(200):
        received = [pydicom.dcmread(p) for p in out.received()]
        if any(ds.StudyInstanceUID == KEYS.uid(study) for ds in received):
            break
        time.sleep(0.1)
    forwarded = [ds for ds in received if ds.StudyInstanceUID in (study, KEYS.uid(study))]
    assert forwarded and all(ds.PatientID == KEYS.patient_id(patient, "HOSPITAL_A") for ds in forwarded), \
        server.get("/coercion/forwards", headers={"X-Coercion-Token": "admin-token-0123456789abcdef"}).json()


def test_a_c_move_to_a_destination_named_in_other_letters_is_coerced(site):
    server, research, _ = site
    patient = f"M-{uuid.uuid4().hex[:8]}"
    study = f"2.25.{uuid.uuid4().int}"
    assert server.post("/instances", encode(make_ct(patient_id=patient, study_uid=study))).ok
    run = subprocess.run(
        ["movescu", "-S", "-aet", "research_ct", "-aec", AET, "-aem", "research_ct", "127.0.0.1",
         str(server.dicom_port), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TCP_NODELAY="1"))
    assert run.returncode == 0, run.stderr
    received = [pydicom.dcmread(p) for p in research.received()]
    mine = [ds for ds in received if ds.StudyInstanceUID == KEYS.uid(study)]
    assert mine and all(ds.PatientID == KEYS.patient_id(patient, "HOSPITAL_A") for ds in mine)
    assert not [ds for ds in received if ds.StudyInstanceUID == study]


# -- Orthanc's REST API ----------------------------------------------------------------------


def test_the_rest_api_needs_the_credential(site):
    server, _, _ = site
    assert requests.get(server.url + "/patients", timeout=10).status_code == 401
    assert requests.get(server.url + "/patients", timeout=10, auth=("coercion", "wrong")).status_code == 401
    assert requests.put(server.url + "/modalities/evil", timeout=10,
                        data=json.dumps({"AET": "EVIL", "Host": "127.0.0.1", "Port": 1})).status_code == 401
    assert server.get("/patients").status_code == 200


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"


def test_a_cross_site_send_is_refused_and_nothing_leaves(site):
    server, research, _ = site
    study = f"2.25.{uuid.uuid4().int}"
    assert server.post("/instances", encode(make_ct(study_uid=study))).ok
    study_id = server.post("/tools/lookup", study).json()[0]["ID"]
    before = len(research.received())
    body = json.dumps({"Resources": [study_id], "Synchronous": True})
    host = f"127.0.0.1:{server.http_port}"
    # What a page of another site makes a browser that holds the credential send.
    for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Origin": "null", "Content-Type": "text/plain"},
                    {"Referer": "http://evil.example/page", "Content-Type": "application/json"},
                    {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
                    {"User-Agent": BROWSER, "Content-Type": "application/x-www-form-urlencoded"},
                    {"User-Agent": BROWSER, "Content-Type": "multipart/form-data; boundary=x"}):
        answer = server.post("/modalities/research-ct/store", body, headers=headers)
        assert answer.status_code == 403, headers
    assert len(research.received()) == before
    assert server.put("/modalities/evil", json.dumps({"AET": "EVIL", "Host": "127.0.0.1", "Port": 1}),
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert "evil" not in server.get("/modalities").json()
    assert server.post("/coercion/rules/reload", headers={"Origin": "http://evil.example",
                                                            "X-Coercion-Token": "admin-token-0123456789abcdef"}
                       ).status_code == 403
    audit = server.get("/coercion/audit", headers={"X-Coercion-Token": "admin-token-0123456789abcdef"}).json()
    assert any(r["event"] == "cross-site-request" and r["outcome"].startswith("refused") for r in audit)
    # Orthanc's own pages (same Origin) and clients that are not browsers still may.
    same_site = server.post("/tools/lookup", study, headers={"Origin": f"http://{host}", "Content-Type": "text/plain",
                                                             "User-Agent": BROWSER, "Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 200
    assert server.post("/tools/lookup", study, headers={"Content-Type": "application/json"}).status_code == 200
    curl = server.post("/tools/lookup", study, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                        "User-Agent": "curl/7.88.1"})
    assert curl.status_code == 200
    assert server.get("/patients", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS


def test_an_open_rest_api_with_rules_stops_the_plugin_unless_acknowledged(tmp_path):
    server = OrthancServer(tmp_path / "open", settings={"AuthenticationEnabled": False})
    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert "REST API is open" in str(refused.value) and "UnsafeOpenRestApiExposesOriginals" in str(refused.value)
    server.stop()
    acknowledged = OrthancServer(tmp_path / "acknowledged", settings={"AuthenticationEnabled": False},
                                 coercion={"UnsafeOpenRestApiExposesOriginals": True})
    try:
        acknowledged.start()
        assert requests.get(acknowledged.url + "/system", timeout=10).status_code == 200
    finally:
        acknowledged.stop()
