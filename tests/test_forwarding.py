"""The forwarding queue without Orthanc: one open forward per resource, stability, retries."""

from __future__ import annotations

from coercion.stores.forwards import MAX_RETRY_INTERVAL, ForwardQueue


def test_a_study_armed_by_many_instances_is_one_forward_sent_when_stable(tmp_path):
    queue = ForwardQueue(tmp_path / "f.sqlite")
    for _ in range(5):
        queue.arm("route", "research", "Study", "study-1", False, 3, 10)
    assert queue.take_due() == []  # waiting for stability
    assert queue.stable("Study", "study-1") == 1
    (row,) = queue.take_due()
    assert (row["state"], row["resource"]) == ("sending", "study-1")
    queue.sent(row["id"], "job-1")
    assert queue.get(row["id"])["state"] == "sent" and queue.get(row["id"])["job"] == "job-1"
    queue.arm("route", "research", "Study", "study-1", False, 3, 10)  # more instances later: a new forward
    assert len(queue.list()) == 2


def test_retries_back_off_then_fail_with_the_reason(tmp_path):
    queue = ForwardQueue(tmp_path / "f.sqlite")
    queue.arm("route", "research", "Instance", "i-1", True, 2, 10)
    (row,) = queue.take_due(now=10**10)
    assert queue.attempt_failed(row["id"], "refused", now=1000.0) == "pending"
    assert queue.take_due(now=1009.0) == [] and len(queue.take_due(now=1010.0)) == 1  # after 10 s
    assert queue.attempt_failed(row["id"], "refused", now=2000.0) == "pending"
    assert queue.take_due(now=2019.0) == [] and len(queue.take_due(now=2020.0)) == 1  # then 20 s
    assert queue.attempt_failed(row["id"], "refused again", now=3000.0) == "failed"
    final = queue.get(row["id"])
    assert (final["attempts"], final["last_error"], final["next_attempt"]) == (3, "refused again", None)
    assert queue.list(state="failed")[0]["id"] == row["id"]


def test_a_hopeless_failure_is_not_retried_and_delays_are_capped(tmp_path):
    queue = ForwardQueue(tmp_path / "f.sqlite")
    queue.arm("r", "d", "Instance", "gone", True, 5, 10)
    queue.arm("r", "d", "Instance", "slow", True, 50, 3000)
    gone, slow = sorted(queue.take_due(now=10**10), key=lambda r: r["resource"])
    assert queue.attempt_failed(gone["id"], "deleted", retry=False) == "failed"
    queue.attempt_failed(slow["id"], "x", now=0.0)
    queue.attempt_failed(slow["id"], "x", now=0.0)
    assert queue.take_due(now=MAX_RETRY_INTERVAL - 1) == [] and queue.take_due(now=MAX_RETRY_INTERVAL)


def test_a_forward_taken_when_orthanc_stopped_is_sent_after_the_restart(tmp_path):
    queue = ForwardQueue(tmp_path / "f.sqlite")
    queue.arm("r", "d", "Series", "s-1", True, 5, 10)
    (row,) = queue.take_due()
    queue.close()
    again = ForwardQueue(tmp_path / "f.sqlite")
    assert [r["id"] for r in again.take_due()] == [row["id"]]
