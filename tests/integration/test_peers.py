"""Orthanc peers and DICOMweb servers as ways out, through the rules for role SCP.

The clinical Orthanc (with the plugin) keeps originals. RESEARCH is a plain Orthanc that a rule
names as a peer (``receiving-peer``), also known under a second name with the same URL;
CLINIC is a plain Orthanc no rule names. Beside them, a plain Orthanc with the same peers and
data answers every request form of ``POST /peers/{id}/store`` for the side-by-side checks."""

from __future__ import annotations

import io
import json
import time
import uuid

import pydicom
import pytest

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import REST_AUTH, SECRET, OrthancServer, PlainOrthanc, needs_orthanc, storescu

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
RULES = """
- name: to-research-peer
  dimse: C_STORE_RQ
  role: SCP
  receiving-peer: [research]
  uri: "deidentify:RetainPatientIDHashOption"
- name: to-research-modality
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "deidentify:"
- name: to-research-web
  dimse: C_STORE_RQ
  role: SCP
  receiving-dicomweb-server: [research-web]
  uri: "deidentify:"
- name: by-host
  dimse: C_STORE_RQ
  role: SCP
  sending-host: [localhost]
  uri: "deidentify:"
- name: route-to-peer
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [ROUTER_P]
  forward: {to-peers: [research], when: received}
- name: route-to-web
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [ROUTER_W]
  forward: {to-dicomweb-servers: [research-web], when: received}
"""


