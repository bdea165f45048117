"""Worklist items and queries without Orthanc: the folder, the station narrowing, the REST
forms of an item, the views a rule gives, the step status an MPPS reports."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion import Deidentifier, Keys
from coercion.engine.limits import MAX_SEQUENCE_DEPTH
from coercion.exchanges.worklist import (
    MAX_ITEM_BYTES,
    MAX_ITEM_ELEMENTS,
    MAX_ITEM_JSON_DEPTH,
    FolderUnavailable,
    ItemTooLarge,
    ItemViews,
    WorklistError,
    WorklistFolder,
    encode,
    handed_out,
    item_from_json,
    item_from_json_body,
    query_station,
    read_item,
    station_only,
    station_query,
    without_station,
)

from factory import SECRET, encode as encode_instance, make_ct
from nesting import deep_file

sys.path.insert(0, str(Path(__file__).parent / "integration"))
from worklists import worklist_item  # noqa: E402

KEYS = Keys(SECRET)


def query(station: str | None = None, pregnancy: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PatientID = ""
    if station is not None:
        step = Dataset()
        step.ScheduledStationAETitle = station
        step.Modality = "CT"
        ds.ScheduledProcedureStepSequence = Sequence([step])
    if pregnancy is not None:
        ds.PregnancyStatus = int(pregnancy) if pregnancy else None
    return ds


@pytest.mark.parametrize("given", [None, "", "*", "OTHER"])
def test_the_station_is_the_callers_whatever_the_query_says(given):
    # as the sample plugin's FilterIssuerAet does (its check of the item's type is always true)
    narrowed = station_query(query(given), "CT01")
    assert narrowed.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"


def test_the_narrowed_query_is_a_copy_and_an_empty_pregnancy_status_goes():
    original = query("OTHER", pregnancy="")
    narrowed = station_query(original, "CT01")
    assert "PregnancyStatus" not in narrowed and "PregnancyStatus" in original
    assert original.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "OTHER"
    assert "PregnancyStatus" in station_query(query(pregnancy="4"), "CT01")  # a constraint stays
    two = query("A")
    two.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(WorklistError, match="one item"):
        station_query(two, "CT01")


def test_a_station_constraint_is_told_and_taken_apart():
    assert query_station(query("CT01")) == "CT01"
    assert query_station(query("*")) is None and query_station(query("")) is None and query_station(query()) is None
    rest = without_station(query("CT01"))
    assert rest.ScheduledProcedureStepSequence[0].ScheduledStationAETitle in (None, "")
    assert rest.ScheduledProcedureStepSequence[0].Modality == "CT"
    assert station_only("CT01").ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"


def test_items_from_clients_are_worklist_items_and_bounded():
    item = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101")
    assert read_item(encode(item)).PatientID == "MRN-1"
    assert item_from_json(item.to_json_dict()).AccessionNumber == "ACC-1"
    with pytest.raises(WorklistError, match="Scheduled Procedure Step Sequence"):
        read_item(encode_instance(make_ct()))
    with pytest.raises(WorklistError, match="not a readable DICOM"):
        read_item(b"hello")
    with pytest.raises(WorklistError, match="at most"):
        read_item(b"\0" * (MAX_ITEM_BYTES + 1))
    with pytest.raises(WorklistError, match="nested deeper"):
        read_item(deep_file(40))
    deep: dict = {"00400100": {"vr": "SQ", "Value": [{}]}}
    node = deep["00400100"]["Value"][0]
    for _ in range(200):
        node["0040A730"] = {"vr": "SQ", "Value": [{}]}
        node = node["0040A730"]["Value"][0]
    with pytest.raises(WorklistError, match="nested deeper"):
        item_from_json(deep)
    with pytest.raises(WorklistError, match="object"):
        item_from_json([1])


def test_the_folder_lists_wl_files_in_its_own_order(tmp_path):
    folder = WorklistFolder(tmp_path)
    for name in ("b.wl", "a.WL", "c.txt", "d.wl"):
        (tmp_path / name).write_bytes(encode(worklist_item("MRN", "Doe", name, "CT", "CT01", "20241101")))
    os.mkdir(tmp_path / "e.wl")  # a folder is not an item
    ids = [item.id for item in folder.items()]
    assert sorted(ids) == ["a", "b", "d"]
    assert ids == [entry.name[:-3] for entry in os.scandir(tmp_path)
                   if entry.name.lower().endswith(".wl") and entry.is_file()]  # readdir's order


def test_the_folder_reads_an_item_again_when_it_changes(tmp_path):
    folder = WorklistFolder(tmp_path)
    path = tmp_path / "x.wl"
    path.write_bytes(encode(worklist_item("MRN-A", "Doe", "ACC", "CT", "CT01", "20241101")))
    first = next(folder.items())
    path.write_bytes(encode(worklist_item("MRN-B", "Doe", "ACC", "CT", "CT01", "20241101")))
    os.utime(path, ns=(first.version[1] + 10**9, first.version[1] + 10**9))
    second = next(folder.items())
    assert pydicom.dcmread(io.BytesIO(second.data)).PatientID == "MRN-B" and second.version != first.version
    path.unlink()
    assert list(folder.items()) == [] and not folder._read


def test_items_are_added_owner_only_and_deleted(tmp_path):
    folder = WorklistFolder(tmp_path)
    item_id = folder.add(worklist_item("MRN-1", "Doe", "ACC-1", "CT", "CT01", "20241101"))
    path = tmp_path / f"{item_id}.wl"
    assert path.stat().st_mode & 0o077 == 0
    assert folder.get(item_id).path == path and folder.get("../etc/passwd") is None
    assert folder.delete(item_id) and not path.exists() and not folder.delete(item_id)


def test_an_mpps_moves_the_step_it_names(tmp_path):
    folder = WorklistFolder(tmp_path)
    first = folder.add(worklist_item("MRN-1", "Doe", "ACC-1", "CT", "CT01", "20241101", study_uid="2.25.1"))
    other = folder.add(worklist_item("MRN-2", "Roe", "ACC-2", "CT", "CT01", "20241101", study_uid="2.25.2"))
    steps = [{"StudyInstanceUID": "2.25.1", "AccessionNumber": "ACC-1", "RequestedProcedureID": "",
              "ScheduledProcedureStepID": "SPS-ACC-1"}]
    assert folder.step_performed(steps, "IN PROGRESS") == 1

    def status(item_id):
        ds = pydicom.dcmread(io.BytesIO(folder.get(item_id).data))
        return ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus

    assert (status(first), status(other)) == ("IN PROGRESS", "SCHEDULED")
    assert folder.step_performed(steps, "COMPLETED") == 1 and status(first) == "COMPLETED"
    assert folder.step_performed([{"AccessionNumber": "NOPE"}], "COMPLETED") == 0
    with pytest.raises(WorklistError):
        folder.step_performed(steps, "DONE")


def test_a_rule_sees_each_item_de_identified_once(tmp_path):
    folder = WorklistFolder(tmp_path)
    folder.add(worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101", study_uid="2.25.7"))
    deid = Deidentifier.from_uri("deidentify:RetainPatientIDHashOption", KEYS)
    views = ItemViews()
    item = next(folder.items())
    data, outcome = views.view(item, deid)
    again, _ = views.view(item, deid)
    assert again is data
    seen = pydicom.dcmread(io.BytesIO(data))
    assert seen.PatientID == KEYS.patient_id("MRN-1", "HOSP") and seen.StudyInstanceUID == KEYS.uid("2.25.7")
    given = handed_out(outcome)
    assert {(h.original, h.pseudonym) for h in given} == {("2.25.7", KEYS.uid("2.25.7")),
                                                        ("MRN-1", KEYS.patient_id("MRN-1", "HOSP"))}


# -- bounds on what a client gives, and the folder ---------------------------------------------


def test_a_json_item_too_large_is_refused_by_its_size_before_it_is_read():
    # Not JSON, nested far too deep, and too large: the size is what is said (nothing was parsed).
    with pytest.raises(ItemTooLarge, match=f"at most {MAX_ITEM_BYTES} bytes .MAX_ITEM_BYTES.") as raised:
        item_from_json_body(b"[" * (MAX_ITEM_BYTES + 1))
    assert raised.value.status == 413
    with pytest.raises(ItemTooLarge) as raised:
        read_item(b"\0" * (MAX_ITEM_BYTES + 1))
    assert raised.value.status == 413
    item = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101")
    body = json.dumps(item.to_json_dict()).encode()
    assert item_from_json_body(body).PatientID == "MRN-1"
    assert item_from_json_body(b"[" + body + b"]").PatientID == "MRN-1"  # an array of one, as DICOMweb gives
    with pytest.raises(WorklistError, match="neither DICOM nor DICOM JSON") as raised:
        item_from_json_body(b"{not json")
    assert raised.value.status == 400


def many_attributes(count: int) -> dict:
    item = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101").to_json_dict()
    for i in range(count - len(item)):
        item[f"0011{0x1000 + i:04X}"] = {"vr": "LO", "Value": ["x"]}
    return item


def test_json_items_are_bounded_in_elements_and_values():
    assert item_from_json(many_attributes(MAX_ITEM_ELEMENTS // 2)).PatientID == "MRN-1"
    for hostile in (many_attributes(MAX_ITEM_ELEMENTS + 1),
                    {**many_attributes(10), "00081030": {"vr": "LO", "Value": ["x"] * MAX_ITEM_ELEMENTS}},
                    {**many_attributes(10), "00081110": {"vr": "SQ", "Value": [{}] * MAX_ITEM_ELEMENTS}}):
        with pytest.raises(WorklistError, match=f"at most {MAX_ITEM_ELEMENTS} elements .*MAX_ITEM_ELEMENTS") as raised:
            item_from_json(hostile)
        assert raised.value.status == 400
        body = json.dumps(hostile).encode()
        assert len(body) < MAX_ITEM_BYTES  # refused by its elements, not its size
        with pytest.raises(WorklistError, match="MAX_ITEM_ELEMENTS"):
            item_from_json_body(body)


def test_dicom_items_are_bounded_in_elements_and_items():
    item = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101")
    for i in range(MAX_ITEM_ELEMENTS):
        item.add_new(0x00111000 + i, "LO", "x")
    data = encode(item)
    assert len(data) < MAX_ITEM_BYTES
    with pytest.raises(WorklistError, match=f"at most {MAX_ITEM_ELEMENTS} elements") as raised:
        read_item(data)
    assert raised.value.status == 400
    items = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101")
    items.ReferencedStudySequence = Sequence([Dataset() for _ in range(MAX_ITEM_ELEMENTS)])
    with pytest.raises(WorklistError, match="MAX_ITEM_ELEMENTS"):
        read_item(encode(items))


def nested_item(depth: int, empty: bool = False) -> Dataset:
    """A worklist item whose sequences nest ``depth`` levels (its step is the first), each
    level's item holding an attribute before the next sequence, a person name at the deepest
    (``empty``: the deepest sequence has no item)."""
    item = worklist_item("MRN-1", "Doe^Jane", "ACC-1", "CT", "CT01", "20241101")
    node = item.ScheduledProcedureStepSequence[0]
    for level in range(depth - 1):
        child = Dataset()
        child.ValueType = "CONTAINER"  # an attribute first: the nesting is measured past it
        node.ContentSequence = Sequence([] if empty and level == depth - 2 else [child])
        node = child
    node.PersonName = "Doe^Jane"
    return item


def test_both_forms_nest_as_deep_as_the_engine_allows():
    """One limit (MAX_SEQUENCE_DEPTH), counted alike in DICOM and in DICOM JSON."""
    deepest = nested_item(MAX_SEQUENCE_DEPTH)
    assert read_item(encode(deepest)).PatientID == "MRN-1"
    assert item_from_json_body(json.dumps([deepest.to_json_dict()]).encode()).PatientID == "MRN-1"
    message = f"nested deeper than {MAX_SEQUENCE_DEPTH} levels"
    for deeper in (nested_item(MAX_SEQUENCE_DEPTH + 1), nested_item(MAX_SEQUENCE_DEPTH + 1, empty=True)):
        with pytest.raises(WorklistError, match=message) as raised:
            read_item(encode(deeper))
        assert raised.value.status == 400
    with pytest.raises(WorklistError, match=message):  # JSON nested little deeper than a deepest item's
        item_from_json_body(json.dumps(nested_item(MAX_SEQUENCE_DEPTH + 1, empty=True).to_json_dict()).encode())
    with pytest.raises(WorklistError, match=f"{MAX_SEQUENCE_DEPTH} levels"):
        item_from_json_body(json.dumps(nested_item(MAX_SEQUENCE_DEPTH + 1).to_json_dict()).encode())
    # Deeper still is measured in the text, never handed to a JSON reader.
    with pytest.raises(WorklistError, match=f"nests deeper than {MAX_ITEM_JSON_DEPTH} levels"):
        item_from_json_body(b'{"a":' * 5000 + b"1" + b"}" * 5000)


def test_a_missing_folder_is_made_owner_only_when_its_parent_exists(tmp_path):
    folder = WorklistFolder(tmp_path / "worklists")
    assert folder.prepare() and not folder.prepare()
    assert stat.S_IMODE((tmp_path / "worklists").stat().st_mode) == 0o700
    nowhere = tmp_path / "not-mounted" / "worklists"
    with pytest.raises(FolderUnavailable, match=f"{nowhere} .Worklists.Database. does not exist, nor does its "
                                                f"parent {nowhere.parent}"):
        WorklistFolder(nowhere).prepare()
    assert not nowhere.parent.exists()
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(FolderUnavailable, match="is not a folder"):
        WorklistFolder(tmp_path / "a-file").prepare()


def test_a_folder_gone_later_is_named_not_made_again(tmp_path):
    path = tmp_path / "worklists"
    folder = WorklistFolder(path)
    folder.prepare()
    item_id = folder.add(worklist_item("MRN-1", "Doe", "ACC-1", "CT", "CT01", "20241101"))
    (path / f"{item_id}.wl").unlink()
    path.rmdir()
    for attempt in (lambda: folder.add(worklist_item("MRN-2", "Doe", "ACC-2", "CT", "CT01", "20241101")),
                    lambda: list(folder.items()), lambda: folder.get(item_id), lambda: folder.delete(item_id)):
        with pytest.raises(FolderUnavailable, match=f"the worklist folder {path} .Worklists.Database. does not "
                                                    "exist") as raised:
            attempt()
        assert raised.value.status == 503
    assert not path.exists()
