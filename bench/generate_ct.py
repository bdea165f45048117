"""Generate a synthetic CT series for the benchmarks: 512x512, 16-bit, a realistic header.

    python bench/generate_ct.py OUT_DIR [--count 300]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian


def _uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(120)}"


def generate_ct_series(out_dir: str | Path, n: int = 300, size: int = 512, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study, series, frame = _uid(rng), _uid(rng), _uid(rng)
    pixels = bytes(rng.getrandbits(8) for _ in range(4096)) * (size * size * 2 // 4096)
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = _uid(rng)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240131"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.AcquisitionTime = ds.ContentTime = f"1015{i % 60:02d}"
        ds.AccessionNumber = "ACC0012345"
        ds.Modality = "CT"
        ds.Manufacturer = "ACME Medical"
        ds.InstitutionName = "Saint Elsewhere Hospital"
        ds.InstitutionAddress = "1 Main Street, Springfield"
        ds.ReferringPhysicianName = "Welby^Marcus"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT CHEST WITH CONTRAST"
        ds.SeriesDescription = "AXIAL 1.25MM"
        ds.InstitutionalDepartmentName = "Radiology"
        ds.OperatorsName = "Tech^Terry"
        ds.ManufacturerModelName = "Scanner 3000"
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        ref.ReferencedSOPInstanceUID = _uid(rng)
        ds.ReferencedPerformedProcedureStepSequence = Sequence([ref])
        ds.PatientName = "Doe^John"
        ds.PatientID = "MRN0012345"
        ds.IssuerOfPatientID = "HOSPITAL_A"
        ds.PatientBirthDate = "19700315"
        ds.PatientSex = "M"
        ds.PatientAge = "053Y"
        ds.PatientWeight = "81.5"
        ds.BodyPartExamined = "CHEST"
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.DeviceSerialNumber = "SN-4711"
        ds.SoftwareVersions = "1.0"
        ds.ProtocolName = "CHEST ROUTINE"
        ds.ReconstructionDiameter = "360"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "150"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "1000"
        ds.XRayTubeCurrent = "200"
        ds.Exposure = "200"
        ds.FilterType = "BODY"
        ds.GeneratorPower = "24"
        ds.FocalSpots = "1.2"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "S12345"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-180.0, -180.0, -1.25 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = "SN"
        ds.SliceLocation = str(-1.25 * i)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [0.703125, 0.703125]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.ImagesInAcquisition = n
        ds.SamplesPerPixel = 1
        ds.AcquisitionDateTime = "20240131101500"
        ds.TimezoneOffsetFromUTC = "+0100"
        ds.ReferringPhysicianTelephoneNumbers = "555-0100"
        ds.PerformingPhysicianName = "Smith^Anna"
        ds.NameOfPhysiciansReadingStudy = "House^Gregory"
        ds.RequestingPhysician = "Welby^Marcus"
        ds.RequestedProcedureDescription = "CT CHEST"
        ds.PerformedProcedureStepStartDate = "20240131"
        ds.PerformedProcedureStepStartTime = "101000"
        ds.PerformedProcedureStepID = "PPS0012345"
        ds.PerformedProcedureStepDescription = "CT CHEST WITH CONTRAST"
        ds.AdditionalPatientHistory = "Follow-up of nodule"
        ds.ContrastBolusAgent = "Iohexol"
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "80"
        ds.SpiralPitchFactor = 0.984
        ds.TotalCollimationWidth = 40.0
        ds.SingleCollimationWidth = 0.625
        ds.TableSpeed = 39.37
        ds.TableFeedPerRotation = 39.37
        ds.CTDIvol = 10.2
        ds.ExposureModulationType = "DOSE MODULATION"
        ds.EstimatedDoseSaving = 20.0
        ds.DistanceSourceToDetector = "946.7"
        ds.DistanceSourceToPatient = "541"
        ds.ReconstructionTargetCenterPatient = [0.0, 0.0, 0.0]
        ds.DataCollectionCenterPatient = [0.0, 0.0, 0.0]
        ds.RevolutionTime = 0.5
        ds.ImageComments = "Reviewed"
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "NO"
        ds.add_new(0x00280120, "US", 0)  # Pixel Padding Value (unsigned pixels)
        ds.RequestAttributesSequence = Sequence([Dataset()])
        ds.RequestAttributesSequence[0].RequestedProcedureID = "RP0012345"
        ds.RequestAttributesSequence[0].ScheduledProcedureStepID = "SPS0012345"
        ds.ProcedureCodeSequence = Sequence([Dataset()])
        ds.ProcedureCodeSequence[0].CodeValue = "CTCHEST"
        ds.ProcedureCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
        ds.ProcedureCodeSequence[0].CodeMeaning = "CT Chest"
        # A scanner's private attributes, as GE writes them (values are synthetic).
        for group, creator, count in ((0x0009, "GEMS_IDEN_01", 8), (0x0019, "GEMS_ACQU_01", 40),
                                      (0x0021, "GEMS_RELA_01", 10), (0x0027, "GEMS_IMAG_01", 12),
                                      (0x0043, "GEMS_PARM_01", 30), (0x0045, "GEMS_HELIOS_01", 10)):
            block = ds.private_block(group, creator, create=True)
            for element in range(count):
                block.add_new(element + 1, "DS" if element % 3 else "LO", f"{element}.{i % 7}" if element % 3 else f"CT01_{element}")
        ds.PixelData = pixels
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"IM{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    print(len(generate_ct_series(args.out, args.count)), "files written to", args.out)
