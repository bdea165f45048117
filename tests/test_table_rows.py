"""Every row of Table E.1-1: the basic profile, and each option against the rows it changes.

Expectations are read from the project's table (the package's plugin/coercion/engine/tables),
not from the engine's resolved profile, so a wrong resolution fails here.
"""

from __future__ import annotations

import io
import json
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from coercion import Keys, Option

from factory import SECRET, deidentifier, encode, make_ct

TABLES = Path(__file__).parents[1] / "plugin" / "coercion" / "engine" / "tables"  # the package's
TABLE = json.loads((TABLES / "confidentiality-profile.json").read_text())
IOD_TYPES = json.loads((TABLES / "iod-attribute-types.json").read_text())
# File meta (group 0002) rows are tested on the file meta below, not as dataset attributes.
ROWS = [r for r in TABLE["rows"] if "X" not in r["tag"][1:] and not r["tag"].startswith("(0002")]
NAME = "Smith^Alice"
TEXT = "Smith scan 20240131 chest"
CLEAN_TEXT_OPTIONS = {
    "CleanDescriptorsOption", "RetainPatientCharacteristicsOption", "RetainDeviceIdentityOption"
}
SAMPLES = {
    "PN": NAME, "LO": TEXT, "LT": TEXT, "ST": TEXT, "UT": TEXT, "UC": TEXT, "SH": "Smith chest",
    "CS": "SMITH CHEST", "AE": "SMITH CHEST", "DA": "20240131", "DT": "20240131101500.5",
    "TM": "101500", "AS": "045Y", "DS": "12.5", "IS": "42", "US": 7, "SS": 7, "UL": 7, "SL": 7,
    "FL": 1.5, "FD": 1.5, "OB": b"\x01\x02", "OW": b"\x01\x02", "UN": b"\x01\x02", "OF": b"\x01\x02\x03\x04",
    "OD": b"\x01" * 8, "OL": b"\x01" * 4, "OV": b"\x01" * 8, "AT": 0x00100010, "UR": "http://smith.example/x",
    "SV": 7, "UV": 7,
}


def _tag(row) -> int:
    return int(row["tag"][1:5] + row["tag"][6:10], 16)


def _vr(tag: int) -> str | None:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr.split(" or ")[0]


def _instance(row) -> tuple[Dataset, int, str, object]:
    tag = _tag(row)
    vr = _vr(tag)
    ds = make_ct()
    ds.PatientName = NAME
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "T-D3000"
        item.CodingSchemeDesignator = "SRT"
        item.CodeMeaning = "Chest"
        value = Sequence([item])
    elif vr == "UI":
        value = f"1.2.826.0.1.3680043.8.498.77.{tag}"
    else:
        value = SAMPLES[vr]
    ds.add_new(tag, vr, value)
    return ds, tag, vr, value


def _run(row, uri):
    ds, tag, vr, value = _instance(row)
    if tag >> 16 == 0:  # command set attributes travel in DIMSE messages, not in files
        deidentifier(uri).deidentify_dataset(ds)
        return ds, tag, vr, value
    out = pydicom.dcmread(io.BytesIO(deidentifier(uri).deidentify_bytes(encode(ds))))
    return out, tag, vr, value


