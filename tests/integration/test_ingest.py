"""Everything that enters Orthanc: C-STORE (dcmtk and pynetdicom), REST, ZIP, STOW-RS."""

from __future__ import annotations

import io
import json
import socket
import uuid
import zipfile
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from coercion import Keys
from coercion.stores.linkage import open_store

from factory import encode, make_ct
from orthanc_server import orthanc  # noqa: F401 (a fixture)
from orthanc_server import COERCED_STATUSES, SECRET, TOKEN, OrthancServer, needs_orthanc, store_statuses, storescu

pytestmark = needs_orthanc
KEYS = Keys(SECRET)


def linked(server, pseudonym: str) -> list:
    """The links of a pseudonym in the server's linkage store (sealed: read through the store)."""
    store = open_store(server.linkage_db, KEYS)
    try:
        return store.lookup(pseudonym)
    finally:
        store.close()


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def ct_file(tmp_path: Path, patient_id: str | None = None, study_uid: str | None = None, **kwargs) -> tuple[Path, pydicom.Dataset]:
    ds = make_ct(patient_id=patient_id or f"MRN-{uuid.uuid4().hex[:8]}", study_uid=study_uid or new_uid(),
                 series_uid=new_uid(), sop_uid=new_uid(), **kwargs)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(encode(ds))
    return path, ds


def stored_coerced(server, original) -> bool:
    """Only the coerced copy of ``original`` is in ``server``."""
    return server.lookup(original.SOPInstanceUID) is None and server.lookup(KEYS.uid(original.SOPInstanceUID)) is not None


def stored_unchanged(server, original) -> bool:
    """Only ``original``, unchanged, is in ``server``."""
    instance_id = server.lookup(original.SOPInstanceUID)
    if instance_id is None or server.lookup(KEYS.uid(original.SOPInstanceUID)) is not None:
        return False
    stored = pydicom.dcmread(io.BytesIO(server.file(instance_id)))
    return stored.PatientName == original.PatientName and "PatientIdentityRemoved" not in stored


def send_file(server, calling_aet: str, path: Path):
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def test_cstore_from_a_matching_aet_is_stored_coerced_only(orthanc, tmp_path):
    path, original = ct_file(tmp_path)
    before = orthanc.instance_count()
    result = storescu(orthanc, "RESEARCH", path)
    assert len(store_statuses(result)) == 1 and store_statuses(result)[0] in COERCED_STATUSES, result.stdout
    assert orthanc.lookup(original.SOPInstanceUID) is None  # the original never lands
    instance_id = orthanc.lookup(KEYS.uid(original.SOPInstanceUID))
    assert instance_id and orthanc.instance_count() == before + 1
    stored = pydicom.dcmread(io.BytesIO(orthanc.file(instance_id)))
    assert stored.PatientID == KEYS.patient_id(original.PatientID, original.IssuerOfPatientID)
    assert stored.PatientName == "" and stored.PatientIdentityRemoved == "YES"
    assert stored.StudyDate != original.StudyDate and stored.PixelData == original.PixelData
    assert stored.LongitudinalTemporalInformationModified == "MODIFIED"


def test_cstore_from_another_aet_is_stored_unchanged(orthanc, tmp_path):
    path, original = ct_file(tmp_path)
    result = storescu(orthanc, "OTHER", path)
    # B000 when the worker thread last served a matching AE title: the filter then had to drop
    # the early coerced copy (any status but Success drops it) and store this one as sent.
    assert store_statuses(result) in [[status] for status in COERCED_STATUSES]
    stored = pydicom.dcmread(io.BytesIO(orthanc.file(orthanc.lookup(original.SOPInstanceUID))))
    assert stored.PatientName == original.PatientName and stored.PatientID == original.PatientID
    assert "PatientIdentityRemoved" not in stored and stored.PixelData == original.PixelData


