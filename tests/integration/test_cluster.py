"""Two Orthancs, one archive: both nodes on one throw-away PostgreSQL server (tests/pgcluster.py)
for Orthanc's own index (Debian's orthanc-postgresql) and for every store of the plugin, over
one shared storage folder; studies sent through both nodes at once."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pydicom
import pytest

from coercion import Keys
from coercion.stores.linkage import open_store

from factory import encode, make_ct
from orthanc_server import ADMIN, COERCED_STATUSES, TOKEN, SECRET, OrthancServer, StoreSCP, needs_orthanc, store_statuses, storescu
from pgcluster import PASSWORD, USER

INDEX_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")
pytestmark = [needs_orthanc, pytest.mark.skipif(not INDEX_PLUGIN.exists() and not __import__("os").environ.get("CI"),
                                                reason="Debian's orthanc-postgresql is not installed")]
KEYS = Keys(SECRET)
RULES = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  uri: "deidentify:RetainPatientIDHashOption"
  forward:
    to: [STORESCP]
    when: stable-study
- name: to-probe
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [PROBE]
  uri: "deidentify:RetainPatientIDHashOption"
- name: probe-asks
  dimse: C_FIND_RQ
  role: SCU
  sending-aet: [PROBE]
  uri: "deidentify:RetainPatientIDHashOption"
- name: probe-sees
  dimse: C_FIND_RSP
  role: SCU
  sending-aet: [PROBE]
  uri: "deidentify:RetainPatientIDHashOption"
"""
PATIENTS = 6
INSTANCES = 3  # per study; each patient has one study through each node


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def two_nodes(root: Path, postgres, rules: str, modalities: dict) -> tuple[list[OrthancServer], str]:
    """Two Orthancs on one new index database and one new coercion database of ``postgres``,
    over one storage folder; not started."""
    postgres.create_database(f"index_{root.name}")
    coercion = postgres.create_database(f"coercion_{root.name}")
    nodes = []
    for name in ("node-a", "node-b"):
        nodes.append(OrthancServer(
            root / name, rules=rules, modalities=modalities, storage=root / "shared-storage", linkage_db=coercion,
            coercion={"DatabasePasswordFile": str(postgres.password_file), "NodeName": name,
                      "ForwardLeaseSeconds": 6},
            environment={"ORTHANC_PG_PASSWORD": PASSWORD},
            settings={
                "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so", str(INDEX_PLUGIN)],
                "PostgreSQL": {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1",
                               "Port": postgres.port, "Database": f"index_{root.name}", "Username": USER,
                               "Password": "${ORTHANC_PG_PASSWORD}", "Lock": False},
                "StableAge": 2,
            }))
    return nodes, coercion


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    peer = StoreSCP(root / "peer")
    probe = StoreSCP(root / "probe", aet="PROBE")
    nodes, coercion = two_nodes(root, postgres, RULES, {"STORESCP": peer.port, "PROBE": probe.port})
    for node in nodes:
        node.start(timeout=60)
    yield nodes, peer, coercion, postgres
    for node in nodes:
        node.stop()
    peer.stop()
    probe.stop()


