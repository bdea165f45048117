"""Outgoing C-FIND: a query Orthanc sends to a peer that lives in a de-identified world, and
the answers it gets back.

The request (C_FIND_RQ rule, role SCP) is put into the peer's world, the way the same profile
de-identifies the data the peer received:

* return keys (empty values) stay empty;
* keys the profile keeps are sent as they are;
* UIDs become their keyed pseudonyms, value by value (UID lists included), and hashed patient
  IDs their hash (with the IssuerOfPatientID given, which is then not sent, or for each
  issuer the patient is known under here, as a list);
* dates the profile shifts are shifted by the patient's shift, both ends of a range, when the
  query names the patient (otherwise the shift is unknown and the query is refused);
* a constraint on anything else the profile removes, empties, replaces or cleans is refused:
  sending it would send what the rule keeps from the peer, and dropping it silently would
  answer another question. Wildcards on replaced values are refused for the same reason.

Answers (C_FIND_RSP rule, role SCP) are de-identified with the rule's profile before the REST
client sees them. Orthanc's JSON forms of a dataset ("full", "short", "simplify") are read and
written here.
"""

from __future__ import annotations

from typing import Callable, Mapping

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..engine.dates import shift_date_value
from ..engine.deidentify import Deidentifier
from ..engine.profile import KEEP, PATIENT_ID_HASH, SHIFT_DATES, UID
from ..engine.tags import ISSUER_OF_PATIENT_ID, PATIENT_ID
from .find import _put, parse_tag_key, tag_key, vr_of
from .find_coercion import action_for


class QueryRefused(ValueError):
    """A query that cannot be sent to this peer as it is (the message says which key and why)."""


def parse_key(key: str) -> int:
    """A query key as Orthanc reads it: a keyword or a tag ("0010,0020" or "00100020")."""
    text = key.strip()
    try:
        if "," in text:
            return parse_tag_key(text)
        if len(text) == 8:
            return int(text, 16)
    except ValueError:
        pass
    tag = tag_for_keyword(text)
    if tag is None:
        raise QueryRefused(f"unknown query key {key!r}: give a DICOM keyword or a tag like 0010,0020")
    return tag


def coerce_query(query: Mapping[str, str], deidentifier: Deidentifier, rule_name: str,
                 issuers_of: Callable[[str], list[str]]) -> dict[str, str]:
    """The query as the peer must receive it (keys as given). ``issuers_of(patient_id)`` names
    the issuers a patient ID is known under here ("" for none)."""
    by_tag = {parse_key(key): (key, value) for key, value in query.items()}
    patient = by_tag.get(PATIENT_ID, ("", ""))[1]
    issuer = by_tag.get(ISSUER_OF_PATIENT_ID, ("", ""))[1]
    patient = patient.strip() if isinstance(patient, str) else ""
    issuer = issuer.strip() if isinstance(issuer, str) else ""
    issuers = [issuer] if issuer else None
    return _coerce_keys(by_tag, deidentifier, rule_name, issuers_of, patient, issuers)


def _coerce_keys(by_tag, deidentifier, rule_name, issuers_of, patient, issuers) -> dict:
    keys = deidentifier.keys

    def patient_issuers() -> list[str]:
        return issuers if issuers is not None else (issuers_of(patient) or [""])

    out: dict = {}
    for tag, (key, value) in by_tag.items():
        if isinstance(value, list):  # a sequence (worklist queries): its items, key by key, same patient
            if any(not isinstance(item, dict) for item in value):
                raise QueryRefused(f"query key {key!r}: a sequence must be a list of objects")
            out[key] = [_coerce_keys({parse_key(k): (k, v) for k, v in item.items()}, deidentifier, rule_name,
                                     issuers_of, patient, issuers) for item in value]
            continue
        if not isinstance(value, str):
            raise QueryRefused(f"query key {key!r}: only strings and sequences of objects can be coerced")
        if not value.strip():
            out[key] = value  # a return key
            continue
        action = action_for(deidentifier, tag)
        if tag == ISSUER_OF_PATIENT_ID and action != KEEP and action_for(deidentifier, PATIENT_ID) == PATIENT_ID_HASH:
            continue  # it is part of the hashed patient ID, and the peer never saw it
        name = keyword_for_tag(tag) or tag_key(tag)
        why = f"rule {rule_name!r} de-identifies {name} for this peer"
        if action == KEEP:
            out[key] = value
        elif action == UID:
            values = value.split("\\")
            if any("*" in v or "?" in v for v in values):
                raise QueryRefused(f"{why}: a wildcard cannot be matched against its pseudonyms; give whole UIDs")
            out[key] = "\\".join(keys.uid(v) for v in values)
        elif action == PATIENT_ID_HASH and tag == PATIENT_ID:
            values = value.split("\\")
            if any("*" in v or "?" in v for v in values):
                raise QueryRefused(f"{why}: a wildcard cannot be matched against hashed IDs; give whole IDs")
            hashed = [keys.patient_id(v.strip(), i) for v in values for i in (
                issuers if issuers is not None else (issuers_of(v.strip()) or [""]))]
            out[key] = "\\".join(dict.fromkeys(hashed))
        elif action == SHIFT_DATES and vr_of(tag) in ("DA", "DT", "TM"):
            out[key] = _shift_constraint(value, vr_of(tag), patient, patient_issuers, keys, why)
        else:
            raise QueryRefused(f"{why}: a constraint on it would send what the rule keeps from the peer; leave "
                               f"{key!r} empty (a return key) or remove it")
    return out


