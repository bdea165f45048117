"""The forwarding queue without Orthanc, on both backends: one open forward per resource, stability,
retries, leases shared by nodes; its file."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from coercion.stores import forwards
from coercion.stores.forwards import MAX_RETRY_INTERVAL, ForwardQueue
from coercion.stores.sqlitefiles import StoreError


def open_queue(store_location, node=None) -> ForwardQueue:
    location, password = store_location
    return ForwardQueue(location, node, password)


def test_a_study_armed_by_many_instances_is_one_forward_sent_when_stable(store_location):
    queue = open_queue(store_location)
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


def test_retries_back_off_then_fail_with_the_reason(store_location):
    queue = open_queue(store_location)
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


def test_a_hopeless_failure_is_not_retried_and_delays_are_capped(store_location):
    queue = open_queue(store_location)
    queue.arm("r", "d", "Instance", "gone", True, 5, 10)
    queue.arm("r", "d", "Instance", "slow", True, 50, 3000)
    gone, slow = sorted(queue.take_due(now=10**10), key=lambda r: r["resource"])
    assert queue.attempt_failed(gone["id"], "deleted", retry=False) == "failed"
    queue.attempt_failed(slow["id"], "x", now=0.0)
    queue.attempt_failed(slow["id"], "x", now=0.0)
    assert queue.take_due(now=MAX_RETRY_INTERVAL - 1) == [] and queue.take_due(now=MAX_RETRY_INTERVAL)


def test_a_forward_taken_when_orthanc_stopped_is_sent_after_the_restart(store_location):
    queue = open_queue(store_location)
    queue.arm("r", "d", "Series", "s-1", True, 5, 10)
    (row,) = queue.take_due()
    queue.close()
    again = open_queue(store_location)
    assert [r["id"] for r in again.take_due()] == [row["id"]]



def test_a_failed_attempt_beside_a_forward_armed_meanwhile_is_merged_into_it(store_location):
    """A study sent when stable keeps receiving instances while it is being sent: the failed
    attempt does not become a second open forward; the new one carries its attempts and back-off."""
    queue = open_queue(store_location)
    queue.arm("r", "d", "Study", "st-1", True, 3, 10)
    (first,) = queue.take_due(now=10**10)
    queue.arm("r", "d", "Study", "st-1", False, 3, 10)  # an instance arrived during the send
    assert queue.attempt_failed(first["id"], "refused", now=1000.0) == "merged"
    merged, (waiting,) = queue.get(first["id"]), queue.list(state="waiting")
    assert merged["state"] == "merged" and f"forward {waiting['id']} (waiting)" in merged["last_error"]
    assert waiting["attempts"] == 1
    queue.stable("Study", "st-1")
    (second,) = queue.take_due(now=10**10)
    queue.arm("r", "d", "Study", "st-1", True, 3, 10)
    failed_at = time.time()
    assert queue.attempt_failed(second["id"], "refused", now=failed_at) == "merged"
    (pending,) = queue.list(state="pending")
    assert pending["attempts"] == 2  # the back-off goes on: 20 s after the second failure
    assert queue.take_due(now=failed_at + 19) == [] and len(queue.take_due(now=failed_at + 20)) == 1


def test_a_forward_taken_when_orthanc_stopped_beside_an_open_one_does_not_stop_the_queue(store_location):
    queue = open_queue(store_location)
    queue.arm("r", "d", "Series", "s-1", True, 5, 10)
    (row,) = queue.take_due()
    queue.arm("r", "d", "Series", "s-1", True, 5, 10)
    queue.close()
    again = open_queue(store_location)  # was: "cannot be opened" (a unique-index conflict)
    assert again.get(row["id"])["state"] == "merged"
    assert len(again.take_due()) == 1


def test_an_administrators_retry_beside_an_open_forward_makes_that_one_due(store_location):
    queue = open_queue(store_location)
    queue.arm("r", "d", "Instance", "i-1", True, 0, 10)
    (row,) = queue.take_due()
    assert queue.attempt_failed(row["id"], "refused") == "failed"
    queue.arm("r", "d", "Study", "other", False, 0, 10)
    queue.arm("r", "d", "Instance", "i-1", True, 0, 10)
    (pending,) = queue.list(state="pending")
    queue._run(lambda ex: ex("UPDATE forward SET next_attempt=%s WHERE id=%s", (10**10, pending["id"])))
    assert queue.retry(row["id"])["state"] == "merged"
    assert [r["id"] for r in queue.take_due()] == [pending["id"]]
    queue.attempt_failed(pending["id"], "refused")
    assert queue.retry(pending["id"])["state"] == "pending"  # alone: pending itself again


# -- the file: schema version, owner-only ------------------------------------------------------


def raw(path):
    """A plain SQLite connection (autocommit), closed at the end of the with block."""
    return closing(sqlite3.connect(path, isolation_level=None))


def test_a_queue_of_version_0_is_adopted_with_its_forwards(tmp_path):
    path = tmp_path / "f.sqlite"
    with raw(path) as db:  # as the code before versioned schemas left it
        for statement in forwards._SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO forward (route, destination, level, resource, state, retries, retry_interval, "
                   "next_attempt, created, updated) VALUES ('r', 'd', 'Study', 's-1', 'pending', 1, 1, 0, 0, 0)")
    queue = ForwardQueue(path)
    assert [r["resource"] for r in queue.take_due()] == ["s-1"]
    queue.close()
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (forwards.SCHEMA_VERSION,) == (3,)


def test_a_queue_of_a_newer_version_or_not_a_database_is_refused_by_name(tmp_path):
    newer = tmp_path / "newer.sqlite"
    with raw(newer) as db:
        db.execute("PRAGMA user_version = 4")
    with pytest.raises(StoreError, match=f"forwarding queue {newer} has schema version 4"):
        ForwardQueue(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=f"forwarding queue {garbage} cannot be opened"):
        ForwardQueue(garbage)


def test_the_queue_is_owner_only_in_a_folder_it_makes_owner_only(tmp_path):
    path = tmp_path / "new" / "f.sqlite"
    queue = ForwardQueue(path)
    queue.arm("r", "d", "Instance", "i-1", True, 1, 1)
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    for name in ("f.sqlite", "f.sqlite-wal", "f.sqlite-shm"):
        assert oct((path.parent / name).stat().st_mode & 0o777) == "0o600", name
    queue.close()
    path.chmod(0o644)  # one an earlier version made
    ForwardQueue(path).close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_administrators_retry_makes_a_failed_forward_due_with_one_more_attempt(store_location):
    queue = open_queue(store_location)
    queue.arm("route", "peer", "Study", "id-1", True, retries=0, retry_interval=5)
    (row,) = queue.take_due()
    assert queue.attempt_failed(row["id"], "refused") == "failed"
    retried = queue.retry(row["id"])
    assert retried["state"] == "pending" and retried["last_error"] is None
    (again,) = queue.take_due()
    assert again["id"] == row["id"]
    assert queue.retry(row["id"])["state"] == "sending"  # being sent: left alone
    assert queue.attempt_failed(row["id"], "refused again") == "failed"  # one more attempt, no more
    assert queue.retry(999) is None


# -- several nodes on one queue ------------------------------------------------------------------


def test_nodes_taking_at_once_take_each_forward_once(store_location):
    import threading

    first, second = open_queue(store_location, "node-a"), open_queue(store_location, "node-b")
    for index in range(60):
        (first if index % 2 else second).arm("r", "d", "Study", f"study-{index}", True, 3, 10)
    taken = {"node-a": [], "node-b": []}

    def work(queue):
        while True:
            rows = queue.take_due(limit=3)
            if not rows:
                return
            for row in rows:
                taken[queue.node].append(row["resource"])
                queue.sent(row["id"])

    threads = [threading.Thread(target=work, args=(q,)) for q in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = taken["node-a"] + taken["node-b"]
    assert sorted(everything) == sorted(f"study-{i}" for i in range(60))  # each once, none lost
    assert len(first.list(state="sent")) == 60
    first.close()
    second.close()


def test_what_a_stopped_node_was_sending_goes_to_another_once_its_lease_expires(store_location):
    from coercion.stores.forwards import LEASE_SECONDS

    first, second = open_queue(store_location, "node-a"), open_queue(store_location, "node-b")
    first.arm("r", "d", "Study", "s-1", True, 3, 10)
    taken_at = time.time() + 1
    (row,) = first.take_due(now=taken_at)
    assert (row["owner"], row["state"]) == ("node-a", "sending")
    # node-a is killed: nobody renews its lease.
    assert second.take_due(now=taken_at + LEASE_SECONDS - 1) == []  # still node-a's
    (again,) = second.take_due(now=taken_at + LEASE_SECONDS + 1)
    assert (again["id"], again["owner"]) == (row["id"], "node-b")
    assert "lease expired" in again["last_error"]
    second.sent(again["id"])
    assert first.take_due(now=10**10) == [] and second.get(row["id"])["state"] == "sent"  # sent once
    first.close()
    second.close()


def test_a_node_renews_what_it_sends_and_takes_its_own_back_at_restart(store_location):
    first, second = open_queue(store_location, "node-a"), open_queue(store_location, "node-b")
    first.arm("r", "d", "Study", "s-1", True, 3, 10)
    second.arm("r", "d", "Study", "s-2", True, 3, 10)
    (mine,) = first.take_due(limit=1)
    (theirs,) = second.take_due(limit=1)
    assert first.renew() == 1 and second.renew() == 1
    first.close()
    restarted = open_queue(store_location, "node-a")  # node-a starts again
    assert restarted.get(mine["id"])["state"] == "pending"  # its own: to be sent again
    if store_location[1] is not None:  # a shared database: another node's stays that node's
        assert restarted.get(theirs["id"])["state"] == "sending"
    restarted.close()
    second.close()


# -- the change log: routed once, in order, with what it arms -----------------------------------


class ChangeLog:
    """Orthanc's change log as the routing reads it: NewInstance changes arm a study's forward,
    StableStudy changes make it due; each change has the time it was logged."""

    def __init__(self):
        self.changes: list[tuple[int, str, str, float]] = []  # (seq, type, study, time)
        self.read: list[int] = []  # the sequence numbers handled, by every reader

    def add(self, kind: str, study: str, when: float | None = None) -> None:
        self.changes.append((len(self.changes) + 1, kind, study, time.time() if when is None else when))

    def place(self, since):
        return max([seq for seq, _, _, when in self.changes if since is None or when < since], default=0)

    def process(self, since, arming, fail_at=None, limit=2):
        reached = since
        for seq, kind, study, _ in self.changes[since:since + limit]:
            if seq == fail_at:
                raise RuntimeError("the node stopped mid-batch")
            if kind == "NewInstance":
                arming.arm("r", "d", "Study", study, False, 3, 10)
            else:
                arming.stable("Study", study)
            self.read.append(seq)
            reached = seq
        return reached if reached > since else None


def test_changes_are_routed_in_order_once_from_when_routes_were_followed(store_location):
    log = ChangeLog()
    log.add("NewInstance", "before", when=100)  # logged before routes were followed: not routed
    queue = open_queue(store_location)
    queue.follow_changes(since=200)
    log.add("NewInstance", "s-1", when=201)  # logged before the routing worker first ran: routed
    for kind, study in [("NewInstance", "s-1"), ("NewInstance", "s-2"), ("StableStudy", "s-1"),
                        ("NewInstance", "s-3")]:
        log.add(kind, study)
    while queue.route_changes(log.place, log.process):
        pass
    assert log.read == [2, 3, 4, 5, 6]
    assert {r["resource"]: r["state"] for r in queue.list()} == {"s-1": "pending", "s-2": "waiting", "s-3": "waiting"}
    assert queue.route_changes(log.place, log.process) is False  # nothing new
    queue.close()
    reopened = open_queue(store_location)  # a restart: the position is kept
    reopened.follow_changes()
    log.add("StableStudy", "s-2")
    assert reopened.route_changes(log.place, log.process) is True and log.read[-1] == 7
    reopened.unfollow_changes()  # a start without routes: what comes meanwhile is not routed
    log.add("NewInstance", "s-4")
    assert reopened.route_changes(log.place, log.process) is False and log.read[-1] == 7
    reopened.close()


def test_a_batch_that_fails_midway_leaves_nothing_armed_and_is_routed_whole_again(store_location):
    log = ChangeLog()
    queue = open_queue(store_location, "node-a")
    queue.follow_changes()
    log.add("NewInstance", "s-1")
    log.add("NewInstance", "s-2")
    with pytest.raises(RuntimeError):
        queue.route_changes(log.place, lambda since, arming: log.process(since, arming, fail_at=2))
    assert queue.list() == []  # s-1's forward went with the batch
    other = open_queue(store_location, "node-b")
    assert other.route_changes(log.place, log.process) is True
    assert sorted(r["resource"] for r in other.list()) == ["s-1", "s-2"]
    queue.close()
    other.close()


def test_two_nodes_route_a_shared_change_log_once(store_location):
    import threading

    log = ChangeLog()
    nodes = [open_queue(store_location, f"node-{n}") for n in "ab"]
    for queue in nodes:
        queue.follow_changes()
    for index in range(40):
        log.add("NewInstance", f"s-{index}")
    lock = threading.Lock()

    def process(since, arming):
        with lock:  # the list is shared by the threads; the store decides who reads what
            return log.process(since, arming)

    def work(queue):
        for _ in range(200):
            queue.route_changes(log.place, process)

    threads = [threading.Thread(target=work, args=(q,)) for q in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.read == list(range(1, 41))  # each change once, in order
    assert len(nodes[0].list()) == 40
    for queue in nodes:
        queue.close()


def test_the_sender_of_a_reposted_instance_is_told_once(store_location):
    log = ChangeLog()
    queue = open_queue(store_location)
    queue.note_reposted("1.2.3.4", "MODALITY")

    def process(since, arming):
        found.append(arming.reposted_from("1.2.3.4"))
        return None

    found = []
    queue.route_changes(log.place, process)
    queue.route_changes(log.place, process)
    assert found == ["MODALITY", None]
    queue.close()
