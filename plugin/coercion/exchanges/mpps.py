"""Modality Performed Procedure Step (PS3.4 Annex F.7) as plain code: the SCP's state machine
and its checks, what is kept, and what is forwarded; no Orthanc, no network.

A modality creates a step with N-CREATE (status IN PROGRESS) and updates it with N-SETs until
it is COMPLETED or DISCONTINUED. Each message is checked (PS3.4 F.7.2, Table F.7.2-1), coerced
by the rules for N_CREATE_RQ or N_SET_RQ with role SCU for its calling AE title, and kept in
the MPPS store before it is answered; refusals carry the statuses PS3.4 and PS3.7 define, and
keep nothing. A route (a rule for N_CREATE_RQ with ``forward``) forwards the step: its N-CREATE,
then each N-SET in order, each coerced by the rules for role SCP of the destination.

Messages name attributes and statuses, never values.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence

from ..engine.dicomio import DicomError, check_nesting
from ..engine.values import DUMMY_STRINGS
from ..rules import Rule, Transaction, aet_key
from ..service import COERCED, UNCHANGED, CoercionService, safe_message
from ..stores.mpps import Delivery, DuplicateStep, Kept, MppsStore, Step, UnknownStep

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)

# DIMSE statuses (PS3.7 Annex C; PS3.4 F.7.2.1.3, F.7.2.2.4).
SUCCESS = 0x0000
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
# An N-SET from an AE title other than the one that created the step. PS3.7 Annex C's general
# "Refused: Not Authorized" (PS3.2 Annex N lists it among the MPPS statuses) says what happened:
# the request is well formed and the step exists, but this caller may not change it. 0110
# Processing Failure would read as a fault of the SCP, worth retrying; 0112 No Such Object
# Instance would be untrue.
NOT_AUTHORIZED = 0x0124
RESOURCE_LIMITATION = 0x0213
# Error ID (0000,0903) of "Performed Procedure Step Object may no longer be updated" (F.7.2.2.4)
MAY_NO_LONGER_BE_UPDATED = 0xA710

# The most an attribute or modification list may hold: an MPPS of a 10,000-image study is
# about 1.2 MB. Larger ones are refused (Resource Limitation) before they are parsed.
MAX_ATTRIBUTE_LIST_BYTES = 4 * 1024 * 1024
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_ERROR_COMMENT_CHARS = 64  # LO


@dataclass(frozen=True)
class Required:
    """The Type 1 attributes of a dataset (present, with a value; a sequence with an item) and
    what the items of its sequences require."""

    type1: tuple[str, ...] = ()
    items: tuple[tuple[str, "Required"], ...] = ()


_REFERENCE = Required(("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"))
_SERIES = Required(("ProtocolName", "SeriesInstanceUID"),
                   (("ReferencedImageSequence", _REFERENCE),
                    ("ReferencedNonImageCompositeSOPInstanceSequence", _REFERENCE)))
# PS3.4 Table F.7.2-1: what an N-CREATE must give (SCU Type 1).
CREATE_REQUIRED = Required(
    ("ScheduledStepAttributesSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
     "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus", "Modality"),
    (("ScheduledStepAttributesSequence", Required(("StudyInstanceUID",), (("ReferencedStudySequence", _REFERENCE),))),
     ("ReferencedPatientSequence", _REFERENCE), ("PerformedSeriesSequence", _SERIES)))
# What items an N-SET gives must hold (the N-SET's own attributes are all optional).
SET_REQUIRED = Required((), (("PerformedSeriesSequence", _SERIES),))
# PS3.4 Table F.7.2-1: the attributes an N-SET may not change ("Not allowed").
NOT_IN_N_SET = tuple(tag_for_keyword(k) for k in (
    "ScheduledStepAttributesSequence", "PatientName", "PatientID", "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "PatientBirthDate", "PatientSex", "ReferencedPatientSequence",
    "AdmissionID", "IssuerOfAdmissionIDSequence", "ServiceEpisodeID", "IssuerOfServiceEpisodeIDSequence",
    "ServiceEpisodeDescription", "PerformedProcedureStepID", "PerformedStationAETitle", "PerformedStationName",
    "PerformedLocation", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "Modality", "StudyID"))
# Attributes a coercion may remove or empty that the receiver of what is kept or forwarded
# needs with a value (N-CREATE Type 1; the end of the step once it is final): a dummy valid
# for the VR takes the place of what the profile removed (PS3.15 E.1.1, as for an IOD).
KEEP_VALUED = (*CREATE_REQUIRED.type1[1:], "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
_STATUS = tag_for_keyword("PerformedProcedureStepStatus")
_SERIES_SEQUENCE = "00400340"
_CHARSET = "00080005"
_SCHEDULED_KEYS = ("StudyInstanceUID", "AccessionNumber", "RequestedProcedureID", "ScheduledProcedureStepID")


class Refused(Exception):
    """A message the SCP refuses: its DIMSE status, an Error Comment (attributes and statuses,
    never values), and the Error ID or Attribute Identifier List the status takes."""

    def __init__(self, status: int, comment: str, tags=(), error_id: int | None = None, reason: str = ""):
        super().__init__(comment)
        self.status, self.comment, self.tags, self.error_id = status, comment, tuple(tags), error_id
        self.reason = reason or comment  # for the audit line: may say more (a coercion's reason)


@dataclass(frozen=True)
class Answer:
    """What the SCP answers a message."""

    status: int
    comment: str = ""
    tags: tuple[int, ...] = ()
    error_id: int | None = None
    uid: str | None = None  # the step's SOP Instance UID as kept
    created_uid: str | None = None  # the SOP Instance UID the SCP gave a step its N-CREATE did not name

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def status_fields(self) -> dict:
        """The status elements of the response (Status, Error Comment, Error ID, Attribute
        Identifier List), for the DIMSE layer."""
        fields: dict = {"Status": self.status}
        if self.comment:
            fields["ErrorComment"] = self.comment[:_ERROR_COMMENT_CHARS]
        if self.error_id is not None:
            fields["ErrorID"] = self.error_id
        if self.tags:
            fields["AttributeIdentifierList"] = list(self.tags)
        return fields


@dataclass(frozen=True)
class Message:
    """One N-CREATE or N-SET as the SCP received it. ``data`` (the attribute or modification
    list, encoded in the presentation context's transfer syntax) is PHI."""

    calling_aet: str
    called_aet: str
    host: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    data: bytes
    implicit: bool = True
    little: bool = True

    def __repr__(self) -> str:
        return f"Message(calling_aet={self.calling_aet!r}, bytes={len(self.data)})"


# -- the checks ---------------------------------------------------------------------------


def read_list(message: Message) -> Dataset:
    """The attribute or modification list, bounded: refused beyond MAX_ATTRIBUTE_LIST_BYTES and
    beyond the engine's nesting limit before any parser recurses into it."""
    data = message.data
    if len(data) > MAX_ATTRIBUTE_LIST_BYTES:
        raise Refused(RESOURCE_LIMITATION, f"attribute list larger than {MAX_ATTRIBUTE_LIST_BYTES} bytes")
    try:
        check_nesting(data, 0, message.implicit, message.little)
    except DicomError:
        raise Refused(PROCESSING_FAILURE, "sequences nested too deep", reason="sequences are nested deeper than "
                      "the engine accepts") from None
    try:
        ds = read_dataset(io.BytesIO(data), message.implicit, message.little)
        _parse_all(ds)  # every element parsed now: a bad one is refused here, not later
    except Exception as exc:
        raise Refused(PROCESSING_FAILURE, "attribute list unreadable",
                      reason=f"attribute list unreadable: {type(exc).__name__}: {safe_message(exc)}") from None
    return ds


def _parse_all(ds: Dataset) -> None:
    pending = [ds]  # without recursion (the nesting is bounded, but so is a thread's stack)
    while pending:
        for elem in pending.pop():
            if elem.VR == "SQ":
                pending.extend(elem.value)
            else:
                _ = elem.value


def check_message(message: Message) -> None:
    if message.sop_class_uid != MPPS_SOP_CLASS:
        raise Refused(NO_SUCH_SOP_CLASS, "not the Modality Performed Procedure Step SOP Class")
    uid = message.sop_instance_uid
    if uid is not None and (len(uid) > 64 or not _UID.match(uid)):
        raise Refused(INVALID_OBJECT_INSTANCE, "SOP Instance UID not a valid UID")


def _element(ds: Dataset, keyword: str):
    tag = tag_for_keyword(keyword)
    return ds[tag] if tag in ds else None


def _empty(elem) -> bool:
    value = elem.value
    return value is None or value == "" or value == b"" or (isinstance(value, (list, tuple, Sequence)) and not value)


def _lacking(ds: Dataset, required: Required, path: str, depth: int = 0) -> tuple[list[str], list[str]]:
    """(missing, without a value) attributes of ``ds`` under ``required``, as paths."""
    missing, empty = [], []
    for keyword in required.type1:
        elem = _element(ds, keyword)
        if elem is None:
            missing.append(path + keyword)
        elif _empty(elem):
            empty.append(path + keyword)
    for keyword, items in required.items:
        elem = _element(ds, keyword)
        if elem is None or elem.VR != "SQ" or depth > 4:
            continue
        for item in elem.value or []:
            m, e = _lacking(item, items, f"{path}{keyword}>", depth + 1)
            missing += m
            empty += e
    return missing, empty


def _names(paths: list[str]) -> str:
    return ", ".join(dict.fromkeys(paths))


def _top_tags(paths: list[str]) -> list[int]:
    return list(dict.fromkeys(tag_for_keyword(p.split(">")[0]) for p in paths))


def check_create(ds: Dataset) -> None:
    """PS3.4 F.7.2.1: an N-CREATE gives every Type 1 attribute, and the status IN PROGRESS."""
    missing, empty = _lacking(ds, CREATE_REQUIRED, "")
    if missing:
        raise Refused(MISSING_ATTRIBUTE, "missing " + _names(missing), _top_tags(missing))
    if empty:
        raise Refused(MISSING_ATTRIBUTE_VALUE, "no value: " + _names(empty), _top_tags(empty))
    if str(ds.PerformedProcedureStepStatus).strip() != IN_PROGRESS:
        raise Refused(INVALID_ATTRIBUTE_VALUE, "PerformedProcedureStepStatus must be IN PROGRESS", [_STATUS])


def check_set(current_status: str, modifications: Dataset, kept: dict) -> str | None:
    """PS3.4 F.7.2.2: an N-SET updates a step that is IN PROGRESS, changes none of the
    attributes it may not, and a status it gives is one of the three; a final status needs a
    performed series (Table F.7.2-1, final state). The new status, or None."""
    if current_status != IN_PROGRESS:
        raise Refused(PROCESSING_FAILURE, "Performed Procedure Step Object may no longer be updated",
                      error_id=MAY_NO_LONGER_BE_UPDATED)
    not_allowed = sorted(tag for tag in NOT_IN_N_SET if tag in modifications)
    if not_allowed:
        raise Refused(NO_SUCH_ATTRIBUTE, "may not be set: " + ", ".join(keyword_for_tag(t) for t in not_allowed),
                      not_allowed)
    missing, empty = _lacking(modifications, SET_REQUIRED, "")
    if missing or empty:
        lacking = missing + empty
        raise Refused(MISSING_ATTRIBUTE_VALUE, "no value: " + _names(lacking), _top_tags(lacking))
    status = None
    if _STATUS in modifications:
        status = str(modifications[_STATUS].value or "").strip()
        if status not in STATUSES:
            raise Refused(INVALID_ATTRIBUTE_VALUE, "PerformedProcedureStepStatus must be IN PROGRESS, COMPLETED "
                                                   "or DISCONTINUED", [_STATUS])
    if status in (COMPLETED, DISCONTINUED):
        series_tag = tag_for_keyword("PerformedSeriesSequence")
        if series_tag in modifications:
            series = len(modifications[series_tag].value or [])
        else:
            series = len(kept.get(_SERIES_SEQUENCE, {}).get("Value") or [])
        if not series:
            raise Refused(MISSING_ATTRIBUTE_VALUE, f"{status} needs a PerformedSeriesSequence item", [series_tag])
    return status


def admitted(calling_aet: str, host: str | None, modalities: dict, check_host: bool, strict: bool = False) -> bool:
    """Whether Orthanc's DicomModalities (``/modalities?expand``) list the caller, as Orthanc's
    own SCP decides with DicomAlwaysAllowStore false: by AE title (``rules.aet_key``: padding
    ignored, case too unless StrictAetComparison), and by host too with DicomCheckModalityHost."""
    calling = aet_key(calling_aet, strict)
    return any(aet_key(str(peer.get("AET", "")), strict) == calling
               and (not check_host or str(peer.get("Host", "")) == (host or "")) for peer in modalities.values())


def find_modality(modalities: dict, destination: str, strict: bool = False) -> tuple[str, dict] | None:
    """The modality a forward names: by symbolic name (exactly), else by AE title (as Orthanc
    compares AE titles: a name is never taken for another entry's AE title in other case)."""
    if destination in modalities:
        return destination, modalities[destination]
    key = aet_key(destination, strict)
    found = [(name, m) for name, m in sorted(modalities.items()) if aet_key(str(m.get("AET", "")), strict) == key]
    return found[0] if found else None


# -- what is kept ---------------------------------------------------------------------------


def to_json(ds: Dataset) -> dict:
    """A dataset as DICOM JSON, its text decoded (the Specific Character Set has done its work:
    an N-SET's and its N-CREATE's character sets may differ, the JSON holds them alike)."""
    kept = ds.to_json_dict()
    kept.pop(_CHARSET, None)
    return dict(sorted(kept.items()))


def from_json(kept: dict) -> Dataset:
    """A kept dataset, to send: UTF-8 (ISO_IR 192) when any text is not ASCII."""
    ds = Dataset.from_json(kept)
    if _has_non_ascii(kept):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _has_non_ascii(value) -> bool:
    pending = [value]  # without recursion: the kept data may nest 32 sequences
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii():
                return True
        elif isinstance(value, dict):
            pending += [v for k, v in value.items() if k != "InlineBinary"]
        elif isinstance(value, list):
            pending += value
    return False


def merge(kept: dict, modifications: dict) -> dict:
    """An N-SET applied: each attribute it gives replaces the kept one (an empty one empties it)."""
    return dict(sorted({**kept, **modifications}.items()))


def counts(kept: dict) -> tuple[int, int]:
    """(performed series, instances they reference)."""
    series = kept.get(_SERIES_SEQUENCE, {}).get("Value") or []
    instances = sum(len(item.get(key, {}).get("Value") or []) for item in series for key in ("00081140", "00400220"))
    return len(series), instances


def performed_series(kept: dict) -> list[dict]:
    """The performed series and the instances each references, for the REST API."""
    found = []
    for item in kept.get(_SERIES_SEQUENCE, {}).get("Value") or []:
        instances = [{"SOPClassUID": _first(ref, "00081150"), "SOPInstanceUID": _first(ref, "00081155")}
                     for key in ("00081140", "00400220") for ref in item.get(key, {}).get("Value") or []]
        found.append({"SeriesInstanceUID": _first(item, "0020000E"), "instances": instances})
    return found


def _first(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def scheduled_steps(ds: Dataset) -> list[dict]:
    """The scheduled steps an MPPS names, as the peer sent them (the worklist follows them)."""
    steps = []
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        steps.append({key: str(item.get(key, "") or "").strip() for key in _SCHEDULED_KEYS})
    return steps


def _valued(ds: Dataset) -> dict[str, str]:
    """The attributes of KEEP_VALUED that have a value, with their VR."""
    found = {}
    for keyword in KEEP_VALUED:
        elem = _element(ds, keyword)
        if elem is not None and not _empty(elem) and elem.VR in DUMMY_STRINGS:
            found[keyword] = elem.VR
    return found


def _restore_valued(valued: dict[str, str], after: Dataset) -> None:
    for keyword, vr in valued.items():
        now = _element(after, keyword)
        if now is None or _empty(now):
            setattr(after, keyword, DUMMY_STRINGS[vr])


# -- the SCP --------------------------------------------------------------------------------


# (route name, destination, the step's kept UID, retries, retry interval): queue a forward
Arm = Callable[[str, str, str, int, int], None]
DEFAULT_RETRIES, DEFAULT_RETRY_INTERVAL = 5, 30  # of a forward whose route is no longer active


class MppsExchange:
    """The MPPS SCP's logic: checks, coercion, the store, the forwards to arm, the worklist.

    ``arm(route, destination, uid, retries, retry_interval)`` queues a forward (the edge's
    forwarding queue);
    ``resolve(destination)`` names a forward's destination as DicomModalities does (or returns
    it as given); ``worklists()`` is the worklist store or None; ``audit(event)`` and
    ``warn(text)`` write to the log (events and texts hold no PHI).
    """

    def __init__(self, service: CoercionService, store: MppsStore, *, arm: Arm | None = None,
                 resolve: Callable[[str], str] | None = None, worklists: Callable[[], object] = lambda: None,
                 audit: Callable[[dict], None] = lambda event: None, warn: Callable[[str], None] = lambda text: None):
        self.service, self.store = service, store
        self.arm = arm or (lambda route, destination, uid, retries, interval: None)
        self.resolve = resolve or (lambda destination: destination)
        self.worklists, self.audit, self.warn = worklists, audit, warn

    # -- N-CREATE ---------------------------------------------------------------------------

    def n_create(self, message: Message) -> Answer:
        started = time.perf_counter()
        created_uid = None if message.sop_instance_uid else f"2.25.{uuid.uuid4().int}"
        peer_uid = message.sop_instance_uid or created_uid
        rule = kept_uid = None
        destinations: list[tuple[str, Rule]] = []
        try:
            check_message(message)
            ds = read_list(message)
            check_create(ds)
            scheduled = scheduled_steps(ds)
            if self.store.known(peer_uid):
                raise Refused(DUPLICATE_SOP_INSTANCE, "SOP Instance UID exists already")
            kept_ds, kept_uid, rule = self._coerce(ds, "N_CREATE_RQ", message, peer_uid)
            kept = to_json(kept_ds)
            series, instances = counts(kept)
            routes = self.service.ruleset.matching_routes(self._transaction("N_CREATE_RQ", message, kept_ds))
            for route in routes:
                for destination in route.forward.to:
                    name = self._resolve(destination)
                    if name not in (d for d, _ in destinations):
                        destinations.append((name, route))
            step = Step(kept_uid, IN_PROGRESS, message.calling_aet, rule.name if rule else None, None, series,
                        instances)
            try:
                self.store.create(peer_uid, Kept(step, kept, scheduled),
                                  [(d, route.name) for d, route in destinations])
            except DuplicateStep:
                raise Refused(DUPLICATE_SOP_INSTANCE, "SOP Instance UID exists already") from None
        except Refused as refusal:
            return self._refused("N-CREATE", message, refusal, rule, kept_uid, started)
        except Exception as exc:  # the store failed: nothing is kept, the peer may try again
            return self._failed("N-CREATE", message, exc, rule, kept_uid, started)
        for destination, route in destinations:
            self._arm(route.name, route, destination, kept_uid, 1)
        self._performed(scheduled, IN_PROGRESS)
        self._audit("N-CREATE", message, SUCCESS, rule, kept_uid, started, outcome="kept",
                    forwards=len(destinations))
        return Answer(SUCCESS, uid=kept_uid, created_uid=created_uid)

    # -- N-SET ------------------------------------------------------------------------------

    def n_set(self, message: Message) -> Answer:
        started = time.perf_counter()
        rule = kept_uid = None
        try:
            check_message(message)
            if not message.sop_instance_uid:
                raise Refused(NO_SUCH_OBJECT_INSTANCE, "no SOP Instance UID")
            modifications = read_list(message)
            found = self.store.find(message.sop_instance_uid)
            if found is None:
                raise Refused(NO_SUCH_OBJECT_INSTANCE, "no such Performed Procedure Step")
            kept_uid = found.step.uid
            if not self.service.peers.same(found.step.calling_aet, message.calling_aet):
                # Only the modality that performs the step reports on it; AE titles compared as
                # Orthanc admitted the caller (case and padding, StrictAetComparison).
                raise Refused(NOT_AUTHORIZED, "not the AE title that created the step",
                              reason=f"the step was created by {found.step.calling_aet!r}, not by the calling AE "
                                     "title")
            status = check_set(found.step.status, modifications, found.dataset)
            fallback = None
            if found.step.rule:
                # A step kept coerced never takes an N-SET as received: without a rule of its own,
                # the N-SET is coerced by the rule that coerced the N-CREATE.
                fallback = self.service.ruleset.by_name(found.step.rule)
            kept_ds, _, rule = self._coerce(modifications, "N_SET_RQ", message, None, fallback)
            if rule is None and found.step.rule:
                raise Refused(PROCESSING_FAILURE, "coercion rule of the step not active",
                              reason=f"rule {found.step.rule!r}, which coerced the N-CREATE, is no longer active "
                                     "and no rule for N_SET_RQ applies")
            change_json = to_json(kept_ds)
            set_rule = rule.name if rule else None

            def change(current: Kept) -> tuple[Kept, dict]:
                if current.step.status != IN_PROGRESS:  # another association completed it meanwhile
                    raise Refused(PROCESSING_FAILURE, "Performed Procedure Step Object may no longer be updated",
                                  error_id=MAY_NO_LONGER_BE_UPDATED)
                merged = merge(current.dataset, change_json)
                series, instances = counts(merged)
                step = replace(current.step, status=status or current.step.status, set_rule=set_rule,
                               series=series, instances=instances)
                return Kept(step, merged, current.scheduled), change_json

            try:
                new, deliveries = self.store.update(message.sop_instance_uid, change)
            except UnknownStep:
                raise Refused(NO_SUCH_OBJECT_INSTANCE, "no such Performed Procedure Step") from None
        except Refused as refusal:
            return self._refused("N-SET", message, refusal, rule, kept_uid, started)
        except Exception as exc:
            return self._failed("N-SET", message, exc, rule, kept_uid, started)
        routes = {r.name: r for r in self.service.ruleset.routes}
        for delivery in deliveries:
            self._arm(delivery.route, routes.get(delivery.route), delivery.destination, kept_uid, new.step.messages)
        if status and status != found.step.status:
            self._performed(new.scheduled, status)
        self._audit("N-SET", message, SUCCESS, rule, kept_uid, started, outcome="kept", status_set=status,
                    forwards=len(deliveries))
        return Answer(SUCCESS, uid=kept_uid)

    # -- shared -----------------------------------------------------------------------------

    def _transaction(self, dimse: str, message: Message, dataset) -> Transaction:
        return Transaction(dimse, "SCU", message.calling_aet, message.called_aet, message.host,
                           sop_class_uid=MPPS_SOP_CLASS, dataset=dataset)

    def _coerce(self, ds: Dataset, dimse: str, message: Message, uid: str | None,
                fallback: Rule | None = None) -> tuple[Dataset, str | None, Rule | None]:
        """(what is kept, the step's UID as kept, the rule that coerced it), or Refused."""
        return coerce(self.service, ds, self._transaction(dimse, message, ds), uid, fallback)

    def _resolve(self, destination: str) -> str:
        try:
            return self.resolve(destination)
        except Exception:  # the forward names it as the route does; the worker resolves it again
            return destination

    def _arm(self, name: str, route: Rule | None, destination: str, uid: str, messages: int) -> None:
        """Queue a forward of the step (a route removed since its N-CREATE still forwards the
        step's N-SETs, with the default retries: the peer has its N-CREATE)."""
        forward = route.forward if route is not None else None
        retries, interval = ((forward.retries, forward.retry_interval) if forward
                             else (DEFAULT_RETRIES, DEFAULT_RETRY_INTERVAL))
        try:
            self.arm(name, destination, uid, retries, interval)
            self.store.queued(uid, destination, messages)
        except Exception as exc:  # the step is kept and its deliveries recorded: start-up queues it again
            self.warn(f"MPPS {uid}: the forward to {destination} (route {name}) could not be queued: "
                      f"{type(exc).__name__}: {safe_message(exc)}")

    def _performed(self, steps: list[dict], status: str) -> None:
        worklists = self.worklists()
        if worklists is None or not steps:
            return
        try:
            worklists.step_performed(steps, status)
        except Exception as exc:  # the step is kept; the worklist is the RIS's to mend
            self.warn(f"the worklist could not follow an MPPS ({status}): {type(exc).__name__}: {safe_message(exc)}")

    def _refused(self, dimse: str, message: Message, refusal: Refused, rule, uid, started) -> Answer:
        self._audit(dimse, message, refusal.status, rule, uid, started, outcome="refused", reason=refusal.reason)
        return Answer(refusal.status, refusal.comment, refusal.tags, refusal.error_id, uid)

    def _failed(self, dimse: str, message: Message, exc: Exception, rule, uid, started) -> Answer:
        reason = f"not kept: {type(exc).__name__}: {safe_message(exc)}"
        self._audit(dimse, message, PROCESSING_FAILURE, rule, uid, started, outcome="refused", reason=reason)
        return Answer(PROCESSING_FAILURE, "the step could not be kept", uid=uid)

    def _audit(self, dimse: str, message: Message, status: int, rule, uid, started, **extra) -> None:
        event = {"event": "mpps", "dimse": dimse, "calling_aet": message.calling_aet,
                 "called_aet": message.called_aet, "rule": rule.name if rule else None, "sop_instance_uid": uid,
                 "status": f"0x{status:04X}", "ms": round((time.perf_counter() - started) * 1000, 2)}
        self.audit({**event, **{k: v for k, v in extra.items() if v is not None}})

    # -- forwarding -------------------------------------------------------------------------

    def queue_unqueued(self) -> int:
        """At start-up: queue the forwards of messages kept while Orthanc stopped before it
        queued them. How many."""
        routes = {r.name: r for r in self.service.ruleset.routes}
        found = self.store.deliveries(unqueued=True)
        for delivery in found:
            step = self.store.get(delivery.uid)
            if step is not None:
                self._arm(delivery.route, routes.get(delivery.route), delivery.destination, delivery.uid,
                          step.step.messages)
        return len(found)

    def forward(self, uid: str, destination: str, peer: dict, calling_aet: str,
                send: Callable[["Outgoing"], int]) -> "Forwarded":
        """Bring ``destination`` up to date with step ``uid``: every message it has not had, in
        order, each coerced by the rules for role SCP of the peer (``peer``: its entry of
        ``/modalities?expand``), sent by ``send`` (which answers the DIMSE status, and raises
        OSError or ConnectionError when the peer cannot be reached). What was delivered is
        recorded message by message, so nothing is sent twice after a restart; a message an
        earlier attempt sent without an answer is taken as delivered when the peer says it has
        it already (0111 for the N-CREATE, A710 for a final N-SET)."""
        delivery = next((d for d in self.store.deliveries(uid) if d.destination == destination), None)
        if delivery is None:
            return Forwarded(False, f"step {uid} has no forward to {destination}", retry=False)
        if self.store.get(uid) is None:
            return Forwarded(False, f"step {uid} is no longer kept", retry=False)
        sent = 0
        for number, kind, content in self._unsent(uid, delivery):
            try:
                outgoing = self._outgoing(number, kind, content, delivery, peer, calling_aet)
            except Refused as refusal:
                return Forwarded(False, f"{kind} {number}: {refusal.reason}", retry=False, sent=sent)
            self.store.sending(uid, destination, number)
            try:
                status = send(outgoing)
            except (OSError, ConnectionError) as exc:
                return Forwarded(False, f"{kind} {number}: {exc}", sent=sent)
            again = delivery.in_flight == number
            if _delivered(status) or (again and kind == "N-CREATE" and status == DUPLICATE_SOP_INSTANCE) or (
                    again and kind == "N-SET" and status == PROCESSING_FAILURE and outgoing.final):
                self.store.delivered(uid, destination, number, outgoing.uid if kind == "N-CREATE" else None,
                                     outgoing.rule.name if kind == "N-CREATE" and outgoing.rule else None)
                if kind == "N-CREATE":
                    delivery = replace(delivery, peer_uid=outgoing.uid,
                                       rule=outgoing.rule.name if outgoing.rule else None)
                delivery = replace(delivery, delivered=number + 1, in_flight=None)
                sent += 1
                continue
            self.store.sending(uid, destination, None)  # answered: it did not reach the peer
            return Forwarded(False, f"{kind} {number} refused by the peer with status 0x{status:04X}", sent=sent)
        return Forwarded(True, "", sent=sent)

    def _unsent(self, uid: str, delivery: Delivery):
        """The messages not yet delivered, and those kept while they are being sent."""
        start = delivery.delivered
        while True:
            batch = self.store.messages(uid, start)
            if not batch:
                return
            yield from batch
            start = batch[-1][0] + 1

    def _outgoing(self, number: int, kind: str, content: dict, delivery: Delivery, peer: dict,
                  calling_aet: str) -> "Outgoing":
        ds = from_json(content)
        transaction = Transaction("N_CREATE_RQ" if kind == "N-CREATE" else "N_SET_RQ", "SCP", calling_aet,
                                  peer.get("AET"), peer.get("Host"), sop_class_uid=MPPS_SOP_CLASS, dataset=ds)
        if kind == "N-CREATE":
            ds, uid, rule = coerce(self.service, ds, transaction, delivery.uid)
            return Outgoing(number, kind, ds, uid, rule)
        fallback = self.service.ruleset.by_name(delivery.rule) if delivery.rule else None
        ds, _, rule = coerce(self.service, ds, transaction, None, fallback)
        if rule is None and delivery.rule:
            raise Refused(PROCESSING_FAILURE, "coercion rule of the step not active",
                          reason=f"rule {delivery.rule!r}, which coerced the N-CREATE sent, is no longer active and "
                                 "no rule for N_SET_RQ applies")
        final = str(ds.get("PerformedProcedureStepStatus", "") or "").strip() in (COMPLETED, DISCONTINUED)
        return Outgoing(number, kind, ds, delivery.peer_uid or delivery.uid, rule, final)


@dataclass(frozen=True)
class Outgoing:
    """One message to send: ``dataset`` is PHI unless a rule coerced it."""

    number: int
    kind: str  # N-CREATE or N-SET
    dataset: Dataset
    uid: str  # the SOP Instance UID the peer knows the step by
    rule: Rule | None = None
    final: bool = False  # an N-SET that completes or discontinues the step

    def __repr__(self) -> str:
        return f"Outgoing({self.kind} {self.number} of {self.uid})"


@dataclass(frozen=True)
class Forwarded:
    ok: bool
    reason: str = ""  # why not (statuses, attributes, rules; never values)
    retry: bool = True
    sent: int = 0


def _delivered(status: int) -> bool:
    return status == SUCCESS or status == 0x0001 or (status & 0xF000) == 0xB000  # success or a warning


def coerce(service: CoercionService, ds: Dataset, transaction: Transaction, uid: str | None,
           fallback: Rule | None = None) -> tuple[Dataset, str | None, Rule | None]:
    """``ds`` as the rules for ``transaction`` make it (in place: the caller has no other use
    for the message as received), the step's UID as they make it (``uid`` goes through the same
    profile, as the SOP Instance UID), and the rule; Refused (0110) when the coercion fails.
    Attributes the receiver needs with a value keep one (a dummy) when the profile removes them."""
    valued = _valued(ds)
    if uid is not None:
        ds.SOPClassUID = MPPS_SOP_CLASS
        ds.SOPInstanceUID = uid
    decision = service.coerce_dataset(ds, transaction, fallback)
    if decision.action == COERCED and uid is not None:
        uid = str(ds.get("SOPInstanceUID", "") or "") or uid
    for keyword in ("SOPInstanceUID", "SOPClassUID"):
        if uid is not None and keyword in ds:
            delattr(ds, keyword)
    if decision.action == UNCHANGED:
        return ds, uid, None
    if decision.action != COERCED:
        raise Refused(PROCESSING_FAILURE, "coercion failed", reason=f"rule {decision.rule.name!r}: {decision.reason}")
    _restore_valued(valued, ds)
    return ds, uid, decision.rule
