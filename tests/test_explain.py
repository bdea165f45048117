"""The preview's account (engine/explain.py): one entry per attribute at any depth, what it
became and why, derived from the profile's tables; values shown short, binary ones never."""

from __future__ import annotations

import json
import textwrap

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.engine import explain as explain_module
from coercion.engine import record as record_module
from coercion.engine.dicomio import DicomError, joined, read_instance
from coercion.engine.explain import MAX_DISPLAY, RESULTS, display, explain
from coercion.engine.limits import NestingError
from coercion.service import CoercionService, Settings

import test_table_rows as tr
import test_valid_output as tv
from factory import SECRET, deidentifier, encode, make_ct
from test_valid_output import samples  # noqa: F401 (a fixture)

MODIFIED = "RetainLongitudinalTemporalInformationModifiedDatesOption"
FULL = "RetainLongitudinalTemporalInformationFullDatesOption"
REAL_WORLD_VALUE_MAPPING = 0x00409096  # a sequence Table E.1-1 does not list


def explained(ds: Dataset, uri: str = "deidentify:") -> dict:
    data = encode(ds)
    deid = deidentifier(uri)
    chunks, _, record = deid.deidentify_recorded(data)
    return explain(read_instance(data), read_instance(joined(chunks)), record)


def by_path(answer: dict) -> dict:
    entries = answer["attributes"]
    paths = [e["path"] for e in entries]
    assert len(paths) == len(set(paths)), "one entry per attribute"
    return dict(zip(paths, entries))


def nested_ct() -> Dataset:
    """A CT with attributes two sequences deep, in a sequence the table does not list."""
    ds = make_ct()
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    item = Dataset()
    item.PersonName = "Doe^Jane"  # (0040,A123): D
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    item.ReferencedImageSequence = Sequence([inner])
    ds.add_new(REAL_WORLD_VALUE_MAPPING, "SQ", Sequence([item]))
    return ds


def test_every_entry_has_the_documented_shape_and_the_summary_counts_them():
    answer = explained(make_ct())
    assert answer["edition"] and answer["truncated"] is False
    keys = {"path", "tag", "keyword", "vr", "result", "before", "after", "action", "reason"}
    for entry in answer["attributes"]:
        assert set(entry) == keys, entry
        assert entry["result"] in RESULTS, entry
        assert set(entry["reason"]) == {"source", "row", "basic", "options", "text"} and entry["reason"]["text"]
    counted = {}
    for entry in answer["attributes"]:
        counted[entry["result"]] = counted.get(entry["result"], 0) + 1
    assert answer["summary"] == counted
    json.dumps(answer)  # answered as JSON as it is


def test_the_basic_profile_removes_empties_maps_and_adds_naming_the_table_row():
    entries = by_path(explained(make_ct()))
    name = entries["(0010,0010)"]
    assert (name["keyword"], name["vr"], name["result"], name["action"]) == ("PatientName", "PN", "emptied", "Z")
    assert name["before"] == "Doe^Johnathan^Q" and name["after"] == ""
    assert name["reason"]["source"] == "table" and name["reason"]["row"] == "(0010,0010)"
    assert name["reason"]["basic"] == "Z" and name["reason"]["options"] == []
    assert "Table E.1-1 (0010,0010)" in name["reason"]["text"]

    address = entries["(0010,1040)"]
    assert address["result"] == "removed" and address["after"] is None and address["action"] == "X"
    assert address["before"] == "42 Elm Road, Shelbyville" and address["reason"]["basic"] == "X"

    # A compound code resolved by the attribute's type in the CT IOD
    station = entries["(0008,1010)"]
    assert station["reason"]["basic"] == "X/Z/D" and station["action"] == "X" and station["result"] == "removed"
    assert "Type 3" in station["reason"]["text"]

    study = entries["(0020,000D)"]
    assert study["result"] == "uid-mapped" and study["action"] == "U"
    assert study["before"] == "1.2.826.0.1.3680043.8.498.1"
    assert study["after"].startswith("2.25.") and study["after"] != study["before"]

    removed = entries["(0012,0062)"]
    assert removed["keyword"] == "PatientIdentityRemoved" and removed["result"] == "added"
    assert removed["before"] is None and removed["after"] == "YES" and removed["reason"]["source"] == "method"
    codes = entries["(0012,0064)[0]>(0008,0100)"]
    assert codes["result"] == "added" and codes["after"] == "113100"

    modality = entries["(0008,0060)"]
    assert modality["result"] == "kept" and modality["reason"]["source"] == "not-in-table"
    assert modality["reason"]["text"] == "not in PS3.15 Table E.1-1: kept"

    meta = entries["(0002,0003)"]
    assert meta["result"] == "uid-mapped" and meta["reason"]["source"] == "file-meta" and meta["action"] is None


