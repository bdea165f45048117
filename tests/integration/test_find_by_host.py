"""A C-FIND rule that names the caller's host: applied where Orthanc's Python plugin gives the
DICOM connection (orthanc-python 7.0: Debian testing, the orthancteam image), refused at
start-up, naming the rule, where it does not (Orthanc would never tell the plugin the host)."""

from __future__ import annotations

from factory import encode, make_ct
from orthanc_server import OrthancServer, needs_orthanc
from test_find_native import findscu

pytestmark = needs_orthanc
RULES = """
- {name: near, dimse: C_FIND_RSP, role: SCU, sending-aet: [NEAR], sending-host: ["127.0.0.1"],
   uri: "deidentify:RetainPatientIDHashOption"}
- {name: far, dimse: C_FIND_RSP, role: SCU, sending-aet: [FAR], sending-host: ["10.9.9.9"],
   uri: "deidentify:RetainPatientIDHashOption"}
"""
KEYS = ["QueryRetrieveLevel=STUDY", "PatientID", "StudyInstanceUID"]


def test_a_c_find_rule_names_the_callers_host_where_orthanc_tells_it(tmp_path):
    server = OrthancServer(tmp_path / "orthanc", rules=RULES, settings={"DicomAlwaysAllowFind": True})
    try:
        try:
            server.start()
        except RuntimeError:
            log = server.log()
            features = next(line for line in log.splitlines() if "SDK features found:" in line)
            assert "find_with_connection" not in features.split("absent:")[0], features
            assert "rule 'near': field 'sending-host' cannot be applied to C_FIND_RSP" in log
            return  # this Orthanc does not tell plugins a C-FIND caller's host: the rule was refused
        assert server.post("/instances", encode(make_ct(patient_id="MRN-HOST"))).ok
        near, _ = findscu(server.dicom_port, KEYS, calling="NEAR")
        far, _ = findscu(server.dicom_port, KEYS, calling="FAR")
        assert [a.PatientID for a in far] == ["MRN-HOST"]  # from 127.0.0.1, not 10.9.9.9: no rule
        assert len(near) == 1 and near[0].PatientID != "MRN-HOST" and len(near[0].PatientID) == 26
    finally:
        server.stop()
