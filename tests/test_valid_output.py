"""What comes out stays valid (issue 10, section 5), and keeps nothing that identifies.

PS3.15 E.1.1 (item 2, note 1) makes it the de-identifier's responsibility that protecting an
attribute does not break the IOD: dummy values for the Type 1 attributes it protects. Every
input here (pydicom's bundled files, and a presentation state and a structured report written
with highdicom, full of names, IDs, dates, free text and UIDs in the places the issue names) is
checked with dciodvfy (David Clunie's validator, Debian package dicom3tools) before and after
de-identification under several URIs: the output may have no error line the input did not
have. Error lines are compared with their values left out (a UID or a value dciodvfy quotes
changes with de-identification; the error does not). Warnings are not compared: dciodvfy warns
about dubious but valid values, attributes outside the IOD and retired ones, none of which
make an instance invalid.

The tests that look at values (structure kept, options kept, nothing identifying left) do not
need dciodvfy; those that run it are skipped, saying why, where it is not installed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pydicom
import pytest
from coercion import DeidentificationError, Keys
from factory import SECRET, deidentifier
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy is not installed (Debian package dicom3tools; plugin/scripts/test.sh installs it)")

TABLES = Path(__file__).parents[1] / "plugin" / "coercion" / "engine" / "tables"  # the package's
TABLE = json.loads((TABLES / "confidentiality-profile.json").read_text())
ROWS = {int(r["tag"][1:5] + r["tag"][6:10], 16): r for r in TABLE["rows"] if "X" not in r["tag"][1:]}

# The identifying values written into the built files.
PATIENT_NAME = "Doe^Johnathan"
PATIENT_ID = "MRN0012345"
ISSUER = "HOSPITAL_A"
REFERRING = "Welby^Marcus"
READER = "Reader^Rita"
INSTITUTION = "Saint Elsewhere Hospital"
STUDY_DATE = "20240131"
PRESENTATION_DATE = "20240201"
ACCESSION = "ACC778899"
STUDY_ID = "S12345"
FREE_TEXT = "Frobnicate"  # a word that no cleaning removes: it shows where content is kept, cleaned
PHI_TEXT = f"Doe Johnathan {PATIENT_ID} seen 2024-01-31 by Welby, {FREE_TEXT}"
ROOT = "1.2.826.0.1.3680043.8.498.4242."
STUDY_UID = ROOT + "1"

MODIFIED = "RetainLongitudinalTemporalInformationModifiedDatesOption"
FULL = "RetainLongitudinalTemporalInformationFullDatesOption"
URIS = [
    "deidentify:",
    "deidentify:CleanStructuredContentOption",
    "deidentify:CleanGraphicsOption",
    "deidentify:CleanDescriptorsOption",
    f"deidentify:{MODIFIED}",
    "deidentify:RetainUIDsOption",
    (f"deidentify:CleanStructuredContentOption,CleanGraphicsOption,CleanDescriptorsOption,{FULL},"
     "RetainPatientIDHashOption"),
]
# pydicom's bundled files, as they are: an MR, two SRs, an RT plan, a segmentation (functional
# groups with source image references), an ECG waveform and an MR with overlays.
PYDICOM_FILES = ["MR_small.dcm", "test-SR.dcm", "reportsi.dcm", "rtplan.dcm", "liver_1frame.dcm",
                 "waveform_ecg.dcm", "examples_overlay.dcm"]
# The CT's patient with a responsible party (2C, required of an animal), as a human and as a dog.
BUILT = ["ct", "gsps", "sr", "ct-responsible", "ct-animal"]


def options(uri: str) -> set[str]:
    return {o for o in uri.partition(":")[2].split(",") if o}


# -- the built files ---------------------------------------------------------------------------

def _ct(number: int) -> Dataset:
    """pydicom's CT_small as a slice of our patient's study, identifying data everywhere."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = ISSUER
    ds.PatientBirthDate = "19700315"
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, STUDY_DATE)
    ds.AccessionNumber = ACCESSION
    ds.ReferringPhysicianName = REFERRING
    ds.OperatorsName = "Tech^Terry"
    ds.StudyID = STUDY_ID
    ds.InstitutionName = INSTITUTION
    ds.StudyDescription = f"CT chest {FREE_TEXT} Doe 2024-01-31"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = ROOT + "1.1"
    ds.FrameOfReferenceUID = ROOT + "1.9"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}1.1.{number}"
    ds.InstanceNumber = number
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = f"{ROOT}1.1.{3 - number}"
    ds.ReferencedImageSequence = Sequence([ref])
    return ds