def test_a_conditional_type_says_whether_its_condition_holds():
    # Responsible Person: X, 2C (required of an animal); Patient's Sex Neutered: X/Z, 2C.
    ds = make_ct()
    ds.ResponsiblePerson = "Doe^Jane"
    ds.PatientSexNeutered = "ALTERED"
    ds.ResponsiblePersonRole = "OWNER"
    entries = by_path(explained(ds))
    assert entries["(0010,2297)"]["result"] == "removed" and entries["(0010,2297)"]["action"] == "X"
    role = entries["(0010,2298)"]  # 1C: only while the Responsible Person has a value
    assert role["result"] == "removed" and role["action"] == "X" and "(0010,2297)" in role["reason"]["text"]
    neutered = entries["(0010,2203)"]
    assert neutered["action"] == "X" and "no Patient Species" in neutered["reason"]["text"]
    ds.PatientSpeciesDescription = "Canis lupus familiaris"
    entries = by_path(explained(ds))
    person = entries["(0010,2297)"]
    assert person["result"] == "emptied" and person["action"] == "Z"
    assert "Type 2C" in person["reason"]["text"] and "the patient is one" in person["reason"]["text"]


def test_the_date_options_shift_or_keep_dates_and_say_which_option():
    shifted = by_path(explained(make_ct(), f"deidentify:{MODIFIED}"))
    date = shifted["(0008,0020)"]
    assert date["result"] == "shifted" and date["action"] == "C:dates"
    assert date["before"] == "20240131" and len(date["after"]) == 8 and date["after"] != "20240131"
    assert date["reason"]["basic"] == "Z" and date["reason"]["options"] == [MODIFIED]
    assert MODIFIED in date["reason"]["text"]
    assert shifted["(0008,0030)"]["result"] == "kept"  # times stay
    assert shifted["(0028,0303)"]["after"] == "MODIFIED"

    kept = by_path(explained(make_ct(), f"deidentify:{FULL}"))
    date = kept["(0008,0020)"]
    assert date["result"] == "kept" and date["action"] == "K" and date["after"] == "20240131"
    assert date["reason"]["options"] == [FULL] and date["reason"]["basic"] == "Z"


def test_a_value_a_cleaning_cannot_apply_to_says_the_basic_action_applied():
    ds = make_ct()
    ds.AcquisitionDateTime = "2024"  # a year alone cannot be shifted by days
    entry = by_path(explained(ds, f"deidentify:{MODIFIED}"))["(0008,002A)"]
    assert entry["result"] == "removed" and "could not be shifted" in entry["reason"]["text"]


def test_attributes_inside_sequences_are_explained_at_any_depth():
    entries = by_path(explained(nested_ct()))
    sequence = entries["(0040,9096)"]
    assert sequence["result"] == "kept" and sequence["before"] == "<SQ, 1 item>"
    name = entries["(0040,9096)[0]>(0040,A123)"]
    assert name["result"] == "replaced" and name["before"] == "Doe^Jane" and name["after"] == "ANONYMIZED"
    assert name["reason"]["row"] == "(0040,A123)" and name["reason"]["basic"] == "D"
    assert entries["(0040,9096)[0]>(0008,1155)"]["result"] == "uid-mapped"
    # X/Z/U* where the IOD's types are not known: U, its items' UIDs mapped
    references = entries["(0040,9096)[0]>(0008,1140)"]
    assert references["result"] == "uid-mapped" and references["action"] == "U"
    assert "not known" in references["reason"]["text"]
    deepest = entries["(0040,9096)[0]>(0008,1140)[0]>(0008,1155)"]
    assert deepest["result"] == "uid-mapped" and deepest["before"] == "1.2.826.0.1.3680043.8.498.77"
    assert entries["(0040,9096)[0]>(0008,1140)[0]>(0008,1150)"]["result"] == "kept"


