"""Each action code, at any depth, plus private attributes, curves, overlays and the method attributes."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage
from pydicom.valuerep import validate_value

from coercion import Keys
from coercion.engine.values import DUMMY_STRINGS

from factory import SECRET, deidentifier, encode, make_ct


def run(ds, uri="deidentify:"):
    return pydicom.dcmread(io.BytesIO(deidentifier(uri).deidentify_bytes(encode(ds))))


def test_x_removes():
    out = run(make_ct())
    for keyword in ("InstitutionAddress", "OtherPatientIDs", "PatientAddress", "PatientComments",
                    "StudyDescription", "SeriesDescription", "ImageComments", "OperatorsName",
                    "DeviceSerialNumber", "StationName", "PatientAge", "PatientWeight", "IssuerOfPatientID"):
        assert keyword not in out, keyword


def test_z_empties():
    out = run(make_ct())
    for keyword in ("PatientName", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
                    "StudyDate", "StudyTime", "StudyID", "PatientSex"):
        assert keyword in out and out[keyword].value in ("", None), keyword


@pytest.mark.parametrize("vr", sorted(DUMMY_STRINGS))
def test_d_dummies_are_valid_for_their_vr(vr):
    validate_value(vr, DUMMY_STRINGS[vr], validation_mode=pydicom.config.RAISE)


def test_d_replaces_with_a_dummy():
    ds = make_ct()
    ds.VerifyingObserverName = "Doe^Jane"  # PN, D in the basic profile
    ds.VerificationDateTime = "20240131101010"  # DT, D
    ds.ClinicalTrialSubjectID = "SUBJ-0042"  # LO, D
    item = Dataset()
    item.PersonName = "Doe^Jane"  # (0040,A123) D, inside an unlisted sequence
    ds.add_new(0x00409096, "SQ", Sequence([item]))
    out = run(ds)
    assert out.VerifyingObserverName == "ANONYMIZED"
    assert out.VerificationDateTime == "19000101000000"
    assert out.ClinicalTrialSubjectID == "ANONYMIZED"
    assert out[0x00409096].value[0].PersonName == "ANONYMIZED"


def test_u_maps_every_reference_the_same_way_at_any_depth():
    ds = make_ct()
    inner = Dataset()
    inner.ReferencedSOPClassUID = ds.SOPClassUID
    inner.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    outer = Dataset()
    outer.ReferencedSOPSequence = Sequence([inner])
    outer.StudyInstanceUID = ds.StudyInstanceUID
    ds.add_new(0x00409096, "SQ", Sequence([outer]))  # an unlisted sequence, kept
    out = run(ds, "deidentify:RetainUIDsOption,CleanDescriptorsOption")  # UIDs kept here...
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    out = run(ds)  # ... and mapped here
    keys = Keys(SECRET)
    new_sop = keys.uid("1.2.826.0.1.3680043.8.498.1.1.1")
    assert out.SOPInstanceUID == new_sop
    assert out.StudyInstanceUID == keys.uid("1.2.826.0.1.3680043.8.498.1")
    assert out.FrameOfReferenceUID == keys.uid("1.2.826.0.1.3680043.8.498.1.9")
    ref = out[0x00409096].value[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new_sop
    assert ref.ReferencedSOPSequence[0].ReferencedSOPClassUID == ds.SOPClassUID  # a class is not an instance


def test_k_keeps_unlisted_attributes_and_cleans_kept_sequences():
    ds = make_ct()
    item = Dataset()
    item.PatientName = "Doe^John"
    item.CodeValue = "A1"
    ds.add_new(0x00409096, "SQ", Sequence([item]))  # Real World Value Mapping Sequence: not listed
    out = run(ds)
    assert out.Modality == "CT" and out.Manufacturer == "ACME" and out.Rows == 16
    assert out[0x00409096].value[0].CodeValue == "A1"
    assert out[0x00409096].value[0].PatientName == ""  # the table applies inside kept sequences


def test_compound_codes_follow_the_iod_type():
    # CT Image: Patient ID is Type 2 (Z/D -> Z); Institution Name is Type 3 (X/Z/D -> X);
    # Protocol Name is Type 3 (X/D -> X); Contrast/Bolus Agent is Type 2 (X/Z -> Z).
    ds = make_ct()
    ds.ContrastBolusAgent = "Iodine Doe"
    out = run(ds)
    assert out.PatientID == ""
    assert "InstitutionName" not in out
    assert "ProtocolName" not in out
    assert out.ContrastBolusAgent == ""


def _with_responsible_party(species: str | None = None) -> Dataset:
    """A CT whose patient has a Responsible Person and Organization (X in Table E.1-1, 2C in
    the Patient Module: required of an animal) and a Patient's Sex Neutered (X/Z, 2C in the
    Patient Study Module); an animal when ``species`` says how it is named."""
    ds = make_ct()
    ds.ResponsiblePerson = "Doe^Jane"
    ds.ResponsiblePersonRole = "OWNER"
    ds.ResponsibleOrganization = "Happy Paws Veterinary Clinic"
    ds.PatientSexNeutered = "ALTERED"
    if species == "description":
        ds.PatientSpeciesDescription = "Canis lupus familiaris"
    elif species == "code":
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "448771007", "SCT", "Canis lupus familiaris"
        ds.PatientSpeciesCodeSequence = Sequence([code])
    return ds


ANIMAL_ONLY_KEYWORDS = ("ResponsiblePerson", "ResponsibleOrganization", "PatientSexNeutered")


def test_a_human_patient_loses_what_only_an_animal_needs():
    # No Patient Species: not an animal, the 2C attributes are not required, the table's X applies
    # (and the weakest alternative of X/Z).
    out = run(_with_responsible_party())
    for keyword in ANIMAL_ONLY_KEYWORDS:
        assert keyword not in out, keyword
    assert "ResponsiblePersonRole" not in out  # 1C: only with a Responsible Person that has a value
    out = run(_with_responsible_party(), "deidentify:RetainPatientCharacteristicsOption")
    assert "ResponsiblePerson" not in out and "ResponsibleOrganization" not in out
    assert out.PatientSexNeutered == "ALTERED"  # K of the option


@pytest.mark.parametrize("species", ["description", "code"])
def test_an_animal_patient_keeps_them_empty_as_type_2(species):
    out = run(_with_responsible_party(species))
    for keyword in ANIMAL_ONLY_KEYWORDS:
        assert keyword in out and out[keyword].value in ("", None), keyword
    assert "PatientSpeciesDescription" in out or "PatientSpeciesCodeSequence" in out  # still an animal
    assert "ResponsiblePersonRole" not in out  # 1C: not allowed once the Responsible Person is empty


def test_the_kind_of_patient_is_decided_per_instance():
    # One de-identifier, a human, an animal, a human: the types of the IOD are not shared between them.
    deid = deidentifier()
    outputs = [pydicom.dcmread(io.BytesIO(deid.deidentify_bytes(encode(_with_responsible_party(species)))))
               for species in (None, "description", None)]
    assert ["ResponsiblePerson" in out for out in outputs] == [False, True, False]


def test_compound_codes_with_an_unknown_iod_keep_the_instance_valid():
    ds = make_ct()
    ds.SOPClassUID = "1.2.826.0.1.3680043.8.498.999"  # not a standard SOP Class
    out = run(ds)
    assert out.PatientID == "ANONYMIZED"  # Z/D -> D
    assert out.InstitutionName == "ANONYMIZED"  # X/Z/D -> D
    assert out.ProtocolName == "ANONYMIZED"  # X/D -> D


def test_x_z_u_star_keeps_the_sequence_with_new_uids_when_the_iod_requires_it():
    ds = make_ct()
    ds.SOPClassUID = "1.2.826.0.1.3680043.8.498.999"
    out = run(ds)
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == Keys(SECRET).uid(
        "1.2.826.0.1.3680043.8.498.1.1.1.100"
    )
    ds = make_ct()  # CT Image: Type 3 -> X
    assert "ReferencedImageSequence" not in run(ds)


def test_private_attributes_are_removed_unless_safe():
    ds = make_ct()
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x23, "DS", "1.5")  # safe: Table Speed
    ds.private_block(0x0019, "GEMS_ACQU_01").add_new(0x99, "LO", "Doe John")  # not on the list
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"Doe" * 10)
    out = run(ds)
    assert not any(elem.tag.is_private for elem in out)
    out = run(ds, "deidentify:RetainSafePrivateOption")
    private = {(e.tag.group, e.tag.element): e.value for e in out if e.tag.is_private}
    assert private == {(0x0019, 0x0010): "GEMS_ACQU_01", (0x0019, 0x1023): "1.5"}


def test_private_attributes_are_removed_inside_sequences():
    ds = make_ct()
    item = Dataset()
    item.CodeValue = "X"
    item.add_new(0x00091010, "LO", "secret")
    ds.add_new(0x00409096, "SQ", Sequence([item]))
    out = run(ds)
    assert 0x00091010 not in out[0x00409096].value[0]


def test_curves_and_overlays():
    ds = make_ct()
    ds.add_new(0x50000022, "LO", "Curve of Doe")
    ds.add_new(0x50003000, "OW", b"\x00\x01" * 4)
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", "Doe overlay")
    ds.add_new(0x60003000, "OW", b"\xff" * 32)
    ds.add_new(0x60024000, "LT", "Comment on Doe 555-123-4567")  # a plane without data
    out = run(ds)
    assert not any(elem.tag.group in (0x5000, 0x6000, 0x6002) for elem in out)
    out = run(ds, "deidentify:CleanGraphicsOption")
    assert 0x50003000 in out and out[0x50000022].value == "Curve of"
    assert not any(elem.tag.group == 0x6000 for elem in out)  # overlay bitmaps stay removed
    assert out[0x60024000].value == "Comment on"
    assert "Overlay bitmaps removed, not cleaned" in out.DeidentificationMethod


@pytest.mark.parametrize(
    "uri, codes, longitudinal",
    [
        ("deidentify:", ["113100"], "REMOVED"),
        ("deidentify:RetainUIDsOption,RetainLongitudinalTemporalInformationFullDatesOption",
         ["113100", "113110", "113106"], "UNMODIFIED"),
        ("deidentify:RetainLongitudinalTemporalInformationModifiedDatesOption,RetainPatientIDHashOption",
         ["113100", "113107"], "MODIFIED"),
        ("deidentify:RetainSafePrivateOption,RetainDeviceIdentityOption,RetainInstitutionIdentityOption,"
         "RetainPatientCharacteristicsOption,CleanDescriptorsOption,CleanStructuredContentOption,CleanGraphicsOption",
         ["113100", "113111", "113109", "113112", "113108", "113105", "113104", "113103"], "REMOVED"),
    ],
)
def test_the_output_states_what_was_done(uri, codes, longitudinal):
    out = run(make_ct(), uri)
    assert out.PatientIdentityRemoved == "YES"
    assert sorted(i.CodeValue for i in out.DeidentificationMethodCodeSequence) == sorted(codes)
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert out.LongitudinalTemporalInformationModified == longitudinal
    methods = list(out.DeidentificationMethod) if out["DeidentificationMethod"].VM > 1 else [out.DeidentificationMethod]
    assert "Basic Application Confidentiality Profile" in methods
    assert all(len(m) <= 64 for m in methods)
    if "RetainPatientIDHashOption" in uri:
        assert any("RetainPatientIDHashOption" in m for m in methods)


def test_patient_id_hash_and_date_shift_are_consistent_across_studies():
    uri = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
    first = run(make_ct(study_uid="1.2.3.1", sop_uid="1.2.3.1.1.1", study_date="20200101"), uri)
    second = run(make_ct(study_uid="1.2.3.2", sop_uid="1.2.3.2.1.1", study_date="20200111"), uri)
    other = run(make_ct(patient_id="MRN999", study_date="20200101"), uri)
    assert first.PatientID == second.PatientID == Keys(SECRET).patient_id("MRN0012345", "HOSPITAL_A")
    assert other.PatientID != first.PatientID
    assert first.StudyDate != "20200101"
    from datetime import datetime
    gap = datetime.strptime(second.StudyDate, "%Y%m%d") - datetime.strptime(first.StudyDate, "%Y%m%d")
    assert gap.days == 10  # intervals survive
    assert first.StudyTime == "101500"  # times stay as they are


def test_dataset_api_cleans_queries_and_shifts_date_ranges():
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "MRN0012345"
    query.IssuerOfPatientID = "HOSPITAL_A"
    query.StudyDate = "20240101-20240131"
    query.StudyInstanceUID = "1.2.3"
    deid = deidentifier("deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption")
    deid.deidentify_dataset(query)
    keys = Keys(SECRET)
    assert query.PatientID == keys.patient_id("MRN0012345", "HOSPITAL_A")
    assert query.StudyInstanceUID == keys.uid("1.2.3")
    low, high = query.StudyDate.split("-")
    from datetime import datetime
    assert (datetime.strptime(high, "%Y%m%d") - datetime.strptime(low, "%Y%m%d")).days == 30


def test_other_sop_class_without_iod_types_still_works():
    ds = make_ct()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    out = run(ds)
    assert out.SOPClassUID == SecondaryCaptureImageStorage
