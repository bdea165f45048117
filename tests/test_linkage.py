"""The SQLite linkage store (its sealing, migration and files: test_store_security.py)."""

from __future__ import annotations

import threading

from coercion.stores.linkage import SQLiteLinkageStore, open_store


def test_record_and_lookup(tmp_path, keys):
    store = SQLiteLinkageStore(tmp_path / "linkage.db", keys)
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
    again = open_store(tmp_path / "linkage.db", keys)  # survives a restart
    assert again.lookup("PSEUDO2")[0].patient_id == "MRN2"


def test_concurrent_writers(tmp_path, keys):
    store = SQLiteLinkageStore(tmp_path / "linkage.db", keys)
    other = SQLiteLinkageStore(tmp_path / "linkage.db", keys)  # a second connection, as another process has

    def work(s):
        for _ in range(200):
            s.record("P", "", "ID", "r")

    threads = [threading.Thread(target=work, args=(s,)) for s in (store, store, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.lookup("P")[0].instance_count == 800