def test_a_removed_sequence_takes_its_items_and_retain_uids_keeps_them():
    basic = by_path(explained(make_ct()))
    assert basic["(0008,1140)"]["result"] == "removed"
    inside = basic["(0008,1140)[0]>(0008,1155)"]
    assert inside["result"] == "removed" and inside["reason"]["source"] == "sequence"
    assert "(0008,1140)" in inside["reason"]["text"]

    kept = by_path(explained(make_ct(), "deidentify:RetainUIDsOption"))
    assert kept["(0008,1140)"]["result"] == "kept"
    assert kept["(0008,1140)"]["reason"]["options"] == ["RetainUIDsOption"]
    assert kept["(0008,1140)[0]>(0008,1155)"]["result"] == "kept"
    assert kept["(0020,000D)"]["result"] == "kept"


def test_observation_context_items_are_removed_and_the_others_matched_to_their_result():
    ds = make_ct()
    context = Dataset()
    context.RelationshipType = "HAS OBS CONTEXT"
    context.ValueType = "PNAME"
    context.PersonName = "Observer^Olga"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = "Doe^Johnathan seen, MRN0012345"
    ds.ContentSequence = Sequence([context, text])
    entries = by_path(explained(ds, "deidentify:CleanStructuredContentOption"))
    assert entries["(0040,A730)"]["result"] == "cleaned"
    assert entries["(0040,A730)"]["reason"]["options"] == ["CleanStructuredContentOption"]
    observer = entries["(0040,A730)[0]>(0040,A123)"]
    assert observer["result"] == "removed" and "HAS OBS CONTEXT" in observer["reason"]["text"]
    value = entries["(0040,A730)[1]>(0040,A160)"]  # the second item, first in the result
    assert value["result"] == "cleaned" and value["before"] == "Doe^Johnathan seen, MRN0012345"
    assert "MRN0012345" not in value["after"]
    assert entries["(0040,A730)[1]>(0040,A010)"]["after"] == "CONTAINS"


def private_ct() -> Dataset:
    ds = make_ct()
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x23, "DS", "1.5")  # safe: Table Speed
    ds.private_block(0x0019, "GEMS_ACQU_01").add_new(0x99, "LO", "Doe John")  # not listed
    return ds


def test_private_attributes_are_removed_unless_safe_and_the_reason_says_so():
    basic = by_path(explained(private_ct()))
    for path in ("(0019,0010)", "(0019,1023)", "(0019,1099)"):
        entry = basic[path]
        assert entry["keyword"] == "private" and entry["result"] == "removed", entry
        assert entry["reason"]["source"] == "private" and entry["reason"]["basic"] == "X"
    assert basic["(0019,1099)"]["before"] == "Doe John"

    safe = by_path(explained(private_ct(), "deidentify:RetainSafePrivateOption"))
    assert safe["(0019,1023)"]["result"] == "kept" and safe["(0019,1023)"]["after"] == "1.5"
    assert "E.3.10-1" in safe["(0019,1023)"]["reason"]["text"]
    assert safe["(0019,1023)"]["reason"]["options"] == ["RetainSafePrivateOption"]
    assert safe["(0019,0010)"]["result"] == "kept"  # the creator of a block that keeps an attribute
    assert safe["(0019,1099)"]["result"] == "removed" and "not in PS3.15 Table E.3.10-1" in \
        safe["(0019,1099)"]["reason"]["text"]


def test_the_patient_id_hash_is_a_reason_of_its_own():
    ds = make_ct()
    data = encode(ds)
    deid = deidentifier("deidentify:RetainPatientIDHashOption")
    chunks, outcome, record = deid.deidentify_recorded(data)
    entry = by_path(explain(read_instance(data), read_instance(joined(chunks)), record))["(0010,0020)"]
    assert entry["result"] == "replaced" and entry["action"] == "P"
    assert entry["after"] == outcome.patient_pseudonym and entry["before"] == "MRN0012345"
    assert entry["reason"]["source"] == "patient-id-hash"
    assert entry["reason"]["options"] == ["RetainPatientIDHashOption"]


def test_curves_and_overlays_name_their_repeating_group_rows():
    ds = make_ct()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60003000, "OW", b"\x00" * 32)
    ds.add_new(0x50000005, "US", 1)
    entries = by_path(explained(ds))
    assert entries["(6000,3000)"]["result"] == "removed" and entries["(6000,3000)"]["reason"]["row"] == "(60XX,3000)"
    plane = entries["(6000,0010)"]
    assert plane["result"] == "removed" and plane["reason"]["source"] == "repeating-group"
    assert entries["(5000,0005)"]["reason"]["row"] == "(50XX,XXXX)" and entries["(5000,0005)"]["result"] == "removed"