def _responsible(number: int, animal: bool) -> Dataset:
    """A CT slice whose patient has a Responsible Person and Organization (X in Table E.1-1;
    Type 2C in the Patient Module, required if the patient is an animal) and a Sex Neutered
    (X/Z; 2C in Patient Study); ``animal``: a dog, with its species and breed (1C and 2C)."""
    ds = _ct(number)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}1.1.{number}"
    ds.ResponsiblePerson = "Roe^Rosalind"
    ds.ResponsiblePersonRole = "OWNER"
    ds.ResponsibleOrganization = "Happy Paws Veterinary Clinic"
    ds.PatientSexNeutered = "ALTERED"
    if animal:
        ds.PatientSpeciesDescription = "Canis lupus familiaris"
        ds.PatientBreedDescription = "Beagle"
        ds.PatientBreedCodeSequence = Sequence()
        ds.BreedRegistrationSequence = Sequence()
    return ds


def _gsps(cts: list[Dataset]) -> Dataset:
    """A Grayscale Softcopy Presentation State on two slices, annotating the first only (so
    the annotation must say which image it is on)."""
    import numpy as np
    from highdicom import pr

    layer = pr.GraphicLayer(layer_name="LAYER1", order=1, description="Findings")
    annotation = pr.GraphicAnnotation(
        referenced_images=[cts[0]], graphic_layer=layer,
        text_objects=[pr.TextObject(text_value=PHI_TEXT, units="PIXEL", bounding_box=(10, 10, 100, 30))],
        graphic_objects=[pr.GraphicObject(graphic_type="POLYLINE", units="PIXEL",
                                          graphic_data=np.array([[1.0, 1.0], [20.0, 20.0]]))],
    )
    ds = pr.GrayscaleSoftcopyPresentationState(
        referenced_images=cts, series_instance_uid=ROOT + "2", series_number=2,
        sop_instance_uid=ROOT + "2.1", instance_number=1, manufacturer="ACME",
        manufacturer_model_name="Viewer", software_versions="1.0", device_serial_number="SN-4711-XYZ",
        content_label="ANNOTATION", content_description="Findings", graphic_annotations=[annotation],
        graphic_layers=[layer], institution_name=INSTITUTION, content_creator_name=READER,
    )
    ds.PresentationCreationDate = PRESENTATION_DATE
    ds.PresentationCreationTime = "120000"
    ds.SeriesDate = ds.ContentDate = PRESENTATION_DATE
    return ds


def _sr(cts: list[Dataset]) -> Dataset:
    """A verified Comprehensive SR: observer context, text, a date, a name, a UID reference
    and an image reference in its content tree."""
    from highdicom import sr
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    contains = sr.RelationshipTypeValues.CONTAINS
    root = sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    observer = sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=sr.PersonObserverIdentifyingAttributes(
            name=READER, organization_name=INSTITUTION))
    items = list(sr.ObservationContext(observer_person_context=observer))
    items += [
        sr.TextContentItem(name=codes.DCM.Finding, value=PHI_TEXT, relationship_type=contains),
        sr.DateContentItem(name=CodedConcept("111060", "DCM", "Study Date"), value=STUDY_DATE,
                           relationship_type=contains),
        sr.PnameContentItem(name=CodedConcept("121008", "DCM", "Person Observer Name"), value=REFERRING,
                            relationship_type=contains),
        sr.UIDRefContentItem(name=CodedConcept("110180", "DCM", "Study Instance UID"), value=STUDY_UID,
                             relationship_type=contains),
        sr.ImageContentItem(name=CodedConcept("260753009", "SCT", "Source"), relationship_type=contains,
                            referenced_sop_class_uid=cts[0].SOPClassUID,
                            referenced_sop_instance_uid=cts[0].SOPInstanceUID),
    ]
    root.ContentSequence = items
    ds = sr.ComprehensiveSR(
        evidence=[cts[0]], content=root, series_instance_uid=ROOT + "3", series_number=3,
        sop_instance_uid=ROOT + "3.1", instance_number=1, manufacturer="ACME", institution_name=INSTITUTION,
        is_complete=True, is_final=True, is_verified=True, verifying_observer_name=READER,
        verifying_organization=INSTITUTION,
    )
    ds.ContentDate = ds.SeriesDate = STUDY_DATE
    ds.VerifyingObserverSequence[0].VerificationDateTime = STUDY_DATE + "120000"
    step = Dataset()  # X/Z/D, Type 2 in SR Document General: emptied
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
    step.ReferencedSOPInstanceUID = ROOT + "9"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([step])
    return ds


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("highdicom", reason="highdicom (the test extra) writes the presentation state and SR")
    folder = tmp_path_factory.mktemp("valid-in")
    cts = [_ct(1), _ct(2)]
    built = {"ct": cts[0], "gsps": _gsps(cts), "sr": _sr(cts),
             "ct-responsible": _responsible(3, animal=False), "ct-animal": _responsible(4, animal=True)}
    paths = {}
    for name, ds in built.items():
        paths[name] = folder / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    for name in PYDICOM_FILES:
        paths[name] = Path(get_testdata_file(name))
    return paths