def peer(server) -> dict:
    return {"Url": server.url, "Username": REST_AUTH[0], "Password": REST_AUTH[1]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    dicomweb = {"Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]}  # a STOW-RS server too
    research = PlainOrthanc(root / "research", "RESEARCH", {}, settings=dicomweb)
    clinic = PlainOrthanc(root / "clinic", "CLINIC", {}, settings=dicomweb)
    peers = {"research": peer(research), "research-alias": {**peer(research), "Url": research.url + "/"},
             "clinic": peer(clinic), "nowhere": {"Url": "http://127.0.0.1:9/"},
             "by-name-localhost": {**peer(research), "Url": research.url.replace("127.0.0.1", "localhost")}}
    web = {"Servers": {"research-web": [f"{research.url}/dicom-web/", *REST_AUTH],
                       "clinic-web": [f"{clinic.url}/dicom-web/", *REST_AUTH]}}
    plain = PlainOrthanc(root / "plain", "ORTHANC", {}, settings={"OrthancPeers": peers})
    main = OrthancServer(root / "main", rules=RULES, modalities={"RESEARCH": research.dicom_port},
                         settings={"OrthancPeers": peers, "DicomWeb": web}).start()
    yield main, plain, research, clinic
    for server in (main, plain, research, clinic):
        server.stop()


def upload_study(servers, count=2):
    study, series, patient = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}", f"MRN-{uuid.uuid4().hex[:8]}"
    originals = []
    for _ in range(count):
        ds = make_ct(patient_id=patient, study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        for server in servers:
            answer = server.post("/instances", encode(ds))
            assert answer.ok, answer.text
        originals.append(ds)
    return answer.json()["ParentStudy"], originals


def held(server, ds) -> pydicom.Dataset | None:
    """What ``server`` holds of ``ds``: the original (by its UID) or a coerced copy (keyed UID)."""
    for uid in (ds.SOPInstanceUID, KEYS.uid(ds.SOPInstanceUID)):
        found = [a["ID"] for a in server.post("/tools/lookup", uid).json() if a["Type"] == "Instance"]
        if found:
            return pydicom.dcmread(io.BytesIO(server.get(f"/instances/{found[0]}/file").content))
    return None


def assert_coerced(server, originals, hashed=True):
    for ds in originals:
        copy = held(server, ds)
        assert copy is not None, "not received"
        assert copy.SOPInstanceUID == KEYS.uid(ds.SOPInstanceUID) and copy.PatientIdentityRemoved == "YES"
        assert copy.PatientName != ds.PatientName
        if hashed:
            assert copy.PatientID == KEYS.patient_id(ds.PatientID, str(ds.get("IssuerOfPatientID", "")))
        assert copy.PixelData == ds.PixelData


def test_a_synchronous_send_to_a_peer_a_rule_names_leaves_coerced(site):
    main, _, research, _ = site
    study, originals = upload_study([main])
    answer = main.post("/peers/research/store", json.dumps({"Resources": [study]}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["InstancesCount"], body["FailedInstancesCount"], body["Peer"]) == (2, 0, {"Name": "research"})
    assert body["Coercion"] == {"Rules": ["to-research-peer"], "CoercedInstancesCount": 2,
                                "DiscardedInstancesCount": 0, "Failures": []}
    assert_coerced(research, originals)


def test_an_asynchronous_send_to_a_peer_a_rule_names_is_a_send_job(site):
    main, _, research, _ = site
    study, originals = upload_study([main])
    answer = main.post("/peers/research/store", json.dumps({"Resources": [study], "Asynchronous": True}))
    assert answer.status_code == 200 and answer.json()["Path"].startswith("/coercion/sends/"), answer.text
    for _ in range(200):
        job = main.get(answer.json()["Path"]).json()
        if job["State"] in ("Success", "Failure"):
            break
        time.sleep(0.05)
    assert (job["State"], job["Peer"], job["SentInstancesCount"]) == ("Success", "research", 2)
    assert_coerced(research, originals)


def test_another_name_for_a_url_a_rule_names_gets_the_rule(site):
    main, _, research, _ = site
    study, originals = upload_study([main])
    answer = main.post("/peers/research-alias/store", study)
    assert answer.status_code == 200 and answer.json()["Coercion"]["Rules"] == ["to-research-peer"], answer.text
    assert_coerced(research, originals)


def test_a_peer_no_rule_names_gets_the_original_byte_for_byte(site):
    main, _, _, clinic = site
    study, originals = upload_study([main])
    answer = main.post("/peers/clinic/store", json.dumps([study]))
    assert answer.status_code == 200 and "Coercion" not in answer.json(), answer.text
    for ds in originals:
        mine = [a["ID"] for a in main.post("/tools/lookup", ds.SOPInstanceUID).json()][0]
        theirs = [a["ID"] for a in clinic.post("/tools/lookup", ds.SOPInstanceUID).json()][0]
        assert clinic.get(f"/instances/{theirs}/file").content == main.get(f"/instances/{mine}/file").content


def test_a_file_posted_straight_to_a_peer_or_modality_a_rule_names_leaves_coerced(site):
    main, _, research, clinic = site
    for route, hashed in (("/peers/research/store-straight", True), ("/modalities/research/store-straight", False)):
        ds = make_ct(patient_id=f"MRN-{uuid.uuid4().hex[:8]}", sop_uid=f"2.25.{uuid.uuid4().int}")
        answer = main.post(route, encode(ds))
        assert answer.status_code == 200, (route, answer.text)
        assert_coerced(research, [ds], hashed=hashed)
        assert held(research, ds).SOPInstanceUID != ds.SOPInstanceUID
    ds = make_ct(patient_id=f"MRN-{uuid.uuid4().hex[:8]}", sop_uid=f"2.25.{uuid.uuid4().int}")
    answer = main.post("/peers/clinic/store-straight", encode(ds))
    assert answer.status_code == 200 and held(clinic, ds).SOPInstanceUID == ds.SOPInstanceUID


def test_a_file_that_cannot_be_coerced_is_not_sent_straight(site):
    main, _, research, _ = site
    before = research.get("/statistics").json()["CountInstances"]
    answer = main.post("/peers/research/store-straight", b"DICM not really a file")
    assert answer.status_code == 400 and "coercion refused" in answer.json()["Details"], answer.text
    assert research.get("/statistics").json()["CountInstances"] == before


def test_the_dicomweb_client_is_refused_for_a_server_a_rule_names(site):
    main, _, research, _ = site
    study, originals = upload_study([main])
    before = research.get("/statistics").json()["CountInstances"]
    for route in ("/dicom-web/servers/research-web/stow", "/dicom-web/servers/research-web/stow/"):
        answer = main.post(route, json.dumps({"Resources": [study]}))
        assert answer.status_code == 403, (route, answer.status_code, answer.text)
    assert research.get("/statistics").json()["CountInstances"] == before
    # A server no rule names: the DICOMweb plugin's own send.
    answer = main.post("/dicom-web/servers/clinic-web/stow", json.dumps({"Resources": [study]}))
    assert answer.status_code == 200, answer.text


def test_the_plugins_stow_route_sends_coerced_copies_to_a_server_a_rule_names(site):
    main, _, research, clinic = site
    study, originals = upload_study([main])
    answer = main.post("/coercion/dicom-web/servers/research-web/stow", json.dumps({"Resources": [study]}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["InstancesCount"], body["FailedInstancesCount"], body["Server"]) == (2, 0, "research-web")
    assert body["Coercion"]["Rules"] == ["to-research-web"] and body["Coercion"]["CoercedInstancesCount"] == 2
    assert_coerced(research, originals, hashed=False)
    # Asynchronous: a send job.
    study, originals = upload_study([main])
    answer = main.post("/coercion/dicom-web/servers/research-web/stow",
                       json.dumps({"Resources": [study], "Asynchronous": True}))
    path = answer.json()["Path"]
    for _ in range(200):
        job = main.get(path).json()
        if job["State"] in ("Success", "Failure"):
            break
        time.sleep(0.05)
    assert (job["State"], job["DicomWebServer"], job["SentInstancesCount"]) == ("Success", "research-web", 2)
    assert_coerced(research, originals, hashed=False)
    # A server no rule names: handed to the DICOMweb plugin's route, which sends what Orthanc holds.
    study, originals = upload_study([main])
    answer = main.post("/coercion/dicom-web/servers/clinic-web/stow", json.dumps({"Resources": [study]}))
    assert answer.status_code == 200 and "Coercion" not in answer.json(), answer.text
    assert all(held(clinic, ds).SOPInstanceUID == ds.SOPInstanceUID for ds in originals)


def test_the_plugins_stow_route_checks_the_request(site):
    main, _, research, _ = site
    before = research.get("/statistics").json()["CountInstances"]
    for body, status in (("{}", 400), ("nonsense", 400), (json.dumps({"Resources": ["0" * 8 + "-" * 0]}), 404),
                         (json.dumps({"Resources": [], "HttpHeaders": []}), 400)):
        answer = main.post("/coercion/dicom-web/servers/research-web/stow", body)
        assert answer.status_code == status, (body, answer.text)
    assert research.get("/statistics").json()["CountInstances"] == before


# -- side by side: a peer no rule names gets Orthanc's own answer, every request form ----------

def forms(ids: dict) -> dict:
    one, study = ids["instance"], ids["study"]
    return {
        "bare-id": one, "bare-id-spaces": f"  {one}\n", "json-string": json.dumps(one), "json-list": json.dumps([one]),
        "empty-list": "[]", "object": json.dumps({"Resources": [study]}),
        "object-async": json.dumps({"Resources": [study], "Asynchronous": True}),
        "object-options": json.dumps({"Resources": [study], "Permissive": True, "Priority": 5, "Compress": True}),
        "transcode": json.dumps({"Resources": [one], "Transcode": "1.2.840.10008.1.2.1"}),
        "empty": "", "not-json": "nonsense", "number": "3", "object-without-resources": "{}",
        "not-an-identifier": json.dumps(["nosuch"]), "unknown-resource": json.dumps([one[:-1] + "0"]),
        "transcode-type": json.dumps({"Resources": [one], "Transcode": 1}),
        "compress-type": json.dumps({"Resources": [one], "Compress": "yes"}),
        "synchronous-type": json.dumps({"Resources": [one], "Synchronous": "yes"}),
        "priority-type": json.dumps({"Resources": [one], "Priority": "high"}), "cut-short": f'["{one}"',
    }


FORMS = sorted(forms({"instance": "x", "study": "y"}))


def answer_of(server, name: str, body: str):
    response = server.post(f"/peers/{name}/store", body.encode())
    try:
        content = response.json()
    except ValueError:
        content = response.text
    if isinstance(content, dict) and "ID" in content and "Path" in content:  # an asynchronous job
        content = {"ID": "<job>", "Path": content["Path"].rsplit("/", 1)[0]}
    if isinstance(content, dict) and "Peer" in content:  # the peer's URL differs by server: same name
        content = {**content, "Peer": [content["Peer"][0]] if isinstance(content["Peer"], list) else content["Peer"]}
    return response.status_code, response.headers.get("Content-Type"), content


@pytest.fixture(scope="module")
def same_data(site):
    main, plain, _, _ = site
    study, originals = upload_study([main, plain], count=1)
    instance = [a["ID"] for a in main.post("/tools/lookup", originals[0].SOPInstanceUID).json()][0]
    return {"instance": instance, "study": study}


@pytest.mark.parametrize("name", ["clinic", "nowhere", "unknown"])
@pytest.mark.parametrize("form", FORMS)
def test_a_peer_no_rule_names_gets_orthancs_own_answer(site, same_data, form, name):
    main, plain, _, _ = site
    body = forms(same_data)[form]
    assert answer_of(main, name, body) == answer_of(plain, name, body)


def test_a_get_on_the_route_is_answered_as_orthanc_answers(site):
    main, plain, _, _ = site
    got, expected = main.get("/peers/clinic/store"), plain.get("/peers/clinic/store")
    assert (got.status_code, got.headers.get("Allow")) == (expected.status_code, expected.headers.get("Allow"))


def test_json_that_would_crash_orthanc_is_refused(site):
    main, _, _, _ = site
    for name in ("clinic", "research"):
        response = main.post(f"/peers/{name}/store", b"[" * 5000 + b"]" * 5000)
        assert response.status_code == 400 and "deeper than 64" in response.json()["Details"]
    assert main.get("/system").ok


@pytest.mark.parametrize("calling_aet, hashed", [("ROUTER_P", True), ("ROUTER_W", False)])
def test_a_route_forwards_to_a_peer_or_server_through_the_rules(site, tmp_path, calling_aet, hashed):
    main, _, research, _ = site
    ds = make_ct(patient_id=f"MRN-{uuid.uuid4().hex[:8]}", sop_uid=f"2.25.{uuid.uuid4().int}")
    path = tmp_path / "ct.dcm"
    path.write_bytes(encode(ds))
    result = storescu(main, calling_aet, path)
    assert result.returncode == 0, result.stderr
    for _ in range(200):  # the forwarding worker sends once the instance is stored
        if held(research, ds) is not None:
            break
        time.sleep(0.1)
    assert_coerced(research, [ds], hashed=hashed)
    forwards = main.get("/coercion/forwards").json()
    route = {"ROUTER_P": "route-to-peer", "ROUTER_W": "route-to-web"}[calling_aet]
    mine = [f for f in forwards if f["route"] == route]
    assert mine and mine[-1]["state"] == "sent", forwards


def test_a_rule_on_the_receivers_host_applies_to_a_peer_at_that_host(site):
    # sending-host of a rule for role SCP is the receiver's host: a peer's is its URL's.
    main, _, research, _ = site
    study, originals = upload_study([main])
    answer = main.post("/peers/by-name-localhost/store", json.dumps([study]))
    assert answer.status_code == 200 and answer.json()["Coercion"]["Rules"] == ["by-host"], answer.text
    assert_coerced(research, originals, hashed=False)


def test_a_failed_orthanc_job_to_a_peer_a_rule_names_now_is_not_resubmitted(site):
    main, _, _, _ = site
    study, _ = upload_study([main], count=1)
    answer = main.post("/peers/nowhere/store", json.dumps({"Resources": [study], "Asynchronous": True}))
    job = answer.json()["ID"]
    assert answer.json()["Path"] == f"/jobs/{job}", answer.text  # Orthanc's own job: no rule names nowhere
    for _ in range(300):
        if main.get(f"/jobs/{job}").json()["State"] == "Failure":
            break
        time.sleep(0.1)
    rules = main.rules_dir / "rules.yaml"
    original = rules.read_text()
    try:
        rules.write_text(original + """
- name: to-nowhere
  dimse: C_STORE_RQ
  role: SCP
  receiving-peer: [nowhere]
  uri: "deidentify:"
""")
        assert main.admin_post("/coercion/rules/reload").ok
        assert main.post(f"/jobs/{job}/resubmit").status_code == 403  # it would send the original
    finally:
        rules.write_text(original)
        assert main.admin_post("/coercion/rules/reload").ok
    assert main.post(f"/jobs/{job}/resubmit").status_code == 200  # no rule names it again: Orthanc's own