def _check_basic(action, out, tag, vr, value):
    present = tag in out
    elem = out[tag] if present else None
    if action == "X":
        assert not present
    elif action == "Z":
        assert present and (elem.value in ("", None, b"") or (vr == "SQ" and len(elem.value) == 0))
    elif action == "D":
        assert present and elem.value not in ("", None, b"")
        if vr not in ("SQ", "US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "SV", "UV", "AT"):
            assert elem.value != value
    elif action == "U":
        assert present and elem.value == Keys(SECRET).uid(value)
    elif action == "K":
        assert present and (elem.value == value or vr == "SQ")
    else:  # a compound: one of its alternatives, and never the original value
        alternatives = action.replace("*", "").split("/")
        if not present:
            assert "X" in alternatives
        elif vr != "SQ":
            assert elem.value != value or ("U" in alternatives and vr == "SQ")


def _ct_types() -> dict:
    """The type of each top-level attribute in the CT Image IOD, as the project's table has it."""
    types: dict = {}
    for module in IOD_TYPES["iods"][IOD_TYPES["sop_classes"][CTImageStorage]]:
        for keyword, value in IOD_TYPES["modules"][module].items():
            level = value[0] if isinstance(value, list) else value
            types[keyword] = min(level, types.get(keyword, 3))
    return types


CT_TYPES = _ct_types()
# The table counts 2C as Type 2; PS3.3 requires these of an animal only (C.7.1.1 Patient,
# C.7.2.2 Patient Study: "Required if the patient is an animal"), which the patient of these
# instances is not (no Patient Species Description or Code Sequence): for it they are Type 3.
ANIMAL_ONLY = {"PatientSexNeutered", "PatientBreedDescription", "PatientBreedCodeSequence",
               "BreedRegistrationSequence", "ResponsiblePerson", "ResponsibleOrganization"}
HUMAN_CT_TYPES = {k: v for k, v in CT_TYPES.items() if k not in ANIMAL_ONLY}
# PS3.15 E.1.1 note 1: what the IOD requires is not removed (a dummy for Type 1, empty for Type 2).
VALID_FOR_TYPE = {("X", 1): "D", ("X", 2): "Z", ("Z", 1): "D"}


def _expected(row) -> str:
    return VALID_FOR_TYPE.get((row["basic"], HUMAN_CT_TYPES.get(row["keyword"], 3)), row["basic"])


def test_the_iod_types_are_those_of_the_standard():
    # Spot checks against PS3.3: CT Image (Patient, General Study), GSPS (Presentation State
    # Identification, Graphic Annotation) and SR (Document Relationship, Content Item macros).
    assert CT_TYPES["PatientName"] == 2 and CT_TYPES["ResponsiblePerson"] == 2
    assert "InstitutionName" not in CT_TYPES and "ProtocolName" not in CT_TYPES
    modules = IOD_TYPES["modules"]
    assert modules["presentation-state-identification"]["PresentationCreationDate"] == 1
    annotation = modules["graphic-annotation"]["GraphicAnnotationSequence"]
    assert annotation[0] == 1 and annotation[1]["ReferencedImageSequence"] == 1
    assert annotation[1]["TextObjectSequence"][1]["UnformattedTextValue"] == 1
    content = modules["sr-document-content"]["ContentSequence"]
    assert content[1]["ContentSequence"] == [1, "^"] and content[1]["TextValue"] == 1


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['tag']}-{r['keyword']}")
def test_basic_profile_row(row):
    _check_row(None, row)


def _check_row(option: str | None, row) -> None:
    """The row's action under the basic profile (``option`` None) or under one option."""
    if option is None:
        out, tag, vr, value = _run(row, "deidentify:")
        _check_basic(_expected(row), out, tag, vr, value)
    else:
        _check_option(option, row)


OPTION_ROWS = [
    (option, row)
    for row in ROWS
    for option in row["options"]
    if option != "RetainSafePrivateOption"
]


@pytest.mark.parametrize(
    "option, row", OPTION_ROWS, ids=[f"{o}-{r['tag']}-{r['keyword']}" for o, r in OPTION_ROWS]
)
def test_option_row(option, row):
    _check_row(option, row)


def _check_option(option: str, row) -> None:
    out, tag, vr, value = _run(row, f"deidentify:{option}")
    action = row["options"][option]
    if action == "K":
        assert tag in out and (out[tag].value == value or vr == "SQ")
        if vr == "SQ":
            assert len(out[tag].value) == 1
        return
    assert action == "C"
    if option == "RetainLongitudinalTemporalInformationModifiedDatesOption":
        days = Keys(SECRET).date_shift_days("MRN0012345", "HOSPITAL_A")
        if vr == "DA":
            expected = (date(2024, 1, 31) + timedelta(days)).strftime("%Y%m%d")
            assert out[tag].value == expected
        elif vr == "DT":
            expected = (date(2024, 1, 31) + timedelta(days)).strftime("%Y%m%d") + "101500.5"
            assert out[tag].value == expected
        elif vr == "TM":
            assert out[tag].value == value
        else:  # a binary timestamp cannot be shifted: the basic action applies
            _check_basic(row["basic"], out, tag, vr, value)
    elif option in CLEAN_TEXT_OPTIONS:
        if vr == "SQ":
            assert tag in out and out[tag].value[0].CodeMeaning == "Chest"
        elif vr in ("LO", "LT", "ST", "UT", "UC", "SH", "CS", "AE"):
            cleaned = str(out[tag].value)
            assert "smith" not in cleaned.lower() and "20240131" not in cleaned
            assert "chest" in cleaned.lower()
        else:
            _check_basic(row["basic"], out, tag, vr, value)
    elif option in ("CleanStructuredContentOption", "CleanGraphicsOption"):
        assert vr == "SQ" and tag in out
        assert out[tag].value[0].CodeValue == "T-D3000"
    else:
        pytest.fail(f"unexpected C for {option}")


# The rows of an instance's dataset (not the command set's: those travel in DIMSE messages).
DATASET_ROWS = [r for r in ROWS if not r["tag"].startswith("(0000")]
TABLE_OPTIONS = sorted({o for r in ROWS for o in r["options"]})


def _conforms(option: str | None, row) -> bool:
    try:
        _check_row(option, row)
    except AssertionError:
        return False
    return True


