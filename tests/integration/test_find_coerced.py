"""A research archive that received de-identified data queries the clinical Orthanc by what it
received, and sees what it received.

RESEARCH is a second, plain Orthanc: the clinical Orthanc (with the plugin) sends it studies
through an outgoing rule, and RESEARCH queries back with its own C-FIND SCU
(``POST /modalities/clinical/query``), matched by C_FIND_RQ / C_FIND_RSP rules."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import AET, SECRET, TOKEN, OrthancServer, PlainOrthanc, free_port, needs_orthanc

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
RULES = f"""
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "{URI}"
- name: research-asks
  dimse: C_FIND_RQ
  role: SCU
  sending-aet: [RESEARCH, PROBE]
  uri: "{URI}"
- name: research-sees
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: [RESEARCH, PROBE]
  uri: "{URI}"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("find-coerced")
    main_port = free_port()
    research = PlainOrthanc(root / "research", "RESEARCH", {AET: main_port})
    main = OrthancServer(root / "main", rules=RULES, modalities={"RESEARCH": research.dicom_port, "PROBE": free_port(),
                                                          "CLINICIAN": free_port()},
                         dicom_port=main_port)
    try:
        main.start()
        yield main, research
    finally:  # a main Orthanc that failed to start must not leave the peer running
        main.stop()
        research.stop()


def upload(main, patient_id: str, study_date: str, series: int = 1, name: str = "Doe^John"):
    study = f"2.25.{uuid.uuid4().int}"
    for index in range(series):
        ds = make_ct(patient_id=patient_id, patient_name=name, study_uid=study, series_uid=f"{study}.{index + 1}",
                     sop_uid=f"{study}.{index + 1}.1", study_date=study_date)
        assert main.post("/instances", encode(ds)).ok
    return study


