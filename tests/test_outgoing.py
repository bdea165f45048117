"""Outgoing C-STORE without Orthanc: send jobs (the request forms: test_orthanc_api.py)."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from coercion import Keys
from coercion.exchanges.sends import SendJob, SendJobs, run_send_job
from coercion.rules import Transaction
from coercion.service import CoercionService, Settings

from factory import SECRET, encode, make_ct

ID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
KEYS = Keys(SECRET)


class Refused(Exception):
    """The peer of these tests does not take an instance."""


@pytest.fixture
def service(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "out.yaml").write_text(
        "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [PEER], conditions: ['Modality=CT|MR'],"
        " uri: 'deidentify:'}\n"
        "- {name: drop, dimse: C_STORE_RQ, role: SCP, receiving-aet: [DROPPER], uri: 'deidentify:',"
        " on-failure: discard}\n")
    return CoercionService(Settings.from_configuration(
        {"Coercion": {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "l.sqlite")}},
        {"COERCION_SECRET": SECRET.decode()}))


def instances(modality="CT", count=3):
    out = {}
    for n in range(count):
        ds = make_ct(sop_uid=f"2.25.{1000 + n}", rows=64)  # 8 KB of pixel data
        ds.Modality = modality
        out[f"i{n}"] = encode(ds)
    return out


def run(service, stored, send, permissive=False, batch_size=2, peer="PEER"):
    """``send(data)`` per instance, as the peer; raising Refused refuses one."""
    job = SendJob(peer.lower(), peer, "ORTHANC", list(stored), ["study"], permissive)
    transaction = Transaction("C_STORE_RQ", "SCP", "ORTHANC", peer, "127.0.0.1")

    def send_batch(items):
        results = []
        for instance_id, data in items:
            try:
                send(data)
                results.append((instance_id, None))
            except Refused as exc:
                results.append((instance_id, str(exc)))
        return results

    return run_send_job(job, stored.__getitem__, lambda data: service.coerce(data, transaction),
                        lambda instance_id, data: (instance_id, data), send_batch, batch_size)


def test_matched_instances_leave_coerced_and_the_others_as_stored(service):
    stored = {**instances("CT", 3), **{f"x{k}": v for k, v in instances("US", 2).items()}}
    sent = []
    job = run(service, stored, sent.append)
    assert (job.state, job.sent, job.coerced, job.failures) == ("Success", 5, 3, [])
    received = [pydicom.dcmread(io.BytesIO(data)) for data in sent]
    assert sorted(ds.PatientIdentityRemoved for ds in received if "PatientIdentityRemoved" in ds) == ["YES"] * 3
    assert sum(data in stored.values() for data in sent) == 2  # unmatched: the stored bytes, untouched
    assert job.answer()["Coercion"]["CoercedInstancesCount"] == 3 and job.as_dict()["Rules"] == ["out"]


def test_an_instance_whose_coercion_fails_is_never_sent(service):
    stored = instances("CT", 3)
    stored["i1"] = stored["i1"][:-1000]  # cut inside the pixel data: the engine refuses it
    sent = []
    job = run(service, stored, sent.append, permissive=True, batch_size=1)
    assert job.state == "Success" and job.sent == 2 and len(sent) == 2
    assert job.failures == [{"instance": "i1", "reason": job.failures[0]["reason"]}]
    # Unreadable: the rule's condition cannot be read, and a rule names this peer: refused.
    assert job.failures[0]["reason"].startswith("coercion refused it (rule -): unreadable DICOM: pixel data is truncated")
    assert "Doe" not in json.dumps(job.as_dict())  # no PHI in what the job reports


def test_without_permissive_the_first_failure_stops_the_job(service):
    stored = instances("CT", 5)
    sent = []

    def send(data):
        if len(sent) == 1:
            raise Refused("the peer refused it")
        sent.append(data)

    job = run(service, stored, send, batch_size=1)
    assert job.state == "Failure" and len(sent) == 1 and len(job.failures) == 1
    assert job.failures[0]["reason"] == "sending failed: the peer refused it"


def test_discarded_instances_are_neither_sent_nor_failures(service):
    stored = instances("SR", 2)
    stored["i0"] = stored["i0"][:-1000]
    sent = []
    job = run(service, stored, sent.append, peer="DROPPER")
    assert (job.state, job.sent, job.discarded, job.failures) == ("Success", 1, 1, [])


def test_the_job_list_keeps_running_jobs():
    jobs = SendJobs(keep=2)
    running = jobs.add(SendJob("m", "A", "B", [], []))
    for _ in range(3):
        done = jobs.add(SendJob("m", "A", "B", [], []))
        done.finished = 1.0
    assert jobs.get(running.id) is running  # never dropped while it runs
    assert len(jobs.all()) >= 2


def test_storescu_output_is_read_file_by_file():
    from coercion.exchanges.storescu import parse_storescu_output

    output = "\n".join([
        "I: Requesting Association", "I: Association Accepted (Max Send PDV: 16372)",
        "I: Sending file: /spool/1.dcm", "I: Sending Store Request (MsgID 1, CT)",
        "I: Received Store Response (Success)",
        "I: Sending file: /spool/2.dcm", "E: Bad DICOM file: /spool/2.dcm: I/O suspension or premature end of stream",
        "I: Sending file: /spool/3.dcm", "I: Received Store Response (Warning: CoercionOfDataElements)",
        "I: Sending file: /spool/4.dcm", "I: Received Store Response (Out of Resources)",
        "I: Releasing Association",
    ])
    outcome = parse_storescu_output(output, ["/spool/1.dcm", "/spool/2.dcm", "/spool/3.dcm", "/spool/4.dcm", "/spool/5.dcm"])
    assert outcome == {
        "/spool/1.dcm": None,
        "/spool/2.dcm": "Bad DICOM file: the instance: I/O suspension or premature end of stream",
        "/spool/3.dcm": None,
        "/spool/4.dcm": "the peer answered Out of Resources",
        "/spool/5.dcm": "storescu stopped before sending it",
    }
    refused = parse_storescu_output("F: Association Request Failed: 0006:031c TCP Initialization Error: "
                                    "Connection refused", ["/spool/1.dcm"])
    assert refused == {"/spool/1.dcm": "Association Request Failed: 0006:031c TCP Initialization Error: Connection refused"}


def test_storescu_sends_to_a_real_peer(tmp_path):
    import shutil as _shutil
    import socket
    import subprocess
    import time

    from coercion.exchanges.storescu import Destination, SpoolingSender

    if not _shutil.which("storescp"):
        pytest.skip("dcmtk is installed by plugin/scripts/test.sh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    received = tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen(["storescp", "-od", str(received), str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        sender = SpoolingSender(Destination("STORESCP", "127.0.0.1", port, "ORTHANC"), tmp_path)
        stored = instances("CT", 2)
        items = [sender.spool(i, data) for i, data in stored.items()] + [sender.spool("bad", b"not DICOM")]
        results = dict(sender.send(items))
        assert results["i0"] is None and results["i1"] is None and results["bad"]
        assert "not DICOM" not in results["bad"] and str(tmp_path) not in results["bad"]
        assert len(list(received.iterdir())) == 2
        assert not list(tmp_path.glob("*.dcm"))  # spooled files are removed
    finally:
        scp.terminate()
        scp.wait()


def test_an_aborted_job_ends_as_a_failure_with_its_reason():
    job = SendJob("m", "A", "B", ["i0"], ["r"])
    job.abort("OSError: the send could not run")
    record = job.as_dict()
    assert record["State"] == "Failure" and record["CompletionTime"]
    assert record["Failures"] == [{"instance": None, "reason": "OSError: the send could not run"}]