def test_pixel_data_and_long_values_are_never_dumped():
    ds = make_ct(rows=256)
    ds.PatientComments = "x" * 5000
    answer = explained(ds, "deidentify:RetainPatientCharacteristicsOption")
    entries = by_path(answer)
    pixels = entries["(7FE0,0010)"]
    assert pixels["before"] == "<OW, 131072 bytes>" and pixels["after"] == "<OW, 131072 bytes>"
    assert pixels["result"] == "kept"
    assert entries["(0002,0001)"]["before"] == "<OB, 2 bytes>"
    comments = entries["(0010,4000)"]["before"]
    assert len(comments) == MAX_DISPLAY and comments.endswith("…")
    for entry in answer["attributes"]:
        for value in (entry["before"], entry["after"]):
            assert value is None or len(value) <= MAX_DISPLAY, entry
    assert len(json.dumps(answer)) < 100_000  # 131,072 bytes of pixels are not in it


def test_display_strings():
    item = Dataset()
    item.add_new(0x00209165, "AT", [0x00100010, 0x00200013])  # Dimension Index Pointer
    item.add_new(0x00091010, "UN", b"\x01\x02\x03")
    assert display(item[0x00209165]) == "(0010,0010)\\(0020,0013)"
    assert display(item[0x00091010]) == "<UN, 3 bytes>"
    item.ImageComments = "line one\r\nline two"
    assert display(item[0x00204000]) == "line one  line two"
    assert display(None) is None


def test_the_number_of_entries_and_the_depth_are_bounded(monkeypatch):
    monkeypatch.setattr(explain_module, "MAX_ENTRIES", 10)
    answer = explained(make_ct())
    assert answer["truncated"] is True and len(answer["attributes"]) == 10
    monkeypatch.setattr(explain_module, "MAX_ENTRIES", 20000)
    monkeypatch.setattr(explain_module, "MAX_SEQUENCE_DEPTH", 1)  # the nested CT goes 2 deep
    with pytest.raises(NestingError):
        explained(nested_ct())


