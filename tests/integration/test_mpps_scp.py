"""The MPPS SCP in a real Orthanc: pynetdicom as the modalities (N-CREATE, N-SET) and as the RIS
the steps are forwarded to (down at first, so that retries show); coercion per calling AE
title, on the way in and on the way out; every protocol error of PS3.4 F.7; concurrent
associations; a restart between N-CREATE and N-SET; Orthanc stopping with an association open;
bad settings.

(Named test_mpps_scp.py: tests/test_mpps.py holds the unit tests, and pytest cannot import two
test modules of one basename from folders without __init__.py.)"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from coercion import Keys

from orthanc_server import ADMIN, SECRET, OrthancServer, free_port, needs_orthanc
from test_mpps import create_attributes, performed_series, set_modifications
from worklists import worklist_item

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
MPPS = "1.2.840.10008.3.1.2.3.3"
VERIFICATION = "1.2.840.10008.1.1"
RULES = """
- name: research-mpps
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
- name: research-mpps-set
  dimse: N_SET_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
- name: broken
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [BROKEN]
  uri: "deidentify:"
- name: mpps-to-ris
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [MODALITY, RESEARCH]
  forward: {to: [ris], when: received, retries: 10, retry-interval: 1}
- name: mpps-to-anon
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [MODALITY]
  forward: {to: [RIS_ANON], when: received, retries: 10, retry-interval: 1}
- name: anon-create
  dimse: N_CREATE_RQ
  role: SCP
  receiving-aet: [RIS_ANON]
  uri: "deidentify:"
- name: anon-set
  dimse: N_SET_RQ
  role: SCP
  receiving-aet: [RIS_ANON]
  uri: "deidentify:"