def _shift_constraint(value, vr, patient, patient_issuers, keys, why) -> str:
    if vr == "TM":
        return value  # whole-day shifts leave times as they are
    if not patient or "*" in patient or "?" in patient or "\\" in patient:
        raise QueryRefused(f"{why} (its dates are shifted per patient): give one PatientID to query by date")
    shifts = {keys.date_shift_days(patient, i) for i in patient_issuers()}
    if len(shifts) != 1:
        raise QueryRefused(f"{why} (its dates are shifted per patient): the patient is known under several "
                           "issuers here; give IssuerOfPatientID too")
    days = shifts.pop()
    shifted = []
    for part in value.split("-") if "-" in value else [value]:
        if not part:
            shifted.append("")
            continue
        moved = shift_date_value(part, vr, days)
        if moved is None:
            raise QueryRefused(f"{why}: its value is not a date or date range that can be shifted")
        shifted.append(moved)
    return "-".join(shifted)


# -- Orthanc's JSON forms of a dataset ------------------------------------------------------

def dataset_from_json(tags: Mapping, form: str) -> Dataset:
    """A dataset from Orthanc's "full" ({"gggg,eeee": {"Name", "Type", "Value"}}), "short"
    ({"gggg,eeee": value}) or "simplify" ({"Name": value}) JSON. Binary and over-long values,
    which Orthanc does not give, are left out."""
    ds = Dataset()
    for key, entry in tags.items():
        if form == "simplify":
            tag = tag_for_keyword(key)
            if tag is None:
                try:
                    tag = parse_key(key)
                except QueryRefused:
                    continue
        else:
            tag = parse_tag_key(key)
        if form == "full":
            kind, value = entry.get("Type"), entry.get("Value")
            if kind == "Sequence":
                value = [dataset_from_json(item, form) for item in value or []]
            elif kind == "Null":
                value = ""
            elif kind != "String":
                continue
        else:
            value = entry
            if isinstance(value, list):
                value = [dataset_from_json(item, form) for item in value]
            elif value is None:
                value = ""
            elif not isinstance(value, str):
                continue
        if isinstance(value, list):
            ds[tag] = DataElement(tag, "SQ", Sequence(value))
        else:
            _put(ds, tag, value)
    return ds


def dataset_to_json(ds: Dataset, form: str) -> dict:
    """The inverse of :func:`dataset_from_json`."""
    out: dict = {}
    for elem in ds:
        tag = int(elem.tag)
        if elem.VR == "SQ":
            value = [dataset_to_json(item, form) for item in elem.value]
        elif elem.value is None or elem.value == "" or elem.value == b"":
            value = None if form == "full" else ""
        elif isinstance(elem.value, bytes):
            continue
        elif elem.VM > 1:
            value = "\\".join(str(v) for v in elem.value)
        else:
            value = str(elem.value)
        if form == "simplify":
            out[elem.keyword or tag_key(tag)] = value
        elif form == "short":
            out[tag_key(tag)] = value
        else:
            kind = "Sequence" if elem.VR == "SQ" else ("Null" if value is None else "String")
            out[tag_key(tag)] = {"Name": elem.keyword or "Unknown Tag & Data", "Type": kind, "Value": value}
    return out


def coerce_answer(tags: Mapping, form: str, deidentifier: Deidentifier) -> dict:
    """One answer in Orthanc's JSON ``form``, de-identified."""
    ds = dataset_from_json(tags, form)
    deidentifier.deidentify_dataset(ds)
    return dataset_to_json(ds, form)
