"""Queries Orthanc sends: POST /modalities/{id}/query (and the older find-* routes) through
C_FIND_RQ / C_FIND_RSP rules with role SCP.

RESEARCH is a second, plain Orthanc holding what the clinical Orthanc sent it (de-identified);
ANSWERS and RAW are pynetdicom C-FIND SCPs that record each query and answer with identifying
data, the first under a response rule, the second under none."""

from __future__ import annotations

import json
import uuid

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import SECRET, OrthancServer, PlainOrthanc, free_port, needs_orthanc

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
RULES = f"""
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "{URI}"
- name: ask-in-pseudonyms
  dimse: C_FIND_RQ
  role: SCP
  receiving-aet: [RESEARCH, ANSWERS]
  uri: "{URI}"
- name: answers-de-identified
  dimse: C_FIND_RSP
  role: SCP
  receiving-aet: [ANSWERS]
  uri: "deidentify:"
"""


class FindSCP:
    """A pynetdicom C-FIND SCP: records the identifiers it receives, answers with PHI."""

    def __init__(self, aet: str):
        self.port, self.received = free_port(), []
        self.ae = AE(ae_title=aet)
        for context in (StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind,
                        ModalityWorklistInformationFind):
            self.ae.add_supported_context(context)
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_FIND, self.on_find)])

    def on_find(self, event):
        self.received.append(event.identifier)
        answer = Dataset()
        answer.QueryRetrieveLevel = event.identifier.get("QueryRetrieveLevel", "STUDY")
        answer.PatientName = "Doe^John"
        answer.PatientID = "MRN-SECRET"
        answer.PatientBirthDate = "19700101"
        answer.StudyInstanceUID = "1.2.3.4.5"
        answer.StudyDate = "20240131"
        answer.AccessionNumber = "ACC-SECRET"
        answer.StudyDescription = "CT for John Doe"
        yield 0xFF00, answer

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("find-outgoing")
    research = PlainOrthanc(root / "research", "RESEARCH", {}, settings={"DicomAlwaysAllowFind": True})
    answers, raw = FindSCP("ANSWERS"), FindSCP("RAW")
    main = OrthancServer(root / "main", rules=RULES, modalities={
        "RESEARCH": research.dicom_port, "ANSWERS": answers.port, "RAW": raw.port})
    try:
        main.start()
        yield from _site(main, research, answers, raw)
    finally:  # a main Orthanc that failed to start must not leave the peers running
        main.stop()
        research.stop()
        answers.stop()
        raw.stop()


