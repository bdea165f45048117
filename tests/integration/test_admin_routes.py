"""Routes that reveal what the keys make of submitted data, change behaviour or re-identify need
a credential; each use and each refused attempt leaves an audit line without PHI."""

from __future__ import annotations

import json
import uuid

import pytest

from factory import encode, make_ct
from orthanc_server import ADMIN, TOKEN, OrthancServer, needs_orthanc, storescu

pytestmark = needs_orthanc
PATIENT = "MRN-ADMIN-9876"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    orthanc = OrthancServer(tmp_path_factory.mktemp("admin")).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory):
    orthanc = OrthancServer(tmp_path_factory.mktemp("no-admin"), admin_token=False).start()
    yield orthanc
    orthanc.stop()


def audit_lines(server) -> list[dict]:
    return [json.loads(line.split("coercion-audit ", 1)[1]) for line in server.log().splitlines()
            if "coercion-audit " in line]


def instance() -> bytes:
    ds = make_ct(patient_id=PATIENT, sop_uid=f"2.25.{uuid.uuid4().int}")
    return encode(ds)


@pytest.mark.parametrize("path", ["/coercion/preview/rule/research", "/coercion/preview/uri/deidentify:RetainPatientIDHashOption",
                                  "/coercion/rules/reload"])
def test_without_the_administration_credential_nothing_is_revealed_or_changed(server, path):
    for headers in ({}, {"X-Coercion-Token": "wrong-wrong-wrong-wrong"}, {"X-Coercion-Token": "nope"}):
        answer = server.post(path, instance(), headers=headers)
        assert answer.status_code == 403, answer.text
        assert "administration credential" in answer.json()["error"]
        assert PATIENT not in answer.text and "application/dicom" not in answer.headers.get("Content-Type", "")
    assert server.post(path, instance(), headers=ADMIN).status_code == 200


def test_a_route_whose_credential_is_not_configured_says_how_to_enable_it(unconfigured):
    answer = unconfigured.post("/coercion/preview/rule/research", instance(), headers=ADMIN)
    assert answer.status_code == 403 and "Coercion.AdminTokenFile" in answer.json()["error"]
    assert unconfigured.post("/coercion/rules/reload", headers=ADMIN).status_code == 403
    # what reveals nothing stays open
    assert unconfigured.get("/coercion/rules").status_code == 200
    assert unconfigured.get("/coercion/stats").status_code == 200


def test_uses_and_refused_attempts_leave_audit_lines_without_phi(server):
    server.post("/coercion/rules/reload")  # refused
    server.admin_post("/coercion/rules/reload")  # accepted
    server.admin_post("/coercion/preview/rule/research", instance())
    server.get("/coercion/linkage/NOSUCHPSEUDONYM")  # refused
    server.get("/coercion/linkage/NOSUCHPSEUDONYM", headers={"X-Coercion-Token": TOKEN})
    lines = audit_lines(server)
    events = [(line["event"], line["outcome"]) for line in lines if "outcome" in line]
    assert ("rules-reload", "refused: bad or missing credential") in events
    assert ("rules-reload", "accepted") in events
    assert ("preview", "answered") in events
    assert ("re-identification", "refused: bad or missing credential") in events
    assert ("re-identification", "unknown pseudonym") in events
    for line in lines:
        if "outcome" in line:
            assert line["client"] == "127.0.0.1" and line["time"].endswith("Z") and line["route"]
    assert PATIENT not in server.log()


def test_a_reidentification_is_audited_with_the_pseudonym_only(server):
    result = storescu(server, "RESEARCH", _write(server, instance()))
    assert "Received Store Response" in result.stdout + result.stderr
    links = [line for line in server.log().splitlines() if "coercion-audit" in line and '"coercion"' in line]
    assert links
    pseudonyms = [json.loads(line.split("coercion-audit ", 1)[1]) for line in links]
    stored = server.get("/patients?expand").json()
    pseudonym = next(p["MainDicomTags"]["PatientID"] for p in stored if len(p["MainDicomTags"]["PatientID"]) == 26)
    answer = server.get(f"/coercion/linkage/{pseudonym}", headers={"X-Coercion-Token": TOKEN})
    assert answer.status_code == 200 and answer.json()["links"][0]["patient_id"] == PATIENT
    line = [entry for entry in audit_lines(server) if entry.get("event") == "re-identification"][-1]
    assert line["pseudonym"] == pseudonym and line["outcome"] == "answered" and PATIENT not in json.dumps(line)
    assert pseudonyms  # the coerced instance was audited too


