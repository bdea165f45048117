"""A C-FIND caller no rule matches gets Orthanc's own answers from the plugin's C-FIND SCP.

Two Orthancs hold the same instances: one plain, one whose rules make the plugin register its
C-FIND SCP (which replaces Orthanc's). The same findscu queries go to both; answers are
compared element by element, in order, with the final status, the character set included."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import tempfile

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import MRImageStorage

from factory import encode, make_ct
from orthanc_server import AET, OrthancServer, PlainOrthanc, needs_orthanc

pytestmark = needs_orthanc

# C-FIND rules for someone else: the plugin's C-FIND SCP is registered, these callers don't match.
RULES = """
- name: research-find
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
"""
SAME = {"DicomAlwaysAllowFind": True, "DicomAet": AET}


def patients():
    """Instances that exercise the lookup: cases, accents, several character sets, ranges,
    several studies per patient and series per study, non-main and over-long values,
    sequences, private attributes."""
    made = []

    def add(pid, name, study, series, sop, date, modality="CT", charset="ISO_IR 100", **more):
        ds = make_ct(patient_id=pid, patient_name=name, study_uid=study, series_uid=series, sop_uid=sop,
                     study_date=date)
        ds.SpecificCharacterSet = charset
        ds.Modality = modality
        if modality == "MR":
            ds.SOPClassUID = MRImageStorage
        for keyword, value in more.items():
            setattr(ds, keyword, value)
        made.append(ds)
        return ds

    root = "1.2.826.0.1.3680043.8.498.77"
    add("MRN1", "Doe^John", f"{root}.1", f"{root}.1.1", f"{root}.1.1.1", "20240131", AccessionNumber="ACC1")
    add("MRN1", "Doe^John", f"{root}.1", f"{root}.1.1", f"{root}.1.1.2", "20240131", AccessionNumber="ACC1",
        InstanceNumber=2)
    add("MRN1", "Doe^John", f"{root}.1", f"{root}.1.2", f"{root}.1.2.1", "20240131", modality="MR",
        AccessionNumber="ACC1")
    add("MRN1", "Doe^John", f"{root}.2", f"{root}.2.1", f"{root}.2.1.1", "20230510", modality="MR",
        AccessionNumber="acc2", StudyDescription="brain", PatientComments="x" * 300)
    add("mrn2", "Müller^Zoë", f"{root}.3", f"{root}.3.1", f"{root}.3.1.1", "20221224", AccessionNumber="ACC3",
        StudyTime="235959")
    add("MRN3", "Παπαδόπουλος^Νίκος", f"{root}.4", f"{root}.4.1", f"{root}.4.1.1", "19991231",
        charset="ISO_IR 192", AccessionNumber="ΑΒΓ", StudyDescription="Ελληνικά")
    private = add("MRN4", "DOE^JANE", f"{root}.5", f"{root}.5.1", f"{root}.5.1.1", "20240201",
                  AccessionNumber="ACC5")
    private.add_new(0x00090010, "LO", "ACME 1.0")
    private.add_new(0x00091001, "LO", "private value")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CT123", "99ACME", "Chest CT"
    private.ProcedureCodeSequence = Sequence([code])
    add("MRN5", "doe^jim", f"{root}.6", f"{root}.6.1", f"{root}.6.1.1", "20240315", AccessionNumber="ACC6",
        StudyDescription="")
    add("MRN6", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", f"{root}.7", f"{root}.7.1", f"{root}.7.1.1", "20240401",
        charset=["ISO 2022 IR 13", "ISO 2022 IR 87"], AccessionNumber="ACC7")
    return made


@pytest.fixture(scope="module", params=[{}, {"LimitFindResults": 3, "LimitFindInstances": 4},
                                        {"StorageAccessOnFind": "Never", "CaseSensitivePN": True}],
                ids=["defaults", "limits", "index-only-case-sensitive-names"])
def pair(request, tmp_path_factory):
    settings = {**SAME, **request.param}
    root = tmp_path_factory.mktemp("find-native")
    plain = PlainOrthanc(root / "plain", AET, {}, settings=settings)
    plugin = OrthancServer(root / "plugin", rules=RULES, settings=settings).start()
    try:
        for ds in patients():
            data = encode(ds)
            for server in (plain, plugin):
                answer = server.post("/instances", data)
                assert answer.ok, answer.text
        yield plain, plugin
    finally:
        plugin.stop()
        plain.stop()


def defaults(plain) -> bool:
    """Whether the pair runs with Orthanc's defaults (then every query is meant to find something)."""
    config = json.loads((plain.root / "orthanc.json").read_text())
    return not set(config) & {"LimitFindResults", "StorageAccessOnFind", "CaseSensitivePN"}