def test_pynetdicom_scu(orthanc, tmp_path):
    _, original = ct_file(tmp_path)
    ae = AE(ae_title="RESEARCH_PY")
    ae.add_requested_context(CTImageStorage, original.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    status = assoc.send_c_store(original)
    assoc.release()
    assert status.Status in (0x0000, 0xB000)  # success, or the warning "Coercion of Data Elements"
    assert orthanc.lookup(KEYS.uid(original.SOPInstanceUID))
    assert orthanc.lookup(original.SOPInstanceUID) is None


def test_rest_upload_of_a_file_is_coerced(orthanc, tmp_path):
    path, original = ct_file(tmp_path)
    answer = orthanc.post("/instances", path.read_bytes())
    assert answer.status_code == 200, answer.text
    assert orthanc.lookup(original.SOPInstanceUID) is None
    stored = pydicom.dcmread(io.BytesIO(orthanc.file(orthanc.lookup(KEYS.uid(original.SOPInstanceUID)))))
    assert stored.PatientID == KEYS.patient_id(original.PatientID, original.IssuerOfPatientID)
    assert stored.StudyDate == ""  # the uploads rule keeps no dates


def test_rest_upload_of_a_zip_is_coerced(orthanc, tmp_path):
    files = [ct_file(tmp_path) for _ in range(3)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path, _ in files:
            zf.write(path, path.name)
    answer = orthanc.post("/instances", archive.getvalue())
    assert answer.status_code == 200, answer.text
    for _, original in files:
        assert orthanc.lookup(original.SOPInstanceUID) is None
        assert orthanc.lookup(KEYS.uid(original.SOPInstanceUID))


def test_stow_rs_is_coerced(orthanc, tmp_path):
    path, original = ct_file(tmp_path)
    boundary = "coercion-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode())
    answer = orthanc.post("/dicom-web/studies", body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert answer.status_code == 200, answer.text
    assert orthanc.lookup(original.SOPInstanceUID) is None
    assert orthanc.lookup(KEYS.uid(original.SOPInstanceUID))


def test_malformed_file_to_a_matching_aet_is_refused_and_orthanc_keeps_serving(orthanc, tmp_path):
    path, original = ct_file(tmp_path)
    data = path.read_bytes()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(data[: len(data) - 1000])  # cut inside the header
    # storescu refuses to send a truncated file; pynetdicom reads it with pydicom, which drops
    # what was cut, and sends the rest: Orthanc refuses it (required tags missing). The
    # plugin's own refusals are shown on REST uploads, where it sees the bytes as sent; on
    # DICOM, Orthanc hands the plugin its own well-formed serialization of what it received.
    status = send_file(orthanc, "RESEARCH", broken)
    assert status.Status >= 0xA000 and status.Status & 0xF000 != 0xB000  # a failure, not a warning
    assert orthanc.lookup(original.SOPInstanceUID) is None
    assert orthanc.lookup(KEYS.uid(original.SOPInstanceUID)) is None
    assert orthanc.get("/system").ok
    path2, original2 = ct_file(tmp_path)
    assert store_statuses(storescu(orthanc, "RESEARCH", path2)) in [[status] for status in COERCED_STATUSES]
    assert stored_coerced(orthanc, original2)


@pytest.mark.parametrize("cut", ["half", "before-pixels"])
def test_a_matched_instance_cut_short_is_refused_on_dicom_too(orthanc, tmp_path, cut):
    # Orthanc hands the plugin its own well-formed serialization of what arrived: cut in half,
    # the pixel data it describes is missing or short, and that alone tells.
    path, original = ct_file(tmp_path, rows=64)
    data = path.read_bytes()
    end = len(data) // 4 * 2 if cut == "half" else data.rindex(b"\xe0\x7f\x10\x00")  # even: a whole PDU
    broken = tmp_path / f"{cut}.dcm"
    broken.write_bytes(data[:end])
    status = send_file(orthanc, "RESEARCH", broken)
    assert status.Status in (0xC000, 0x0110), hex(status.Status)  # the plugin's refusal, never B000
    assert orthanc.lookup(original.SOPInstanceUID) is None
    assert orthanc.lookup(KEYS.uid(original.SOPInstanceUID)) is None
    refused = [line for line in orthanc.log().splitlines() if '"action":"rejected"' in line and "pixel data" in line]
    assert refused, "the plugin itself must say why"


def test_rest_upload_of_a_malformed_file_gets_an_http_error(orthanc, tmp_path):
    path, original = ct_file(tmp_path, rows=64)
    data = path.read_bytes()
    answer = orthanc.post("/instances", data[: len(data) - 1000])
    assert answer.status_code == 400
    assert orthanc.lookup(original.SOPInstanceUID) is None
    audit = [line for line in orthanc.log().splitlines() if '"action":"rejected"' in line and '"origin":"REST"' in line]
    assert audit and "pixel data is truncated" in audit[-1]


def test_linkage_database_and_reidentification(orthanc, tmp_path):
    path, original = ct_file(tmp_path, patient_id="LINK-4711")
    storescu(orthanc, "RESEARCH", path)
    pseudonym = KEYS.patient_id("LINK-4711", original.IssuerOfPatientID)
    links = [(l.pseudonym, l.issuer, l.patient_id, l.rule, l.instance_count) for l in linked(orthanc, pseudonym)]
    assert links == [(pseudonym, original.IssuerOfPatientID, "LINK-4711", "research", 1)]
    for path in orthanc.root.glob("linkage.sqlite*"):  # sealed at rest, owner-only
        assert b"LINK-4711" not in path.read_bytes() and path.stat().st_mode & 0o077 == 0, path.name
    assert orthanc.get(f"/coercion/linkage/{pseudonym}").status_code == 403
    wrong = orthanc.get(f"/coercion/linkage/{pseudonym}", headers={"X-Coercion-Token": "nope-nope-nope-nope"})
    assert wrong.status_code == 403 and "credential" in wrong.json()["error"]
    answer = orthanc.get(f"/coercion/linkage/{pseudonym}", headers={"X-Coercion-Token": TOKEN})
    assert answer.status_code == 200
    (link,) = answer.json()["links"]
    assert link["patient_id"] == "LINK-4711" and link["rule"] == "research" and link["instance_count"] == 1
    assert "LINK-4711" not in orthanc.log()  # never in logs


def test_no_phi_in_the_log(orthanc, tmp_path):
    path, original = ct_file(tmp_path, patient_id="SECRETPID-77", patient_name="Zanzibar^Quentin")
    storescu(orthanc, "RESEARCH", path)
    orthanc.post("/instances", path.read_bytes())
    log = orthanc.log()
    assert "SECRETPID-77" not in log and "Zanzibar" not in log
    audit = [json.loads(line.split("coercion-audit ", 1)[1]) for line in log.splitlines() if "coercion-audit {" in line]
    entry = next(a for a in audit if a.get("sop_instance_uid") == KEYS.uid(original.SOPInstanceUID) and a["origin"] == "DICOM")
    assert entry["rule"] == "research" and entry["calling_aet"] == "RESEARCH" and entry["ms"] >= 0
    assert entry["sop_class_uid"] == original.SOPClassUID


def test_rest_api(orthanc, tmp_path):
    rules = orthanc.get("/coercion/rules").json()
    assert [r["name"] for r in rules["rules"]] == ["research", "uploads", "quarantine"] and rules["last_error"] is None
    stats = orthanc.get("/coercion/stats").json()
    assert stats["research"]["coerced"] >= 1 and stats["research"]["bytes_in"] > 0 and "seconds" in stats["research"]
    path, original = ct_file(tmp_path)
    before = orthanc.instance_count()
    preview = orthanc.admin_post("/coercion/preview/rule/research", path.read_bytes())
    assert preview.status_code == 200 and preview.headers["Content-Type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(preview.content)).PatientID == KEYS.patient_id(original.PatientID, original.IssuerOfPatientID)
    preview = orthanc.admin_post("/coercion/preview/uri/deidentify:RetainUIDsOption", path.read_bytes())
    assert pydicom.dcmread(io.BytesIO(preview.content)).SOPInstanceUID == original.SOPInstanceUID
    assert orthanc.instance_count() == before  # nothing stored
    bad = orthanc.admin_post("/coercion/preview/rule/nope", path.read_bytes())
    assert bad.status_code == 404 and "nope" in bad.json()["error"]
    bad = orthanc.admin_post("/coercion/preview/uri/deidentify:Bogus", path.read_bytes())
    assert bad.status_code == 400 and "Bogus" in bad.json()["error"]
    assert orthanc.get("/coercion/nothing").status_code == 404


def test_reload_is_atomic(orthanc, tmp_path):
    rules_file = orthanc.rules_dir / "rules.yaml"
    good = rules_file.read_text()
    try:
        rules_file.write_text(good + "\n- {name: broken, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:Nope'}\n")
        answer = orthanc.admin_post("/coercion/rules/reload")
        assert answer.status_code == 400 and "rule 'broken': field 'uri'" in answer.json()["error"]
        assert orthanc.get("/coercion/rules").json()["last_error"]
        path, original = ct_file(tmp_path)
        assert store_statuses(storescu(orthanc, "RESEARCH", path)) in [[status] for status in COERCED_STATUSES]
        assert stored_coerced(orthanc, original)
        rules_file.write_text(good.replace("sending-aet: [RESEARCH, ", "sending-aet: [NEWAET, "))
        assert orthanc.admin_post("/coercion/rules/reload").status_code == 200
        path, original = ct_file(tmp_path)
        assert store_statuses(storescu(orthanc, "NEWAET", path)) in [[status] for status in COERCED_STATUSES]
        assert stored_coerced(orthanc, original)
        path, original = ct_file(tmp_path)
        assert store_statuses(storescu(orthanc, "RESEARCH", path)) in [["Success"], ["Warning: CoercionOfDataElements"]]
        assert stored_unchanged(orthanc, original)
    finally:
        rules_file.write_text(good)
        assert orthanc.admin_post("/coercion/rules/reload").status_code == 200


def test_studies_of_one_patient_land_under_one_pseudonymous_patient_across_restarts(tmp_path):
    server = OrthancServer(tmp_path / "restart").start()
    try:
        first, original = ct_file(tmp_path, patient_id="LONGI-1")
        storescu(server, "RESEARCH", first)
        second, _ = ct_file(tmp_path, patient_id="LONGI-1")
        server.post("/instances", second.read_bytes())
        server.stop()
        server.start()
        third, third_original = ct_file(tmp_path, patient_id="LONGI-1")
        assert store_statuses(storescu(server, "RESEARCH_2", third)) in [[status] for status in COERCED_STATUSES]
        assert stored_coerced(server, third_original)
        patients = server.get("/patients?expand").json()
        assert len(patients) == 1
        assert patients[0]["MainDicomTags"]["PatientID"] == KEYS.patient_id("LONGI-1", original.IssuerOfPatientID)
        assert len(patients[0]["Studies"]) == 3
        links = linked(server, KEYS.patient_id("LONGI-1", original.IssuerOfPatientID))
        counts = {link.rule: link.instance_count for link in links}
        assert counts == {"research": 2, "uploads": 1}
    finally:
        server.stop()


def test_activity_per_rule_and_calling_aet_is_kept_across_restarts(tmp_path):
    server = OrthancServer(tmp_path / "activity").start()
    try:
        for aet in ("RESEARCH", "RESEARCH", "RESEARCH_CT"):
            path, original = ct_file(tmp_path, patient_id="ACT-PATIENT-1", patient_name="Activity^Secret")
            assert store_statuses(storescu(server, aet, path)) in [[status] for status in COERCED_STATUSES]
        path, _ = ct_file(tmp_path, rows=64)
        data = path.read_bytes()
        broken = tmp_path / "broken.dcm"
        broken.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])
        assert send_file(server, "RESEARCH_CT", broken).Status in (0xC000, 0x0110)
        assert server.post("/instances", ct_file(tmp_path)[0].read_bytes()).status_code == 200  # no AE title
        server.stop()  # the counts of the last seconds are written as Orthanc stops
        server.start()
        stats = server.get("/coercion/stats").json()
        assert (stats["research"]["matched"], stats["research"]["coerced"], stats["research"]["rejected"]) == (4, 3, 1)
        assert stats["research"]["bytes_in"] > 0 and stats["research"]["last_seen"].endswith("Z")
        assert stats["uploads"]["coerced"] == 1
        activity = server.get("/coercion/activity").json()
        rules = {rule["rule"]: rule for rule in activity["rules"]}
        assert rules["research"]["calling_aets"] == ["RESEARCH", "RESEARCH_CT"]
        assert rules["uploads"]["calling_aets"] == [None]
        by_aet = {entry["calling_aet"]: entry for entry in activity["calling_aets"]}
        assert by_aet["RESEARCH"]["coerced"] == 2 and by_aet["RESEARCH"]["last_failure_at"] is None
        assert by_aet["RESEARCH_CT"]["coerced"] == 1 and by_aet["RESEARCH_CT"]["rejected"] == 1
        assert "pixel data" in by_aet["RESEARCH_CT"]["last_failure_reason"]
        assert [rule["rule"] for rule in by_aet[None]["rules"]] == ["uploads"]
        assert "ACT-PATIENT-1" not in str(activity) and "Activity" not in str(activity)
        assert (server.root / "activity.sqlite").stat().st_mode & 0o077 == 0
    finally:
        server.stop()


def test_invalid_rules_stop_orthanc_with_the_message(tmp_path):
    server = OrthancServer(tmp_path / "bad", rules="- {name: r1, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:Nope'}\n")
    with pytest.raises(RuntimeError, match=r"rules.yaml: rule 'r1': field 'uri': unknown option 'Nope'"):
        server.start()


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    server = OrthancServer(tmp_path / "nosecret")
    server.secret_file.unlink()
    with pytest.raises(RuntimeError, match="secret file .* does not exist"):
        server.start()


def test_serve_refuses_a_port_in_use_and_names_it(tmp_path):
    server = OrthancServer(tmp_path / "busy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.http_port))
        taken.listen()
        with pytest.raises(RuntimeError, match=f"HttpPort {server.http_port} is already in use.*--http-port"):
            server.start()
    assert server.process.returncode == 78


def test_concurrent_associations_from_matching_and_other_aets(orthanc, tmp_path):
    import concurrent.futures

    batches = {aet: [ct_file(tmp_path, patient_id="CONC-1") for _ in range(5)]
               for aet in ("RESEARCH", "OTHER_A", "RESEARCH_9", "OTHER_B")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(batches, pool.map(lambda item: storescu(orthanc, item[0], *(p for p, _ in item[1])),
                                             batches.items())))
    for aet, files in batches.items():
        assert len(store_statuses(results[aet])) == 5, results[aet].stdout + results[aet].stderr
        for _, original in files:
            if aet.startswith("RESEARCH"):
                assert stored_coerced(orthanc, original), aet
            else:
                assert stored_unchanged(orthanc, original), aet
    issuer = batches["RESEARCH"][0][1].IssuerOfPatientID
    counts = [link.instance_count for link in linked(orthanc, KEYS.patient_id("CONC-1", issuer))]
    assert counts == [10]  # once per coerced instance, whatever the threads guessed
