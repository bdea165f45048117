"""C-FIND for a caller that lives in the de-identified world.

A peer that received de-identified data queries by what it received: hashed patient IDs,
pseudonymous UIDs, shifted dates. Its query is answered as if the archive held what the
peer's profile hands out:

* keys the profile keeps match Orthanc's originals directly;
* hashed patient IDs and pseudonymous UIDs (single values or lists) are mapped back through
  the linkage store, because keyed hashes cannot be inverted, and looked up as originals;
* every other key (a shifted date, a removed name, a wildcard on a hashed ID) is matched
  against the de-identified answer, never against the original: a query cannot probe a
  value the peer is not shown.

Each answer is de-identified with the response rule's profile, projected on the keys asked
for, and every pseudonymous UID and patient ID it carries is recorded, so that the peer can
query by it later.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..engine.dates import shift_date_value
from ..engine.deidentify import Deidentifier
from ..engine.profile import COMPOUND, KEEP, PATIENT_ID_HASH, REMOVE, SHIFT_DATES, UID
from ..stores.linkage import LinkageStore
from ..engine.tags import ISSUER_OF_PATIENT_ID, PATIENT_ID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from .find import (
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    Constraint,
    FindRequest,
    OrthancFind,
    QueryKey,
    build_answer,
    vr_of,
)

# What an answer's de-identification needs besides the keys asked for: the patient (hashed
# IDs, per-patient date shift) and the UIDs of every level.
_CONTEXT_TAGS = (PATIENT_ID, ISSUER_OF_PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)
_LEVEL_UIDS = {"Patient": (), "Study": (STUDY_INSTANCE_UID,),
               "Series": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
               "Instance": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)}


@dataclass
class Plan:
    """How one coerced query is run: what Orthanc matches, what the answers must match."""

    lookup: list[Constraint]  # matched by Orthanc, on original values
    on_answer: list[Constraint]  # matched on the de-identified answer
    nothing: bool = False  # a pseudonym nobody was given: no answer can match


def action_for(deidentifier: Deidentifier, tag: int) -> str:
    """The profile's action on a top-level attribute (KEEP when the table does not list it)."""
    if (tag >> 16) & 1:
        return REMOVE  # no profile keeps every private attribute: match them on the answer
    entry = deidentifier.profile.by_tag.get(tag)
    if entry is None:
        return KEEP
    if entry[0] in COMPOUND:  # the IOD is unknown for a query: the alternative valid for every IOD
        return deidentifier.profile.compound_choice(entry[0], None, None)
    return entry[0]


def plan_query(request: FindRequest, world: Deidentifier, store: LinkageStore,
               case_sensitive_pn: bool) -> Plan:
    lookup: list[Constraint] = []
    on_answer: list[Constraint] = []
    for constraint in request.constraints(case_sensitive_pn):
        action = action_for(world, constraint.tag)
        if action == KEEP:
            lookup.append(constraint)
            continue
        on_answer.append(constraint)  # always checked on what the peer would see
        if action == SHIFT_DATES and constraint.vr == "DA" and constraint.kind in ("equal", "range"):
            # Every shift lies in the site's window: the originals lie in the range widened by
            # it, which Orthanc can pre-select on (the answers then decide exactly).
            widened = _unshifted_range(constraint.value, world.keys.date_shift_window)
            if widened:
                lookup.append(Constraint(constraint.tag, widened, "DA"))
            continue
        if constraint.kind not in ("equal", "list"):
            continue
        pseudonyms = [v for v in constraint.value.split("\\") if v]
        if action == UID:
            originals = sorted(set(store.original_uids(pseudonyms).values()))
        elif action == PATIENT_ID_HASH:
            originals = sorted({link.patient_id for p in pseudonyms for link in store.lookup(p)})
        else:
            continue
        if not originals:
            return Plan([], [], nothing=True)
        lookup.append(Constraint(constraint.tag, "\\".join(originals), constraint.vr, True))
    return Plan(lookup, on_answer)


def _unshifted_range(value: str, window: tuple[int, int]) -> str | None:
    """The original dates a shifted date (or range) can stand for, as a range."""
    lower, _, upper = value.partition("-") if "-" in value else (value, "", value)
    low, high = window
    start = shift_date_value(lower, "DA", -high) if lower.strip() else ""
    end = shift_date_value(upper, "DA", -low) if upper.strip() else ""
    if start is None or end is None or not (start or end):
        return None
    return f"{start}-{end}"


