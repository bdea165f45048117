"""Worklist C-FIND, side by side: Orthanc with its ModalityWorklists sample plugin, and Orthanc
with the coercion plugin (and rules for another AE title), over the same folder of .wl files.
The same findscu worklist queries go to both; every answer is compared element by element, in
order, with the final DIMSE status, under the sample plugin's three settings."""

from __future__ import annotations

import pytest

from orthanc_server import AET, OrthancServer, PlainOrthanc, needs_orthanc
from test_find_native import findscu, raw
from worklists import standard_items, write_folder

pytestmark = needs_orthanc
SAMPLE = "/usr/share/orthanc/plugins/libModalityWorklists.so"
RULES = """
- name: research-worklist
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: [RESEARCH]
  sop-class: [1.2.840.10008.5.1.4.31]
  uri: "deidentify:RetainPatientIDHashOption"
"""


@pytest.fixture(scope="module", params=[{}, {"LimitAnswers": 2}, {"FilterIssuerAet": True}],
                ids=["defaults", "limit", "filter-issuer-aet"])
def pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("worklist-native")
    folder = root / "worklists"
    write_folder(folder, standard_items())
    worklists = {"Enable": True, "Database": str(folder), **request.param}
    sample = PlainOrthanc(root / "sample", AET, {}, {"Plugins": [SAMPLE], "Worklists": worklists,
                                                     "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True})
    plugin = OrthancServer(root / "plugin", rules=RULES, settings={"Worklists": worklists,
                                                                   "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True}).start()
    yield sample, plugin, request.param
    plugin.stop()
    sample.stop()


STEP = "ScheduledProcedureStepSequence[0]."
RETURN_KEYS = ["AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "RequestedProcedureDescription", "RequestedProcedureID",
               STEP + "ScheduledStationAETitle", STEP + "ScheduledProcedureStepStartDate",
               STEP + "ScheduledProcedureStepStartTime", STEP + "Modality", STEP + "ScheduledPerformingPhysicianName",
               STEP + "ScheduledProcedureStepDescription", STEP + "ScheduledProcedureStepID",
               STEP + "ScheduledProcedureStepStatus"]
QUERIES = {
    "everything": RETURN_KEYS,
    "few-keys": ["PatientID", "AccessionNumber"],
    "by-patient-id": ["PatientID=MRN-W2"] + RETURN_KEYS[:3],
    "patient-id-case": ["PatientID=MRN-W5", "PatientName"],
    "name-wildcard": ["PatientName=Doe*", "PatientID"],
    "name-lower-case": ["PatientName=doe*", "PatientID"],
    "name-accents": ["SpecificCharacterSet=ISO_IR 100", "PatientName=Müller*", "PatientName"],
    "greek-utf8": ["SpecificCharacterSet=ISO_IR 192", "PatientName=Παπα*", "PatientName", "RequestedProcedureDescription"],
    "by-modality": [STEP + "Modality=MR", "PatientID", STEP + "ScheduledStationAETitle"],
    "by-station": [STEP + "ScheduledStationAETitle=CT01", "PatientID"],
    "by-station-wildcard": [STEP + "ScheduledStationAETitle=*01", "PatientID"],
    "date-range": [STEP + "ScheduledProcedureStepStartDate=20241102-20241130", "PatientID"],
    "date-open-range": [STEP + "ScheduledProcedureStepStartDate=20241130-", "PatientID"],
    "date-exact": [STEP + "ScheduledProcedureStepStartDate=20241101", "PatientID"],
    "time-range": [STEP + "ScheduledProcedureStepStartTime=100000-235959", "PatientID"],
    "accession-list": ["AccessionNumber=ACC-W1\\ACC-W4", "PatientID"],
    "status": [STEP + "ScheduledProcedureStepStatus=IN PROGRESS", "PatientID"],
    "no-step-sequence": ["PatientID", "PatientName"],
    "empty-step-item": ["ScheduledProcedureStepSequence[0]", "PatientID"],
    "code-sequence": ["RequestedProcedureCodeSequence[0].CodeValue", "PatientID"],
    "nothing-matches": ["PatientID=NOBODY", "PatientName"],
    "uid-exact": ["StudyInstanceUID=1.2.3", "PatientID"],
    "non-worklist-key": ["PatientComments", "PatientID"],
}


@pytest.mark.parametrize("name", sorted(QUERIES))
@pytest.mark.parametrize("calling", ["MODALITY", "CT01"])
def test_same_worklist_answers_as_the_sample_plugin(pair, name, calling):
    sample, plugin, settings = pair
    keys = QUERIES[name]
    expected, expected_final = findscu(sample.dicom_port, keys, "-W", calling)
    got, got_final = findscu(plugin.dicom_port, keys, "-W", calling)
    assert [raw(a) for a in got] == [raw(a) for a in expected]
    assert got_final == expected_final
    if name in ("everything", "few-keys") and not settings.get("FilterIssuerAet"):
        assert len(expected) >= 3, "the query should find several items"


def test_the_limit_is_the_sample_plugins_own(pair):
    sample, plugin, settings = pair
    if "LimitAnswers" not in settings:
        pytest.skip("for the LimitAnswers configuration")
    expected, expected_final = findscu(sample.dicom_port, ["PatientID"], "-W")
    got, got_final = findscu(plugin.dicom_port, ["PatientID"], "-W")
    # The sample plugin adds the answer, then counts: one more than the limit, marked incomplete.
    assert len(got) == len(expected) == settings["LimitAnswers"] + 1
    assert got_final == expected_final and got_final[-1].startswith("0xfe00")