def deidentified(samples, name: str, uri: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.out.dcm"
    deidentifier(uri).deidentify_file(samples[name], out)
    return out


# -- dciodvfy ------------------------------------------------------------------------------------

def _normalised(line: str) -> str:
    line = re.sub(r" = <.*", "", line)  # the value quoted
    line = re.sub(r"<[\d.]+>", "<uid>", line)
    return re.sub(r"(UID )[\d.]+", r"\1<uid>", line)


def dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return {_normalised(line) for line in lines if line.startswith("Error")}


@cache
def input_errors(path: Path) -> frozenset:
    return frozenset(dciodvfy_errors(path))


@needs_dciodvfy
@pytest.mark.parametrize("uri", URIS)
@pytest.mark.parametrize("name", BUILT + PYDICOM_FILES)
def test_no_new_dciodvfy_error(samples, name, uri, tmp_path):
    out = deidentified(samples, name, uri, tmp_path)
    new = dciodvfy_errors(out) - input_errors(samples[name])
    assert not new, "\n".join(sorted(new))


@needs_dciodvfy
def test_dciodvfy_sees_what_an_empty_dummy_item_breaks(samples, tmp_path):
    # What a D on a sequence wrote before: one empty item. The check above must catch that.
    ds = pydicom.dcmread(samples["gsps"])
    ds.GraphicAnnotationSequence = Sequence([Dataset()])
    del ds.PresentationCreationDate
    ds.save_as(tmp_path / "broken.dcm")
    new = dciodvfy_errors(tmp_path / "broken.dcm") - input_errors(samples["gsps"])
    assert any("GraphicLayer" in line for line in new) and any("PresentationCreationDate" in line for line in new)


# -- nothing identifying survives ------------------------------------------------------------------

def _name_parts(value) -> set[str]:
    return {p for p in re.split(r"[\^ =]+", str(value)) if len(p) >= 3}


def identifying_values(ds: Dataset, uri: str) -> dict[str, set[str]]:
    """What the table protects under ``uri``, from anywhere in ``ds``: person names (their
    parts), the text and IDs, dates and UIDs of the attributes it removes or replaces; values
    that an attribute the table does not list also holds are left out (those are kept)."""
    opts = options(uri)
    found: dict[str, set[str]] = {"names": set(), "text": set(), "dates": set(), "uids": set()}
    unlisted: set[str] = set()

    def visit(d: Dataset) -> None:
        for elem in d:
            if elem.tag.is_private:
                continue
            if elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
                continue
            values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value]) if v not in (None, "")]
            if elem.VR == "PN":
                for v in values:
                    found["names"] |= _name_parts(v)
                continue
            row = ROWS.get(int(elem.tag))
            if row is None:
                unlisted.update(values)
                continue
            asked = {row["options"].get(o) for o in opts}
            if "K" in asked or "C" in asked:
                continue  # kept, or cleaned in place: names and IDs are still checked
            if elem.VR == "UI":
                found["uids"].update(v for v in values if not v.startswith("1.2.840.10008."))
            elif elem.VR in ("DA", "DT"):
                found["dates"].update(v for v in values if len(v) >= 8)
            elif elem.VR in ("LO", "SH", "ST", "LT", "UT", "UC") and elem.tag != 0x00120063:
                found["text"].update(v for v in values if len(v) >= 6)

    visit(ds)
    # A value that an attribute the table does not list holds too is kept with that attribute.
    return {kind: values - unlisted for kind, values in found.items()}