def findscu(port: int, keys: list[str], model: str = "-S", calling: str = "FINDER"):
    out = tempfile.mkdtemp(prefix="findscu-")
    args = ["findscu", "-d", model, "-aet", calling, "-aec", AET, "127.0.0.1", str(port), "-X", "-od", out]
    for key in keys:
        args += ["-k", key]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    answers = [pydicom.dcmread(f) for f in sorted(glob.glob(out + "/rsp*.dcm"))]
    lines = (run.stdout + run.stderr).splitlines()
    statuses = [m.group(1) for line in lines if (m := re.match(r"D: DIMSE Status\s*:\s*(.*)$", line))]
    final = [line for line in lines if "Final Find Response" in line or line.startswith("E:")]
    return answers, final + statuses[-1:]  # the final status by its code (0xc000...), not only its name


def raw(ds: Dataset) -> list:
    """Every element below group 2 as (tag, VR, bytes as received), sequences item by item."""
    out = []
    for tag in list(ds.keys()):
        if tag.group == 2:
            continue
        item = ds.get_item(tag)  # before any access: the bytes as they were on the wire
        if item.VR == "SQ":
            out.append((int(tag), "SQ", [raw(i) for i in ds[tag].value]))
        else:
            value = item.value
            if not isinstance(value, (bytes, type(None))):  # the character set, decoded on reading
                value = "\\".join(value).encode() if isinstance(value, list) else str(value).encode()
            out.append((int(tag), item.VR, value or b""))
    return out


STUDY = ["QueryRetrieveLevel=STUDY"]
QUERIES = {
    "study-return-keys": STUDY + ["PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber",
                                  "StudyInstanceUID", "StudyDescription", "ReferringPhysicianName", "StudyID",
                                  "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                  "NumberOfStudyRelatedInstances", "SOPClassesInStudy", "PatientBirthDate",
                                  "PatientSex"],
    "pn-wildcard-any-case": STUDY + ["PatientName=doe*", "PatientID"],
    "pn-accents-and-case": STUDY + ["PatientName=MULLER*", "PatientID"],
    "id-case-sensitive": STUDY + ["PatientID=MRN2", "PatientName"],
    "id-exact": STUDY + ["PatientID=mrn2", "PatientName"],
    "date-range": STUDY + ["StudyDate=20230101-20231231", "StudyInstanceUID"],
    "date-open-low": STUDY + ["StudyDate=-20230601", "StudyInstanceUID"],
    "date-open-high": STUDY + ["StudyDate=20240101-", "StudyInstanceUID", "StudyDate"],
    "time-range": STUDY + ["StudyTime=230000-235959", "StudyInstanceUID"],
    "date-not-a-wildcard": STUDY + ["StudyDate=2024*", "StudyInstanceUID"],
    "modalities-in-study": STUDY + ["ModalitiesInStudy=MR", "StudyInstanceUID", "ModalitiesInStudy"],
    "modalities-list": STUDY + ["ModalitiesInStudy=CT\\MR", "StudyInstanceUID"],
    "modalities-lower-case": STUDY + ["ModalitiesInStudy=mr", "StudyInstanceUID"],
    "mixed-case-rules": STUDY + ["PatientName=DOE*", "AccessionNumber=ACC*", "StudyInstanceUID"],
    "mixed-case-rules-lower": STUDY + ["PatientName=doe*", "AccessionNumber=acc*", "StudyInstanceUID"],
    "question-mark": STUDY + ["AccessionNumber=ACC?", "StudyInstanceUID"],
    "uid-list": STUDY + ["StudyInstanceUID=1.2.826.0.1.3680043.8.498.77.1\\1.2.826.0.1.3680043.8.498.77.3",
                         "PatientID"],
    "non-main-keys": STUDY + ["PatientAge", "PatientComments", "InstitutionAddress", "PatientWeight",
                              "Modality", "StudyInstanceUID"],
    "non-main-constraint": STUDY + ["PatientAge=053Y", "StudyInstanceUID"],
    "retrieve-aet-asked": STUDY + ["RetrieveAETitle", "StudyInstanceUID"],
    "sequence-copied": STUDY + ["ProcedureCodeSequence", "StudyInstanceUID"],
    "private-keys": STUDY + ["(0009,0010)=ACME 1.0", "(0009,1001)", "StudyInstanceUID"],
    "greek-utf8-query": STUDY + ["SpecificCharacterSet=ISO_IR 192", "PatientName=Παπα*", "AccessionNumber"],
    "latin1-query": STUDY + ["SpecificCharacterSet=ISO_IR 100", "PatientName=Müller*", "PatientName"],
    "empty-description": STUDY + ["StudyDescription=", "AccessionNumber"],
    "japanese": STUDY + ["SpecificCharacterSet=ISO_IR 192", "PatientName=*山田*", "PatientName", "PatientID"],
    "japanese-return-key": STUDY + ["PatientID=MRN6", "PatientName", "StudyDescription"],
    "sequence-item-key": STUDY + ["ProcedureCodeSequence[0].CodeValue=NOSUCHCODE", "StudyInstanceUID"],
    "series": ["QueryRetrieveLevel=SERIES", "StudyInstanceUID=1.2.826.0.1.3680043.8.498.77.1",
               "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances", "PatientName", "StudyDate"],
    "series-by-modality": ["QueryRetrieveLevel=SERIES", "Modality=MR", "SeriesInstanceUID", "StudyInstanceUID"],
    "images": ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows",
               "PatientID", "SeriesInstanceUID"],
    "images-of-a-series": ["QueryRetrieveLevel=IMAGE", "SeriesInstanceUID=1.2.826.0.1.3680043.8.498.77.1.1",
                           "SOPInstanceUID", "InstanceNumber", "ReferencedImageSequence", "ImageComments"],
    "no-level": ["PatientName", "StudyInstanceUID"],
    # every spelling of the level Orthanc takes (StringToResourceType), and one it does not
    "level-studies": ["QueryRetrieveLevel=STUDIES", "StudyInstanceUID", "PatientID"],
    "level-lower-case": ["QueryRetrieveLevel=study", "StudyInstanceUID"],
    "level-images": ["QueryRetrieveLevel=IMAGES", "SOPInstanceUID", "InstanceNumber"],
    "level-instance": ["QueryRetrieveLevel=INSTANCE", "SOPInstanceUID"],
    "level-instances": ["QueryRetrieveLevel=instances", "SOPInstanceUID"],
    "level-series-lower-case": ["QueryRetrieveLevel=series", "SeriesInstanceUID"],
    "level-unknown": ["QueryRetrieveLevel=FRAME", "SOPInstanceUID"],
    "level-empty": ["QueryRetrieveLevel=", "SOPInstanceUID"],
    # wildcards where Orthanc refuses them (UIDs, dates): the same failure status
    "uid-wildcard": STUDY + ["StudyInstanceUID=1.2.*", "PatientID"],
    "uid-question-mark": STUDY + ["StudyInstanceUID=1.2.826.0.1.3680043.8.498.77.?"],
    "uid-universal-wildcard": STUDY + ["StudyInstanceUID=*"],
    "series-uid-wildcard": ["QueryRetrieveLevel=SERIES", "SeriesInstanceUID=1.2.*"],
    "sop-uid-wildcard": ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID=1.2.*"],
    "uid-wildcard-among-others": STUDY + ["StudyInstanceUID=1.2.*", "PatientName=doe*", "ModalitiesInStudy"],
}
PATIENT_QUERIES = {
    "patients": ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "PatientBirthDate",
                 "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                 "NumberOfPatientRelatedInstances"],
    "patients-by-name": ["QueryRetrieveLevel=PATIENT", "PatientName=*o*", "PatientID", "OtherPatientIDs"],
    "level-patients": ["QueryRetrieveLevel=PATIENTS", "PatientID"],
}