def _site(main, research, answers, raw):
    patient = f"P-{uuid.uuid4().hex[:6]}"
    study = f"2.25.{uuid.uuid4().int}"
    ds = make_ct(patient_id=patient, study_uid=study, series_uid=study + ".1", sop_uid=study + ".1.1",
                 study_date="20240131")
    assert main.post("/instances", encode(ds)).ok
    study_id = main.post("/tools/lookup", study).json()[0]["ID"]
    sent = main.post("/modalities/research/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert sent.status_code == 200, sent.text
    yield {"main": main, "research": research, "answers": answers, "raw": raw, "patient": patient, "study": study}


def query(main, modality: str, level: str, keys: dict, **more):
    answer = main.post(f"/modalities/{modality}/query", json.dumps({"Level": level, "Query": keys, **more}))
    if answer.status_code != 200:
        return answer
    path = answer.json()["Path"]
    return [main.get(f"{path}/answers/{i}/content?simplify").json()
            for i in range(len(main.get(path + "/answers").json()))]


def test_a_query_by_original_ids_finds_the_de_identified_copy(site):
    main, patient, study = site["main"], site["patient"], site["study"]
    found = query(main, "research", "Study", {"PatientID": patient, "StudyInstanceUID": "", "PatientName": ""})
    assert [a["StudyInstanceUID"] for a in found] == [KEYS.uid(study)]
    assert found[0]["PatientID"] == KEYS.patient_id(patient, "HOSPITAL_A")  # the issuer known here
    by_uid = query(main, "research", "Study", {"StudyInstanceUID": f"{study}\\1.2.3", "PatientID": ""})
    assert [a["StudyInstanceUID"] for a in by_uid] == [KEYS.uid(study)]


def test_dates_are_shifted_for_the_patient_named_at_both_ends_of_a_range(site):
    main, patient, study = site["main"], site["patient"], site["study"]
    exact = query(main, "research", "Study", {"PatientID": patient, "StudyDate": "20240131",
                                              "StudyInstanceUID": ""})
    ranged = query(main, "research", "Study", {"PatientID": patient, "StudyDate": "20240130-20240201",
                                               "IssuerOfPatientID": "HOSPITAL_A", "StudyInstanceUID": ""})
    assert [a["StudyInstanceUID"] for a in exact] == [a["StudyInstanceUID"] for a in ranged] == [KEYS.uid(study)]
    assert query(main, "research", "Study", {"PatientID": patient, "StudyDate": "20240201-",
                                             "StudyInstanceUID": ""}) == []


@pytest.mark.parametrize("keys, message", [
    ({"StudyDate": "20240131"}, "StudyDate for this peer (its dates are shifted per patient): give one PatientID"),
    ({"PatientName": "Doe*"}, "de-identifies PatientName for this peer: a constraint on it would send"),
    ({"StudyInstanceUID": "1.2.*"}, "a wildcard cannot be matched against its pseudonyms"),
    ({"PatientID": "MRN*"}, "a wildcard cannot be matched against hashed IDs"),
])
def test_what_cannot_be_put_into_the_peers_world_is_refused_and_nothing_is_sent(site, keys, message):
    main, answers = site["main"], site["answers"]
    before = len(answers.received)
    refused = query(main, "answers", "Study", {**keys, "StudyInstanceUID": keys.get("StudyInstanceUID", "")})
    assert refused.status_code == 400 and message in refused.json()["Details"]
    assert "ask-in-pseudonyms" in refused.json()["Details"]
    assert len(answers.received) == before


def test_the_peer_receives_pseudonyms_and_return_keys_only(site):
    main, answers, patient, study = site["main"], site["answers"], site["patient"], site["study"]
    query(main, "answers", "Study", {"PatientID": patient, "StudyInstanceUID": study, "PatientName": "",
                                     "StudyDate": "20240131"})
    sent = answers.received[-1]
    assert sent.PatientID == KEYS.patient_id(patient, "HOSPITAL_A")
    assert sent.StudyInstanceUID == KEYS.uid(study)
    assert sent.PatientName == "" and sent.StudyDate not in ("", "20240131")
    assert patient not in str(sent) and study not in str(sent)


def test_answers_under_a_response_rule_are_de_identified_on_every_read(site):
    main = site["main"]
    answer = main.post("/modalities/answers/query", json.dumps({"Level": "Study", "Query": {"PatientName": ""}}))
    path = answer.json()["Path"]
    reads = [main.get(f"{path}/answers/0/content?simplify").json(), main.get(f"{path}/answers/0/content").json(),
             main.get(f"{path}/answers/0/content?short").json(), main.get(f"{path}/answers?expand&simplify").json(),
             main.get(f"{path}/answers?expand").json()]
    text = json.dumps(reads)
    for secret in ("Doe", "MRN-SECRET", "ACC-SECRET", "19700101", "1.2.3.4.5", "John"):
        assert secret not in text, secret
    simplified = reads[0]
    assert simplified["StudyInstanceUID"] == KEYS.uid("1.2.3.4.5")
    assert main.get(f"{path}/answers").json() == ["0"]
    # a child query of a coerced one is coerced too
    child = main.post(f"{path}/answers/0/query-series", json.dumps({}))
    assert child.status_code == 200, child.text


def test_the_older_find_routes_are_coerced_both_ways(site):
    main, answers, patient = site["main"], site["answers"], site["patient"]
    found = main.post("/modalities/answers/find-study", json.dumps({"PatientID": patient, "AccessionNumber": ""}))
    assert found.status_code == 200, found.text
    assert answers.received[-1].PatientID == KEYS.patient_id(patient, "HOSPITAL_A")
    assert "Doe" not in found.text and "MRN-SECRET" not in found.text and found.json()
    hierarchical = main.post("/modalities/answers/find", json.dumps({"PatientID": patient}))
    assert hierarchical.status_code == 400 and "/modalities/answers/query" in hierarchical.json()["Details"]


def test_a_query_no_rule_applies_to_is_orthancs_own(site):
    main, raw = site["main"], site["raw"]
    found = query(main, "raw", "Study", {"PatientName": "Doe*", "StudyInstanceUID": ""})
    assert found[0]["PatientName"] == "Doe^John" and found[0]["PatientID"] == "MRN-SECRET"
    assert raw.received[-1].PatientName == "Doe*"
    missing = main.post("/modalities/nowhere/query", json.dumps({"Level": "Study", "Query": {}}))
    assert missing.status_code == 404


def test_a_worklist_query_is_coerced_item_by_item(site):
    main, answers, patient = site["main"], site["answers"], site["patient"]
    body = {"PatientID": patient, "PatientName": "",
            "ScheduledProcedureStepSequence": [{"Modality": "CT", "ScheduledProcedureStepStartDate": "20240131"}]}
    found = main.post("/modalities/answers/find-worklist", json.dumps(body))
    assert found.status_code == 200, found.text
    sent = answers.received[-1]
    assert sent.PatientID == KEYS.patient_id(patient, "HOSPITAL_A")
    step = sent.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT" and step.ScheduledProcedureStepStartDate not in ("", "20240131")
    assert "Doe" not in found.text and "MRN-SECRET" not in found.text


def test_reads_of_unknown_queries_and_wrong_methods_answer_as_orthanc_does(site):
    main = site["main"]
    assert main.get("/queries/no-such-query/answers").status_code == 404
    assert main.get("/queries/no-such-query/answers/0/content").status_code == 404
    answer = main.post("/modalities/answers/query", json.dumps({"Level": "Study", "Query": {"PatientName": ""}}))
    path = answer.json()["Path"]
    assert main.post(f"{path}/answers", "{}").status_code == 405
    assert main.get(f"{path}/answers/0/query-series").status_code == 405


def test_a_peer_that_cannot_be_reached_gives_orthancs_error_once(site):
    main = site["main"]
    unreachable = main.put("/modalities/answers2", json.dumps(
        {"AET": "ANSWERS", "Host": "127.0.0.1", "Port": free_port()}))
    assert unreachable.ok, unreachable.text
    failed = main.post("/modalities/answers2/query", json.dumps({"Level": "Study", "Query": {"PatientID": "X"}}))
    assert failed.status_code == 500 and "coercion" not in failed.text.lower()
