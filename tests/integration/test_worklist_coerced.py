"""A research modality under worklist rules sees its worklist in its de-identified world: the
pseudonymous Patient ID, Study Instance UID and date shift it gets for the same patient and
study by C-STORE, only its own station's items; it queries by them, and sends back images
that land under them. Items also come and go over REST."""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
from datetime import date, timedelta

import pydicom
import pytest
from pynetdicom import AE

from coercion import Deidentifier, Keys
from coercion.exchanges.worklist import encode

from factory import encode as encode_instance
from factory import make_ct
from orthanc_server import ADMIN, AET, SECRET, TOKEN, OrthancServer, needs_orthanc
from test_find_native import findscu
from worklists import standard_items, worklist_item, write_folder

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
RULES = f"""
- name: research-asks-worklist
  dimse: C_FIND_RQ
  role: SCU
  sending-aet: [RESEARCH_CT]
  sop-class: [1.2.840.10008.5.1.4.31]
  scheduled-station-aet: calling-aet
  uri: "{URI}"
- name: research-sees-worklist
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: [RESEARCH_CT]
  sop-class: [1.2.840.10008.5.1.4.31]
  uri: "{URI}"
"""
STEP = "ScheduledProcedureStepSequence[0]."
KEYS_ASKED = ["PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber",
              STEP + "ScheduledStationAETitle", STEP + "ScheduledProcedureStepStartDate", STEP + "Modality"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("worklist-coerced")
    folder = root / "worklists"
    items = standard_items() + [worklist_item("MRN-R2", "Roe^Richard", "ACC-R2", "CT", "RESEARCH_CT", "20241120")]
    write_folder(folder, items)
    settings = {"Worklists": {"Enable": True, "Database": str(folder)}, "DicomAlwaysAllowFindWorklist": True}
    server = OrthancServer(root / "orthanc", rules=RULES, settings=settings).start()
    yield server, folder, {ds.PatientID: ds for ds in items}
    server.stop()


def shifted(day: str, patient_id: str, issuer: str) -> str:
    moved = date(int(day[:4]), int(day[4:6]), int(day[6:])) + timedelta(KEYS.date_shift_days(patient_id, issuer))
    return moved.strftime("%Y%m%d")


def test_the_research_modality_sees_its_items_in_pseudonyms(site):
    server, _, items = site
    answers, final = findscu(server.dicom_port, KEYS_ASKED, "-W", "RESEARCH_CT")
    assert final[-1].startswith("0x0000")
    # only its own station's items (calling AE title as Scheduled Station AE Title), whose AE
    # title the profile removes from what it is shown
    ours = {KEYS.patient_id(ds.PatientID, "HOSP") for ds in items.values()
            if ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "RESEARCH_CT"}
    assert {a.PatientID for a in answers} == ours and len(answers) == 2
    assert {a.ScheduledProcedureStepSequence[0].get("ScheduledStationAETitle", "") for a in answers} == {""}
    for answer in answers:
        original = next(ds for ds in items.values() if KEYS.patient_id(ds.PatientID, "HOSP") == answer.PatientID)
        assert answer.PatientName == "" and answer.PatientBirthDate != original.PatientBirthDate
        assert answer.StudyInstanceUID == KEYS.uid(original.StudyInstanceUID)
        step = original.ScheduledProcedureStepSequence[0]
        assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate == shifted(
            step.ScheduledProcedureStepStartDate, original.PatientID, "HOSP")
        assert original.PatientID not in str(answer) and original.AccessionNumber != answer.AccessionNumber


def test_the_pseudonyms_are_those_a_c_store_hands_out(site):
    server, _, items = site
    original = items["MRN-W6"]
    instance = make_ct(patient_id=original.PatientID, study_uid=original.StudyInstanceUID, sop_uid=f"2.25.{uuid.uuid4().int}")
    instance.IssuerOfPatientID = "HOSP"
    stored = pydicom.dcmread(io.BytesIO(Deidentifier.from_uri(URI, KEYS).deidentify_bytes(encode_instance(instance))))
    answers, _ = findscu(server.dicom_port, KEYS_ASKED, "-W", "RESEARCH_CT")
    answer = next(a for a in answers if a.StudyInstanceUID == stored.StudyInstanceUID)
    assert answer.PatientID == stored.PatientID  # one patient, one pseudonym, whatever the exchange


def test_it_queries_by_what_it_was_given(site):
    server, _, items = site
    original = items["MRN-R2"]
    pseudonym = KEYS.patient_id(original.PatientID, "HOSP")
    by_pseudonym, _ = findscu(server.dicom_port, [f"PatientID={pseudonym}", "StudyInstanceUID"], "-W", "RESEARCH_CT")
    assert [a.StudyInstanceUID for a in by_pseudonym] == [KEYS.uid(original.StudyInstanceUID)]
    day = shifted("20241120", original.PatientID, "HOSP")
    by_date, _ = findscu(server.dicom_port, [STEP + f"ScheduledProcedureStepStartDate={day}", "PatientID"], "-W",
                         "RESEARCH_CT")
    assert [a.PatientID for a in by_date] == [pseudonym]
    by_original, _ = findscu(server.dicom_port, ["PatientID=MRN-R2", "PatientName"], "-W", "RESEARCH_CT")
    assert by_original == []  # an original finds nothing: no oracle on what the caller is not shown
    # another caller (no rule) gets the items as they are
    plain, _ = findscu(server.dicom_port, ["PatientID=MRN-R2", "PatientName"], "-W", "MODALITY")
    assert [str(a.PatientName) for a in plain] == ["Roe^Richard"]


def test_images_sent_back_land_under_the_pseudonyms_and_link_back(site):
    server, _, items = site
    answers, _ = findscu(server.dicom_port, KEYS_ASKED, "-W", "RESEARCH_CT")
    answer = answers[0]
    image = make_ct(patient_id=answer.PatientID, patient_name="", study_uid=answer.StudyInstanceUID,
                    sop_uid=f"2.25.{uuid.uuid4().int}")
    path = server.root / f"{image.SOPInstanceUID}.dcm"
    path.write_bytes(encode_instance(image))
    ae = AE(ae_title="RESEARCH_CT")
    ae.add_requested_context(image.SOPClassUID, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=AET)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(path).Status == 0
    finally:
        assoc.release()
    studies = server.post("/tools/lookup", answer.StudyInstanceUID).json()
    assert [s["Type"] for s in studies] == ["Study"]
    link = server.get(f"/coercion/linkage/{answer.PatientID}", headers={"X-Coercion-Token": TOKEN})
    assert link.status_code == 200 and link.json()["links"][0]["patient_id"] in items


def test_items_over_rest(site):
    server, folder, _ = site
    item = worklist_item("MRN-REST-1", "Rest^Ronald", "ACC-REST", "MR", "RESEARCH_CT", "20241210")
    assert server.post("/coercion/worklists", encode(item)).status_code == 403  # the admin credential
    created = server.admin_post("/coercion/worklists", encode(item))
    assert created.status_code == 200, created.text
    item_id = created.json()["ID"]
    assert (folder / f"{item_id}.wl").stat().st_mode & 0o077 == 0
    as_json = worklist_item("MRN-REST-2", "Json^Jenny", "ACC-JSON", "MR", "MR01", "20241211").to_json_dict()
    second = server.admin_post("/coercion/worklists", json.dumps(as_json), headers={"Content-Type": "application/dicom+json"})
    assert second.status_code == 200, second.text
    listed = server.get("/coercion/worklists", headers=ADMIN).json()
    assert {item_id, second.json()["ID"]} <= {entry["ID"] for entry in listed}
    read = server.get(f"/coercion/worklists/{item_id}", headers=ADMIN).json()
    assert read["Item"]["00100020"]["Value"] == ["MRN-REST-1"]
    found, _ = findscu(server.dicom_port, ["AccessionNumber=ACC-JSON", "PatientID"], "-W", "MODALITY")
    assert [a.PatientID for a in found] == ["MRN-REST-2"]
    assert server.admin_post("/coercion/worklists", b"not dicom").status_code == 400
    assert server.admin_post("/coercion/worklists", encode(make_ct())).status_code == 400  # not a worklist item
    assert server.delete(f"/coercion/worklists/{item_id}", headers=ADMIN).status_code == 200
    assert server.get(f"/coercion/worklists/{item_id}", headers=ADMIN).status_code == 404
    assert '"event":"worklists"' in server.log()


def test_coercion_serve_refuses_to_run_beside_the_sample_plugin(tmp_path):
    server = OrthancServer(tmp_path, settings={
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so", "/usr/share/orthanc/plugins/libModalityWorklists.so"],
        "Worklists": {"Enable": True, "Database": str(tmp_path)}})
    run = subprocess.run(server.command(), capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("COERCION_")})
    assert run.returncode == 78 and "ModalityWorklists sample plugin" in run.stderr
