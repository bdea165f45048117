"""The linkage store on both backends, SQLite and PostgreSQL (its sealing, migration and files
in SQLite: test_store_security.py; the PostgreSQL backend's own behaviour: test_postgres_stores.py)."""

from __future__ import annotations

import threading

from coercion.stores.linkage import open_store


def test_record_and_lookup(store_location, keys):
    location, password = store_location
    store = open_store(location, keys, password)
    store.record("PSEUDO1", "HOSP", "MRN1", "research")
    store.record("PSEUDO1", "HOSP", "MRN1", "research", count=2)
    store.record("PSEUDO1", "HOSP", "MRN1", "trial")
    store.record("PSEUDO2", "HOSP", "MRN2", "research")
    links = store.lookup("PSEUDO1")
    assert [(l.rule, l.instance_count, l.patient_id, l.issuer) for l in links] == [
        ("research", 3, "MRN1", "HOSP"), ("trial", 1, "MRN1", "HOSP")]
    assert links[0].first_seen <= links[0].last_seen
    assert "MRN1" not in repr(links[0])
    assert store.lookup("NOPE") == []
    store.close()
    again = open_store(location, keys, password)  # survives a restart
    assert again.lookup("PSEUDO2")[0].patient_id == "MRN2"
    again.close()


def test_handed_out_uids(store_location, keys):
    location, password = store_location
    store = open_store(location, keys, password)
    store.record_uids([("1.2.3", "2.25.1"), ("1.2.4", "2.25.2")])
    store.record_uids([("1.2.9", "2.25.1")])  # the first original stays
    assert store.original_uids(["2.25.1", "2.25.2", "2.25.3"]) == {"2.25.1": "1.2.3", "2.25.2": "1.2.4"}
    assert store.original_uids([]) == {}
    assert len(store.original_uids([f"2.25.{i}" for i in range(1, 1500)])) == 2  # beyond SQLite's 500 a query
    store.close()


def test_concurrent_writers(store_location, keys):
    location, password = store_location
    store = open_store(location, keys, password)
    other = open_store(location, keys, password)  # a second connection, as another process (or node) has

    def work(s):
        for _ in range(200):
            s.record("P", "", "ID", "r")

    threads = [threading.Thread(target=work, args=(s,)) for s in (store, store, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.lookup("P")[0].instance_count == 800
    store.close()
    other.close()
