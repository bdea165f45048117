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
                "ID": self.id, "Type": "CoercedStore", "State": self.state,
                "Modality": self.modality, "RemoteAet": self.remote_aet, "LocalAet": self.local_aet,
                "ParentResources": list(self.resources), "InstancesCount": len(self.instances),
                "SentInstancesCount": self.sent, "CoercedInstancesCount": self.coerced,
                "DiscardedInstancesCount": self.discarded, "FailedInstancesCount": len(self.failures),
                "Failures": list(self.failures), "Rules": sorted(self.rules), "Permissive": self.permissive,
                "Seconds": {step: round(value, 3) for step, value in self.seconds.items()},
                "CreationTime": _iso(self.created), "CompletionTime": _iso(self.finished),
            }

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
            return {
                "Description": "REST API", "FailedInstancesCount": len(self.failures),
                "InstancesCount": len(self.instances), "LocalAet": self.local_aet,
                "ParentResources": list(self.resources), "RemoteAet": self.remote_aet,
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
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=1)  # the next batch waits while one is sent
    coerced_ids: set[str] = set()
    job.state = "Running"

    def fail(instance_id: str, reason: str) -> None:
        with job._lock:
            job.failures.append({"instance": instance_id, "reason": reason})
        if not job.permissive:
            stop.set()

    def sender() -> None:
        while (batch := batches.get()) is not None:
            if stop.is_set():
                continue  # stopped by a failure: what waits is not sent
            started = time.perf_counter()
            try:
                results = send(batch)
            except Exception as exc:  # the transport itself failed: the whole batch is unsent
                results = [(item[0], _reason(exc)) for item in batch]
            with job._lock:
                job.seconds["send"] += time.perf_counter() - started
            for instance_id, error in results:
                if error is not None:
                    fail(instance_id, f"sending failed: {error}")
                    continue
                with job._lock:
                    job.sent += 1
                    job.coerced += instance_id in coerced_ids
                    job.settled.add(instance_id)

    thread = threading.Thread(target=sender, name=f"coercion-send-{job.id}", daemon=True)
    thread.start()
    batch: list = []
    try:
        for instance_id in job.instances:
            if stop.is_set():
                break
            started = time.perf_counter()
            try:
                data = fetch(instance_id)
            except Exception as exc:
                fail(instance_id, f"reading it from Orthanc failed: {_reason(exc)}")
                continue
            fetched = time.perf_counter()
            decision = coerce(data)
            with job._lock:
                job.seconds["fetch"] += fetched - started
                job.seconds["coerce"] += time.perf_counter() - fetched
            if decision.action not in (UNCHANGED, COERCED):
                if audit:
                    audit(decision)
                if decision.action == DISCARDED:
                    with job._lock:
                        job.discarded += 1
                        job.rules.add(decision.rule.name)
                        job.settled.add(instance_id)
                    continue
                fail(instance_id, f"coercion refused it (rule {decision.rule.name if decision.rule else '-'}): "
                                  f"{decision.reason}")
                continue
            if decision.action == COERCED:
                coerced_ids.add(instance_id)
                with job._lock:
                    job.rules.add(decision.rule.name)
                if audit:
                    audit(decision)
            try:
                batch.append(spool(instance_id, decision.data if decision.action == COERCED else data))
            except Exception as exc:
                fail(instance_id, f"spooling it failed: {_reason(exc)}")
                continue
            if len(batch) >= batch_size:
                batches.put(batch)
                batch = []
        if batch and not stop.is_set():
            batches.put(batch)
    finally:
        batches.put(None)
        thread.join()
    with job._lock:
        job.state = "Failure" if job.failures and not job.permissive else "Success"
        job.finished = time.time()
    return job


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
