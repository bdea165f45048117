"""Outgoing C-STORE: what Orthanc sends to a peer, coerced by the C_STORE_RQ / SCP rules.

The request itself is read as Orthanc reads it (``orthanc_api.read_store_request``).

No Orthanc here: the adapter gives a send job three plain functions (fetch an instance,
coerce it, send it) and turns the job into Orthanc-shaped answers. Orthanc's own copy is
only ever read.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..service import COERCED, DISCARDED, UNCHANGED, Decision


@dataclass
class SendJob:
    """One outgoing C-STORE of a set of instances to one peer."""

    modality: str
    remote_aet: str
    local_aet: str
    instances: list[str]
    resources: list[str]
    permissive: bool = False
    # rules.DICOM (``modality`` is a DicomModalities key), PEER (an OrthancPeers key) or DICOMWEB
    # (a DicomWeb.Servers key)
    way_out: str = "dicom"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "Pending"  # Pending, Running, Success, Failure (Orthanc's job states)
    sent: int = 0
    coerced: int = 0
    discarded: int = 0
    failures: list[dict] = field(default_factory=list)  # {"instance", "reason"}; never PHI
    settled: set = field(default_factory=set)  # instances sent, or discarded by a rule
    rules: set = field(default_factory=set)
    seconds: dict = field(default_factory=lambda: {"fetch": 0.0, "coerce": 0.0, "send": 0.0})  # send overlaps the others
    created: float = field(default_factory=time.time)
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self._lock:
            return {
                "ID": self.id, "Type": "CoercedStore", "State": self.state, **self._receiver(),
                "ParentResources": list(self.resources), "InstancesCount": len(self.instances),
                "SentInstancesCount": self.sent, "CoercedInstancesCount": self.coerced,
                "DiscardedInstancesCount": self.discarded, "FailedInstancesCount": len(self.failures),
                "Failures": list(self.failures), "Rules": sorted(self.rules), "Permissive": self.permissive,
                "Seconds": {step: round(value, 3) for step, value in self.seconds.items()},
                "CreationTime": _iso(self.created), "CompletionTime": _iso(self.finished),
            }

    def _receiver(self) -> dict:
        if self.way_out == "peer":
            return {"Peer": self.modality}
        if self.way_out == "dicomweb":
            return {"DicomWebServer": self.modality}
        return {"Modality": self.modality, "RemoteAet": self.remote_aet, "LocalAet": self.local_aet}

    def first_failure(self) -> str:
        """What went wrong first, in a sentence (no PHI: instance IDs and reasons only)."""
        with self._lock:
            if not self.failures:
                return ""
            failure = self.failures[0]
        if failure["instance"] is None:
            return f"the send failed: {failure['reason']}"
        return f"instance {failure['instance']} was not sent: {failure['reason']}"

    def abort(self, reason: str) -> None:
        """End the job as failed (what was not sent stays unsent)."""
        with self._lock:
            self.failures.append({"instance": None, "reason": reason})
            self.state = "Failure"
            self.finished = time.time()

    def answer(self) -> dict:
        """The answer of a synchronous send, shaped like Orthanc's own, plus the coercion."""
        with self._lock:
            answer = {"Description": "REST API", "FailedInstancesCount": len(self.failures),
                      "InstancesCount": len(self.instances)}
            if self.way_out == "peer":
                answer.update({"ParentResources": list(self.resources), "Peer": {"Name": self.modality}})
            elif self.way_out == "dicomweb":
                answer.update({"ParentResources": list(self.resources), "Server": self.modality})
            else:
                answer.update({"LocalAet": self.local_aet, "ParentResources": list(self.resources),
                               "RemoteAet": self.remote_aet})
            return {
                **answer,
                "Coercion": {"Rules": sorted(self.rules), "CoercedInstancesCount": self.coerced,
                             "DiscardedInstancesCount": self.discarded, "Failures": list(self.failures)},
            }


def run_send_job(
    job: SendJob,
    fetch: Callable[[str], bytes],
    coerce: Callable[[bytes], Decision],
    spool: Callable[[str, bytes], object],
    send: Callable[[list], list[tuple[str, str | None]]],
    batch_size: int = 32,
    audit: Callable[[Decision], None] | None = None,
) -> SendJob:
    """Fetch and coerce every instance of ``job`` and send them in batches.

    ``spool(instance_id, data)`` keeps an instance for sending and returns an item;
    ``send(items)`` sends a batch (one association) and returns, per instance, None or why
    it was not sent. One batch is sent while the next is coerced. An instance whose
    coercion fails is never sent. Without ``permissive``, the first failure stops the job
    (the batch in flight is finished), as Orthanc's own sends stop.
    """
    run = _SendRun(job, fetch, coerce, spool, send, audit)
    job.state = "Running"
    thread = threading.Thread(target=run.send_batches, name=f"coercion-send-{job.id}", daemon=True)
    thread.start()
    try:
        run.make_batches(batch_size)
    finally:
        run.batches.put(None)
        thread.join()
    with job._lock:
        job.state = "Failure" if job.failures and not job.permissive else "Success"
        job.finished = time.time()
    return job