def _as_word(value: str) -> str:
    """A regular expression for ``value`` as a whole word (an institution "TOSHIBA" is not in
    the manufacturer "TOSHIBA_MEC")."""
    return rf"(?<![A-Za-z0-9_]){re.escape(value)}(?![A-Za-z0-9_])"


def _uids(ds: Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.VR == "UI" and e.value}


def _shift(ds: Dataset) -> int:
    keys = Keys(SECRET)
    if ds.get("PatientID"):
        return keys.date_shift_days(str(ds.PatientID), str(ds.get("IssuerOfPatientID", "")))
    return keys.date_shift_days("StudyInstanceUID:" + str(ds.get("StudyInstanceUID", "")))


def _shifted(value: str, days: int) -> str:
    day = date(int(value[:4]), int(value[4:6]), int(value[6:8])) + timedelta(days)
    return day.strftime("%Y%m%d") + value[8:]


@pytest.mark.parametrize("uri", URIS)
@pytest.mark.parametrize("name", BUILT + PYDICOM_FILES)
def test_no_identifying_value_survives(samples, name, uri, tmp_path):
    source = pydicom.dcmread(samples[name])
    out = deidentified(samples, name, uri, tmp_path).read_bytes()
    text = out.decode("latin-1")
    protected = identifying_values(source, uri)
    if name in BUILT:
        assert protected["names"] >= {"Doe", "Johnathan"} and PATIENT_ID in protected["text"]
    for part in protected["names"]:
        assert not re.search(_as_word(part), text), f"name part {part!r}"
    for value in protected["text"]:
        assert not re.search(_as_word(value), text), f"text {value!r}"
    opts = options(uri)
    if "RetainUIDsOption" not in opts:
        for value in protected["uids"]:
            assert value.encode() not in out, f"UID {value!r}"
    if FULL not in opts:
        dates = protected["dates"]
        # A shifted date may land on another original one: those are not leaks.
        images = {_shifted(d, _shift(source))[:8] for d in dates if d[:8].isdigit()} if MODIFIED in opts else set()
        kept_uids = _uids(source) if "RetainUIDsOption" in opts else set()
        for value in dates:
            if value[:8] not in images and not any(value in uid for uid in kept_uids):  # UIDs embed dates
                assert value.encode() not in out, f"date {value!r}"
    if name in BUILT:
        for value in (PATIENT_ID, ACCESSION, STUDY_ID):
            assert value.encode() not in out
        # The free text is in the study description (copied into the GSPS and SR) and in the
        # annotation or the content tree: it stays, cleaned, only where an option cleans it.
        cleaning = {"CleanDescriptorsOption"} if FREE_TEXT in str(source.get("StudyDescription", "")) else set()
        cleaning |= {"gsps": {"CleanGraphicsOption"}, "sr": {"CleanStructuredContentOption"}}.get(name, set())
        assert (FREE_TEXT.encode() in out) == bool(cleaning & opts), "free text kept only where cleaned"


# -- the structure is kept, the options keep what they promise ----------------------------------

def _expected_date(source_date: str, uri: str, source: Dataset, dummy: str) -> str:
    opts = options(uri)
    if FULL in opts:
        return source_date
    if MODIFIED in opts:
        return _shifted(source_date, _shift(source))
    return dummy


def _expected_uid(original: str, uri: str, tag: int = 0x00081155) -> str:
    """What the table does to a UID: Referenced SOP Instance UID is kept by RetainUIDsOption,
    UID (0040,A124) of an SR UIDREF item is not (the table gives it no K)."""
    kept = ROWS[tag]["options"].get("RetainUIDsOption") == "K" and "RetainUIDsOption" in options(uri)
    return original if kept else Keys(SECRET).uid(original)


