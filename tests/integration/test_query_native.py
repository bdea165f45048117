"""The queries Orthanc sends, side by side: Orthanc without the plugin, and Orthanc whose
C_FIND rules with role SCP make the plugin's routes replace Orthanc's own
(/modalities/{id}/query, find, find-patient, find-study, find-series, find-instance,
find-worklist, and the reads of /queries/{id}/answers). For a modality no rule names, every
request form gets Orthanc's own answer: the same answers, the same errors."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from factory import encode, make_ct
from orthanc_server import OrthancServer, PlainOrthanc, free_port, needs_orthanc

pytestmark = needs_orthanc
RULES = """
- {name: ask, dimse: C_FIND_RQ, role: SCP, receiving-aet: [RESEARCH], uri: "deidentify:RetainPatientIDHashOption"}
- {name: see, dimse: C_FIND_RSP, role: SCP, receiving-aet: [RESEARCH], uri: "deidentify:"}
"""
PATIENT = "MRN-QUERY-1"


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("query-native")
    clinic = PlainOrthanc(root / "clinic", "CLINIC", {}, {"DicomAlwaysAllowFind": True})
    study, series = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    made = []
    for _ in range(2):
        ds = make_ct(patient_id=PATIENT, study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        ds.AccessionNumber = "ACC-QUERY"
        made.append(ds)
        assert clinic.post("/instances", encode(ds)).ok
    peers = {"CLINIC": clinic.dicom_port, "RESEARCH": free_port(), "NOWHERE": free_port()}
    plain = PlainOrthanc(root / "plain", "ORTHANC", peers)
    plugin = OrthancServer(root / "plugin", rules=RULES, modalities=peers).start()
    yield plain, plugin, made
    plugin.stop()
    plain.stop()
    clinic.stop()


def answer(server, method: str, path: str, body=None):
    response = server.post(path, body.encode()) if method == "POST" else server.get(path)
    try:
        content = response.json()
    except ValueError:
        content = response.text
    return response.status_code, response.headers.get("Content-Type"), content


def query_forms(made) -> dict:
    study, series = made[0].StudyInstanceUID, made[0].SeriesInstanceUID
    return {
        "study": {"Level": "Study", "Query": {"PatientID": PATIENT, "StudyDate": "", "PatientName": ""}},
        "study-lower-case-level": {"Level": "study", "Query": {"StudyInstanceUID": study}},
        "studies-plural": {"Level": "Studies", "Query": {"AccessionNumber": "ACC-*"}},
        "patient": {"Level": "Patient", "Query": {"PatientID": PATIENT}},
        "series-hex-keys": {"Level": "Series", "Query": {"0020,000d": study, "0020000E": ""}},
        "instance": {"Level": "Instance", "Query": {"SeriesInstanceUID": series, "SOPInstanceUID": ""}},
        "no-query": {"Level": "Study"},
        "normalize-false": {"Level": "Study", "Query": {"PatientID": PATIENT, "StudyDate": ""}, "Normalize": False},
        "local-aet-and-timeout": {"Level": "Study", "Query": {"PatientID": PATIENT}, "LocalAet": "ME", "Timeout": 10},
    }


QUERY_FORMS = sorted(query_forms([make_ct()]))
QUERY_ERRORS = {
    "not-json": "nonsense", "not-an-object": "[]", "no-level": json.dumps({"Query": {}}),
    "level-not-a-string": json.dumps({"Level": 1}), "unknown-level": json.dumps({"Level": "Frame"}),
    "normalize-type": json.dumps({"Level": "Study", "Normalize": "no"}),
    "query-type": json.dumps({"Level": "Study", "Query": []}),
    "local-aet-type": json.dumps({"Level": "Study", "LocalAet": 3}),
    "query-value-type": json.dumps({"Level": "Study", "Query": {"PatientID": 3}}),
    "query-unknown-key": json.dumps({"Level": "Study", "Query": {"NoSuchKeyword": "x"}}),
    "timeout-type": json.dumps({"Level": "Study", "Timeout": "soon"}),
    "timeout-negative": json.dumps({"Level": "Study", "Timeout": -3}),
    "comments-and-trailing-comma": '{"Level": "Study", /* c */ "Query": {"PatientID": "%s",},}' % PATIENT,
}


def answers_of(server, query_id: str) -> dict:
    """Everything the REST API says of a query and its answers."""
    seen = {}
    for tail in ("", "/level", "/modality", "/query", "/answers", "/answers?expand", "/answers?expand&simplify",
                 "/answers?expand&short", "/answers/0", "/answers/0/content", "/answers/0/content?simplify",
                 "/answers/0/content?short", "/answers/9/content"):
        status, kind, content = answer(server, "GET", f"/queries/{query_id}{tail}")
        if isinstance(content, dict) and "Uri" in content:  # errors name the query, whose ID differs
            content = {**content, "Uri": content["Uri"].replace(query_id, "<id>")}
        seen[tail] = status, kind, content
    return seen


@pytest.mark.parametrize("form", QUERY_FORMS)
def test_query_forms_and_what_the_queries_say(sites, form):
    plain, plugin, made = sites
    body = json.dumps(query_forms(made)[form])
    results = []
    for server in (plain, plugin):
        status, kind, created = answer(server, "POST", "/modalities/clinic/query", body)
        assert status == 200, created
        results.append((kind, sorted(created), answers_of(server, created["ID"])))
    assert results[1][:2] == results[0][:2]
    for tail, expected in results[0][2].items():
        assert results[1][2][tail] == expected, tail
    assert results[0][2]["/answers"][2], "the query should find something"


@pytest.mark.parametrize("error", sorted(QUERY_ERRORS))
@pytest.mark.parametrize("modality", ["clinic", "research", "unknown"])
def test_query_errors_are_orthancs_own(sites, error, modality):
    plain, plugin, _ = sites
    body = QUERY_ERRORS[error]
    expected = answer(plain, "POST", f"/modalities/{modality}/query", body)
    got = answer(plugin, "POST", f"/modalities/{modality}/query", body)
    if expected[0] == 200:  # jsoncpp's extras: a query that runs (IDs differ)
        assert got[0] == 200 and sorted(got[2]) == sorted(expected[2])
    elif expected[0] == 500 and modality == "research":
        # the peer cannot be reached: after the rule's coercion, the plugin sends through Orthanc,
        # whose SDK gives the error's code and message, not its details
        assert got[:2] == expected[:2] and got[2] == {k: v for k, v in expected[2].items() if k != "Details"}
    else:
        assert got == expected


def test_the_unreachable_modality_fails_as_in_orthanc(sites):
    plain, plugin, _ = sites
    body = json.dumps({"Level": "Study", "Query": {"PatientID": PATIENT}})
    expected = answer(plain, "POST", "/modalities/nowhere/query", body)
    got = answer(plugin, "POST", "/modalities/nowhere/query", body)
    assert expected[0] == got[0] == 500
    # Orthanc's SDK gives a plugin the error's code and message, not its details.
    assert {k: v for k, v in got[2].items()} == {k: v for k, v in expected[2].items() if k != "Details"}


OLDER = {
    "find-study-not-an-object": [],
    "find-patient-not-json": "not json",
    "find-series-without-study": {"PatientID": PATIENT},
    "find-patient": {"PatientID": PATIENT, "PatientName": ""},
    "find-study": {"PatientID": PATIENT, "StudyDescription": ""},
    "find-study-accession": {"AccessionNumber": "ACC-QUERY"},
    "find-study-too-short": {"PatientID": "M*"},  # Orthanc answers nothing below three characters
    "find-series": "series",
    "find-instance": "instance",
    "find": {"PatientID": PATIENT},
}


@pytest.mark.parametrize("name", sorted(OLDER))
def test_the_older_find_routes(sites, name):
    plain, plugin, made = sites
    route = re.sub(r"-(accession|too-short|not-an-object|not-json|without-study)$", "", name)
    body = OLDER[name]
    if body == "series":
        body = {"PatientID": PATIENT, "StudyInstanceUID": made[0].StudyInstanceUID}
    elif body == "instance":
        body = {"PatientID": PATIENT, "StudyInstanceUID": made[0].StudyInstanceUID,
                "SeriesInstanceUID": made[0].SeriesInstanceUID}
    for modality in ("clinic", "unknown"):
        text = body if body == "not json" else json.dumps(body)
        expected = answer(plain, "POST", f"/modalities/{modality}/{route}", text)
        got = answer(plugin, "POST", f"/modalities/{modality}/{route}", text)
        assert got[:2] == expected[:2]
        if expected[0] == 200:
            assert got[2] == expected[2]
        elif isinstance(expected[2], dict):
            assert {k: v for k, v in got[2].items() if k != "Details"} == \
                {k: v for k, v in expected[2].items() if k != "Details"}
        else:
            assert got[2] == expected[2]  # no answer at all


def test_json_that_would_crash_orthanc_is_refused(sites):
    _, plugin, _ = sites
    response = plugin.post("/modalities/clinic/query", b"[" * 5000 + b"]" * 5000)
    assert response.status_code == 400 and "deeper than 64" in response.json()["Details"]
    assert plugin.get("/system").ok


@pytest.mark.parametrize("child", ["query-studies", "query-series", "query-instances"])
def test_child_queries_of_an_answer(sites, child):
    plain, plugin, _ = sites
    level = {"query-studies": "Patient", "query-series": "Study", "query-instances": "Series"}[child]
    results = []
    for server in (plain, plugin):
        created = server.post("/modalities/clinic/query", json.dumps(
            {"Level": level, "Query": {"PatientID": PATIENT}}).encode()).json()
        status, kind, child_query = answer(server, "POST", f"/queries/{created['ID']}/answers/0/{child}", "{}")
        assert status == 200, child_query
        results.append((kind, answers_of(server, child_query["ID"])))
    assert results[1] == results[0]


@pytest.mark.parametrize("body", [{"Query": {"PatientID": PATIENT}}, {"PatientID": PATIENT}, "not json"])
def test_find_worklist_forms(sites, body):
    # The clinic serves no worklists: Orthanc's C-FIND fails, and so does the plugin's passthrough.
    plain, plugin, _ = sites
    text = body if isinstance(body, str) else json.dumps(body)
    expected = answer(plain, "POST", "/modalities/clinic/find-worklist", text)
    got = answer(plugin, "POST", "/modalities/clinic/find-worklist", text)
    assert got[:2] == expected[:2]
    assert {k: v for k, v in got[2].items() if k != "Details" or expected[0] == 400} == \
        {k: v for k, v in expected[2].items() if k != "Details" or expected[0] == 400}