class _SendRun:
    """What the two threads of a running send job share: the caller's fetches, coerces and
    spools the instances into batches (``make_batches``) while the other sends them
    (``send_batches``)."""

    def __init__(self, job: SendJob, fetch: Callable[[str], bytes], coerce: Callable[[bytes], Decision],
                 spool: Callable[[str, bytes], object], send: Callable[[list], list[tuple[str, str | None]]],
                 audit: Callable[[Decision], None] | None) -> None:
        self.job, self.fetch, self.coerce, self.spool, self.send, self.audit = job, fetch, coerce, spool, send, audit
        self.stop = threading.Event()
        self.batches: queue.Queue = queue.Queue(maxsize=1)  # the next batch waits while one is sent
        self.coerced_ids: set[str] = set()  # counted as coerced once they are sent

    def fail(self, instance_id: str, reason: str) -> None:
        """Count an instance as not sent; without ``permissive``, that stops the job."""
        with self.job._lock:
            self.job.failures.append({"instance": instance_id, "reason": reason})
        if not self.job.permissive:
            self.stop.set()

    def make_batches(self, batch_size: int) -> None:
        """Fetch, coerce and spool the instances, and hand them to the sending thread in
        batches, until the last or until a failure stops the job."""
        batch: list = []
        for instance_id in self.job.instances:
            if self.stop.is_set():
                break
            fetched = self.fetch_and_coerce(instance_id)
            if fetched is None:
                continue
            data, decision = fetched
            if not self.admit(instance_id, decision):
                continue
            try:
                batch.append(self.spool(instance_id, decision.data if decision.action == COERCED else data))
            except Exception as exc:
                self.fail(instance_id, f"spooling it failed: {_reason(exc)}")
                continue
            if len(batch) >= batch_size:
                self.batches.put(batch)
                batch = []
        if batch and not self.stop.is_set():
            self.batches.put(batch)

    def fetch_and_coerce(self, instance_id: str) -> tuple[bytes, Decision] | None:
        """The instance as Orthanc has it and what the rules decide for it, each step timed;
        None (and a failure) if Orthanc cannot give it."""
        started = time.perf_counter()
        try:
            data = self.fetch(instance_id)
        except Exception as exc:
            self.fail(instance_id, f"reading it from Orthanc failed: {_reason(exc)}")
            return None
        fetched = time.perf_counter()
        decision = self.coerce(data)
        with self.job._lock:
            self.job.seconds["fetch"] += fetched - started
            self.job.seconds["coerce"] += time.perf_counter() - fetched
        return data, decision

    def admit(self, instance_id: str, decision: Decision) -> bool:
        """Whether the instance goes on to be sent; a discarded one is settled here and a
        refused one failed, both audited, and the rule that coerced one is counted."""
        if decision.action not in (UNCHANGED, COERCED):
            if self.audit:
                self.audit(decision)
            if decision.action == DISCARDED:
                with self.job._lock:
                    self.job.discarded += 1
                    self.job.rules.add(decision.rule.name)
                    self.job.settled.add(instance_id)
                return False
            self.fail(instance_id, f"coercion refused it (rule {decision.rule.name if decision.rule else '-'}): "
                                   f"{decision.reason}")
            return False
        if decision.action == COERCED:
            self.coerced_ids.add(instance_id)
            with self.job._lock:
                self.job.rules.add(decision.rule.name)
            if self.audit:
                self.audit(decision)
        return True

    def send_batches(self) -> None:
        """The sending thread: send each batch as it comes, until None."""
        while (batch := self.batches.get()) is not None:
            if self.stop.is_set():
                continue  # stopped by a failure: what waits is not sent
            self._count_sent(self._send(batch))

    def _send(self, batch: list) -> list[tuple[str, str | None]]:
        """Send one batch (one association), timed: per instance, None or why it was not sent."""
        started = time.perf_counter()
        try:
            results = self.send(batch)
        except Exception as exc:  # the transport itself failed: the whole batch is unsent
            results = [(item[0], _reason(exc)) for item in batch]
        with self.job._lock:
            self.job.seconds["send"] += time.perf_counter() - started
        return results

    def _count_sent(self, results: list[tuple[str, str | None]]) -> None:
        """Settle the instances a batch sent; fail those it did not."""
        for instance_id, error in results:
            if error is not None:
                self.fail(instance_id, f"sending failed: {error}")
                continue
            with self.job._lock:
                self.job.sent += 1
                self.job.coerced += instance_id in self.coerced_ids
                self.job.settled.add(instance_id)


class FolderSpool:
    """What waits to be sent, kept in a private folder (tempfile.mkdtemp: 0700), one file per
    instance; a sender's ``send`` removes each once it has gone, sent or not."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._count = 0

    def spool(self, instance_id: str, data: bytes) -> tuple[str, Path]:
        self._count += 1
        path = self.folder / f"{self._count:08d}.dcm"
        path.write_bytes(data)
        return instance_id, path


class SendJobs:
    """The send jobs of this process (asynchronous ones are polled through the REST API)."""

    def __init__(self, keep: int = 1000):
        self._jobs: OrderedDict[str, SendJob] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep

    def add(self, job: SendJob) -> SendJob:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].finished is None:
                    break
                self._jobs.popitem(last=False)
        return job

    def get(self, job_id: str) -> SendJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[SendJob]:
        with self._lock:
            return list(self._jobs.values())


def _reason(exc: Exception) -> str:
    """Why a step failed, without the message of an arbitrary exception (it could quote data)."""
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):  # orthanc.OrthancException(code, message)
        return args[1]
    return type(exc).__name__


def _iso(moment: float | None) -> str | None:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) if moment else None