@pytest.mark.parametrize("uri", URIS)
def test_presentation_state_keeps_its_annotations(samples, uri, tmp_path):
    source = pydicom.dcmread(samples["gsps"])
    out = pydicom.dcmread(deidentified(samples, "gsps", uri, tmp_path))
    # Presentation Creation Date/Time: Type 1, X in the table: a dummy, or what a date option says.
    assert out.PresentationCreationDate == _expected_date(PRESENTATION_DATE, uri, source, "19000101")
    assert out.PresentationCreationTime == ("120000" if options(uri) & {FULL, MODIFIED} else "000000")
    assert out.ContentCreatorName == ""  # Type 2: emptied, not removed
    annotation = out.GraphicAnnotationSequence[0]
    assert annotation.GraphicLayer == out.GraphicLayerSequence[0].GraphicLayer == "LAYER1"
    reference = annotation.ReferencedImageSequence[0]
    assert reference.ReferencedSOPClassUID == source.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedSOPClassUID
    assert reference.ReferencedSOPInstanceUID == _expected_uid(ROOT + "1.1.1", uri)
    series = out.ReferencedSeriesSequence[0]
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence] == [
        _expected_uid(ROOT + "1.1.1", uri), _expected_uid(ROOT + "1.1.2", uri)]
    text = str(annotation.TextObjectSequence[0].UnformattedTextValue)
    if "CleanGraphicsOption" in options(uri):
        assert FREE_TEXT in text and "Doe" not in text and PATIENT_ID not in text and "2024" not in text
    else:
        assert text == "ANONYMIZED"
    assert annotation.GraphicObjectSequence[0].GraphicData == [1.0, 1.0, 20.0, 20.0]


def _content_items(items):
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


@pytest.mark.parametrize("uri", URIS)
def test_structured_report_keeps_its_content_tree(samples, uri, tmp_path):
    source = pydicom.dcmread(samples["sr"])
    out = pydicom.dcmread(deidentified(samples, "sr", uri, tmp_path))
    items = list(_content_items(out.ContentSequence))
    assert items and all(i.RelationshipType for i in items)  # Type 1 in every content item
    assert "HAS OBS CONTEXT" not in {i.RelationshipType for i in items}  # who observed goes
    by_type = {i.ValueType: i for i in items}
    text = str(by_type["TEXT"].TextValue)
    if "CleanStructuredContentOption" in options(uri):
        assert FREE_TEXT in text and "Doe" not in text and PATIENT_ID not in text
    else:
        assert text == "ANONYMIZED"
    assert by_type["DATE"].Date == _expected_date(STUDY_DATE, uri, source, "19000101")
    assert by_type["PNAME"].PersonName == "ANONYMIZED"
    assert by_type["UIDREF"].UID == _expected_uid(STUDY_UID, uri, 0x0040A124)
    image = by_type["IMAGE"].ReferencedSOPSequence[0]
    assert image.ReferencedSOPInstanceUID == _expected_uid(ROOT + "1.1.1", uri)
    assert image.ReferencedSOPClassUID == pydicom.uid.CTImageStorage
    assert by_type["TEXT"].ConceptNameCodeSequence[0].CodeMeaning == "Finding"  # codes are kept
    verifying = out.VerifyingObserverSequence[0]  # D: the item kept, its values replaced
    assert verifying.VerifyingObserverName == "ANONYMIZED" and verifying.VerifyingOrganization == "ANONYMIZED"
    assert verifying.VerificationDateTime == _expected_date(STUDY_DATE + "120000", uri, source, "19000101000000")
    assert out.ContentDate == _expected_date(STUDY_DATE, uri, source, "19000101")  # Type 1: Z/D -> D
    evidence = out.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == image.ReferencedSOPInstanceUID
    if "RetainUIDsOption" in options(uri):
        assert out.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == ROOT + "9"
    else:
        assert len(out.ReferencedPerformedProcedureStepSequence) == 0  # X/Z/D on a Type 2: Z


