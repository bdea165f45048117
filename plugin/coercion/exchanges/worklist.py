"""Modality worklists: the items a worklist C-FIND is answered from, and what a query is.

The items live where Orthanc's ModalityWorklists sample plugin and dcmtk's wlmscpfs keep them:
``.wl`` files (any case) in the folder ``Worklists.Database`` names, read in the order the
folder lists them (the sample plugin's order, so that answers come in the same order). Items
made through the REST API are written there too, so that either plugin serves them. Plain
code: matching is Orthanc's own (its find matcher, called by the edge).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from ..engine.deidentify import Deidentifier, Outcome
from ..engine.dicomio import DicomError, check_all_nesting, read_instance
from ..engine.limits import MAX_SEQUENCE_DEPTH, too_deep
from ..engine.tags import PATIENT_ID, STUDY_INSTANCE_UID
from .find_coercion import HandedOut
from .orthanc_api import json_depth

SCHEDULED_PROCEDURE_STEP_SEQUENCE = 0x00400100
SCHEDULED_STATION_AE_TITLE = 0x00400001
SCHEDULED_PROCEDURE_STEP_STATUS = 0x00400020
SCHEDULED_PROCEDURE_STEP_ID = 0x00400009
PREGNANCY_STATUS = 0x001021C0
REQUESTED_PROCEDURE_ID = 0x00401001
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
# A worklist item is a few kilobytes and tens of attributes (a few hundred with its sequences):
# refuse what is not one, in either form, before it costs memory (parsed, a 1 MiB body of tiny
# elements is hundreds of thousands of objects) or every later C-FIND its time.
MAX_ITEM_BYTES = 1 << 20
MAX_ITEM_ELEMENTS = 10_000  # attributes and sequence items at any depth (in JSON, extra values too)
# DICOM JSON nests three levels per sequence (attribute, "Value", item), plus the top item, the
# deepest attribute, its "Value" and a person name's object, and the array the item may come in:
# the JSON nesting an item of MAX_SEQUENCE_DEPTH levels of sequences needs, measured unparsed.
MAX_ITEM_JSON_DEPTH = 3 * MAX_SEQUENCE_DEPTH + 5
# An item ID made here (the file name without .wl): what the REST API accepts in its paths.
ITEM_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
STEP_STATUSES = ("SCHEDULED", "ARRIVED", "READY", "STARTED", "IN PROGRESS", "COMPLETED", "DISCONTINUED")


class WorklistError(ValueError):
    """A worklist item that cannot be taken, or a request about one that cannot be done (the
    message names the reason, never a value); ``status`` is the HTTP status to answer."""

    status = 400


class ItemTooLarge(WorklistError):
    """A body larger than MAX_ITEM_BYTES, refused before it is read."""

    status = 413


class FolderUnavailable(WorklistError):
    """The worklist folder is gone or cannot be used (the message names it): the server's
    trouble, not the request's."""

    status = 503


@dataclass(frozen=True)
class WorklistItem:
    id: str  # the file name without its extension
    path: Path
    data: bytes
    version: tuple  # (size, mtime): what a cache of this item is valid for