def send_to_research(main, study_uid: str):
    study_id = main.post("/tools/lookup", study_uid).json()[0]["ID"]
    answer = main.post("/modalities/research/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert answer.status_code == 200, answer.text


def research_query(research, level: str, query: dict) -> list[dict]:
    answer = research.post(f"/modalities/{AET.lower()}/query", json.dumps({"Level": level, "Query": query}))
    assert answer.status_code == 200, answer.text
    path = answer.json()["Path"]
    count = len(research.get(path + "/answers").json())
    return [research.get(f"{path}/answers/{i}/content?simplify").json() for i in range(count)]


def held_by_research(research, pseudo_study_uid: str) -> dict:
    found = research.post("/tools/find", json.dumps({"Level": "Study", "Expand": True,
                                                     "Query": {"StudyInstanceUID": pseudo_study_uid}})).json()
    assert len(found) == 1
    return {**found[0]["MainDicomTags"], **found[0]["PatientMainDicomTags"]}


KEYS_ASKED = {"PatientID": "", "PatientName": "", "StudyDate": "", "AccessionNumber": "", "StudyDescription": ""}


@pytest.fixture(scope="module")
def sent(site):
    """Patient P has two studies, one of them sent to RESEARCH; patient Q has one, never sent."""
    main, research = site
    patient = f"P-{uuid.uuid4().hex[:6]}"
    first = upload(main, patient, "20240131", series=2)
    second = upload(main, patient, "20230510")
    other = upload(main, f"Q-{uuid.uuid4().hex[:6]}", "20240131")
    send_to_research(main, first)
    return {"patient": patient, "first": first, "second": second, "other": other,
            "held": held_by_research(research, KEYS.uid(first))}


def test_the_research_archive_finds_by_the_uid_it_received_and_sees_what_it_holds(site, sent):
    main, research = site
    answers = research_query(research, "Study", {"StudyInstanceUID": KEYS.uid(sent["first"]), **KEYS_ASKED})
    assert len(answers) == 1
    held = sent["held"]
    for keyword in ("StudyInstanceUID", "PatientID", "StudyDate", "PatientName", "AccessionNumber"):
        assert answers[0].get(keyword, "") == held.get(keyword, ""), keyword
    assert answers[0]["PatientID"] == KEYS.patient_id(sent["patient"], "HOSPITAL_A")
    assert answers[0]["StudyDate"] != "20240131"  # shifted, as what it received
    assert "Doe" not in json.dumps(answers)


def test_a_pseudonymous_patient_id_finds_every_study_of_the_patient_in_pseudonyms(site, sent):
    _, research = site
    pseudo = sent["held"]["PatientID"]
    answers = research_query(research, "Study", {"PatientID": pseudo, "StudyInstanceUID": "", "StudyDate": ""})
    assert sorted(a["StudyInstanceUID"] for a in answers) == sorted(
        KEYS.uid(s) for s in (sent["first"], sent["second"]))
    assert {a["PatientID"] for a in answers} == {pseudo}
    shift = KEYS.date_shift_days(sent["patient"], "HOSPITAL_A")
    assert all(a["StudyDate"] not in ("20240131", "20230510") for a in answers) and shift != 0


def test_dates_match_in_the_shifted_world(site, sent):
    _, research = site
    shifted = sent["held"]["StudyDate"]
    exact = research_query(research, "Study", {"StudyDate": shifted, "StudyInstanceUID": ""})
    assert KEYS.uid(sent["first"]) in [a["StudyInstanceUID"] for a in exact]
    ranged = research_query(research, "Study", {"StudyDate": f"{shifted}-{shifted}", "StudyInstanceUID": ""})
    assert KEYS.uid(sent["first"]) in [a["StudyInstanceUID"] for a in ranged]
    original = research_query(research, "Study", {"StudyDate": "20240131", "StudyInstanceUID": "",
                                                  "PatientID": sent["held"]["PatientID"]})
    assert original == []  # the patient's studies are not on that date in the world RESEARCH sees


def test_originals_and_values_it_is_not_shown_find_nothing(site, sent):
    _, research = site
    assert research_query(research, "Study", {"StudyInstanceUID": sent["first"]}) == []
    assert research_query(research, "Study", {"PatientID": sent["patient"]}) == []
    assert research_query(research, "Study", {"PatientName": "Doe*", "StudyInstanceUID": ""}) == []
    assert research_query(research, "Study", {"StudyInstanceUID": "2.25.1234567890"}) == []
    assert research_query(research, "Study", {"PatientID": "NOTAPSEUDONYM"}) == []


def test_series_are_found_by_the_pseudonymous_study_uid(site, sent):
    _, research = site
    answers = research_query(research, "Series", {"StudyInstanceUID": KEYS.uid(sent["first"]),
                                                  "SeriesInstanceUID": "", "Modality": ""})
    assert sorted(a["SeriesInstanceUID"] for a in answers) == sorted(
        KEYS.uid(f"{sent['first']}.{i}") for i in (1, 2))
    assert {a["Modality"] for a in answers} == {"CT"}
    assert all(a["StudyInstanceUID"] == KEYS.uid(sent["first"]) for a in answers)


def test_what_an_answer_hands_out_can_be_queried_later_and_is_in_the_linkage_store(site, sent):
    main, research = site
    # The other study of P reached RESEARCH only as an answer: its pseudonymous UID now works.
    answers = research_query(research, "Study", {"StudyInstanceUID": KEYS.uid(sent["second"]), "PatientID": ""})
    assert [a["PatientID"] for a in answers] == [sent["held"]["PatientID"]]
    stats = main.get("/coercion/stats").json()
    assert stats["research-sees"]["coerced"] >= 1
    link = main.get(f"/coercion/linkage/{sent['held']['PatientID']}", headers={"X-Coercion-Token": TOKEN})
    assert link.status_code == 200 and link.json()["links"][0]["patient_id"] == sent["patient"]


def test_a_caller_no_rule_matches_sees_the_originals(site, sent):
    main, _ = site
    run = subprocess.run(
        ["findscu", "-S", "-aet", "CLINICIAN", "-aec", AET, "127.0.0.1", str(main.dicom_port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent['first']}", "-k", "PatientID"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    assert sent["patient"] in run.stdout + run.stderr


def test_a_matched_query_orthanc_cannot_run_fails_instead_of_answering(site, sent):
    main, _ = site
    run = subprocess.run(
        ["findscu", "-S", "-aet", "PROBE", "-aec", AET, "127.0.0.1", str(main.dicom_port),
         "-k", "QueryRetrieveLevel=WHATEVER", "-k", "PatientID"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    output = run.stdout + run.stderr
    assert "Pending" not in output and sent["patient"] not in output
    assert "C-FIND" in main.log() and "refused" in main.log()


def test_the_research_archive_retrieves_by_the_pseudonyms_it_was_answered(site, sent):
    main, research = site
    pseudo = KEYS.uid(sent["second"])
    research_query(research, "Study", {"StudyInstanceUID": pseudo})  # handed out by this answer at the latest
    moved = research.post(f"/modalities/{AET.lower()}/move", json.dumps(
        {"Level": "Study", "Resources": [{"StudyInstanceUID": pseudo}], "TargetAet": "RESEARCH"}))
    assert moved.status_code == 200, moved.text
    held = held_by_research(research, pseudo)  # arrived, coerced: under its pseudonym
    assert held["PatientID"] == sent["held"]["PatientID"]
    assert research.post("/tools/lookup", sent["second"]).json() == []  # the original never left


def test_patient_and_instance_levels_are_answered_in_pseudonyms(site, sent):
    _, research = site
    pseudo_patient = sent["held"]["PatientID"]
    patients = research_query(research, "Patient", {"PatientID": pseudo_patient, "PatientName": "",
                                                    "PatientBirthDate": ""})
    assert [p["PatientID"] for p in patients] == [pseudo_patient]
    assert "Doe" not in json.dumps(patients) and "19700315" not in json.dumps(patients)
    instances = research_query(research, "Instance", {"StudyInstanceUID": KEYS.uid(sent["first"]),
                                                      "SeriesInstanceUID": KEYS.uid(f"{sent['first']}.1"),
                                                      "SOPInstanceUID": "", "InstanceNumber": ""})
    assert [i["SOPInstanceUID"] for i in instances] == [KEYS.uid(f"{sent['first']}.1.1")]
    assert instances[0]["InstanceNumber"] == "1"


def test_concurrent_callers_each_get_their_own_world(site, sent):
    main, _ = site
    from concurrent.futures import ThreadPoolExecutor

    def ask(calling):
        run = subprocess.run(
            ["findscu", "-v", "-S", "-aet", calling, "-aec", AET, "127.0.0.1", str(main.dicom_port),
             "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID", "-k", "StudyInstanceUID"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
        return calling, run.stdout + run.stderr

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, ["RESEARCH", "CLINICIAN"] * 3))
    for calling, output in results:
        assert "Final Find Response (Success)" in output
        if calling == "RESEARCH":
            assert sent["patient"] not in output and sent["held"]["PatientID"] in output
        else:
            assert sent["patient"] in output and sent["held"]["PatientID"] not in output
