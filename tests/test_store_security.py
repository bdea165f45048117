"""The linkage store at rest: originals sealed, schemas migrated in place, owner-only files,
and `coercion serve` warning about files others may read.

``tests/data/linkage-v0.sqlite`` is a store written by the code before sealing (schema version
0, originals in clear), with made-up IDs only. It was made, from the top of the checkout, with
the linkage.py of the last commit before sealing (d699630; the parent of the commit that added
plugin/coercion/stores/sealing.py)::

    git show d699630:plugin/coercion/stores/linkage.py > /tmp/linkage_v0.py
    .venv/bin/python - <<'EOF'
    import sys
    sys.path.insert(0, "/tmp")
    import linkage_v0
    from coercion.engine.pseudonyms import Keys

    keys = Keys(b"linkage-v0 fixture secret, not a real one")
    store = linkage_v0.SQLiteLinkageStore("tests/data/linkage-v0.sqlite")
    for issuer, patient_id, rules in [("FAKE-HOSP", "MRN-TEST-0001", ["research", "trial"]),
                                      ("FAKE-HOSP", "MRN-TEST-0002", ["research"]),
                                      ("", "MRN-TEST-0003", ["uploads"]),
                                      ("OTHER-FAKE-ISSUER", "MRN-TEST-0001", ["research"])]:
        for rule in rules:
            store.record(keys.patient_id(patient_id, issuer), issuer, patient_id, rule, count=2)
    store.record_uids([(f"1.2.826.0.1.3680043.99.{i}", keys.uid(f"1.2.826.0.1.3680043.99.{i}"))
                       for i in range(5)])
    store.close()
    EOF
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import threading
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coercion import serve
from coercion.engine.pseudonyms import Keys
from coercion.stores import linkage
from coercion.stores.linkage import SQLiteLinkageStore, StoreError, open_store
from coercion.stores.sealing import KEY_LABEL, Sealer, SealError

FIXTURE = Path(__file__).parent / "data" / "linkage-v0.sqlite"
FIXTURE_KEYS = Keys(b"linkage-v0 fixture secret, not a real one")
# What the fixture holds: (issuer, patient ID) -> {rule: instance count}, and five UIDs.
FIXTURE_LINKS = {("FAKE-HOSP", "MRN-TEST-0001"): {"research": 2, "trial": 2},
                 ("FAKE-HOSP", "MRN-TEST-0002"): {"research": 2},
                 ("", "MRN-TEST-0003"): {"uploads": 2},
                 ("OTHER-FAKE-ISSUER", "MRN-TEST-0001"): {"research": 2}}
FIXTURE_UIDS = [f"1.2.826.0.1.3680043.99.{i}" for i in range(5)]
# Bytes of the originals in clear; none may be left in any file of a migrated store.
CLEAR = [b"MRN-TEST", b"FAKE-HOSP", b"OTHER-FAKE-ISSUER", b"1.2.826.0.1.3680043.99"]
SIDECARS = ("-wal", "-shm", "-journal")


def raw(path):
    """A plain SQLite connection (autocommit), closed at the end of the with block."""
    return closing(sqlite3.connect(path, isolation_level=None))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_of(path: Path) -> list[Path]:
    return [p for p in [path, *(Path(f"{path}{s}") for s in SIDECARS)] if p.exists()]


def clear_text_in(path: Path) -> list[str]:
    return [f"{p.name}: {needle.decode()}" for p in files_of(path) for needle in CLEAR if needle in p.read_bytes()]


def v0_copy(tmp_path: Path) -> Path:
    path = tmp_path / "linkage.sqlite"
    shutil.copyfile(FIXTURE, path)
    path.chmod(0o644)  # as the code before made it
    return path


def fixture_rows(path: Path) -> tuple[list, list]:
    with raw(path) as db:
        return (sorted(db.execute("SELECT * FROM patient_link")), sorted(db.execute("SELECT * FROM uid_link")))


def assert_fixture_content(store, extra: dict | None = None) -> None:
    expected = {**FIXTURE_LINKS, **(extra or {})}
    for (issuer, patient_id), rules in expected.items():
        links = store.lookup(FIXTURE_KEYS.patient_id(patient_id, issuer))
        assert {(l.issuer, l.patient_id, l.rule, l.instance_count) for l in links} == {
            (issuer, patient_id, rule, count) for rule, count in rules.items()}
        assert all(l.first_seen <= l.last_seen for l in links)
    pseudonyms = {FIXTURE_KEYS.uid(uid): uid for uid in FIXTURE_UIDS}
    assert store.original_uids(pseudonyms) == pseudonyms


# -- migration from version 0 ----------------------------------------------------------------


def test_the_fixture_is_a_version_0_store_with_its_originals_in_clear(tmp_path):
    with raw(v0_copy(tmp_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    assert len(clear_text_in(FIXTURE)) == len(CLEAR)  # what the migration must remove


def test_a_version_0_store_is_sealed_in_place_and_no_original_is_left_in_its_files(tmp_path):
    path = v0_copy(tmp_path)
    # A process of the old code still has a write in the -wal (originals in clear there too).
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("INSERT INTO patient_link VALUES (?, 'FAKE-HOSP', 'MRN-TEST-0009', 'research', 1, 1, 1)",
                (FIXTURE_KEYS.patient_id("MRN-TEST-0009", "FAKE-HOSP"),))
    assert Path(f"{path}-wal").stat().st_size > 0 and any("-wal" in hit for hit in clear_text_in(path))
    try:
        store = open_store(path, FIXTURE_KEYS)
        assert_fixture_content(store, {("FAKE-HOSP", "MRN-TEST-0009"): {"research": 1}})
        assert clear_text_in(path) == []
        assert Path(f"{path}-wal").stat().st_size == 0
        assert {p.name: oct(mode(p)) for p in files_of(path)} == {
            p.name: "0o600" for p in files_of(path)}  # the -wal and -shm too
        with raw(path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (linkage.SCHEMA_VERSION,) == (1,)
            assert db.execute("PRAGMA freelist_count").fetchone() == (0,)
            assert db.execute("SELECT scrub_pending FROM store_key").fetchone() == (0,)
        store.close()
    finally:
        old.close()
    assert clear_text_in(path) == []


def test_a_second_open_does_nothing_more(tmp_path):
    path = v0_copy(tmp_path)
    open_store(path, FIXTURE_KEYS).close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    again = open_store(path, FIXTURE_KEYS)
    assert_fixture_content(again)
    again.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_migration_that_fails_halfway_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = v0_copy(tmp_path)
    before = fixture_rows(path)
    sealed = []

    def seal_then_die(self, value, *context):
        if len(sealed) == 5:
            raise RuntimeError("the process dies here")
        sealed.append(context)
        return b"x" * 40

    with monkeypatch.context() as patch:
        patch.setattr(Sealer, "seal", seal_then_die)
        with pytest.raises(RuntimeError, match="dies"):
            open_store(path, FIXTURE_KEYS)
    assert len(sealed) == 5  # halfway
    assert fixture_rows(path) == before
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    store = open_store(path, FIXTURE_KEYS)  # the next open does it all
    assert_fixture_content(store)
    assert clear_text_in(path) == []


def test_a_process_dying_before_the_files_were_rewritten_leaves_it_to_the_next_open(tmp_path, monkeypatch):
    path = v0_copy(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(SQLiteLinkageStore, "_scrub", lambda self: (_ for _ in ()).throw(RuntimeError("dies")))
        with pytest.raises(RuntimeError, match="dies"):
            open_store(path, FIXTURE_KEYS)
    with raw(path) as db:  # sealed, but the rewrite of the files is still to do
        assert db.execute("SELECT scrub_pending FROM store_key").fetchone() == (1,)
    store = open_store(path, FIXTURE_KEYS)
    assert_fixture_content(store)
    assert clear_text_in(path) == []
    store.close()


def test_a_store_of_a_newer_version_is_refused_by_name(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    with raw(path) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(StoreError, match=f"linkage store {path} has schema version 7"):
        open_store(path, keys)


# -- sealing ---------------------------------------------------------------------------------


def test_a_new_store_keeps_no_original_in_clear(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    store = open_store(path, keys)
    store.record(keys.patient_id("MRN-TEST-0001", "FAKE-HOSP"), "FAKE-HOSP", "MRN-TEST-0001", "research")
    store.record_uids([("1.2.826.0.1.3680043.99.1", keys.uid("1.2.826.0.1.3680043.99.1"))])
    assert clear_text_in(path) == []  # neither in the -wal nor, after the close, in the file
    store.close()
    assert clear_text_in(path) == []
    with raw(path) as db:  # the pseudonyms, the lookup keys, stay in clear
        assert db.execute("SELECT pseudonym, rule FROM patient_link").fetchall() == [
            (keys.patient_id("MRN-TEST-0001", "FAKE-HOSP"), "research")]


def test_the_sealing_key_is_derived_by_hkdf_and_is_not_the_pseudonym_key(keys):
    sealed = Sealer(keys.secret).seal("MRN-TEST-0001", "patient_link", "P", "r", "patient_id")
    nonce, body = sealed[:12], sealed[12:]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_LABEL).derive(keys.secret)
    assert AESGCM(key).decrypt(nonce, body, b"patient_link\x00P\x00r\x00patient_id") == b"MRN-TEST-0001"
    assert key != keys.secret[:32] and b"version 1" in KEY_LABEL
    again = Sealer(keys.secret).seal("MRN-TEST-0001", "patient_link", "P", "r", "patient_id")
    assert again[:12] != nonce  # a fresh nonce for every value
    assert "MRN" not in repr(Sealer(keys.secret)) and keys.secret.hex() not in repr(Sealer(keys.secret))


def test_a_sealed_value_opens_only_in_its_place():
    sealer = Sealer(b"s" * 32)
    sealed = sealer.seal("MRN-TEST-0001", "patient_link", "P1", "r", "patient_id")
    assert sealer.open(sealed, "patient_link", "P1", "r", "patient_id") == "MRN-TEST-0001"
    for place in [("patient_link", "P2", "r", "patient_id"), ("patient_link", "P1", "r", "issuer"),
                  ("uid_link", "P1", "r", "patient_id")]:
        with pytest.raises(SealError) as raised:
            sealer.open(sealed, *place)
        assert "MRN" not in str(raised.value)
    with pytest.raises(SealError):
        Sealer(b"t" * 32).open(sealed, "patient_link", "P1", "r", "patient_id")


def test_a_wrong_secret_is_refused_at_open_naming_the_file_not_the_values(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    store = open_store(path, keys)
    store.record("PSEUDO", "FAKE-HOSP", "MRN-TEST-0001", "research")
    store.close()
    other = Keys(b"another secret, 32 bytes or more, not the one")
    with pytest.raises(StoreError) as raised:
        open_store(path, other)
    message = str(raised.value)
    assert str(path) in message and "another secret" in message
    assert "MRN" not in message and "FAKE" not in message and "PSEUDO" not in message
    assert open_store(path, keys).lookup("PSEUDO")[0].patient_id == "MRN-TEST-0001"  # the file is intact


def test_a_tampered_or_moved_ciphertext_is_refused(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    store = open_store(path, keys)
    store.record("P1", "FAKE-HOSP", "MRN-TEST-0001", "research")
    store.record("P2", "FAKE-HOSP", "MRN-TEST-0002", "research")
    store.record_uids([("1.2.826.0.1.3680043.99.1", "2.25.1"), ("1.2.826.0.1.3680043.99.2", "2.25.2")])
    with raw(path) as db:
        (sealed,) = db.execute("SELECT patient_id FROM patient_link WHERE pseudonym = 'P1'").fetchone()
        flipped = bytes([sealed[0], *sealed[1:-1], sealed[-1] ^ 1])
        db.execute("UPDATE patient_link SET patient_id = ? WHERE pseudonym = 'P1'", (flipped,))
        # P2 given P1's original: a swap between rows, each ciphertext valid where it was.
        db.execute("UPDATE patient_link SET patient_id = ? WHERE pseudonym = 'P2'", (sealed,))
        db.execute("UPDATE uid_link SET original = (SELECT original FROM uid_link WHERE pseudonym = '2.25.2') "
                   "WHERE pseudonym = '2.25.1'")
    for pseudonym in ("P1", "P2"):
        with pytest.raises(StoreError, match=f"linkage store {path}: .*altered") as raised:
            store.lookup(pseudonym)
        assert "MRN" not in str(raised.value)
    with pytest.raises(StoreError, match="altered"):
        store.original_uids(["2.25.1"])
    assert store.original_uids(["2.25.2"]) == {"2.25.2": "1.2.826.0.1.3680043.99.2"}


def test_concurrent_use_from_threads_and_another_connection(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    store, other = open_store(path, keys), open_store(path, keys)
    failures = []

    def work(s, n):
        try:
            for i in range(100):
                s.record(f"P{i % 10}", "FAKE-HOSP", f"MRN-TEST-{i % 10:04d}", "research")
                s.record_uids([(f"1.2.826.0.1.3680043.99.{n}.{i}", f"2.25.{n}.{i}")])
                assert s.lookup(f"P{i % 10}")[0].patient_id == f"MRN-TEST-{i % 10:04d}"
                assert s.original_uids([f"2.25.{n}.{i}"]) == {f"2.25.{n}.{i}": f"1.2.826.0.1.3680043.99.{n}.{i}"}
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate([store, store, store, other])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert [store.lookup(f"P{i}")[0].instance_count for i in range(10)] == [40] * 10
    assert len(other.original_uids([f"2.25.{n}.{i}" for n in range(4) for i in range(100)])) == 400


# -- files -----------------------------------------------------------------------------------


@pytest.fixture
def no_umask():
    """Modes then come from the code alone, not from the umask that happens to be set."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_new_store_is_owner_only_in_folders_it_makes_owner_only(tmp_path, keys, no_umask):
    path = tmp_path / "made" / "here" / "linkage.sqlite"
    store = open_store(path, keys)
    store.record("P", "FAKE-HOSP", "MRN-TEST-0001", "research")
    assert oct(mode(path.parent)) == oct(mode(path.parent.parent)) == "0o700"
    assert {p.name: oct(mode(p)) for p in files_of(path)} == {
        "linkage.sqlite": "0o600", "linkage.sqlite-wal": "0o600", "linkage.sqlite-shm": "0o600"}
    store.close()