def test_every_row_conforms_on_every_option_set():
    # The conformance count: under the basic profile and under each option of the table, how
    # many rows of Table E.1-1 the engine carries out as the table says (the IOD's types, with
    # their conditions, allowing only what E.1.1 note 1 asks). An option leaves the rows it
    # does not name to the basic profile, so their outcome is the basic one.
    basic = {row["tag"]: _conforms(None, row) for row in DATASET_ROWS}
    counts = {"basic": sum(basic.values())}
    for option in TABLE_OPTIONS:
        counts[option] = sum(_conforms(option, row) if option in row["options"] else basic[row["tag"]]
                             for row in DATASET_ROWS)
    assert len(DATASET_ROWS) == 614
    assert counts == dict.fromkeys(counts, len(DATASET_ROWS)), (
        counts, [tag for tag, ok in basic.items() if not ok])


def test_every_option_of_the_table_is_a_known_option():
    names = {o.value for o in Option}
    assert {o for r in TABLE["rows"] for o in r["options"]} <= names


def test_table_records_the_edition_and_source():
    assert TABLE["edition"] and "Table E.1-1" in TABLE["table"]
    assert len(TABLE["rows"]) + 1 == 621  # every row, plus the private attribute rule


REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "ps3.15-table-e1-1.json"


@pytest.mark.skipif(not REFERENCE.exists(), reason="the reference data is not beside the checkout")
def test_table_matches_the_reference_it_was_generated_from():
    columns = {
        "rtnSafePrivOpt": "RetainSafePrivateOption", "rtnUIDsOpt": "RetainUIDsOption",
        "rtnDevIdOpt": "RetainDeviceIdentityOption", "rtnInstIdOpt": "RetainInstitutionIdentityOption",
        "rtnPatCharsOpt": "RetainPatientCharacteristicsOption",
        "rtnLongFullDatesOpt": "RetainLongitudinalTemporalInformationFullDatesOption",
        "rtnLongModifDatesOpt": "RetainLongitudinalTemporalInformationModifiedDatesOption",
        "cleanDescOpt": "CleanDescriptorsOption", "cleanStructContOpt": "CleanStructuredContentOption",
        "cleanGraphOpt": "CleanGraphicsOption",
    }
    ours = {r["tag"]: r for r in TABLE["rows"]}
    for ref in json.loads(REFERENCE.read_text()):
        if ref["tag"].startswith("(GGGG"):
            row = TABLE["private"]
        else:
            row = ours[ref["tag"]]
        assert row["basic"] == ref["basicProfile"], ref["tag"]
        assert row["options"] == {columns[c]: ref[c] for c in columns if c in ref}, ref["tag"]


@pytest.mark.parametrize("uri, retained", [("deidentify:", False), ("deidentify:RetainUIDsOption", True)])
def test_file_meta_follows_the_dataset(uri, retained):
    ds = make_ct()
    original = ds.SOPInstanceUID
    out = pydicom.dcmread(io.BytesIO(deidentifier(uri).deidentify_bytes(encode(ds))))
    expected = original if retained else Keys(SECRET).uid(original)
    assert out.SOPInstanceUID == expected
    assert out.file_meta.MediaStorageSOPInstanceUID == expected
    assert out.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_the_tables_keep_which_types_are_conditional_and_the_engine_knows_them():
    # The generator keeps 1C and 2C apart from 1 and 2 (the "conditional" section); the
    # conditions the engine decides from the data name attributes that are conditional
    # wherever a module types them.
    from pydicom.datadict import keyword_for_tag

    from coercion.engine.profile import ANIMAL_ONLY, VALUE_DEPENDENT, load_tables

    conditional = IOD_TYPES["conditional"]
    assert "ResponsiblePerson" in conditional["patient"] and "PatientName" not in conditional["patient"]
    assert conditional["ct-series"] == ["ReferencedPerformedProcedureStepSequence"]
    decided = {keyword_for_tag(tag) for tag in ANIMAL_ONLY | set(VALUE_DEPENDENT)}
    typed_somewhere = 0
    for module, tree in IOD_TYPES["modules"].items():
        for keyword in decided & set(tree):
            typed_somewhere += 1
            assert keyword in conditional.get(module, []), (module, keyword)
    assert typed_somewhere >= 3  # Responsible Person, Responsible Organization, Patient's Sex Neutered
    ct = load_tables().item_types(CTImageStorage, animal=True)
    assert 0x00080023 in ct.conditional and 0x00100010 not in ct.conditional  # Content Date 2C; Patient Name 2
    human = load_tables().item_types(CTImageStorage, animal=False)
    assert 0x00102297 not in human.required and ct.required[0x00102297] == 2