@pytest.mark.parametrize("uri", URIS)
def test_a_responsible_party_stays_only_for_an_animal(samples, uri, tmp_path):
    # 2C attributes follow their condition: removed (X) for a human, emptied (Type 2) for an animal.
    human = pydicom.dcmread(deidentified(samples, "ct-responsible", uri, tmp_path))
    assert "ResponsiblePerson" not in human and "ResponsibleOrganization" not in human
    animal = pydicom.dcmread(deidentified(samples, "ct-animal", uri, tmp_path))
    assert animal.ResponsiblePerson == "" and animal.ResponsibleOrganization == ""
    assert animal.PatientSpeciesDescription == "Canis lupus familiaris"


def test_an_identifying_code_sequence_under_d_loses_its_codes():
    # Person Identification Code Sequence (D): its codes name a person, they are replaced; the
    # codes of sequences nested in a D sequence (concept names, units) are terminology and stay
    # (test_structured_report_keeps_its_content_tree).
    ds = _ct(1)
    code = Dataset()
    code.CodeValue = "WELBY42"
    code.CodingSchemeDesignator = "99HOSPSTAFF"
    code.CodeMeaning = "Dr Marcus Welby"
    mapping = Dataset()
    mapping.PersonIdentificationCodeSequence = Sequence([code])
    ds.add_new(0x00409096, "SQ", Sequence([mapping]))  # a sequence the table does not list
    out = deidentifier().deidentify_bytes(_encoded(ds))
    for value in ("WELBY42", "99HOSPSTAFF", "Welby"):
        assert value.encode() not in out
    item = pydicom.dcmread(io.BytesIO(out))[0x00409096].value[0].PersonIdentificationCodeSequence[0]
    assert item.CodeValue == item.CodingSchemeDesignator == item.CodeMeaning == "ANONYMIZED"


def _encoded(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# -- DICOMDIR ------------------------------------------------------------------------------------

FILESET = Path(get_testdata_file("DICOMDIR")).parent  # pydicom's file-set: DICOMDIR and three patients


def _dicomdir_phi() -> dict[str, set[str]]:
    ds = pydicom.dcmread(FILESET / "DICOMDIR")
    phi: dict[str, set[str]] = {"names": set(), "values": set()}
    for record in ds.DirectoryRecordSequence:
        for elem in record:
            if elem.VR == "PN" and elem.value:
                phi["names"] |= _name_parts(elem.value)
            elif elem.keyword in ("PatientID", "StudyDate", "StudyID", "AccessionNumber", "StudyDescription",
                                  "StudyInstanceUID", "SeriesInstanceUID", "ReferencedSOPInstanceUIDInFile") \
                    and elem.value and len(str(elem.value)) >= 6:
                phi["values"].add(str(elem.value))
    phi["values"].add(str(ds.file_meta.MediaStorageSOPInstanceUID))
    return phi


def test_the_engine_refuses_a_dicomdir(tmp_path):
    deid = deidentifier()
    data = (FILESET / "DICOMDIR").read_bytes()
    phi = _dicomdir_phi()
    with pytest.raises(DeidentificationError, match="DICOMDIR") as refused:
        deid.deidentify_bytes(data)
    message = str(refused.value)
    assert not any(p in message for p in phi["names"] | phi["values"])
    with pytest.raises(DeidentificationError, match="DICOMDIR"):
        deid.deidentify_file(FILESET / "DICOMDIR", tmp_path / "DICOMDIR")
    assert not (tmp_path / "DICOMDIR").exists() and not list(tmp_path.iterdir())
    ds = pydicom.dcmread(FILESET / "DICOMDIR")
    with pytest.raises(DeidentificationError, match="DICOMDIR"):
        deid.deidentify_dataset(ds)
    del ds.file_meta  # a directory's records are recognised without file meta too
    with pytest.raises(DeidentificationError, match="DICOMDIR"):
        deid.deidentify_dataset(ds)


def cli(*args):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COERCION_")}
    return subprocess.run([sys.executable, "-m", "coercion.cli", *map(str, args)], capture_output=True,
                          text=True, env=environment, check=False)


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "site.key"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def fileset(tmp_path) -> Path:
    root = tmp_path / "cd"
    root.mkdir()
    shutil.copy(FILESET / "DICOMDIR", root / "DICOMDIR")
    for patient in ("77654033", "98892001", "98892003"):
        shutil.copytree(FILESET / patient, root / patient)
    return root


def test_the_cli_rebuilds_a_dicomdir_from_the_deidentified_files(fileset, secret_file, tmp_path):
    out = tmp_path / "out"
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, fileset, "--out", out, "-j", "2")
    assert result.returncode == 0, result.stderr
    assert "1 DICOMDIR rebuilt" in result.stderr.splitlines()[-1]
    original = FileSet(fileset / "DICOMDIR")
    rebuilt = FileSet(out / "DICOMDIR")
    assert len(rebuilt) == len(original) == 31
    # Every record points at a de-identified file where the output has it (the input's File IDs).
    expected = {out / Path(i.path).relative_to(fileset) for i in original}
    assert {Path(i.path) for i in rebuilt} == expected
    for instance in rebuilt:
        ds = pydicom.dcmread(instance.path, stop_before_pixels=True)
        assert instance.SOPInstanceUID == ds.SOPInstanceUID and ds.PatientIdentityRemoved == "YES"
    data = (out / "DICOMDIR").read_bytes()
    assert data != (fileset / "DICOMDIR").read_bytes()  # never a copy
    phi = _dicomdir_phi()
    text = data.decode("latin-1")
    for part in phi["names"]:
        assert not re.search(_as_word(part), text), part
    file_ids = {part for i in original for part in Path(i.path).relative_to(fileset).parts}
    for value in phi["values"] - file_ids:  # the output keeps the input's file names (here: patient IDs)
        assert value.encode() not in data, value
    assert not list(out.glob(".coercion-*"))  # no staging left behind
    cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, fileset, "--out", tmp_path / "again")
    assert (tmp_path / "again" / "DICOMDIR").read_bytes() == data  # runs are identical


