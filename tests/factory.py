"""Test data: a site secret and realistic instances full of identifying data."""

from __future__ import annotations

import io
import os

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from coercion import Deidentifier, Keys
from coercion.engine.quiet import quiet_pydicom

quiet_pydicom()

SECRET = b"test-secret-that-is-long-enough-0123456789"
OTHER_SECRET = b"another-secret-that-is-long-enough-98765"


def deidentifier(uri: str = "deidentify:", secret: bytes = SECRET) -> Deidentifier:
    return Deidentifier.from_uri(uri, Keys(secret))


def encode(ds: Dataset, transfer_syntax=ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_ct(
    patient_id: str = "MRN0012345",
    patient_name: str = "Doe^Johnathan^Q",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    series_uid: str = "1.2.826.0.1.3680043.8.498.1.1",
    sop_uid: str = "1.2.826.0.1.3680043.8.498.1.1.1",
    study_date: str = "20240131",
    rows: int = 16,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.AcquisitionDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = study_date + "101512.123456"
    ds.AccessionNumber = "ACC778899"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.InstitutionAddress = "1 Main Street, Springfield"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.StationName = "CTSTATION7"
    ds.StudyDescription = "CT Chest Doe follow-up 2024-01-31 call 555-123-4567"
    ds.SeriesDescription = "Axial 1.25mm MRN0012345"
    ds.OperatorsName = "Tech^Terry"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSPITAL_A"
    ds.PatientBirthDate = "19700315"
    ds.PatientSex = "M"
    ds.PatientAge = "053Y"
    ds.PatientWeight = "81.5"
    ds.OtherPatientIDs = "OTHER-998877"
    ds.PatientAddress = "42 Elm Road, Shelbyville"
    ds.PatientComments = "Allergic to contrast, call wife Jane at jane.doe@example.com"
    ds.DeviceSerialNumber = "SN-4711-XYZ"
    ds.ProtocolName = "Chest routine Doe"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.StudyID = "S12345"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageComments = "Seen by Dr Welby on 31.01.2024"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = sop_uid + ".100"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(rows * rows * 2)
    return ds