def _write(server, data: bytes):
    path = server.root / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(data)
    return path


def test_get_coercion_lists_the_api_as_the_docs_do(tmp_path):
    import re
    from pathlib import Path

    server = OrthancServer(tmp_path / "index").start()
    try:
        answer = server.get("/coercion")
        assert answer.status_code == 200
        listed = answer.json()
        assert listed["version"] and {"method": "GET", "path": "/coercion/rules", "credential": None} .items() <= \
            next(r for r in listed["routes"] if r["path"] == "/coercion/rules").items()
        assert server.post("/coercion", b"").status_code == 405
        missing = server.get("/coercion/nothing-here")
        assert missing.status_code == 404 and "GET /coercion lists them" in missing.json()["error"]
    finally:
        server.stop()
    # the table of docs/rest-api.md (once README.md's), the one that starts with its header row
    doc = (Path(__file__).resolve().parents[2] / "docs" / "rest-api.md").read_text()
    table = doc.split("\n| request | credential | answer |\n", 1)[1].split("\n\n", 1)[0]
    def generic(text):
        return re.sub(r"\{[^}]+\}", "{}", text.replace("NAME", "{}").replace("deidentify:...", "{}"))

    documented = generic(" ".join(re.findall(r"`([^`]*)`", table)))
    for route in listed["routes"]:
        assert generic(route["path"]) in documented, route["path"]


def test_a_preview_asked_for_as_json_explains_each_attribute_and_the_file_stays_the_default(server):
    data = instance()
    dicom = server.admin_post("/coercion/preview/rule/research", data)
    assert dicom.status_code == 200 and dicom.headers["Content-Type"].startswith("application/dicom")
    assert dicom.content[128:132] == b"DICM" and PATIENT.encode() not in dicom.content
    # Accept asks for JSON; so does X-Coercion-Format (Orthanc 1.10 drops ?format=json of a POST)
    for headers in ({"Accept": "application/json"}, {"X-Coercion-Format": "json"}):
        answer = server.admin_post("/coercion/preview/rule/research", data, headers=headers)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json"), answer.text
        explained = answer.json()
        assert explained["rule"] == "research"
        assert explained["uri"] == "deidentify:RetainLongitudinalTemporalInformationModifiedDatesOption," \
                                   "RetainPatientIDHashOption"
        assert explained["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
        entries = {e["path"]: e for e in explained["attributes"]}
        patient = entries["(0010,0020)"]
        assert patient["before"] == PATIENT and patient["result"] == "replaced"
        assert patient["reason"]["source"] == "patient-id-hash"
        assert entries["(0008,0020)"]["result"] == "shifted"
        assert entries["(0008,1140)[0]>(0008,1155)"]["result"] == "removed"  # inside a sequence
        assert entries["(0012,0062)"]["result"] == "added"
        assert entries["(7FE0,0010)"]["before"].startswith("<OW, ")
    # without it, the same file as before: the explanation changed nothing of the DICOM answer
    again = server.admin_post("/coercion/preview/rule/research", data, headers={"Accept": "*/*"})
    assert again.headers["Content-Type"].startswith("application/dicom") and again.content == dicom.content
    by_uri = server.admin_post("/coercion/preview/uri/deidentify:RetainUIDsOption", data,
                               headers={"Accept": "application/json"}).json()
    assert by_uri["rule"] is None and {e["path"]: e for e in by_uri["attributes"]}["(0020,000D)"]["result"] == "kept"
    # bad input: as the DICOM preview answers it; and the audit lines hold no value
    assert server.admin_post("/coercion/preview/rule/nope", data, headers={"Accept": "application/json"}) \
        .status_code == 404
    assert server.admin_post("/coercion/preview/rule/research", b"not DICOM" * 20,
                             headers={"Accept": "application/json"}).status_code == 400
    assert server.admin_post("/coercion/preview/rule/research", data,
                             headers={"X-Coercion-Format": "xml"}).status_code == 400
    answered = [line for line in audit_lines(server) if line.get("event") == "preview" and line.get("format") == "json"]
    assert answered and all(line["outcome"] == "answered" for line in answered)
    assert PATIENT not in server.log() and "19700315" not in server.log()