def _text(ds: Dataset, tag: int) -> str | None:
    elem = ds.get(tag)
    if elem is None:
        return None
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def coerced_answers(finder: OrthancFind, request: FindRequest, world: Deidentifier,
                    answer: Deidentifier | None, store: LinkageStore, limit: int, present_only: bool = False
                    ) -> tuple[list[Dataset], bool, list["HandedOut"]]:
    """Answers for a caller in ``world``'s de-identified world, de-identified with ``answer``
    (None: sent as Orthanc holds them), at most ``limit`` (0: no limit); ``present_only``: the
    keys Orthanc has no value of are left out of an answer, as QIDO-RS answers (C-FIND answers
    them empty).

    Returns the answers, whether they are complete, and the pseudonyms they hand out."""
    level = request.level
    plan = plan_query(request, world, store, finder.settings.case_sensitive_pn)
    if plan.nothing:
        return [], True, []
    asked = {k.tag for k in request.keys}
    internal = FindRequest(request.keys + tuple(QueryKey(t, "") for t in _CONTEXT_TAGS if t not in asked))
    answers: list[Dataset] = []
    handed_out: list[HandedOut] = []
    complete = True
    level_uids = set(_LEVEL_UIDS[level])
    # Lazily: with a limit, no more candidates are read and de-identified than it takes.
    for match in finder.matches(internal, plan.lookup, context=True):
        values = {t: v for t, v in match.values.items()
                  if t not in _LEVEL_UIDS["Instance"] or t in level_uids}  # not a sample's UIDs
        original = build_answer(internal, values, match.counters, finder.settings.retrieve_aet, match.sequences)
        seen = copy.deepcopy(original)
        world.deidentify_dataset(seen)
        if any(not c.matches(_text(seen, c.tag)) for c in plan.on_answer):
            continue
        if limit and len(answers) >= limit:
            complete = False
            break
        if answer is None:
            sent = original
        elif answer is world or answer.uri == world.uri:
            sent = seen
        else:
            sent = copy.deepcopy(original)
            answer.deidentify_dataset(sent)
        projected = _project(sent, request, finder.settings.retrieve_aet)
        if present_only:
            for key in request.keys:
                if key.tag != QUERY_RETRIEVE_LEVEL and match.values.get(key.tag) is None \
                        and key.tag not in match.counters and key.tag in projected:
                    del projected[key.tag]
        answers.append(projected)
        handed_out.extend(_handed_out(original, sent, asked, answer))
    return answers, complete and not finder.cut, handed_out


@dataclass(frozen=True)
class HandedOut:
    """A pseudonym an answer gave a peer. ``original`` is PHI for a patient ID: never log it."""

    tag: int
    original: str
    pseudonym: str
    issuer: str = ""

    def __repr__(self) -> str:
        return f"HandedOut(tag={self.tag:08X}, pseudonym={self.pseudonym!r})"


def _handed_out(original: Dataset, sent: Dataset, asked: set, answer: Deidentifier | None) -> list[HandedOut]:
    if answer is None:
        return []
    found = []
    for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, PATIENT_ID):
        if tag not in asked:
            continue
        if tag == PATIENT_ID and action_for(answer, tag) != PATIENT_ID_HASH:
            continue  # a dummy or an empty value is no pseudonym
        old, new = _text(original, tag), _text(sent, tag)
        if old and new and old != new:
            found.append(HandedOut(tag, old, new, _text(original, ISSUER_OF_PATIENT_ID) or ""))
    return found


def _project(ds: Dataset, request: FindRequest, retrieve_aet: str) -> Dataset:
    """The answer with exactly the keys asked for (empty where the profile removed a value)."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    out[RETRIEVE_AE_TITLE] = DataElement(RETRIEVE_AE_TITLE, "AE", retrieve_aet)
    for key in request.keys:
        if key.tag == SPECIFIC_CHARACTER_SET:
            continue
        if key.tag == QUERY_RETRIEVE_LEVEL:
            out[key.tag] = DataElement(key.tag, "CS", key.value)
        elif key.tag in ds:
            out[key.tag] = ds[key.tag]
        elif vr_of(key.tag) != "SQ":
            vr = vr_of(key.tag)
            out[key.tag] = DataElement(key.tag, vr, b"" if vr in ("OB", "OW", "UN") else None)
    return out