- name: store-research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:"
"""
CALLERS = ["MODALITY", "RESEARCH", "BROKEN", "OTHER1", "OTHER2", "OTHER3"]


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def no_delay(assoc) -> None:
    """As modalities run by DCMTK with TCP_NODELAY=1: pynetdicom writes a message's command
    and data set in two PDUs, and the second would wait ~40 ms for a delayed ACK."""
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def associate(port: int, aet: str = "MODALITY"):
    ae = AE(ae_title=aet)
    ae.add_requested_context(MPPS)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    if assoc.is_established:
        no_delay(assoc)
    return assoc


def status_of(answer) -> int:
    return int(answer[0].Status)


class Recorder:
    """A RIS: a pynetdicom MPPS SCP that records what it receives, in order."""

    def __init__(self, aet: str):
        self.aet, self.port, self.server = aet, free_port(), None
        self.received: list[tuple[str, str, Dataset]] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.server is not None:
            return
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(MPPS)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_CREATE, self._created), (evt.EVT_N_SET, self._set)])

    def _created(self, event):
        with self.lock:
            self.received.append(("N-CREATE", str(event.request.AffectedSOPInstanceUID), event.attribute_list))
        return 0x0000, None

    def _set(self, event):
        with self.lock:
            self.received.append(("N-SET", str(event.request.RequestedSOPInstanceUID), event.modification_list))
        return 0x0000, None

    def of(self, uid: str) -> list[tuple[str, Dataset]]:
        with self.lock:
            return [(kind, ds) for kind, u, ds in self.received if u == uid]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def mpps_server(root, rules: str = RULES, mpps: dict | None = None, modalities: dict | None = None,
                **settings) -> OrthancServer:
    """An OrthancServer with Coercion.Mpps (orthanc_server's settings would replace Coercion)."""
    server = OrthancServer(root, rules=rules, modalities=modalities or {aet: free_port() for aet in CALLERS},
                           settings=settings)
    config = json.loads(server.config.read_text())
    config["Coercion"]["Mpps"] = mpps if mpps is not None else {"Port": free_port()}
    server.mpps_port = config["Coercion"]["Mpps"].get("Port")
    server.config.write_text(json.dumps(config, indent=2))
    return server


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


class Site:
    def __init__(self, root):
        self.ris, self.anon = Recorder("RIS"), Recorder("RIS_ANON")
        self.worklist = root / "worklist"
        self.worklist.mkdir(parents=True)
        modalities = {aet: free_port() for aet in CALLERS}
        modalities.update(RIS=self.ris.port, RIS_ANON=self.anon.port, ELSEWHERE=free_port())
        self.orthanc = mpps_server(root / "orthanc", modalities=modalities, StableAge=1,
                                   Worklists={"Enable": True, "Database": str(self.worklist)})
        config = json.loads(self.orthanc.config.read_text())
        config["DicomModalities"]["elsewhere"]["Host"] = "127.0.0.2"  # known, but from another host
        self.orthanc.config.write_text(json.dumps(config, indent=2))
        self.orthanc.start()

    @property
    def port(self) -> int:
        return self.orthanc.mpps_port

    def up(self) -> None:
        self.ris.start()
        self.anon.start()

    def step(self, uid: str) -> dict:
        answer = self.orthanc.get(f"/coercion/mpps/{uid}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def forwards(self, uid: str) -> list[dict]:
        rows = self.orthanc.get("/coercion/forwards").json()
        return [f for f in rows if f["level"] == "MPPS" and f["resource"] == uid]

    def stop(self) -> None:
        self.orthanc.stop()
        self.ris.stop()
        self.anon.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("mpps"))
    yield site
    site.stop()


def test_a_step_is_kept_and_forwarded_in_order_once_the_ris_is_up(site):
    uid = new_uid()
    assoc = associate(site.port, "MODALITY")
    assert assoc.send_c_echo().Status == 0x0000  # C-ECHO is answered too
    assert status_of(assoc.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
    series = performed_series(2)
    assert status_of(assoc.send_n_set(set_modifications(series=[series], end=False), MPPS, uid)) == 0x0000
    assert status_of(assoc.send_n_set(set_modifications("COMPLETED"), MPPS, uid)) == 0x0000
    assoc.release()
    # Kept, and shown to the administrator only (the dataset holds patient data).
    assert site.orthanc.get(f"/coercion/mpps/{uid}").status_code == 403
    assert site.orthanc.get("/coercion/mpps").status_code == 403
    step = site.step(uid)
    assert (step["status"], step["calling_aet"], step["series"], step["instances"], step["messages"]) == (
        "COMPLETED", "MODALITY", 1, 2, 3)
    assert step["performed_series"][0]["SeriesInstanceUID"] == series.SeriesInstanceUID
    assert step["dataset"]["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    listing = site.orthanc.get("/coercion/mpps", headers=ADMIN).json()
    assert any(s["uid"] == uid for s in listing) and "dataset" not in listing[0]
    # The RIS is down: the forward is retried with the queue's back-off...
    failed = wait_for(lambda: [f for f in site.forwards(uid) if f["destination"] == "ris" and f["attempts"] >= 2])
    assert failed[0]["state"] == "pending" and failed[0]["last_error"]
    site.up()
    # ...and once it is up, the RIS gets the N-CREATE, then the N-SETs, each once, in order.
    # (A message kept while an attempt is under way opens the next forward; the failed attempt
    # is merged into it.)
    wait_for(lambda: {f["destination"] for f in site.forwards(uid) if f["state"] == "sent"} == {"ris", "ris_anon"}
             and all(f["state"] in ("sent", "merged") for f in site.forwards(uid)), timeout=60)
    received = site.ris.of(uid)
    assert [kind for kind, _ in received] == ["N-CREATE", "N-SET", "N-SET"]
    assert received[0][1].PatientName == "Doe^Jane"  # no rule for role SCP of RIS: as kept
    assert received[2][1].PerformedProcedureStepStatus == "COMPLETED"
    # RIS_ANON is under rules for role SCP: what it gets is coerced, under one pseudonymous UID.
    anon = site.anon.of(KEYS.uid(uid))
    assert [kind for kind, _ in anon] == ["N-CREATE", "N-SET", "N-SET"] and site.anon.of(uid) == []
    assert not anon[0][1].get("PatientName") and anon[0][1].PatientIdentityRemoved == "YES"
    forwarded_series = anon[1][1].PerformedSeriesSequence[0].SeriesInstanceUID
    assert forwarded_series == KEYS.uid(series.SeriesInstanceUID)


def test_coercion_is_per_calling_ae_title_on_the_way_in(site):
    site.up()
    plain, coerced = new_uid(), new_uid()
    for aet, uid in (("MODALITY", plain), ("RESEARCH", coerced)):
        assoc = associate(site.port, aet)
        ds = create_attributes(patient_name="Roe^Rita", patient_id="MRN-42")
        assert status_of(assoc.send_n_create(ds, MPPS, uid)) == 0x0000
        modifications = set_modifications("COMPLETED", [performed_series(1, operator="Tech^Tina")])
        assert status_of(assoc.send_n_set(modifications, MPPS, uid)) == 0x0000
        assoc.release()
    kept_plain = site.step(plain)
    assert "Roe" in json.dumps(kept_plain["dataset"]) and kept_plain["rule"] is None
    # RESEARCH's step is kept coerced, under the pseudonym of its UID.
    assert site.orthanc.get(f"/coercion/mpps/{coerced}", headers=ADMIN).status_code == 404
    kept = site.step(KEYS.uid(coerced))
    text = json.dumps(kept["dataset"])
    assert (kept["rule"], kept["set_rule"]) == ("research-mpps", "research-mpps-set")
    assert "Roe" not in text and "MRN-42" not in text and "Tina" not in text
    assert kept["dataset"]["00100020"]["Value"] == [KEYS.patient_id("MRN-42")]
    # What is forwarded is what was kept: RIS gets the coerced step, and the original of the other.
    wait_for(lambda: len(site.ris.of(KEYS.uid(coerced))) == 2 and len(site.ris.of(plain)) == 2)
    assert not site.ris.of(KEYS.uid(coerced))[0][1].get("PatientName")
    assert site.ris.of(plain)[0][1].PatientName == "Roe^Rita" and site.ris.of(coerced) == []
    stats = site.orthanc.get("/coercion/stats").json()
    assert stats["research-mpps"]["coerced"] >= 1 and stats["research-mpps-set"]["coerced"] >= 1


def test_concurrent_associations_from_several_ae_titles(site):
    results: dict[str, list] = {}

    def modality(aet):
        assoc = associate(site.port, aet)
        statuses = []
        for _ in range(5):
            uid = new_uid()
            statuses.append((uid, status_of(assoc.send_n_create(create_attributes(station=aet), MPPS, uid))))
            modifications = set_modifications("COMPLETED", [performed_series(1)])
            statuses.append((uid, status_of(assoc.send_n_set(modifications, MPPS, uid))))
        assoc.release()
        results[aet] = statuses

    threads = [threading.Thread(target=modality, args=(aet,)) for aet in ("MODALITY", "OTHER1", "OTHER2", "OTHER3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["MODALITY", "OTHER1", "OTHER2", "OTHER3"]
    listing = {s["uid"]: s for s in site.orthanc.get("/coercion/mpps?limit=1000", headers=ADMIN).json()}
    for aet, statuses in results.items():
        assert [status for _, status in statuses] == [0] * 10
        for uid, _ in statuses:
            assert (listing[uid]["calling_aet"], listing[uid]["status"]) == (aet, "COMPLETED")


def test_a_caller_dicom_modalities_do_not_list_is_refused(site):
    stranger = associate(site.port, "STRANGER")
    assert stranger.is_rejected and not stranger.is_established
    elsewhere = associate(site.port, "ELSEWHERE")  # listed with another host: DicomCheckModalityHost
    assert elsewhere.is_rejected
    assert '"calling_aet":"STRANGER"' in site.orthanc.log() and "not in DicomModalities" in site.orthanc.log()


def test_a_failed_coercion_is_refused_and_nothing_is_kept(site):
    uid = new_uid()
    ds = create_attributes()
    ds.DirectoryRecordSequence = Sequence([Dataset()])  # the engine refuses what looks like a DICOMDIR
    assoc = associate(site.port, "BROKEN")
    answer = assoc.send_n_create(ds, MPPS, uid)
    assoc.release()
    assert status_of(answer) == 0x0110 and answer[0].ErrorComment == "coercion failed"
    for candidate in (uid, KEYS.uid(uid)):
        assert site.orthanc.get(f"/coercion/mpps/{candidate}", headers=ADMIN).status_code == 404
    assert site.orthanc.get("/coercion/stats").json()["broken"]["rejected"] == 1


def test_every_protocol_error_has_its_status_and_loses_nothing(site):
    uid = new_uid()
    assoc = associate(site.port, "OTHER1")
    assert status_of(assoc.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
    before = site.step(uid)
    duplicate = assoc.send_n_create(create_attributes(patient_name="Other^Olga"), MPPS, uid)
    assert status_of(duplicate) == 0x0111
    assert status_of(assoc.send_n_set(set_modifications(), MPPS, new_uid())) == 0x0112
    not_allowed = assoc.send_n_set(set_modifications(PatientName="Other^Olga", Modality="MR"), MPPS, uid)
    assert status_of(not_allowed) == 0x0105
    assert list(not_allowed[0].AttributeIdentifierList) == [0x00080060, 0x00100010]
    assert status_of(assoc.send_n_set(set_modifications("PAUSED"), MPPS, uid)) == 0x0106
    final_without_series = assoc.send_n_set(set_modifications("COMPLETED"), MPPS, uid)
    assert status_of(final_without_series) == 0x0121
    assert site.step(uid) == before  # none of it changed the step
    not_in_progress = assoc.send_n_create(create_attributes(status="COMPLETED"), MPPS, new_uid())
    assert status_of(not_in_progress) == 0x0106
    missing = create_attributes()
    del missing.PerformedStationAETitle
    answer = assoc.send_n_create(missing, MPPS, new_uid())
    assert status_of(answer) == 0x0120 and "PerformedStationAETitle" in answer[0].ErrorComment
    empty = create_attributes()
    empty.PerformedProcedureStepID = ""
    answer = assoc.send_n_create(empty, MPPS, new_uid())
    assert status_of(answer) == 0x0121 and "PerformedProcedureStepID" in answer[0].ErrorComment
    done = set_modifications("DISCONTINUED", [performed_series(0)])
    assert status_of(assoc.send_n_set(done, MPPS, uid)) == 0x0000
    again = assoc.send_n_set(set_modifications(), MPPS, uid)
    assert status_of(again) == 0x0110 and again[0].ErrorID == 0xA710
    assert again[0].ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assoc.release()
    step = site.step(uid)
    assert step["status"] == "DISCONTINUED" and step["dataset"]["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert "Olga" not in site.orthanc.log()  # errors name attributes and statuses, never values


def test_what_is_too_large_is_refused(site):
    big = create_attributes()
    big.add_new(0x00091011, "OB", b"\x00" * (4 * 1024 * 1024 + 10))  # beyond the bound
    assoc = associate(site.port, "OTHER2")
    uid = new_uid()
    assert status_of(assoc.send_n_create(big, MPPS, uid)) == 0x0213
    assert site.orthanc.get(f"/coercion/mpps/{uid}", headers=ADMIN).status_code == 404
    huge = create_attributes()
    huge.add_new(0x00091010, "OB", b"\x00" * (17 * 1024 * 1024))  # past the transport's bound: cut off
    answer = assoc.send_n_create(huge, MPPS, new_uid())
    assert "Status" not in answer[0]
    wait_for(lambda: not assoc.is_established, timeout=10)
    assert "aborted: a message of more than" in site.orthanc.log()
    ok = associate(site.port, "OTHER2")  # the SCP goes on serving
    assert status_of(ok.send_n_create(create_attributes(), MPPS, new_uid())) == 0x0000
    ok.release()


def test_the_worklist_follows_the_step(site):
    study = new_uid()
    item = worklist_item("MRN-WL", "Doe^Wendy", "ACC-WL", "CT", "MODALITY", "20241101", study_uid=study,
                         step_id="SPS-WL")
    from coercion.exchanges.worklist import encode as encode_item

    path = site.worklist / "wl1.wl"
    path.write_bytes(encode_item(item))
    uid = new_uid()
    assoc = associate(site.port, "MODALITY")
    ds = create_attributes(study_uid=study, accession="ACC-WL", step_id="SPS-WL", requested="RP-ACC-WL")
    assert status_of(assoc.send_n_create(ds, MPPS, uid)) == 0x0000
    status = lambda: pydicom.dcmread(path, force=True).ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus  # noqa: E731
    assert status() == "IN PROGRESS"
    done = set_modifications("COMPLETED", [performed_series(1)])
    assert status_of(assoc.send_n_set(done, MPPS, uid)) == 0x0000
    assoc.release()
    assert status() == "COMPLETED"


def test_a_restart_between_n_create_and_n_set(site):
    site.up()
    uid = new_uid()
    assoc = associate(site.port, "MODALITY")
    assert status_of(assoc.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
    assoc.release()
    wait_for(lambda: len(site.ris.of(uid)) == 1)
    site.orthanc.stop()
    site.orthanc.start()
    assoc = associate(site.port, "MODALITY")
    assert status_of(assoc.send_n_set(set_modifications("COMPLETED", [performed_series(1)]), MPPS, uid)) == 0x0000
    assoc.release()
    assert site.step(uid)["status"] == "COMPLETED"
    wait_for(lambda: len(site.ris.of(uid)) == 2)
    assert [kind for kind, _ in site.ris.of(uid)] == ["N-CREATE", "N-SET"]  # nothing sent twice


def test_only_the_ae_title_that_created_a_step_may_n_set_it(site):
    site.up()
    uid = new_uid()
    creator = associate(site.port, "MODALITY")
    assert status_of(creator.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
    creator.release()
    wait_for(lambda: len(site.ris.of(uid)) == 1)
    kept = lambda: {k: v for k, v in site.step(uid).items() if k != "deliveries"}  # noqa: E731
    before = kept()
    for aet in ("OTHER1", "other2"):  # another modality, in any letter case
        other = associate(site.port, aet)
        assert other.is_established
        answer = other.send_n_set(set_modifications("COMPLETED", [performed_series(1)]), MPPS, uid)
        other.release()
        assert status_of(answer) == 0x0124
        assert answer[0].ErrorComment == "not the AE title that created the step"
    assert kept() == before
    log = site.orthanc.log()
    assert '"calling_aet":"OTHER1"' in log and '"status":"0x0124"' in log and "was created by 'MODALITY'" in log
    # The creator, under the AE titles Orthanc takes for its own: letter case, padding.
    for aet, modifications in (("modality", set_modifications(series=[performed_series(1)], end=False)),
                               (" MODALITY  ", set_modifications("COMPLETED"))):
        assoc = associate(site.port, aet)
        assert status_of(assoc.send_n_set(modifications, MPPS, uid)) == 0x0000
        assoc.release()
    step = site.step(uid)
    assert (step["status"], step["messages"], step["calling_aet"]) == ("COMPLETED", 3, "MODALITY")
    # The RIS got the creator's N-SETs only (forwards go in order: a refused one would come first).
    wait_for(lambda: len(site.ris.of(uid)) == 3)
    time.sleep(0.5)
    assert [kind for kind, _ in site.ris.of(uid)] == ["N-CREATE", "N-SET", "N-SET"]
    assert site.ris.of(uid)[1][1].get("PerformedProcedureStepStatus") is None


def _connect_idle(port: int, count: int, partial: bool = False) -> list[socket.socket]:
    """Connections that never complete an A-ASSOCIATE-RQ: silent, or sending the first bytes of one."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(sock)
        if partial:
            sock.sendall(b"\x01\x00\x00\x00\x01\x00\x00\x01")  # an A-ASSOCIATE-RQ of 256 bytes: 2 of them
    return held


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_do_not_keep_a_modality_out(site):
    held = []
    try:
        opened = time.monotonic()
        held = _connect_idle(site.port, 20) + _connect_idle(site.port, 20, partial=True)
        time.sleep(0.5)  # all accepted by the SCP, waiting for their requests
        uid = new_uid()
        assoc = associate(site.port, "OTHER3")
        assert assoc.is_established
        assert status_of(assoc.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
        assoc.release()
        took = time.monotonic() - opened
        assert took < 4, took  # while the 40 were held (they are dropped after 5 s)
        assert select.select(held, [], [], 0)[0] == []  # none dropped to make room
        assert site.step(uid)["calling_aet"] == "OTHER3"
        # Then each is dropped, silent or half-way through its request.
        assert all(_closed_by_peer(sock, 15) for sock in held)
        assert time.monotonic() - opened < 15
    finally:
        for sock in held:
            sock.close()
    assert site.orthanc.log().count('"outcome":"refused: no A-ASSOCIATE-RQ within 5 s"') >= 40


def test_a_connection_without_an_association_request_is_dropped_within_the_timeout(site):
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as idle:
        started = time.monotonic()
        assert _closed_by_peer(idle, 15)
        took = time.monotonic() - started
    assert 4 < took < 8, took  # Coercion.Mpps.RequestTimeout: 5 s by default
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as other:
        other.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not DICOM: dropped at once
        assert _closed_by_peer(other, 3)
    assert '"outcome":"refused: not an A-ASSOCIATE-RQ"' in site.orthanc.log()


def test_connections_waiting_for_their_request_are_bounded_the_oldest_dropped(site):
    held = []
    try:
        held = _connect_idle(site.port, 70)  # 64 may wait at once
        time.sleep(1)
        dropped = [i for i, sock in enumerate(held) if select.select([sock], [], [], 0)[0]]
        assert dropped == list(range(6)), dropped  # the oldest, well before the timeout
        assoc = associate(site.port, "OTHER3")  # the newest: it is not crowded out
        assert status_of(assoc.send_n_create(create_attributes(), MPPS, new_uid())) == 0x0000
        assoc.release()
    finally:
        for sock in held:
            sock.close()
    assert "dropped before its A-ASSOCIATE-RQ, 64 connections waiting" in site.orthanc.log()


def test_one_host_holds_at_most_its_share_of_associations(tmp_path):
    server = mpps_server(tmp_path, rules="", mpps={"Port": free_port(), "MaxAssociations": 3,
                                                   "MaxAssociationsPerHost": 2}).start()
    opened = []
    try:
        opened = [associate(server.mpps_port, aet) for aet in ("MODALITY", "OTHER1")]
        assert all(assoc.is_established for assoc in opened)
        refused = associate(server.mpps_port, "OTHER2")
        assert refused.is_rejected
        rejection = refused.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
        assert "(Coercion.Mpps.MaxAssociationsPerHost)" in server.log()
        opened.pop().release()

        def accepted():
            assoc = associate(server.mpps_port, "OTHER2")
            return assoc if assoc.is_established else None

        again = wait_for(accepted, 10)  # once the released one's threads have ended
        assert status_of(again.send_n_create(create_attributes(), MPPS, new_uid())) == 0x0000
        again.release()
    finally:
        for assoc in opened:
            assoc.release()
        server.stop()


@pytest.mark.parametrize("mpps, expected", [
    ({"Port": 11114, "RequestTimeout": 0}, "Coercion.Mpps.RequestTimeout must be a number of seconds"),
    ({"Port": 11114, "MaxAssociationsPerHost": 20}, "Coercion.Mpps.MaxAssociationsPerHost (20) is more than"),
])
def test_bad_connection_limits_stop_orthanc_with_a_clear_message(tmp_path, mpps, expected):
    server = mpps_server(tmp_path, rules="", mpps=mpps)
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    assert f"coercion: refusing to start: {expected}" in server.log()


# -- start and stop ---------------------------------------------------------------------------


def test_orthanc_stops_promptly_with_an_association_open_and_frees_the_port(tmp_path):
    server = mpps_server(tmp_path, rules="").start()
    assoc = associate(server.mpps_port, "MODALITY")
    assert assoc.is_established
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    assert server.process.returncode == 0 and took < 15, (took, server.log_tail())
    wait_for(lambda: not assoc.is_established, timeout=5)  # aborted by the SCP's stop
    with socket.socket() as probe:  # no one listens there any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.mpps_port))


@pytest.mark.parametrize("mpps, expected", [
    ({"Port": "11114"}, "Coercion.Mpps.Port must be a port number"),
    ({"Port": 70000}, "Coercion.Mpps.Port must be a port number"),
    ({"Port": 11114, "Aet": "A_VERY_LONG_AE_TITLE"}, "Coercion.Mpps.Aet must be an AE title"),
    ({"Port": 11114, "Retries": 3}, "Coercion.Mpps: unknown setting(s) Retries"),
])
def test_bad_settings_stop_orthanc_with_a_clear_message(tmp_path, mpps, expected):
    server = mpps_server(tmp_path, rules="", mpps=mpps)
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    assert f"coercion: refusing to start: {expected}" in server.log()


def test_a_port_taken_stops_orthanc(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = mpps_server(tmp_path, rules="", mpps={"Port": port})
        with pytest.raises(RuntimeError, match="exited with 78"):
            server.start()
    assert f"the MPPS SCP cannot listen on 127.0.0.1:{port}" in server.log()


def test_without_a_port_no_scp_runs_and_the_routes_say_so(tmp_path):
    server = mpps_server(tmp_path, rules="- {name: m, dimse: N_CREATE_RQ, role: SCU, uri: 'deidentify:'}",
                         mpps={}).start()
    try:
        answer = server.get("/coercion/mpps", headers=ADMIN)
        assert answer.status_code == 404 and "Coercion" in answer.json()["error"]
        assert "apply to nothing" in server.log()
    finally:
        server.stop()



def test_an_mpps_route_added_by_a_reload_forwards_without_a_restart(tmp_path):
    """No route at start-up, so no forwarding worker; it starts with the first MPPS forward
    armed after the reload (which an MPPS route does not refuse: it needs no change callback)."""
    ris = Recorder("RIS")
    ris.start()
    modalities = {"MODALITY": free_port(), "RIS": ris.port}
    server = mpps_server(tmp_path, rules="- {name: in, dimse: N_CREATE_RQ, role: SCU, sending-aet: [NOBODY], "
                         "uri: 'deidentify:'}\n", modalities=modalities).start()
    try:
        (server.rules_dir / "route.yaml").write_text(
            "- {name: to-ris, dimse: N_CREATE_RQ, role: SCU, forward: {to: [ris], when: received}}\n")
        assert server.admin_post("/coercion/rules/reload").status_code == 200
        uid = new_uid()
        assoc = associate(server.mpps_port)
        assert status_of(assoc.send_n_create(create_attributes(), MPPS, uid)) == 0x0000
        assoc.release()
        wait_for(lambda: [kind for kind, _ in ris.of(uid)] == ["N-CREATE"])
    finally:
        server.stop()
        ris.stop()