@pytest.mark.parametrize("name", sorted(QUERIES) + sorted(PATIENT_QUERIES))
def test_same_answers_as_orthancs_own_c_find(pair, name):
    plain, plugin = pair
    keys, model = (QUERIES[name], "-S") if name in QUERIES else (PATIENT_QUERIES[name], "-P")
    expected, expected_final = findscu(plain.dicom_port, keys, model)
    got, got_final = findscu(plugin.dicom_port, keys, model)
    assert [raw(a) for a in got] == [raw(a) for a in expected]
    assert got_final == expected_final
    expected_empty = ("no-level", "date-not-a-wildcard", "id-case-sensitive", "modalities-lower-case",
                      "pn-accents-and-case", "patients-by-name", "level-unknown", "level-empty")
    if defaults(plain) and name not in expected_empty and "wildcard" not in name and "question" not in name:
        assert expected, "the query should find something (a test that compares nothing proves nothing)"


def test_the_plugins_scp_answers_and_a_matched_caller_is_coerced(pair):
    _, plugin = pair
    keys = STUDY + ["PatientID=MRN1", "StudyInstanceUID"]
    unmatched, _ = findscu(plugin.dicom_port, keys)
    assert {a.PatientID for a in unmatched} == {"MRN1"}
    # RESEARCH is matched by the response rule: its query by an original ID finds nothing.
    matched, final = findscu(plugin.dicom_port, keys, calling="RESEARCH")
    assert matched == [] and final[-1].startswith("0x0000")


def test_a_matched_caller_gets_at_most_orthancs_limit_of_coerced_answers(pair):
    plain, plugin = pair
    keys = STUDY + ["StudyInstanceUID", "PatientID"]
    studies = len({ds.StudyInstanceUID for ds in patients()})
    matched, final = findscu(plugin.dicom_port, keys, calling="RESEARCH")
    config = json.loads((plain.root / "orthanc.json").read_text())
    if "LimitFindResults" in config:
        assert len(matched) == config["LimitFindResults"] < studies
        assert final[-1].startswith("0xfe00")  # Cancel: matching terminated, as Orthanc says when it cuts
    else:
        assert len(matched) == studies == 7 and final[-1].startswith("0x0000")
    assert all(len(a.PatientID) == 26 and not a.PatientID.startswith("MRN") for a in matched)