@needs_dciodvfy
@pytest.mark.parametrize("uri", ["deidentify:", f"deidentify:{MODIFIED},RetainPatientIDHashOption"])
def test_the_rebuilt_dicomdir_is_valid(fileset, secret_file, tmp_path, uri):
    out = tmp_path / "out"
    assert cli("deidentify", "--uri", uri, "--secret-file", secret_file, fileset, "--out", out).returncode == 0
    new = dciodvfy_errors(out / "DICOMDIR") - input_errors(fileset / "DICOMDIR")
    assert not new, "\n".join(sorted(new))


def _fileset_with_lowercase_file_ids(root: Path) -> Path:
    """A file-set whose File IDs are lower case (not valid File IDs: PS3.10 8.5)."""
    root.mkdir()
    staged = FileSet()
    for number in (1, 2):
        staged.add(_ct(number))
    staged.write(root)
    dicomdir = pydicom.dcmread(root / "DICOMDIR")
    for record in dicomdir.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            record.ReferencedFileID = [part.lower() for part in record.ReferencedFileID]
    dicomdir.save_as(root / "DICOMDIR")  # the same lengths: the records' offsets still hold
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))
    return root


def test_a_dicomdir_that_cannot_be_rebuilt_is_left_out_and_named(secret_file, tmp_path):
    root = _fileset_with_lowercase_file_ids(tmp_path / "lower")
    out = tmp_path / "out"
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, root, "--out", out)
    assert result.returncode == 1
    line = next(line for line in result.stderr.splitlines() if "DICOMDIR left out" in line)
    assert line.startswith(str(root / "DICOMDIR")) and "not a valid File ID" in line and "im00000" in line
    assert not (out / "DICOMDIR").exists()  # never copied
    assert len([p for p in out.rglob("*") if p.is_file()]) == 2  # the instances are de-identified
    assert "2 files de-identified" in result.stderr and "1 failed" in result.stderr
    assert PATIENT_ID not in result.stderr and "Doe" not in result.stderr


def test_a_dicomdir_alone_is_left_out(secret_file, tmp_path):
    out = tmp_path / "out"
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, FILESET / "DICOMDIR", "--out", out)
    assert result.returncode == 1
    assert "DICOMDIR left out: none of the files it lists was de-identified" in result.stderr
    assert not (out / "DICOMDIR").exists()
