"""Outgoing C-STORE without Orthanc: the request forms Orthanc accepts, and send jobs."""

from __future__ import annotations

import io
import json
import threading

import pydicom
import pytest

from coercion import Keys
from coercion.outgoing import (RequestNotUnderstood, SendError, SendJob, SendJobs, StoreRequest,
                               parse_store_request, run_send_job)
from coercion.rules import Transaction
from coercion.service import CoercionService, Settings

from factory import SECRET, encode, make_ct

ID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
KEYS = Keys(SECRET)


@pytest.mark.parametrize("body, expected", [
    (ID.encode(), StoreRequest((ID,))),
    (f" {ID}\n".encode(), StoreRequest((ID,))),
    (json.dumps(ID).encode(), StoreRequest((ID,))),
    (json.dumps([ID, ID]).encode(), StoreRequest((ID, ID))),
    (json.dumps({"Resources": [ID]}).encode(), StoreRequest((ID,))),
    (json.dumps({"Resources": ID, "Asynchronous": True}).encode(), StoreRequest((ID,), synchronous=False)),
    (json.dumps({"Resources": [ID], "Synchronous": False, "Asynchronous": False}).encode(),
     StoreRequest((ID,), synchronous=False)),  # Synchronous wins, as in Orthanc
    (json.dumps({"Resources": [ID], "Permissive": True, "Priority": 3}).encode(),
     StoreRequest((ID,), permissive=True, options={"Priority": 3})),
])
def test_every_form_of_the_body(body, expected):
    assert parse_store_request(body) == expected


@pytest.mark.parametrize("body", [b"not-an-id", b"\xff\xfe", b"42", json.dumps({"Resources": [1]}).encode(),
                                  json.dumps({"Other": []}).encode()])
def test_bodies_orthanc_must_judge(body):
    with pytest.raises(RequestNotUnderstood):
        parse_store_request(body)


def test_options_a_coerced_send_cannot_honour_are_named():
    request = parse_store_request(json.dumps({"Resources": [ID], "LocalAet": "ME", "StorageCommitment": True,
                                              "MoveOriginatorAet": "", "Timeout": 10}).encode())
    assert request.unsupported() == ["LocalAet", "StorageCommitment"]


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


def run(service, stored, send, permissive=False, threads=2, peer="PEER"):
    job = SendJob(peer.lower(), peer, "ORTHANC", list(stored), ["study"], permissive)
    transaction = Transaction("C_STORE_RQ", "SCP", "ORTHANC", peer, "127.0.0.1")
    return run_send_job(job, stored.__getitem__, lambda data: service.coerce(data, transaction), send, threads)


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
    job = run(service, stored, sent.append, permissive=True, threads=1)
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
            raise SendError("the peer refused it")
        sent.append(data)

    job = run(service, stored, send, threads=1)
    assert job.state == "Failure" and len(sent) == 1 and len(job.failures) == 1
    assert job.failures[0]["reason"] == "the peer refused it"


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
