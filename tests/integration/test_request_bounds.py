"""What the plugin's own routes take is bounded, through a real Orthanc: a worklist item too
large is answered 413 before it is read, one with too many elements or nested too deep 400,
each naming the limit, in DICOM and in DICOM JSON alike. The worklist folder is made owner-only
at start-up when missing (Orthanc stops, naming it, when its parent is missing too), and a
folder gone later is answered 503 naming it, never a bare 500."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.engine.limits import MAX_SEQUENCE_DEPTH
from coercion.exchanges.worklist import MAX_ITEM_BYTES, MAX_ITEM_ELEMENTS, encode

from orthanc_server import ADMIN, OrthancServer, needs_orthanc
from worklists import worklist_item

pytestmark = needs_orthanc
JSON = {"Content-Type": "application/dicom+json"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    folder = root / "worklists"  # not there: the plugin makes it
    server = OrthancServer(root / "orthanc", rules="", settings={
        "Worklists": {"Enable": True, "Database": str(folder)}}).start()
    yield server, folder
    server.stop()


def item() -> Dataset:
    return worklist_item("MRN-B1", "Doe^Jane", "ACC-B1", "CT", "CT01", "20241101")


def nested(depth: int) -> Dataset:
    """An item whose sequences nest ``depth`` levels, an attribute before each sequence."""
    ds = item()
    node = ds.ScheduledProcedureStepSequence[0]
    for _ in range(depth - 1):
        child = Dataset()
        child.ValueType = "CONTAINER"
        node.ContentSequence = Sequence([child])
        node = child
    return ds


def refused(answer, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == status and all(word in body["error"] for word in words), body


def test_the_missing_folder_was_made_owner_only_and_items_go_there(site):
    server, folder = site
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert f"made the worklist folder {folder}" in server.log()
    answer = server.admin_post("/coercion/worklists", json.dumps(item().to_json_dict()), headers=JSON)
    assert answer.status_code == 200, answer.text
    assert (folder / f"{answer.json()['ID']}.wl").is_file()
    assert server.delete(f"/coercion/worklists/{answer.json()['ID']}", headers=ADMIN).status_code == 200


def test_items_too_large_are_answered_413_in_either_form(site):
    server, folder = site
    before = sorted(folder.iterdir())
    huge = item().to_json_dict()
    huge["00081030"] = {"vr": "LO", "Value": ["x" * MAX_ITEM_BYTES]}
    refused(server.admin_post("/coercion/worklists", json.dumps(huge), headers=JSON), 413,
            str(MAX_ITEM_BYTES), "MAX_ITEM_BYTES")
    refused(server.admin_post("/coercion/worklists", b"\0" * (MAX_ITEM_BYTES + 1)), 413, "MAX_ITEM_BYTES")
    assert sorted(folder.iterdir()) == before


def test_items_with_too_many_elements_are_answered_400(site):
    server, folder = site
    before = sorted(folder.iterdir())
    many = item().to_json_dict()
    many.update({f"0011{0x1000 + i:04X}": {"vr": "LO", "Value": ["x"]} for i in range(MAX_ITEM_ELEMENTS)})
    refused(server.admin_post("/coercion/worklists", json.dumps(many), headers=JSON), 400,
            str(MAX_ITEM_ELEMENTS), "MAX_ITEM_ELEMENTS")
    dicom = item()
    for i in range(MAX_ITEM_ELEMENTS):
        dicom.add_new(0x00111000 + i, "LO", "x")
    refused(server.admin_post("/coercion/worklists", encode(dicom)), 400, "MAX_ITEM_ELEMENTS")
    assert sorted(folder.iterdir()) == before


def test_items_nested_too_deep_are_answered_400(site):
    server, folder = site
    before = sorted(folder.iterdir())
    levels = f"{MAX_SEQUENCE_DEPTH} levels"
    refused(server.admin_post("/coercion/worklists", json.dumps(nested(MAX_SEQUENCE_DEPTH + 1).to_json_dict()),
                              headers=JSON), 400, levels)
    refused(server.admin_post("/coercion/worklists", b'{"a":' * 300 + b"1" + b"}" * 300, headers=JSON), 400,
            "nests deeper than")
    # DICOM (DCMTK's matcher reads the kept items: it crashes on about 48 levels)
    refused(server.admin_post("/coercion/worklists", encode(nested(MAX_SEQUENCE_DEPTH + 1))), 400, levels)
    refused(server.admin_post("/coercion/worklists", encode(nested(60))), 400, levels)
    assert sorted(folder.iterdir()) == before
    deepest = server.admin_post("/coercion/worklists", encode(nested(MAX_SEQUENCE_DEPTH)))
    assert deepest.status_code == 200, deepest.text
    assert server.delete(f"/coercion/worklists/{deepest.json()['ID']}", headers=ADMIN).status_code == 200
    assert server.get("/system").ok  # Orthanc is still there


def test_a_folder_gone_is_answered_503_naming_it(site):
    server, folder = site
    shutil.rmtree(folder)
    try:
        for answer in (server.admin_post("/coercion/worklists", encode(item())),
                       server.get("/coercion/worklists", headers=ADMIN),
                       server.get("/coercion/worklists/some-id", headers=ADMIN),
                       server.delete("/coercion/worklists/some-id", headers=ADMIN)):
            refused(answer, 503, f"the worklist folder {folder}", "Worklists.Database", "does not exist")
        assert not folder.exists()  # not made again behind the administrator's back
    finally:
        folder.mkdir(mode=0o700)
    assert server.admin_post("/coercion/worklists", encode(item())).status_code == 200


def test_a_folder_whose_parent_is_missing_stops_orthanc_naming_it(tmp_path):
    folder = tmp_path / "not-mounted" / "worklists"
    server = OrthancServer(tmp_path / "orthanc", rules="", settings={
        "Worklists": {"Enable": True, "Database": str(folder)}})
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    assert (f"coercion: refusing to start: the worklist SCP cannot start: the worklist folder {folder} "
            f"(Worklists.Database) does not exist, nor does its parent {folder.parent}") in server.log()
    assert not folder.parent.exists()
