"""The stores' PostgreSQL backend, on a throw-away server (tests/pgcluster.py): locations that
are URLs never become paths, passwords never come from the URL nor show in a message, the
schema is versioned and migrated once whoever opens first, the originals are sealed, and a
database lost while running fails the calls and recovers when it is back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from coercion import Keys
from coercion.service import Settings
from coercion.stores.forwards import ForwardQueue
from coercion.stores.linkage import PostgresLinkageStore, StoreError, open_store
from coercion.stores.locations import PostgresLocation, parse_location, without_password
from coercion.stores.mpps import open_mpps_store

from factory import OTHER_SECRET
from pgcluster import PASSWORD


def test_a_url_is_never_a_path(tmp_path, monkeypatch, keys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"linkage store mysql://u@h/db: a URL of an unknown kind \(mysql://\)"):
        open_store("mysql://u@h/db", keys)
    with pytest.raises(StoreError, match="cannot be opened"):
        open_store("postgresql://nobody@127.0.0.1:1/none", keys)
    with pytest.raises(StoreError, match="forwarding queue postgresql://nobody@127.0.0.1:1/none cannot be opened"):
        ForwardQueue("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="MPPS store postgresql://nobody@127.0.0.1:1/none cannot be opened: "
                                         "connection failed"):
        open_mpps_store("postgresql://nobody@127.0.0.1:1/none", keys)
    assert list(tmp_path.iterdir()) == []  # no folder named postgresql:, no SQLite file
    assert isinstance(parse_location("postgres://u@db.example/coercion", "x"), PostgresLocation)
    assert parse_location("var/linkage.sqlite", "x") == Path("var/linkage.sqlite")


def test_the_default_stores_beside_a_database_are_in_it():
    settings = Settings.from_configuration({"Coercion": {"LinkageDatabase": "postgresql://u@db:5432/coercion",
                                                         "RulesDirectory": "rules"}},
                                           {"COERCION_SECRET": "x" * 40})
    assert settings.forwards_database == settings.mpps_database == "postgresql://u@db:5432/coercion"


def test_a_password_in_the_url_is_refused_and_never_shown(keys):
    with pytest.raises(StoreError) as raised:
        open_store("postgresql://u:hunter2secret@127.0.0.1:5432/db", keys)
    assert "hunter2secret" not in str(raised.value) and "DatabasePasswordFile" in str(raised.value)
    assert without_password("postgresql://u:pw@h:1/d") == "postgresql://u:***@h:1/d"


def test_an_unreachable_server_is_a_clear_error_naming_the_url(keys, tmp_path):
    password = tmp_path / "password"
    password.write_text("secret-password-that-must-not-show\n")
    with pytest.raises(StoreError) as raised:
        open_store("postgresql://coercion@127.0.0.1:1/coercion", keys, str(password))
    message = str(raised.value)
    assert message.startswith("linkage store postgresql://coercion@127.0.0.1:1/coercion cannot be opened")
    assert "secret-password" not in message


def test_a_wrong_password_is_refused_without_showing_it(pg_database, keys, tmp_path):
    url, _ = pg_database
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(StoreError, match="cannot be opened") as raised:
        open_store(url, keys, str(wrong))
    assert "not-the-password" not in str(raised.value) and PASSWORD not in str(raised.value)
    with pytest.raises(StoreError, match="password file .* cannot be read"):
        open_store(url, keys, str(tmp_path / "missing"))


def test_libpq_finds_the_password_in_the_environment(pg_database, keys, monkeypatch):
    url, _ = pg_database
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    open_store(url, keys).close()


def test_nodes_opening_at_once_migrate_once(pg_database, keys):
    url, password = pg_database
    stores, errors = [], []

    def open_one():
        try:
            stores.append(open_store(url, keys, password))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    stores[0].record("P", "", "ID", "r")
    assert stores[3].lookup("P")[0].patient_id == "ID"  # what one node records, another finds
    for store in stores:
        store.close()


def test_a_wrong_secret_is_refused_at_open(pg_database, keys):
    url, password = pg_database
    open_store(url, keys, password).close()
    with pytest.raises(StoreError, match="does not open with this site secret"):
        open_store(url, Keys(OTHER_SECRET), password)


def test_a_newer_schema_is_refused_by_name(pg_database, keys):
    import psycopg

    url, password = pg_database
    open_store(url, keys, password).close()
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as connection:
        connection.execute("UPDATE coercion_schema SET version = 99 WHERE store = 'linkage'")
    with pytest.raises(StoreError, match="has schema version 99"):
        open_store(url, keys, password)


def test_no_original_is_kept_in_clear(pg_database, keys):
    import psycopg

    url, password = pg_database
    store = open_store(url, keys, password)
    store.record("PSEUDO", "HOSPITAL-ISSUER", "MRN-CLEAR-0001", "r")
    store.record_uids([("1.2.840.99.4711", "2.25.5")])
    store.close()
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as connection:
        rows = [value for table in ("patient_link", "uid_link")
                for row in connection.execute(f"SELECT * FROM {table}").fetchall() for value in row]
    stored = b" ".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in rows)
    for original in (b"MRN-CLEAR-0001", b"HOSPITAL-ISSUER", b"1.2.840.99.4711"):
        assert original not in stored


def test_a_database_lost_while_running_fails_the_calls_and_recovers(postgres, pg_database, keys):
    url, password = pg_database
    store = open_store(url, keys, password)
    assert isinstance(store, PostgresLinkageStore)
    store.record("P", "", "ID", "r")
    postgres.stop_server()
    try:
        with pytest.raises(StoreError, match="the database failed|cannot be opened"):
            store.record("P", "", "ID", "r")
        with pytest.raises(StoreError):
            store.lookup("P")
    finally:
        postgres.start()
    store.record("P", "", "ID", "r")  # back: the store connects again
    assert store.lookup("P")[0].instance_count == 2
    store.close()



def test_a_service_on_postgresql_fails_closed_while_its_database_is_away(postgres, pg_database, tmp_path):
    from coercion.rules import Transaction
    from coercion.service import COERCED, REJECTED, CoercionService

    from factory import SECRET, encode, make_ct

    url, password = pg_database
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "site.yaml").write_text("- {name: research, dimse: C_STORE_RQ, role: SCU, "
                                     "uri: 'deidentify:RetainPatientIDHashOption'}\n")
    settings = Settings.from_configuration(
        {"Coercion": {"RulesDirectory": str(rules), "LinkageDatabase": url, "DatabasePasswordFile": password,
                      "ForwardsDatabase": str(tmp_path / "forwards.sqlite")}},
        {"COERCION_SECRET": SECRET.decode()})
    service = CoercionService(settings)
    transaction = Transaction("C_STORE_RQ", "SCU", "MODALITY", "ORTHANC", "127.0.0.1")
    data = encode(make_ct(patient_id="P-PG-1"))
    first = service.coerce(data, transaction)
    assert first.action == COERCED
    postgres.stop_server()
    try:
        away = service.coerce(data, transaction)
        assert away.action == REJECTED and away.data is None and "linkage store" in away.reason
        assert "P-PG-1" not in away.reason
    finally:
        postgres.start()
    assert service.coerce(data, transaction).action == COERCED
    assert service.store.lookup(first.outcome.patient_pseudonym)[0].instance_count == 2
    service.store.close()
