"""The tags the package names in code, each once, looked up in pydicom's dictionary (itself
generated from the standard) by keyword: no tag number is typed twice."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo must fail at import, not match nothing
        raise KeyError(keyword)
    return tag


PATIENT_ID = _tag("PatientID")
ISSUER_OF_PATIENT_ID = _tag("IssuerOfPatientID")
STUDY_INSTANCE_UID = _tag("StudyInstanceUID")
SERIES_INSTANCE_UID = _tag("SeriesInstanceUID")
SOP_INSTANCE_UID = _tag("SOPInstanceUID")
SOP_CLASS_UID = _tag("SOPClassUID")
ACCESSION_NUMBER = _tag("AccessionNumber")
