"""`coercion serve` and Orthanc's storage: folders it makes are owner-only, and an existing one
that group or others may read (or whose first-level entries they may) is warned of by name.
tests/integration/test_storage_owner_only.py checks what Orthanc then writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from coercion import serve


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def storage(tmp_path: Path, folder_mode: int, entries: dict[str, int]) -> Path:
    folder = tmp_path / "storage"
    folder.mkdir()
    for name, entry_mode in entries.items():
        path = folder / name
        if name.endswith("/"):
            path.mkdir()
        else:
            path.write_bytes(b"x")
        path.chmod(entry_mode)
    folder.chmod(folder_mode)
    return folder


def test_owner_only_storage_is_not_warned_of(tmp_path):
    folder = storage(tmp_path, 0o700, {"index": 0o600, "0a/": 0o700})
    assert serve.exposed_storage({"StorageDirectory": str(folder), "IndexDirectory": str(folder)}) == []
    assert serve.exposed_storage({"StorageDirectory": str(tmp_path / "not-yet")}) == []  # serve makes it
    assert serve.exposed_storage({}) == []


def test_storage_others_can_read_is_warned_of_by_name(tmp_path):
    folder = storage(tmp_path, 0o755, {"index": 0o644, "0a/": 0o750, "0b/": 0o700, "index-wal": 0o600})
    (folder / "0b" / "deeper").write_bytes(b"x")  # one level only is looked at: cheap
    (folder / "0b" / "deeper").chmod(0o644)
    warnings = serve.exposed_storage({"StorageDirectory": str(folder)})  # the index beside it, as Orthanc does
    assert warnings == [
        f"{folder} (Orthanc's storage) has mode 0755: group and others can read it; make it owner-only "
        f"(chmod -R go-rwx {folder})",
        f"2 entries of {folder} (Orthanc's storage) can be read or written by group or others, e.g. "
        f"{folder / '0a'} (mode 0750: group can read it); make it owner-only (chmod -R go-rwx {folder})",
    ]


def test_a_separate_index_folder_is_looked_at_too(tmp_path):
    folder = storage(tmp_path, 0o700, {})
    index = tmp_path / "index"
    index.mkdir()
    index.chmod(0o770)
    warnings = serve.exposed_storage({"StorageDirectory": str(folder), "IndexDirectory": str(index)})
    assert warnings == [f"{index} (Orthanc's storage) has mode 0770: group can read and write it; make it "
                        f"owner-only (chmod -R go-rwx {index})"]


def test_serve_warns_at_its_checks(tmp_path, capsys):
    (tmp_path / "rules").mkdir()
    (tmp_path / "site.key").write_bytes(b"k" * 48)
    (tmp_path / "site.key").chmod(0o600)
    folder = storage(tmp_path, 0o750, {})
    serve._check({"StorageDirectory": str(folder), "Coercion": {
        "RulesDirectory": str(tmp_path / "rules"), "SecretFile": str(tmp_path / "site.key"),
        "LinkageDatabase": str(tmp_path / "linkage.sqlite")}}, {})
    assert capsys.readouterr().err.splitlines() == [
        f"coercion serve: warning: {folder} (Orthanc's storage) has mode 0750: group can read it; make it "
        f"owner-only (chmod -R go-rwx {folder})"]


def test_folders_serve_makes_are_owner_only_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        serve._make_owner_only(tmp_path / "var" / "storage")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "var") == mode(tmp_path / "var" / "storage") == 0o700
    existing = tmp_path / "kept"
    existing.mkdir()
    existing.chmod(0o755)
    serve._make_owner_only(existing)
    assert mode(existing) == 0o755  # an existing folder is warned of, not changed
