"""Worklist items for the tests, written as the .wl files a RIS leaves in Orthanc's folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.exchanges.worklist import encode


def worklist_item(patient_id: str, name: str, accession: str, modality: str, station: str, date: str,
                  time: str = "083000", status: str = "SCHEDULED", charset: str = "ISO_IR 100",
                  study_uid: str | None = None, birth_date: str = "19700101", step_id: str | None = None,
                  description: str = "CT chest") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.AccessionNumber = accession
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or f"2.25.{uuid.uuid4().int}"
    ds.RequestedProcedureDescription = description
    ds.RequestedProcedureID = f"RP-{accession}"
    ds.ReferringPhysicianName = "House^Gregory"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "P5-0001", "99RIS", description
    ds.RequestedProcedureCodeSequence = Sequence([code])
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = time
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = "Quinn^Mary"
    step.ScheduledProcedureStepDescription = description
    step.ScheduledProcedureStepID = step_id or f"SPS-{accession}"
    step.ScheduledProcedureStepStatus = status
    step.ScheduledStationName = f"ROOM-{station}"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def standard_items() -> list[Dataset]:
    """A small worklist: several modalities, stations, dates, cases and character sets."""
    return [
        worklist_item("MRN-W1", "Doe^Jane", "ACC-W1", "CT", "CT01", "20241101"),
        worklist_item("MRN-W2", "Doe^John", "ACC-W2", "MR", "MR01", "20241102", time="101500"),
        worklist_item("MRN-W3", "Müller^Zoë", "ACC-W3", "CT", "CT01", "20241103", status="IN PROGRESS"),
        worklist_item("MRN-W4", "Παπαδόπουλος^Νίκος", "ACC-W4", "US", "US01", "20241130", charset="ISO_IR 192",
                      description="Υπέρηχος"),
        worklist_item("mrn-w5", "doe^jim", "ACC-W5", "MR", "MR02", "20241201", time="235959"),
        worklist_item("MRN-W6", "Smith^Anna", "ACC-W6", "CT", "RESEARCH_CT", "20241105"),
    ]


def write_folder(folder: Path, items: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(items):
        path = folder / f"item{number:02d}.wl"
        path.write_bytes(encode(ds))
        paths.append(path)
    (folder / "ignored.txt").write_text("not a worklist")  # only .wl files are items
    (folder / "UPPER.WL").write_bytes(encode(worklist_item("MRN-W7", "Upper^Case", "ACC-W7", "CR", "CR01",
                                                           "20241106")))
    return paths