def test_sqlite_gives_its_journal_files_the_main_files_mode(tmp_path, no_umask):
    """What the stores rely on: SQLite creates -wal, -shm and -journal with the main file's mode."""
    path = tmp_path / "db.sqlite"
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=PERSIST")  # the rollback journal stays after the transaction
    db.execute("CREATE TABLE t (x)")
    assert oct(mode(Path(f"{path}-journal"))) == "0o600"
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO t VALUES (1)")
    assert oct(mode(Path(f"{path}-wal"))) == oct(mode(Path(f"{path}-shm"))) == "0o600"
    db.close()


def test_an_existing_store_readable_by_others_is_tightened_at_open(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    open_store(path, keys).close()
    path.chmod(0o664)
    Path(f"{path}-wal").write_bytes(b"")
    Path(f"{path}-wal").chmod(0o644)
    store = open_store(path, keys)
    assert oct(mode(path)) == oct(mode(Path(f"{path}-wal"))) == "0o600"
    store.close()


def test_a_store_that_cannot_be_opened_is_refused_by_name(tmp_path, keys):
    path = tmp_path / "linkage.sqlite"
    path.write_bytes(b"MRN-TEST-0001 is not a database" * 100)
    with pytest.raises(StoreError, match=f"linkage store {path} cannot be opened") as raised:
        open_store(path, keys)
    assert "MRN" not in str(raised.value)


# -- coercion serve warns -----------------------------------------------------------------------


def serve_config(tmp_path: Path) -> dict:
    (tmp_path / "rules").mkdir()
    (tmp_path / "site.key").write_bytes(b"k" * 48)
    (tmp_path / "linkage.token").write_text("t" * 32)
    for name in ("site.key", "linkage.token"):
        (tmp_path / name).chmod(0o600)
    return {"Coercion": {"RulesDirectory": str(tmp_path / "rules"), "SecretFile": str(tmp_path / "site.key"),
                         "LinkageDatabase": str(tmp_path / "var" / "linkage.sqlite"),
                         "LinkageTokenFile": str(tmp_path / "linkage.token")}}


def test_serve_is_silent_about_owner_only_files(tmp_path, keys, capsys):
    config = serve_config(tmp_path)
    open_store(config["Coercion"]["LinkageDatabase"], keys).close()
    serve._check(config, {})
    assert capsys.readouterr().err == ""


def test_serve_warns_about_each_file_others_may_read_or_write_and_still_starts(tmp_path, keys, capsys):
    config = serve_config(tmp_path)
    linkage_db = Path(config["Coercion"]["LinkageDatabase"])
    open_store(linkage_db, keys).close()
    forwards_db = linkage_db.parent / "forwards.sqlite"  # the default: beside the linkage store
    forwards_db.write_bytes(b"")
    mpps_db = linkage_db.parent / "mpps.sqlite"
    mpps_db.write_bytes(b"")
    mpps_db.chmod(0o640)
    (tmp_path / "site.key").chmod(0o640)
    (tmp_path / "linkage.token").chmod(0o604)
    linkage_db.chmod(0o666)
    forwards_db.chmod(0o620)
    serve._check(config, {})  # no exception: a warning, not a refusal
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"coercion serve: warning: {tmp_path / 'site.key'} (the site secret) has mode 0640: group can read it; "
        f"make it owner-only (chmod 600 {tmp_path / 'site.key'})",
        f"coercion serve: warning: {tmp_path / 'linkage.token'} (the linkage credential) has mode 0604: others can "
        f"read it; make it owner-only (chmod 600 {tmp_path / 'linkage.token'})",
        f"coercion serve: warning: {linkage_db} (the linkage store) has mode 0666: group and others can read and "
        f"write it; make it owner-only (chmod 600 {linkage_db})",
        f"coercion serve: warning: {forwards_db} (the forwarding queue) has mode 0620: group can write it; "
        f"make it owner-only (chmod 600 {forwards_db})",
        f"coercion serve: warning: {mpps_db} (the MPPS store) has mode 0640: group can read it; "
        f"make it owner-only (chmod 600 {mpps_db})",
    ]


def test_serve_looks_where_the_plugin_will(tmp_path):
    config = serve_config(tmp_path)
    config["Coercion"]["ForwardsDatabase"] = str(tmp_path / "elsewhere.sqlite")
    token = tmp_path / "from-env.token"
    env = {"COERCION_LINKAGE_TOKEN_FILE": str(token), "COERCION_SECRET": "s" * 40}
    for path in (token, tmp_path / "elsewhere.sqlite", Path(f"{tmp_path / 'elsewhere.sqlite'}-wal")):
        path.write_text("x")
        path.chmod(0o644)
    warned = [w.split(" (")[0] for w in serve.exposed_files(config, env)]
    # The secret file is not read when COERCION_SECRET is set; the -wal is a store file too.
    assert warned == [str(token), str(tmp_path / "elsewhere.sqlite"), f"{tmp_path / 'elsewhere.sqlite'}-wal"]
