"""What Orthanc stores under `coercion serve` is owner-only: serve makes the storage folder
0700 and runs Orthanc under umask 077, so the instances and the index it writes are 0600 and
its folders 0700, whatever the umask serve was started with; an existing storage folder that
group or others can read is warned of, by name."""

from __future__ import annotations

import os
import stat

from factory import encode, make_ct
from orthanc_server import OrthancServer, needs_orthanc

pytestmark = needs_orthanc


def modes(folder) -> dict[str, int]:
    """The mode of the folder and of everything below it, by path relative to it."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, folder)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_storage_made_by_serve_and_what_orthanc_writes_there_is_owner_only(tmp_path):
    previous = os.umask(0o022)  # the usual umask, inherited by serve: it must not matter
    try:
        server = OrthancServer(tmp_path / "orthanc").start()
    finally:
        os.umask(previous)
    try:
        answer = server.post("/instances", encode(make_ct(sop_uid="2.25.4242")))
        assert answer.status_code == 200, answer.text
        attachment = server.get(f"/instances/{answer.json()['ID']}/attachments/dicom/info").json()
        found = modes(server.storage)
    finally:
        server.stop()
    assert found["."] == 0o700
    stored = [path for path in found if path.endswith(attachment["Uuid"])]
    assert len(stored) == 1 and found[stored[0]] == 0o600  # the instance, as Orthanc wrote it
    assert "index" in found  # Orthanc's SQLite index, beside the instances
    loose = {path: oct(mode) for path, mode in found.items()
             if mode != (0o700 if (server.storage / path).is_dir() else 0o600)}
    assert loose == {}


def test_an_existing_storage_others_can_read_is_warned_of_by_name(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir(mode=0o755)
    storage.chmod(0o755)
    (storage / "00").mkdir()
    (storage / "00").chmod(0o755)
    server = OrthancServer(tmp_path / "orthanc", storage=storage).start()
    server.stop()
    log = server.log()
    assert (f"coercion serve: warning: {storage} (Orthanc's storage) has mode 0755: group and others can read "
            f"it; make it owner-only (chmod -R go-rwx {storage})") in log
    assert f"entries of {storage} (Orthanc's storage) can be read or written by group or others" in log
    assert stat.S_IMODE(storage.stat().st_mode) == 0o755  # warned of, left as the administrator made it