def study_files(folder: Path, patient: int, node: str) -> list[tuple[Path, pydicom.Dataset]]:
    folder.mkdir(parents=True, exist_ok=True)
    study = new_uid()
    series = new_uid()
    files = []
    for _ in range(INSTANCES):
        ds = make_ct(patient_id=f"MRN-CLUSTER-{patient}", patient_name=f"Cluster^Patient{patient}",
                     study_uid=study, series_uid=series, sop_uid=new_uid())
        path = folder / f"{patient}-{node}-{ds.SOPInstanceUID}.dcm"
        path.write_bytes(encode(ds))
        files.append((path, ds))
    return files


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_both_nodes_ingest_at_once_one_pseudonym_per_patient_each_study_forwarded_once(cluster, tmp_path):
    nodes, peer, coercion, postgres = cluster
    sent = {node.root.name: [] for node in nodes}
    for patient in range(PATIENTS):
        for node in nodes:
            sent[node.root.name] += study_files(tmp_path / "in", patient, node.root.name)
    results = {}

    def send(node):
        results[node.root.name] = store_statuses(storescu(node, "MODALITY", *[p for p, _ in sent[node.root.name]]))

    threads = [threading.Thread(target=send, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for node in nodes:
        assert len(results[node.root.name]) == PATIENTS * INSTANCES
        assert all(status in COERCED_STATUSES for status in results[node.root.name])
    everything = [ds for files in sent.values() for _, ds in files]

    # One index: both nodes see every instance, coerced only, one patient per pseudonym.
    for node in nodes:
        assert node.instance_count() == len(everything)
        patients = node.get("/patients").json()
        assert len(patients) == PATIENTS
    pseudonyms = {KEYS.patient_id(f"MRN-CLUSTER-{p}", "HOSPITAL_A") for p in range(PATIENTS)}
    found = {node.get(f"/patients/{pid}").json()["MainDicomTags"]["PatientID"] for pid in patients}
    assert found == pseudonyms

    # Re-identification on either node, whichever received the patient.
    for node in nodes:
        answer = node.get(f"/coercion/linkage/{KEYS.patient_id('MRN-CLUSTER-0', 'HOSPITAL_A')}",
                          headers={"X-Coercion-Token": TOKEN})
        assert answer.status_code == 200 and "MRN-CLUSTER-0" in answer.text

    # One linkage store: what both nodes recorded adds up.
    store = open_store(coercion, KEYS, str(postgres.password_file))
    try:
        for patient in range(PATIENTS):
            (link,) = store.lookup(KEYS.patient_id(f"MRN-CLUSTER-{patient}", "HOSPITAL_A"))
            assert link.patient_id == f"MRN-CLUSTER-{patient}" and link.instance_count == 2 * INSTANCES
    finally:
        store.close()

    # Every study forwarded once, by one node or the other: every instance once at the peer.
    wait_for(lambda: len(peer.received()) >= len(everything), 90, "the forwards")
    time.sleep(3)  # anything sent twice would arrive now
    received = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in peer.received()]
    assert sorted(received) == sorted(KEYS.uid(ds.SOPInstanceUID) for ds in everything)
    # One queue: both nodes list the same forwards, one per study, each sent by one node.
    listed = [node.get("/coercion/forwards", headers=ADMIN).json() for node in nodes]
    assert listed[0] == listed[1]
    assert sorted(f["state"] for f in listed[0]) == ["sent"] * (2 * PATIENTS)


def test_a_peer_queries_one_node_by_what_the_other_handed_out(cluster, tmp_path):
    import json
    import os
    import subprocess

    nodes, _, _, _ = cluster
    first, second = nodes
    files = study_files(tmp_path / "in", 400, "a")
    assert all(s in COERCED_STATUSES for s in store_statuses(storescu(first, "MODALITY", *[p for p, _ in files])))
    stored_study = KEYS.uid(files[0][1].StudyInstanceUID)  # as the ingest rule stored it
    study_id = first.post("/tools/lookup", stored_study).json()[0]["ID"]
    answer = first.post("/modalities/probe/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
    assert answer.status_code == 200, answer.text
    handed_out = KEYS.uid(stored_study)  # what the probe was given, recorded by the first node
    run = subprocess.run(
        ["findscu", "-v", "-S", "-aet", "PROBE", "-aec", "ORTHANC", "127.0.0.1", str(second.dicom_port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={handed_out}", "-k", "PatientID"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    output = run.stdout + run.stderr
    assert "Final Find Response (Success)" in output
    assert handed_out in output and stored_study not in output  # found on the other node, in the probe's world


def _orthanc_pid(server) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def _acknowledged(result) -> list[str]:
    """The files storescu sent that the SCP answered with a success or warning status."""
    done, current = [], None
    for line in (result.stdout + result.stderr).splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif "Received Store Response (" in line and current:
            status = line.split("Received Store Response (", 1)[1].rstrip(")")
            if status.startswith(("Success", "Warning")):
                done.append(current)
            current = None
    return done


def test_a_node_killed_in_the_middle_of_ingest_loses_nothing_and_sends_nothing_twice(cluster, tmp_path):
    import os
    import signal

    nodes, peer, coercion, postgres = cluster
    survivor, victim = nodes
    before = {p.name for p in peer.received()}
    doomed = [f for patient in range(100, 160) for f in study_files(tmp_path / "in", patient, "b")]
    more = [f for patient in range(200, 204) for f in study_files(tmp_path / "in", patient, "a")]
    results = {}
    victims = threading.Thread(target=lambda: results.update(b=storescu(victim, "MODALITY", *[p for p, _ in doomed])))
    survivors = threading.Thread(target=lambda: results.update(a=storescu(survivor, "MODALITY", *[p for p, _ in more])))
    victims.start()
    survivors.start()
    # Once the victim has stored its first studies (the index is shared: the survivor sees them).
    marker = KEYS.uid(doomed[3 * INSTANCES][1].SOPInstanceUID)
    deadline = time.monotonic() + 60
    while survivor.lookup(marker) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(_orthanc_pid(victim), signal.SIGKILL)  # mid-ingest, its studies not yet stable: their forwards wait
    victims.join()
    survivors.join()
    victim.process.wait(30)
    acknowledged = set(_acknowledged(results["b"]))
    assert 0 < len(acknowledged) < len(doomed)  # killed in the middle indeed
    assert len(_acknowledged(results["a"])) == len(more)
    stored = [(p, ds) for p, ds in doomed if str(p) in acknowledged] + more

    # Nothing lost, nothing stored unmodified: the survivor's index holds every acknowledged
    # instance, coerced; no original is in it.
    for path, ds in doomed + more:
        assert survivor.lookup(ds.SOPInstanceUID) is None
    for _, ds in stored:
        assert survivor.lookup(KEYS.uid(ds.SOPInstanceUID))
    # The survivor routes what the dead node stored (Orthanc's change log is in the shared
    # index) and sends it once its studies are quiet in the index, and its own: every
    # acknowledged instance, once.
    wanted = {KEYS.uid(ds.SOPInstanceUID) for _, ds in stored}
    studies = {survivor.post("/tools/lookup", KEYS.uid(ds.StudyInstanceUID)).json()[0]["ID"] for _, ds in stored}
    wait_for(lambda: {f["resource"] for f in survivor.get("/coercion/forwards", headers=ADMIN).json()} >= studies,
             60, "a forward for every study")
    wait_for(lambda: all(f["state"] == "sent" for f in survivor.get("/coercion/forwards", headers=ADMIN).json()),
             120, "the dead node's forwards")

    def arrived():
        return [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                for p in peer.received() if p.name not in before]

    wait_for(lambda: set(arrived()) >= wanted, 60, "the forwarded instances")
    time.sleep(3)
    fresh = arrived()
    assert len(fresh) == len(set(fresh))  # nothing sent twice
    assert set(fresh) >= wanted


class HangingSCP:
    """A storage SCP (pynetdicom) that holds its first C-STORE until released, then takes all."""

    def __init__(self):
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import CTImageStorage

        self.release, self.lock, self.calls, self.stored = threading.Event(), threading.Lock(), [], []
        ae = AE(ae_title="HANGING")
        ae.add_supported_context(CTImageStorage)
        self.port = __import__("orthanc_server").free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        with self.lock:
            self.calls.append(event.request.AffectedSOPInstanceUID)
            first = len(self.calls) == 1
        if first:
            self.release.wait(60)
            return 0xA700  # the first sender is gone by now
        self.stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    def stop(self):
        self.release.set()
        self.server.shutdown()


def test_a_node_killed_while_it_sends_leaves_the_forward_to_the_other_once_its_lease_expires(postgres, tmp_path):
    import os
    import signal

    rules = """
- name: on-to-hanging
  dimse: C_STORE_RQ
  role: SCU
  uri: "deidentify:"
  forward: {to: [HANGING], when: received}
"""
    hanging = HangingSCP()
    nodes, _ = two_nodes(tmp_path, postgres, rules, {"HANGING": hanging.port})
    try:
        for node in nodes:
            node.start(timeout=60)
        (path, ds), = study_files(tmp_path / "in", 1, "a")[:1]
        assert store_statuses(storescu(nodes[0], "MODALITY", path))[0] in COERCED_STATUSES
        wait_for(lambda: hanging.calls, 30, "the first send")
        (row,) = nodes[0].get("/coercion/forwards", headers=ADMIN).json()
        assert row["state"] == "sending"
        sender = {"node-a": nodes[0], "node-b": nodes[1]}[row["owner"]]
        other = nodes[1] if sender is nodes[0] else nodes[0]
        os.kill(_orthanc_pid(sender), signal.SIGKILL)  # mid-send: nobody renews its lease
        sender.process.wait(30)
        hanging.release.set()
        wait_for(lambda: other.get(f"/coercion/forwards/{row['id']}", headers=ADMIN).json()["state"] == "sent",
                 60, "the other node's send")
        # Sent by the other node, once the lease had expired: the peer was asked twice, took it once.
        assert hanging.stored == [KEYS.uid(ds.SOPInstanceUID)] and len(hanging.calls) == 2
    finally:
        for node in nodes:
            node.stop()
        hanging.stop()


def test_an_unreachable_database_stops_the_plugin_with_the_url_and_no_password(tmp_path, postgres):
    server = OrthancServer(tmp_path / "node", rules=RULES, linkage_db="postgresql://coercion@127.0.0.1:1/coercion",
                           coercion={"DatabasePasswordFile": str(postgres.password_file)})
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    assert "refusing to start: linkage store postgresql://coercion@127.0.0.1:1/coercion cannot be opened" in server.log()
    assert PASSWORD not in server.log()


def test_a_database_lost_while_running_refuses_matched_instances_then_recovers(tmp_path, postgres):
    """Orthanc's own index in SQLite here (its PostgreSQL plugin does not outlive its database):
    the plugin's stores on PostgreSQL, which goes away and comes back."""
    url = postgres.create_database("coercion_lost")
    server = OrthancServer(tmp_path / "node", rules=RULES.split("  forward:")[0], linkage_db=url,
                           coercion={"DatabasePasswordFile": str(postgres.password_file)}).start()
    try:
        first, second, third = (study_files(tmp_path / "in", patient, "x")[0] for patient in (300, 301, 302))
        assert store_statuses(storescu(server, "MODALITY", first[0]))[0] in COERCED_STATUSES
        postgres.stop_server()
        try:
            (status,) = store_statuses(storescu(server, "MODALITY", second[0]))
            assert not status.startswith(("Success", "Warning"))  # refused: it could not be linked
            assert server.lookup(second[1].SOPInstanceUID) is None and server.lookup(KEYS.uid(second[1].SOPInstanceUID)) is None
        finally:
            postgres.start()
        assert store_statuses(storescu(server, "MODALITY", third[0]))[0] in COERCED_STATUSES  # back
        assert server.lookup(KEYS.uid(third[1].SOPInstanceUID))
    finally:
        server.stop()
