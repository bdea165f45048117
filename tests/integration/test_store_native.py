"""POST /modalities/{id}/store, side by side: Orthanc without the plugin, and Orthanc whose
outgoing rules make the plugin's route replace Orthanc's own.

For a modality no rule names, every request form (Orthanc's own checks of the body, its job
options, an unknown or unreachable modality) must get Orthanc's own answer: status, JSON and
content type, the details of errors included. For the modality a rule names, Orthanc's own
checks still come first and answer the same; what passes them is coerced."""

from __future__ import annotations

import json
import uuid

import pytest

from factory import encode, make_ct
from orthanc_server import OrthancServer, PlainOrthanc, StoreSCP, free_port, needs_orthanc

pytestmark = needs_orthanc
RULES = """
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "deidentify:"
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("store-native")
    research = PlainOrthanc(root / "research", "RESEARCH", {})
    clinic = StoreSCP(root / "clinic", aet="CLINIC")
    peers = {"RESEARCH": research.dicom_port, "CLINIC": clinic.port, "NOWHERE": free_port()}
    plain = PlainOrthanc(root / "plain", "ORTHANC", peers)
    plugin = OrthancServer(root / "plugin", rules=RULES, modalities=peers).start()
    study, series, patient = (f"2.25.{uuid.uuid4().int}" for _ in range(3))
    ids = {}
    for number in range(2):
        ds = make_ct(patient_id=patient, study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        for server in (plain, plugin):
            answer = server.post("/instances", encode(ds))
            assert answer.ok, answer.text
            ids[f"instance{number}"] = answer.json()["ID"]
            ids["study"], ids["series"] = answer.json()["ParentStudy"], answer.json()["ParentSeries"]
    ids["patient"] = plugin.get(f"/studies/{ids['study']}").json()["ParentPatient"]
    yield plain, plugin, ids
    plugin.stop()
    plain.stop()
    clinic.stop()
    research.stop()


def forms(ids: dict) -> dict:
    """Every body form Orthanc 1.10 reads (GetInstancesToExport, DicomStore, SubmitCommandsJob)."""
    one, study = ids["instance0"], ids["study"]
    good = {
        "bare-id": one, "bare-id-spaces": f"  {one}\n", "json-string": json.dumps(one),
        "json-list": json.dumps([one]), "json-list-two-levels": json.dumps([one, ids["series"]]),
        "json-list-patient": json.dumps([ids["patient"]]), "empty-list": "[]",
        "object": json.dumps({"Resources": [study]}), "object-empty": json.dumps({"Resources": []}),
        "object-options": json.dumps({"Resources": [study], "LocalAet": "ME", "Timeout": 20, "Permissive": True,
                                      "Priority": 5}),
        "object-synchronous": json.dumps({"Resources": [one], "Synchronous": True, "Asynchronous": True}),
        "object-move-originator-aet-only": json.dumps({"Resources": [one], "MoveOriginatorAet": "MOVER"}),
        # jsoncpp's reader takes these besides JSON
        "trailing-comma": f'{{"Resources": ["{one}"],}}', "comment": f'/* a */ ["{one}"] // b',
        "text-after-the-value": f'["{one}"] and more', "byte-order-mark": f'\ufeff["{one}"]',
    }
    bad = {
        "empty": "", "not-json": "nonsense", "number": "3", "null": "null", "object-without-resources": "{}",
        "resources-not-a-list": json.dumps({"Resources": one}), "resource-not-a-string": "[1]",
        "not-an-identifier": json.dumps(["nosuch"]), "unknown-resource": json.dumps([one[:-1] + "0"]),
        "local-aet-type": json.dumps({"Resources": [one], "LocalAet": 1}),
        "originator-id-type": json.dumps({"Resources": [one], "MoveOriginatorID": "7"}),
        "commitment-type": json.dumps({"Resources": [one], "StorageCommitment": "yes"}),
        "timeout-type": json.dumps({"Resources": [one], "Timeout": "x"}),
        "timeout-negative": json.dumps({"Resources": [one], "Timeout": -1}),
        "permissive-type": json.dumps({"Resources": [one], "Permissive": 1}),
        "synchronous-type": json.dumps({"Resources": [one], "Synchronous": "yes"}),
        "asynchronous-type": json.dumps({"Resources": [one], "Asynchronous": None}),
        "priority-type": json.dumps({"Resources": [one], "Priority": "high"}),
        "single-quotes": "{'Resources': []}", "cut-short": f'["{one}"',
    }
    return {**good, **bad}


FORMS = sorted(forms({k: "0" * 8 + "-" + "0" * 8 * 4 for k in ("instance0", "study", "series", "patient")}))


def answer(server, modality: str, body: str):
    response = server.post(f"/modalities/{modality}/store", body.encode())
    try:
        content = response.json()
    except ValueError:
        content = response.text
    if isinstance(content, dict) and "ID" in content and "Path" in content:  # an asynchronous job
        content = {"ID": "<job>", "Path": content["Path"].rsplit("/", 1)[0]}
    return response.status_code, response.headers.get("Content-Type"), content


@pytest.mark.parametrize("modality", ["clinic", "nowhere", "unknown"])
@pytest.mark.parametrize("form", FORMS)
def test_a_modality_no_rule_names_gets_orthancs_own_answer(sites, form, modality):
    plain, plugin, ids = sites
    body = forms(ids)[form]
    assert answer(plugin, modality, body) == answer(plain, modality, body)


@pytest.mark.parametrize("form", FORMS)
def test_orthancs_own_checks_come_first_for_a_modality_a_rule_names(sites, form):
    plain, plugin, ids = sites
    body = forms(ids)[form]
    expected = answer(plain, "research", body)
    got = answer(plugin, "research", body)
    if expected[0] != 200:
        assert got == expected  # refused by Orthanc's checks: the same answer, before any rule
    else:
        status, _, content = got
        assert status == 200, content
        if "Path" in content:
            assert content["Path"] == "/coercion/sends"  # the plugin's send job
        else:
            assert content["Coercion"]["Rules"] == (["to-research"] if content["InstancesCount"] else [])


def test_the_unreachable_modality_keeps_orthancs_details(sites):
    plain, plugin, ids = sites
    status, _, content = answer(plugin, "nowhere", json.dumps([ids["instance0"]]))
    assert status == 500 and content["Details"].startswith('DicomAssociation - connecting to AET "NOWHERE"')
    assert content == answer(plain, "nowhere", json.dumps([ids["instance0"]]))[2]


def test_json_that_would_crash_orthanc_is_refused(sites):
    # Orthanc 1.10's own reader crashes on a body nested about 200 deep; the plugin's route refuses it.
    _, plugin, _ = sites
    for modality in ("clinic", "research"):
        response = plugin.post(f"/modalities/{modality}/store", b"[" * 5000 + b"]" * 5000)
        assert response.status_code == 400 and "deeper than 64" in response.json()["Details"]
    assert plugin.get("/system").ok