RULES = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
"""


@pytest.fixture
def service(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "site.yaml").write_text(textwrap.dedent(RULES))
    settings = Settings.from_configuration(
        {"Coercion": {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "l.sqlite")}},
        {"COERCION_SECRET": SECRET.decode()},
    )
    return CoercionService(settings)


def test_the_service_explains_a_preview_without_counting_or_linking(service):
    data = encode(private_ct())
    answer = service.preview_explained(data, rule_name="research")
    assert answer["rule"] == "research" and answer["uri"] == "deidentify:RetainPatientIDHashOption"
    assert answer["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    entries = by_path(answer)
    pseudonym = entries["(0010,0020)"]["after"]
    assert entries["(0010,0020)"]["result"] == "replaced" and pseudonym != "MRN0012345"
    assert entries["(0019,1099)"]["result"] == "removed"  # private attributes are read, to be shown
    assert service.stats() == {} and service.linkage(pseudonym) == []
    # the same file as the DICOM preview makes
    coerced, _ = service.preview(data, rule_name="research")
    assert str(read_instance(coerced).header.PatientID) == pseudonym

    by_uri = service.preview_explained(data, uri=f"deidentify:{MODIFIED}")
    assert by_uri["rule"] is None and by_uri["uri"] == f"deidentify:{MODIFIED}"
    assert by_path(by_uri)["(0008,0020)"]["result"] == "shifted"


def test_the_service_refuses_what_the_dicom_preview_refuses(service):
    data = encode(make_ct())
    with pytest.raises(LookupError):
        service.preview_explained(data, rule_name="nope")
    with pytest.raises(ValueError):
        service.preview_explained(data)
    with pytest.raises(ValueError):
        service.preview_explained(data, rule_name="research", uri="deidentify:")
    with pytest.raises(DicomError):
        service.preview_explained(b"not DICOM at all, only text" * 10, rule_name="research")
    assert service.stats() == {}


# -- the record against the output: every canary and option set ------------------------------
# What each action may show in the values (explain's results); "kept" only where the value had
# nothing to change, said by NOTHING_TO_CHANGE.
SHOWN = {
    "X": {"removed"},
    "Z": {"emptied"},
    "D": {"replaced"},
    "U": {"uid-mapped", "replaced"},
    "P": {"replaced"},
    "K": {"kept"},
    "C:dates": {"shifted"},
    "C:text": {"cleaned", "emptied", "replaced"},
    "C:structured": {"cleaned", "emptied", "replaced"},
    "C:graphics": {"cleaned", "emptied", "replaced"},
    None: {"added", "replaced", "kept", "removed", "uid-mapped"},  # what the de-identifier writes
}
CLEANINGS = {"C:text", "C:structured", "C:graphics"}


def nothing_to_change(entry) -> bool:
    """A value the action leaves as it is: empty, a time under the date shift, text a cleaning
    finds nothing in."""
    action, before = entry["action"], entry["before"]
    return (before in ("", "<SQ, 0 items>") or action in CLEANINGS
            or (action == "C:dates" and entry["vr"] == "TM"))


def check_record_against_output(data: bytes, uri: str) -> None:
    deid = deidentifier(uri)
    chunks, _, record = deid.deidentify_recorded(data)
    out = joined(chunks)
    assert out == deid.deidentify_bytes(data), "recording changes nothing in the output"
    answer = explain(read_instance(data), read_instance(out), record)
    assert not answer["truncated"]
    entries = by_path(answer)
    for path, entry in entries.items():
        where = (uri, path, entry["keyword"], entry["action"], entry["result"])
        assert entry["reason"]["source"] != explain_module.UNRECORDED, where
        shown = SHOWN[entry["action"]] | ({"kept"} if nothing_to_change(entry) else set())
        if entry["reason"]["source"] == "pixel-data":
            shown = shown | {"cleaned"}
        assert entry["result"] in shown, where
        if entry["result"] == "removed":
            assert entry["action"] == "X" or entry["reason"]["source"] == "file-meta", where
    for decision in record:  # nothing recorded of an attribute the instance does not have
        assert decision.path in entries or decision.path.endswith("]"), decision.path
        if decision.path.endswith("]"):  # an item removed whole: its attributes say so
            inside = [e for p, e in entries.items() if p.startswith(decision.path + ">")]
            assert inside and all(e["reason"] == decision.reason and e["result"] == "removed" for e in inside)


@pytest.mark.parametrize("option", [None, *tr.TABLE_OPTIONS])
def test_the_record_says_what_the_walk_did_to_every_table_row(option):
    # The canaries of test_table_rows: a CT carrying one attribute of each row of Table E.1-1.
    checked = 0
    for row in tr.DATASET_ROWS:
        if option is not None and option not in row["options"]:
            continue  # the row's outcome is the basic profile's: checked under None
        ds, tag, _, _ = tr._instance(row)
        if tag >> 16 == 0:
            continue  # command set attributes travel in DIMSE messages, not in files
        check_record_against_output(encode(ds), f"deidentify:{option or ''}")
        checked += 1
    assert checked


@pytest.mark.parametrize("name", [*tv.BUILT, *tv.PYDICOM_FILES])
def test_the_record_says_what_the_walk_did_to_every_sample(samples, name):
    data = samples[name].read_bytes()
    for uri in [*tv.URIS, "deidentify:RetainSafePrivateOption,RetainPatientCharacteristicsOption",
                "deidentify:RetainDeviceIdentityOption,RetainInstitutionIdentityOption"]:
        check_record_against_output(data, uri)


def test_a_record_that_is_full_stops_the_account_there(monkeypatch):
    monkeypatch.setattr(record_module, "MAX_DECISIONS", 5)
    answer = explained(make_ct())
    assert answer["truncated"] is True
    assert all(e["reason"]["source"] != explain_module.UNRECORDED for e in answer["attributes"])


def test_a_conditional_type_the_data_cannot_decide_says_it_counts_as_required():
    ds = make_ct()
    ds.ContentDate = "20240131"  # Type 2C in the General Image module ("if temporally related")
    entry = by_path(explained(ds))["(0008,0023)"]
    assert entry["action"] == "Z" and entry["reason"]["basic"] == "Z/D" and entry["result"] == "emptied"
    assert "Type 2C in the IOD" in entry["reason"]["text"] and "counted as required" in entry["reason"]["text"]
