"""Cleaning of free text (descriptors, SR text, graphic annotation text).

The descriptor rules, applied to each value in this order:

1. E-mail addresses are removed.
2. Every token or phrase equal (case-insensitively, on word boundaries) to a value of the
   instance's identifying attributes is removed: each person name (every PN attribute of the
   instance, at any depth) with its components and their words, the IDs and other
   identifiers listed in ``IDENTIFYING_KEYWORDS`` (patient IDs, accession number, study ID,
   institution, department, station, addresses, telephone numbers...) and the instance's
   dates, written in the common formats (20240131, 2024-01-31, 31.01.2024, 01/31/2024,
   31/01/2024, 31 Jan 2024, January 31, 2024...).
3. Then anything that looks like one of these is removed, whatever its origin: a date (numeric with separators, or with a month name), a telephone number
   (7 or more digits with separators, optionally +country), and a run of 5 or more digits.
4. Whitespace left behind is collapsed; a value that ends up empty stays empty.

Single letters are never removed as tokens (an initial alone does not identify, and
removing every "A" would destroy the text).
"""

from __future__ import annotations

import re
from datetime import date

IDENTIFYING_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "MilitaryRank",
    "BranchOfService",
    "AccessionNumber",
    "StudyID",
    "AdmissionID",
    "ServiceEpisodeID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "PatientInsurancePlanCodeSequence",
    "ResponsibleOrganization",
    "ResponsiblePerson",
    "PatientBirthDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AdmittingDate",
)

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# e-mail first: an address holds names that the identifier pass would cut it apart on
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)
GENERIC_PATTERNS = (
    # dates with a month name: 31 Jan 2024, 31. January 2024, Jan 31, 2024, January 2024
    re.compile(rf"\b\d{{1,2}}\.?\s*{_MONTH_RE}\s*,?\s*\d{{2,4}}\b", re.I),
    re.compile(rf"\b{_MONTH_RE}\s*\d{{1,2}}(?:st|nd|rd|th)?\s*,?\s*\d{{2,4}}\b", re.I),
    re.compile(rf"\b{_MONTH_RE}\s+\d{{4}}\b", re.I),
    # numeric dates: 2024-01-31, 2024/1/31, 31.01.2024, 01/31/24
    re.compile(r"\b\d{4}[-./]\d{1,2}[-./]\d{1,2}\b"),
    re.compile(r"\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b"),
    # telephone numbers: at least 7 digits with separators, optional +country or (area)
    re.compile(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d[\d\s.-]{5,}\d"),
    # long digit runs: record numbers, IDs, compact dates
    re.compile(r"\d{5,}"),
)
_SPACES = re.compile(r"\s{2,}")
_WORD_SPLIT = re.compile(r"[\s^=,]+")


def date_forms(value: str) -> list[str]:
    """A DA (or the date part of a DT) written in the formats people use in free text."""
    try:
        d = date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return []
    month = _MONTHS[d.month - 1]
    y, m, dd = d.year, d.month, d.day
    return [
        f"{y:04d}{m:02d}{dd:02d}", f"{y:04d}-{m:02d}-{dd:02d}", f"{y:04d}/{m:02d}/{dd:02d}",
        f"{y:04d}.{m:02d}.{dd:02d}", f"{dd:02d}.{m:02d}.{y:04d}", f"{dd}.{m}.{y:04d}",
        f"{dd:02d}/{m:02d}/{y:04d}", f"{m:02d}/{dd:02d}/{y:04d}", f"{dd:02d}-{m:02d}-{y:04d}",
        f"{m:02d}-{dd:02d}-{y:04d}", f"{dd:02d}.{m:02d}.{y % 100:02d}",
        f"{dd:02d}/{m:02d}/{y % 100:02d}", f"{m:02d}/{dd:02d}/{y % 100:02d}",
        f"{dd} {month} {y}", f"{dd} {month[:3]} {y}", f"{month} {dd}, {y}", f"{month[:3]} {dd}, {y}",
        f"{dd}. {month} {y}",
    ]


class Identifiers:
    """The identifying values of one instance, compiled into one regular expression."""

    def __init__(self, values: set[str]):
        phrases = {v.strip() for v in values if v and len(v.strip()) > 1}
        self.values = frozenset(phrases)
        self._regex: re.Pattern[str] | None
        if phrases:
            alternation = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
            self._regex = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.I)
        else:
            self._regex = None

    def clean(self, text: str) -> str:
        """Apply the descriptor rules to one value."""
        if not text:
            return text
        text = EMAIL.sub(" ", text)
        if self._regex is not None:
            text = self._regex.sub(" ", text)
        for pattern in GENERIC_PATTERNS:
            text = pattern.sub(" ", text)
        return _SPACES.sub(" ", text).strip()


def person_name_values(name: str) -> set[str]:
    """A PN value, each of its components and every word of them."""
    values = {name}
    for group in name.split("="):
        values.add(group)
        for component in group.split("^"):
            values.add(component)
            values.update(w for w in _WORD_SPLIT.split(component) if w)
    # A name written "Given Family" in free text
    for group in name.split("="):
        parts = [p for p in group.split("^") if p]
        if len(parts) >= 2:
            values.add(f"{parts[1]} {parts[0]}")
            values.add(" ".join(parts))
    return values
