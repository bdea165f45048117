"""Descriptor rules, structured content and graphics cleaning."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ComprehensiveSRStorage, GrayscaleSoftcopyPresentationStateStorage

from coercion import Keys
from coercion.engine.clean import Identifiers, person_name_values

from factory import SECRET, deidentifier, encode, make_ct


def run(ds, uri):
    return pydicom.dcmread(io.BytesIO(deidentifier(uri).deidentify_bytes(encode(ds))))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("CT Chest Doe follow-up", "CT Chest follow-up"),
        ("johnathan DOE knee", "knee"),
        ("Johnathan Doe, MRN0012345", ","),
        ("acc ACC778899 s S12345", "acc s"),
        ("born 15.03.1970 / 1970-03-15 / 03/15/1970 / 15 March 1970", "born / / /"),
        ("Saint Elsewhere Hospital chest", "chest"),
        ("call +1 (555) 123-4567 or 555-1234567", "call or"),
        ("mail dr.x@hospital.org now", "mail now"),
        ("ref 8812345 and 2 mm", "ref and 2 mm"),
        ("study Jan 31, 2024 and 3 Feb 2023", "study and"),
        ("Axial 1.25mm 120 kV", "Axial 1.25mm 120 kV"),
    ],
)
def test_descriptor_rules(text, expected):
    values = set()
    for v in ("Doe^Johnathan^Q", "Welby^Marcus"):
        values |= person_name_values(v)
    values |= {"MRN0012345", "ACC778899", "S12345", "Saint Elsewhere Hospital", "19700315"}
    from coercion.engine.clean import date_forms
    values |= set(date_forms("19700315"))
    assert Identifiers(values).clean(text) == expected


def test_single_letters_are_not_removed():
    assert Identifiers(person_name_values("Doe^J")).clean("J wave seen, Doe") == "J wave seen,"


def test_clean_descriptors_on_an_instance():
    out = run(make_ct(), "deidentify:CleanDescriptorsOption")
    assert out.StudyDescription == "CT Chest follow-up call"
    assert out.SeriesDescription == "Axial 1.25mm"
    assert out.ImageComments == "Seen by Dr on"
    assert out.ProtocolName == "Chest routine"
    assert out.PatientComments == "Allergic to contrast, call wife Jane at"


def _item(relationship, value_type, **values):
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    concept = Dataset()
    concept.CodeValue = "121008"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Person Observer Name"
    item.ConceptNameCodeSequence = Sequence([concept])
    for key, value in values.items():
        setattr(item, key, value)
    return item


def make_sr() -> Dataset:
    ds = make_ct()
    del ds.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    nested = _item("CONTAINS", "CONTAINER", ContinuityOfContent="SEPARATE")
    nested.ContentSequence = Sequence([
        _item("CONTAINS", "TEXT", TextValue="Doe nodule 5 mm, call 555-123-4567"),
        _item("CONTAINS", "PNAME", PersonName="Welby^Marcus"),
    ])
    ds.ContentSequence = Sequence([
        _item("HAS OBS CONTEXT", "PNAME", PersonName="Welby^Marcus"),
        _item("HAS OBS CONTEXT", "TEXT", TextValue="Subject MRN0012345"),
        _item("CONTAINS", "TEXT", TextValue="Findings for Johnathan Doe seen 2024-01-31: no change"),
        _item("CONTAINS", "DATE", Date="20240131"),
        _item("CONTAINS", "UIDREF", UID="1.2.826.0.1.3680043.8.498.1.1.1"),
        nested,
    ])
    return ds


def test_basic_profile_replaces_sr_content():
    # D on Content Sequence: the tree keeps its structure (Relationship Type, Value Type and
    # concept names are Type 1 in every item) with every value replaced; observation context goes.
    out = run(make_sr(), "deidentify:")
    items = out.ContentSequence
    assert [i.ValueType for i in items] == ["TEXT", "DATE", "UIDREF", "CONTAINER"]
    assert [i.RelationshipType for i in items] == ["CONTAINS"] * 4
    assert items[0].TextValue == "ANONYMIZED" and items[1].Date == "19000101"
    assert items[2].UID == Keys(SECRET).uid("1.2.826.0.1.3680043.8.498.1.1.1")
    nested = items[3].ContentSequence
    assert nested[0].TextValue == "ANONYMIZED" and nested[1].PersonName == "ANONYMIZED"
    assert items[0].ConceptNameCodeSequence[0].CodeValue == "121008"  # codes are terminology


def test_clean_structured_content():
    out = run(make_sr(), "deidentify:CleanStructuredContentOption")
    items = out.ContentSequence
    assert [i.ValueType for i in items] == ["TEXT", "DATE", "UIDREF", "CONTAINER"]  # context gone
    assert items[0].TextValue == "Findings for seen : no change"
    assert items[1].Date == "19000101"  # no date option: a dummy
    assert items[2].UID == Keys(SECRET).uid("1.2.826.0.1.3680043.8.498.1.1.1")
    nested = items[3].ContentSequence
    assert nested[0].TextValue == "nodule 5 mm, call"
    assert nested[1].PersonName == "ANONYMIZED"
    assert items[0].ConceptNameCodeSequence[0].CodeValue == "121008"  # codes are not text


def test_clean_structured_content_with_dates_options():
    out = run(make_sr(), "deidentify:CleanStructuredContentOption,RetainLongitudinalTemporalInformationFullDatesOption")
    assert out.ContentSequence[1].Date == "20240131"
    out = run(make_sr(), "deidentify:CleanStructuredContentOption,RetainLongitudinalTemporalInformationModifiedDatesOption")
    assert out.ContentSequence[1].Date == out.ContentDate != "20240131"


def make_presentation_state() -> Dataset:
    ds = make_sr()
    ds.SOPClassUID = GrayscaleSoftcopyPresentationStateStorage
    ds.Modality = "PR"
    del ds.ContentSequence
    text = Dataset()
    text.UnformattedTextValue = "Doe 15.03.1970 lesion"
    text.AnchorPoint = [10.0, 10.0]
    graphic = Dataset()
    graphic.GraphicType = "POLYLINE"
    graphic.GraphicData = [1.0, 1.0, 5.0, 5.0]
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    annotation.GraphicObjectSequence = Sequence([graphic])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    return ds


def test_clean_graphics():
    out = run(make_presentation_state(), "deidentify:")  # D: the annotation's values replaced
    annotation = out.GraphicAnnotationSequence[0]
    assert annotation.GraphicLayer == "LAYER1"  # Type 1, and names a layer of the instance
    assert annotation.TextObjectSequence[0].UnformattedTextValue == "ANONYMIZED"
    out = run(make_presentation_state(), "deidentify:CleanGraphicsOption")
    annotation = out.GraphicAnnotationSequence[0]
    assert annotation.TextObjectSequence[0].UnformattedTextValue == "lesion"
    assert annotation.GraphicObjectSequence[0].GraphicData == [1.0, 1.0, 5.0, 5.0]
    assert annotation.GraphicLayer == "LAYER1"