def station_query(query: Dataset, calling_aet: str) -> Dataset:
    """The query as the sample plugin's FilterIssuerAet (and dcm4chee's "calling AE title as
    Scheduled Station AE Title") narrows it: the Scheduled Station AE Title of the one
    Scheduled Procedure Step item is the caller's (the sample plugin replaces whatever the
    query gives: its check of the item's type is always true), and an empty Pregnancy Status
    key goes (it would match nothing)."""
    narrowed = copy.deepcopy(query)
    steps = narrowed.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if steps is None:
        narrowed[SCHEDULED_PROCEDURE_STEP_SEQUENCE] = DataElement(SCHEDULED_PROCEDURE_STEP_SEQUENCE, "SQ",
                                                                 Sequence([Dataset()]))
    elif steps.VR != "SQ" or len(steps.value or []) != 1:
        raise WorklistError("the query's Scheduled Procedure Step Sequence must hold one item")
    item = narrowed[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value[0]
    item[SCHEDULED_STATION_AE_TITLE] = DataElement(SCHEDULED_STATION_AE_TITLE, "AE", calling_aet)
    if PREGNANCY_STATUS in narrowed and narrowed[PREGNANCY_STATUS].value in (None, ""):
        del narrowed[PREGNANCY_STATUS]
    return narrowed


def query_station(query: Dataset) -> str | None:
    """The Scheduled Station AE Title a query asks for, if it constrains it ("*" does not)."""
    steps = query.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    for step in (steps.value or []) if steps is not None and steps.VR == "SQ" else []:
        elem = step.get(SCHEDULED_STATION_AE_TITLE)
        value = str(elem.value or "").strip() if elem is not None else ""
        if value and value != "*":
            return value
    return None


def station_only(aet: str) -> Dataset:
    """A query for the items scheduled on a station, and nothing else."""
    step = Dataset()
    step[SCHEDULED_STATION_AE_TITLE] = DataElement(SCHEDULED_STATION_AE_TITLE, "AE", aet)
    query = Dataset()
    query[SCHEDULED_PROCEDURE_STEP_SEQUENCE] = DataElement(SCHEDULED_PROCEDURE_STEP_SEQUENCE, "SQ", Sequence([step]))
    return query


def without_station(query: Dataset) -> Dataset:
    """The query with its station constraint made a return key (it was applied apart)."""
    rest = copy.deepcopy(query)
    steps = rest.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    for step in (steps.value or []) if steps is not None and steps.VR == "SQ" else []:
        if SCHEDULED_STATION_AE_TITLE in step:
            step[SCHEDULED_STATION_AE_TITLE] = DataElement(SCHEDULED_STATION_AE_TITLE, "AE", None)
    return rest


def encode(ds: Dataset) -> bytes:
    """A dataset as a Part 10 file, the form Orthanc's matcher and the .wl files take."""
    ds = Dataset(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
    meta.MediaStorageSOPInstanceUID = str(ds.get("SOPInstanceUID", "") or "") or f"2.25.{uuid.uuid4().int}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _check_size(data) -> None:
    if len(data) > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"a worklist item is at most {MAX_ITEM_BYTES} bytes (MAX_ITEM_BYTES); this body has "
                           f"{len(data)}")


def _too_many() -> WorklistError:
    return WorklistError(f"a worklist item holds at most {MAX_ITEM_ELEMENTS} elements (attributes, sequence items "
                         "and values, MAX_ITEM_ELEMENTS)")


def read_item(data: bytes) -> Dataset:
    """A worklist item from a client (DICOM): refused unless it is one, bounded in size (first),
    nesting and elements."""
    _check_size(data)
    try:
        check_all_nesting(data)  # every element, before any parser (DCMTK's matcher reads it too)
        instance = read_instance(data)
        header = instance.header
        ds = dcmread(io.BytesIO(bytes(data)), force=not instance.had_meta)
        _count_elements(ds)
    except WorklistError:
        raise
    except DicomError as exc:
        raise WorklistError(f"not a readable DICOM worklist item: {exc}") from None
    except Exception as exc:
        raise WorklistError(f"not a readable DICOM worklist item ({type(exc).__name__})") from None
    _check_item(header)
    return ds


def _count_elements(ds: Dataset) -> None:
    """Refuse more than MAX_ITEM_ELEMENTS elements and items (and, again, sequences nested
    deeper than MAX_SEQUENCE_DEPTH), level by level without recursion; each dataset is counted
    before its elements are converted, so at most about that many are."""
    count, pending = 0, [(ds, 0)]
    while pending:
        level, depth = pending.pop()
        count += len(level)
        if count > MAX_ITEM_ELEMENTS:
            raise _too_many()
        for elem in level:
            if elem.VR == "SQ":
                if depth + 1 > MAX_SEQUENCE_DEPTH:
                    raise WorklistError(str(too_deep()))
                count += len(elem.value or ())
                if count > MAX_ITEM_ELEMENTS:
                    raise _too_many()
                pending.extend((item, depth + 1) for item in elem.value or ())


def item_from_json_body(body: bytes) -> Dataset:
    """A worklist item from a body of DICOM JSON (one object, or an array of one), bounded like
    the DICOM form: its size first, then its nesting measured unparsed, then its elements."""
    _check_size(body)
    text = bytes(body).decode("utf-8", errors="replace")
    if json_depth(text) > MAX_ITEM_JSON_DEPTH:
        raise WorklistError(f"the DICOM JSON nests deeper than {MAX_ITEM_JSON_DEPTH} levels (MAX_ITEM_JSON_DEPTH: "
                            f"sequences nested {MAX_SEQUENCE_DEPTH} levels, the most accepted)")
    try:
        value = json.loads(text, strict=False)
    except ValueError:
        raise WorklistError("the body is neither DICOM nor DICOM JSON of a worklist item") from None
    return item_from_json(value[0] if isinstance(value, list) and len(value) == 1 else value)


def item_from_json(value) -> Dataset:
    """A worklist item from DICOM JSON (PS3.18 F.2), bounded like the DICOM form."""
    if not isinstance(value, dict):
        raise WorklistError("DICOM JSON of a worklist item must be an object")
    _check_json_item(value)
    try:
        ds = Dataset.from_json(value)
    except Exception as exc:  # pydicom's messages may quote values
        raise WorklistError(f"not a DICOM JSON worklist item ({type(exc).__name__})") from None
    _check_item(ds)
    return ds


def _check_json_item(value: dict) -> None:
    """Refuse sequences nested deeper than MAX_SEQUENCE_DEPTH and more than MAX_ITEM_ELEMENTS
    elements, counted as in the DICOM form (an attribute, a sequence item; and here each value
    past an attribute's first, each a Python object), without recursion."""
    count, pending = 0, [(value, 0)]
    while pending:
        dataset, depth = pending.pop()
        count += len(dataset)
        for attribute in dataset.values():
            values = attribute.get("Value") if isinstance(attribute, dict) else None
            if not isinstance(values, list):
                continue
            if attribute.get("vr") != "SQ":
                count += max(len(values) - 1, 0)
                continue
            if depth + 1 > MAX_SEQUENCE_DEPTH:
                raise WorklistError(str(too_deep()))
            count += len(values)
            pending.extend((item, depth + 1) for item in values if isinstance(item, dict))
        if count > MAX_ITEM_ELEMENTS:
            raise _too_many()


def _check_item(ds: Dataset) -> None:
    steps = ds.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
    if steps is None or steps.VR != "SQ" or not steps.value:
        raise WorklistError("a worklist item needs a Scheduled Procedure Step Sequence with an item")


class WorklistFolder:
    """The worklist folder: ``.wl`` files, read in the folder's order, written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()  # the status updates of one file do not interleave
        self._read: dict[str, tuple[tuple, bytes]] = {}  # name -> (version, bytes): read once per version

    def prepare(self) -> bool:
        """At start-up: make the folder, owner-only, when it is missing but its parent exists
        (True when made). A missing parent is a mistyped path or a share not mounted: refused,
        naming the path, rather than made (items would land beside the share)."""
        path = self.folder.absolute()
        if path.is_dir():
            return False
        if path.exists() or path.is_symlink():
            raise FolderUnavailable(f"the worklist folder {path} (Worklists.Database) is not a folder")
        if not path.parent.is_dir():
            raise FolderUnavailable(f"the worklist folder {path} (Worklists.Database) does not exist, nor does "
                                    f"its parent {path.parent}: create it or correct Worklists.Database")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return False  # made meanwhile
        except OSError as exc:
            raise FolderUnavailable(f"the worklist folder {path} (Worklists.Database) cannot be made: "
                                    f"{exc.strerror}") from None
        os.chmod(path, 0o700)  # whatever the umask
        return True

    def _unavailable(self, exc: OSError, doing: str) -> FolderUnavailable:
        gone = not self.folder.is_dir()
        return FolderUnavailable(f"the worklist folder {self.folder.absolute()} (Worklists.Database) "
                                 + ("does not exist (any more): restore it, owner-only (a restart makes it when "
                                    "its parent exists)" if gone else f"cannot be {doing}: {exc.strerror}"))

    def items(self) -> Iterator[WorklistItem]:
        """Every ``.wl`` item, as the sample plugin finds them (regular files, any case of the
        extension, in the order the folder lists them)."""
        try:
            entries = os.scandir(self.folder)
        except OSError as exc:
            raise self._unavailable(exc, "read") from None
        seen = set()
        with entries:
            for entry in entries:
                if not entry.name.lower().endswith(".wl") or not entry.is_file():
                    continue
                seen.add(entry.name)
                try:
                    stat = entry.stat()
                    version = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
                    known = self._read.get(entry.name)
                    if known is not None and known[0] == version:
                        data = known[1]
                    else:
                        with open(entry.path, "rb") as fp:
                            data = fp.read()
                        self._read[entry.name] = (version, data)
                except OSError:
                    continue  # removed meanwhile
                yield WorklistItem(entry.name[:-3], Path(entry.path), data, version)
        for gone in set(self._read) - seen:  # a whole pass: forget the items no longer there
            self._read.pop(gone, None)

    def get(self, item_id: str) -> WorklistItem | None:
        if not ITEM_ID.fullmatch(item_id):
            return None
        return next((item for item in self.items() if item.id == item_id), None)

    def add(self, ds: Dataset) -> str:
        """Write a new item; its ID. A folder gone is not made again here (an unmounted share
        would then fill its mount point): FolderUnavailable names it."""
        item_id = str(uuid.uuid4())
        data = encode(ds)
        try:
            self._write(self.folder / f"{item_id}.wl", data)
        except OSError as exc:
            raise self._unavailable(exc, "written") from None
        return item_id

    def delete(self, item_id: str) -> bool:
        item = self.get(item_id)
        if item is None:
            return False
        try:
            item.path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._unavailable(exc, "written") from None
        return True

    def step_performed(self, steps: list[dict], status: str) -> int:
        """An MPPS says that scheduled steps are IN PROGRESS, COMPLETED or DISCONTINUED: the
        items it refers to (by Study Instance UID, Accession Number, Requested Procedure ID and
        Scheduled Procedure Step ID, where the MPPS gives them) follow. How many were updated."""
        if status not in STEP_STATUSES:
            raise WorklistError(f"unknown step status {status!r}")
        updated = 0
        with self._lock:
            for item in list(self.items()):
                try:
                    ds = dcmread(io.BytesIO(item.data), force=True)
                except Exception:
                    continue  # an unreadable item is the RIS's to mend; nothing to update
                if not any(_refers_to(ds, step) for step in steps):
                    continue
                for sps in ds.get("ScheduledProcedureStepSequence") or []:
                    if _step_matches(sps, steps):
                        sps.ScheduledProcedureStepStatus = status
                self._write(item.path, encode(ds))
                updated += 1
        return updated

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".coercion-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _refers_to(item: Dataset, step: dict) -> bool:
    """Whether an MPPS's scheduled step names this item: every key it gives matches."""
    given = {k: v for k, v in step.items() if v and k in ("StudyInstanceUID", "AccessionNumber",
                                                           "RequestedProcedureID")}
    if not given and not step.get("ScheduledProcedureStepID"):
        return False
    if any(_text(item, key) != value for key, value in given.items()):
        return False
    return _step_matches_any(item, step)


def _step_matches_any(item: Dataset, step: dict) -> bool:
    wanted = step.get("ScheduledProcedureStepID")
    return not wanted or any(_text(sps, "ScheduledProcedureStepID") == wanted
                             for sps in item.get("ScheduledProcedureStepSequence") or [])


def _step_matches(sps: Dataset, steps: list[dict]) -> bool:
    return any(not s.get("ScheduledProcedureStepID") or _text(sps, "ScheduledProcedureStepID") ==
               s["ScheduledProcedureStepID"] for s in steps)


class ItemViews:
    """Items as a caller under a rule sees them: de-identified with the rule's profile once per
    version of the item (a worklist is asked again and again; its items change rarely)."""

    def __init__(self, limit: int = 20000):
        self._lock = threading.Lock()
        self._views: dict = {}
        self._limit = limit

    def view(self, item: WorklistItem, deidentifier: Deidentifier) -> tuple[bytes, Outcome]:
        key = (item.id, item.version, str(deidentifier.uri))
        with self._lock:
            found = self._views.get(key)
        if found is None:
            chunks, outcome = deidentifier.deidentify_chunks(item.data)
            found = (b"".join(chunks), outcome)
            with self._lock:
                if len(self._views) >= self._limit:
                    self._views.clear()  # a bound, not an LRU: rebuilding costs one pass
                self._views[key] = found
        return found


def handed_out(outcome: Outcome) -> list[HandedOut]:
    """The pseudonyms a worklist answer gives a peer (its patient, its study), to be linked."""
    found = [HandedOut(STUDY_INSTANCE_UID, old, new) for old, new in outcome.uids]  # (a UID: linked alike)
    if outcome.patient_pseudonym and outcome.original_patient_id:
        found.append(HandedOut(PATIENT_ID, outcome.original_patient_id, outcome.patient_pseudonym,
                               outcome.issuer_of_patient_id))
    return found
