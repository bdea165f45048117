"""Activity statistics per rule and calling AE title, on both backends: nodes add up, totals
survive a reopen and a new service, a store that is away keeps the counts for later, and
counting never waits for the store."""

from __future__ import annotations

import sqlite3
import textwrap
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from coercion.rules import Transaction
from coercion.service import COERCED, REJECTED, CoercionService, Settings
from coercion.stores import activity as module
from coercion.stores.activity import NO_AET, REASON_LENGTH, SCHEMA_VERSION, Activity, ActivityStore, Counts
from coercion.stores.sqlitefiles import StoreError

from factory import SECRET, encode, make_ct
from pgcluster import PASSWORD


def open_activity(store_location, **kwargs) -> Activity:
    location, password = store_location
    return Activity(ActivityStore(location, password), start=False, **kwargs)


@contextmanager
def store_away(activity: Activity, store_location, request):
    """The store cannot be written: an SQLite file another process holds locked, a PostgreSQL
    server stopped."""
    location, _ = store_location
    if isinstance(location, Path):
        activity.store._backend.db.execute("PRAGMA busy_timeout = 50")
        with closing(sqlite3.connect(location, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            yield
            other.execute("ROLLBACK")
    else:
        postgres = request.getfixturevalue("postgres")
        postgres.stop_server()
        try:
            yield
        finally:
            postgres.start()


def test_two_nodes_add_up(store_location):
    one, two = open_activity(store_location), open_activity(store_location)
    one.count("research", "CT1", coerced=1, bytes_in=100, bytes_out=90, seconds=0.5)
    one.count("research", "CT1", rejected=1, bytes_in=10, failure="unreadable DICOM: truncated")
    two.count("research", "CT1", coerced=1, bytes_in=200, bytes_out=180, seconds=0.25)
    two.count("research", None, coerced=1)  # an upload through REST: no AE title
    assert one.flush() and two.flush()
    assert one.flush()  # reads everyone's totals back
    for node in (one, two):
        rows = node.rows()
        assert set(rows) == {("research", "CT1"), ("research", NO_AET)}
        ct = rows[("research", "CT1")]
        assert (ct.matched, ct.coerced, ct.rejected, ct.bytes_in, ct.bytes_out) == (3, 2, 1, 310, 270)
        assert ct.seconds == pytest.approx(0.75)
        assert ct.last_failure_reason == "unreadable DICOM: truncated" and ct.last_failure_at is not None
        assert ct.first_seen <= ct.last_seen
    one.close()
    two.close()


def test_totals_survive_a_reopen(store_location):
    first = open_activity(store_location)
    first.count("r", "AE", coerced=1, bytes_in=5)
    first.count("r", "AE", discarded=1, failure="DicomError: no pixel data")
    assert first.close()  # flushes
    again = open_activity(store_location)
    counts = again.rows()[("r", "AE")]
    assert (counts.matched, counts.coerced, counts.discarded, counts.bytes_in) == (2, 1, 1, 5)
    assert counts.last_failure_reason == "DicomError: no pixel data"
    again.count("r", "AE", coerced=1)
    again.close()
    assert ActivityStore(*store_location).totals()[("r", "AE")].matched == 3


def test_the_last_failure_is_the_newest_and_its_reason_is_bounded(store_location):
    one, two = open_activity(store_location), open_activity(store_location)
    one.count("r", "AE", rejected=1, failure="older")
    time.sleep(0.01)
    two.count("r", "AE", rejected=1, failure="x" * 1000)
    two.flush()
    one.flush()  # the older failure arrives last: the newer one stays
    counts = one.rows()[("r", "AE")]
    assert len(counts.last_failure_reason) == REASON_LENGTH and counts.last_failure_reason.startswith("xxx")
    one.count("r", "AE", coerced=1)  # a success keeps the last failure
    one.flush()
    assert one.rows()[("r", "AE")].last_failure_reason.startswith("xxx")
    one.close()
    two.close()


def test_the_schema_is_versioned_and_a_newer_one_refused(store_location):
    location, password = store_location
    open_activity(store_location).close()
    if isinstance(location, Path):
        with closing(sqlite3.connect(location)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            db.commit()
    else:
        import psycopg

        with psycopg.connect(location, password=PASSWORD, autocommit=True) as db:
            assert db.execute("SELECT version FROM coercion_schema WHERE store = 'activity'").fetchone() == \
                (SCHEMA_VERSION,)
            db.execute("UPDATE coercion_schema SET version = version + 1 WHERE store = 'activity'")
    with pytest.raises(StoreError, match="activity store .* has schema version 2"):
        ActivityStore(location, password)


def test_the_file_is_owner_only(tmp_path):
    path = tmp_path / "var" / "activity.sqlite"
    store = Activity(ActivityStore(path), start=False)
    store.count("r", "AE", coerced=1)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    for candidate in tmp_path.glob("var/activity.sqlite*"):
        assert candidate.stat().st_mode & 0o077 == 0, candidate.name


def test_a_flush_with_the_store_away_keeps_the_counts_and_writes_them_later(store_location, request):
    activity = open_activity(store_location)
    told = []
    activity.notify = told.append
    activity.count("r", "AE", coerced=1, bytes_in=10)
    assert activity.flush()
    activity.count("r", "AE", coerced=1, bytes_in=20)
    with store_away(activity, store_location, request):
        assert not activity.flush()
        activity.count("r", "AE", rejected=1, failure="why")  # counted meanwhile
        assert not activity.flush()
        assert activity.rows()[("r", "AE")].matched == 3  # shown all the same
        assert activity.unflushed() == 1 and activity.last_error
        summary = activity.summary()["flush"]
        assert summary["unflushed"] == 1 and summary["failing_since"] and summary["error"]
    assert len(told) == 1 and "statistics could not be written" in told[0]  # once, not at every attempt
    assert activity.flush() and told[-1] is None and activity.last_error is None
    assert activity.unflushed() == 0
    activity.close()
    counts = ActivityStore(*store_location).totals()[("r", "AE")]
    assert (counts.matched, counts.coerced, counts.rejected, counts.bytes_in) == (3, 2, 1, 30)
    assert counts.last_failure_reason == "why"


def test_counting_never_waits_for_the_store(tmp_path):
    path = tmp_path / "activity.sqlite"
    activity = Activity(ActivityStore(path), start=False)
    activity.store._backend.db.execute("PRAGMA busy_timeout = 2000")
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        flushing = threading.Thread(target=activity.flush)
        activity.count("r", "AE", coerced=1)
        flushing.start()
        time.sleep(0.2)  # the flush waits for the lock
        started = time.perf_counter()
        for _ in range(100):
            activity.count("r", "AE", coerced=1)
        assert time.perf_counter() - started < 0.5
        assert activity.rows()[("r", "AE")].matched == 101
        other.execute("ROLLBACK")
    flushing.join()
    activity.close()
    assert ActivityStore(path).totals()[("r", "AE")].matched == 101


def test_the_flusher_writes_every_interval(tmp_path):
    path = tmp_path / "activity.sqlite"
    activity = Activity(ActivityStore(path), interval=0.05)
    activity.count("r", "AE", coerced=1)
    deadline = time.monotonic() + 5
    while activity.unflushed() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert activity.unflushed() == 0 and activity.flushed_at is not None
    assert ActivityStore(path).totals()[("r", "AE")].coerced == 1
    activity.close()
    assert not activity._thread.is_alive()


def test_counts_add_as_the_store_adds_them():
    total = Counts(matched=1, first_seen=5.0, last_seen=6.0)
    total.add(Counts(matched=2, rejected=1, first_seen=4.0, last_seen=5.5, last_failure_at=5.5,
                     last_failure_reason="r"))
    assert (total.matched, total.rejected, total.first_seen, total.last_seen) == (3, 1, 4.0, 6.0)
    assert total.as_dict()["first_seen"] == "1970-01-01T00:00:04Z" and total.as_dict()["last_failure_reason"] == "r"
    assert module.bounded_reason("") is None


# -- the service ----------------------------------------------------------------------------

RULES = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH, "CT.*"]
  uri: "deidentify:RetainPatientIDHashOption"
"""


def service_over(tmp_path, store_location=None) -> CoercionService:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "site.yaml").write_text(textwrap.dedent(RULES))
    coercion = {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "linkage.sqlite")}
    if store_location is not None:
        coercion.update(ActivityDatabase=str(store_location[0]), DatabasePasswordFile=store_location[1])
    settings = Settings.from_configuration({"Coercion": coercion}, {"COERCION_SECRET": SECRET.decode()})
    return CoercionService(settings)


def store(aet):
    return Transaction("C_STORE_RQ", "SCU", aet, "ORTHANC", "127.0.0.1")


def test_the_activity_store_is_beside_the_linkage_store_by_default(tmp_path):
    service = service_over(tmp_path)
    assert service.settings.activity_database == str(tmp_path / "activity.sqlite")
    assert (tmp_path / "activity.sqlite").exists()
    url = Settings.from_configuration({"Coercion": {"LinkageDatabase": "postgresql://u@db:5432/c",
                                                    "RulesDirectory": "rules"}}, {"COERCION_SECRET": "x" * 40})
    assert url.activity_database == "postgresql://u@db:5432/c"
    service.statistics.close()


def test_counts_survive_a_new_service_over_the_same_store(tmp_path, store_location):
    data = encode(make_ct(patient_id="P-ACT-1", patient_name="Secret^Patient"))
    service = service_over(tmp_path, store_location)
    assert service.coerce(data, store("CT1")).action == COERCED
    assert service.coerce(data, store("CT1")).action == COERCED
    assert service.coerce(data[:-100], store("CT2")).action == REJECTED
    assert service.stats()["research"]["matched"] == 3  # before any flush
    service.statistics.close()  # as Orthanc stops
    service.store.close()

    again = service_over(tmp_path, store_location)
    stats = again.stats()["research"]
    assert (stats["matched"], stats["coerced"], stats["rejected"]) == (3, 2, 1)
    assert stats["bytes_in"] == 3 * len(data) - 100 and stats["last_seen"].endswith("Z")
    assert set(stats) == {"matched", "coerced", "rejected", "discarded", "bytes_in", "bytes_out", "seconds",
                          "last_seen"}
    assert again.coerce(data, store("CT1")).action == COERCED
    activity = again.activity()
    (rule,) = activity["rules"]
    assert rule["rule"] == "research" and rule["matched"] == 4 and rule["calling_aets"] == ["CT1", "CT2"]
    assert "truncated" in rule["last_failure_reason"]
    by_aet = {entry["calling_aet"]: entry for entry in activity["calling_aets"]}
    assert by_aet["CT1"]["matched"] == 3 and by_aet["CT1"]["last_failure_at"] is None
    assert by_aet["CT2"]["rejected"] == 1 and [r["rule"] for r in by_aet["CT2"]["rules"]] == ["research"]
    assert "P-ACT-1" not in str(activity) and "Secret" not in str(activity)
    again.statistics.close()
    again.store.close()


def test_a_decision_is_counted_for_the_calling_aet_the_caller_confirms(tmp_path):
    from dataclasses import replace

    service = service_over(tmp_path)
    data = encode(make_ct(patient_id="P-ACT-2"))
    guess = service.coerce(data, store("CT1"), provisional=True)
    assert service.stats() == {}
    service.confirm(replace(guess, calling_aet="CT9"))  # the filter saw another AE title, same rule
    early = service.coerce(data, store("CT5"), counted=False)  # linked now; the filter counts it
    assert early.action == COERCED and service.stats()["research"]["matched"] == 1
    assert service.linkage(early.outcome.patient_pseudonym)[0]["instance_count"] == 2
    service.count(replace(early, calling_aet="CT6"))
    service.record_find(service.ruleset.by_name("research"), 7, [], 0.01, "CT3")
    by_aet = {entry["calling_aet"]: entry for entry in service.activity()["calling_aets"]}
    assert set(by_aet) == {"CT9", "CT6", "CT3"}
    assert by_aet["CT9"]["coerced"] == 1 and by_aet["CT6"]["coerced"] == 1 and by_aet["CT3"]["coerced"] == 7
    service.statistics.close()


def test_statistics_never_refuse_an_instance_while_their_store_is_away(tmp_path, store_location, request):
    data = encode(make_ct(patient_id="P-ACT-3"))
    service = service_over(tmp_path, store_location)
    with store_away(service.statistics, store_location, request):
        assert service.coerce(data, store("CT1")).action == COERCED
        assert not service.statistics.flush()
        assert service.stats()["research"]["coerced"] == 1
    assert service.statistics.flush()
    service.statistics.close()
    service.store.close()
    assert ActivityStore(*store_location).totals()[("research", "CT1")].coerced == 1


def test_a_bad_location_is_a_clear_error_and_leaves_no_store_open(tmp_path):
    with pytest.raises(StoreError, match=r"activity store mysql://u@h/db: a URL of an unknown kind"):
        service_over(tmp_path, ("mysql://u@h/db", None))
