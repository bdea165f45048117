"""The walk's record: each decision the de-identifier takes on an attribute, as it takes it.

A :class:`Record` is given to one de-identification (``Deidentifier.deidentify_recorded``); the
walk (deidentify.py) tells it, at the place where it chooses, which action it carries out on
which attribute and what made it choose: a row of PS3.15 Table E.1-1 and the options that
changed its basic action, the attribute's type in the IOD, a private block of Table E.3.10-1,
the D or C subtree it is in, a value a C could not apply to. Like dicognito's element
anonymizers describing what they do, each decision says it in words too. The preview's
explanation (explain.py) shows these decisions beside the values before and after; nothing
here looks at a value to guess what was done.

A decision is keyed by its path, as explain.py writes paths: ``(0008,1140)[0]>(0008,1155)``
(an item itself: ``(0040,A730)[2]``, its index counted among the items received). A later
decision on the same path replaces the earlier (an overlay plane removed after its attributes
were kept, a Type 1C attribute dropped with its condition, the method attributes rewritten).
The walk records nothing when no record is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypedDict

from pydicom.datadict import keyword_for_tag

from .profile import (
    ANIMAL_ONLY,
    CLEAN_GRAPHICS,
    CLEAN_STRUCTURED,
    CLEAN_TEXT,
    DUMMY,
    EMPTY,
    KEEP,
    PATIENT_ID_HASH,
    REMOVE,
    SHIFT_DATES,
    UID,
    UNKNOWN_TYPE,
    VALUE_DEPENDENT,
    ItemTypes,
    Profile,
)
from .uri import Option

MAX_DECISIONS = 20000  # of one instance (an enhanced multi-frame instance has many items)

CLEANINGS = frozenset({CLEAN_TEXT, CLEAN_STRUCTURED, CLEAN_GRAPHICS})
# The actions whose sequence's items are a subtree of their own (identity.DummyValues, text.TextCleaner).
SUBTREE_ACTIONS = CLEANINGS | {DUMMY}

# What an action does, said after the reason.
MEANING = {
    KEEP: "kept",
    REMOVE: "removed",
    EMPTY: "kept without a value",
    DUMMY: "replaced by a dummy value (a sequence keeps its items, their values replaced)",
    UID: "UIDs replaced by their keyed pseudonyms (a sequence keeps its items, their UIDs mapped)",
    PATIENT_ID_HASH: "replaced by the keyed hash of (Issuer of Patient ID, Patient ID)",
    SHIFT_DATES: "dates moved by the patient's keyed number of days (times stay)",
    CLEAN_TEXT: "text cleaned by the descriptor rules (names, IDs, dates, addresses... removed)",
    CLEAN_STRUCTURED: "content kept and cleaned item by item (observation context items removed)",
    CLEAN_GRAPHICS: "graphic text cleaned by the descriptor rules",
}
_TYPES = {0: "Type 3 (or not defined at this place) in the IOD", 1: "Type 1 in the IOD",
          2: "Type 2 in the IOD", UNKNOWN_TYPE: "its type in the IOD not known here: the strongest alternative"}

# What an element anonymizer did with an attribute the table does not list, inside a D or C
# subtree (identity.DummyValues.unlisted, text.clean_unlisted): the action and why.
EMPTY_VALUE = "an empty value says nothing: kept"
TERMINOLOGY = "a coded entry of a nested sequence (terminology: concept names, units): kept"
CODED_ENTRY = "a coded entry (terminology): kept"
FULL_DATES = "dates and times kept (RetainLongitudinalTemporalInformationFullDatesOption)"
TIMES_STAY = "a time: a shift of whole days leaves it as it is"
SHIFTED_DATE = "moved by the patient's keyed number of days (RetainLongitudinalTemporalInformationModifiedDatesOption)"
DUMMY_VALUE = "text, names, dates and URLs replaced by dummy values"
NOT_TEXT = "code strings, numbers, binary values and class UIDs stay"
NAME_REPLACED = "a person's name: replaced"
TEXT_CLEANED = "text cleaned by the descriptor rules"


class Reason(TypedDict):
    """Why an attribute got its action. ``source``: "table" (a row of PS3.15 Table E.1-1),
    "repeating-group" (its rows for curves 50xx and overlays 60xx), "private" (its Private
    Attributes row, and Table E.3.10-1 under RetainSafePrivateOption), "patient-id-hash"
    (RetainPatientIDHashOption), "not-in-table", "sequence" (removed or added with an enclosing
    sequence or item), "method" (what the de-identifier states), "file-meta" or "pixel-data";
    ``row`` and ``basic``: the table row and its basic-profile code; ``options``: the options
    that changed the basic action."""

    source: str
    row: str | None
    basic: str | None
    options: list[str]
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the walk did to the attribute (or item) at ``path``, and why."""

    path: str
    tag: int
    action: str | None  # the profile's code as carried out (None: written by the de-identifier)
    reason: Reason


def reason(source: str, text: str, row: str | None = None, basic: str | None = None,
           options: Iterable[Option | str] = ()) -> Reason:
    return {"source": source, "row": row, "basic": basic, "options": [getattr(o, "value", o) for o in options],
            "text": text}


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def keyword_of(tag: int) -> str:
    if tag >> 16 & 1:
        return "private"
    return keyword_for_tag(tag) or "unknown"


class Record:
    """The decisions of one de-identification, by path (see the module's docstring)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.decisions: dict[str, Decision] = {}
        self.truncated = False

    def get(self, path: str) -> Decision | None:
        return self.decisions.get(path)

    def __len__(self) -> int:
        return len(self.decisions)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.decisions.values())

    def _put(self, path: str, tag: int, action: str | None, why: Reason) -> None:
        if path not in self.decisions and len(self.decisions) >= MAX_DECISIONS:
            self.truncated = True  # the walk goes on: the record stops
            return
        self.decisions[path] = Decision(path, tag, action, why)

    # -- what the walk tells it ---------------------------------------------------------------

    def table(self, path: str, tag: int, action: str, types: ItemTypes | None, top: bool, animal: bool) -> None:
        """A row of Table E.1-1 (or RetainPatientIDHashOption) gave ``action``, valid for the
        attribute's type at this place (``types``)."""
        listed, _ = self.profile.by_tag[tag]
        row_tag = tag_text(tag)
        row = self.profile.tables.row(row_tag)
        basic = row.basic if row is not None else None
        if listed == PATIENT_ID_HASH:
            self._put(path, tag, action, reason(
                "patient-id-hash", f"RetainPatientIDHashOption (dcm4chee): {MEANING[action]}, the same in every "
                f"study, instead of the table's {basic}", row_tag, basic, [Option.RetainPatientIDHashOption]))
            return
        resolved, deciding = self.profile.resolution.get(row_tag, (listed, ()))
        parts = [f"PS3.15 Table E.1-1 {row_tag} {keyword_of(tag)}: basic profile {basic or listed}"]
        if deciding:
            assert row is not None  # options decide by the row
            parts.append(", ".join(f"{o.value} {row.options[o.value]}" for o in deciding) + f": {resolved}")
        if action != resolved:
            level = UNKNOWN_TYPE if types is None else types.required.get(tag, 0)
            parts.append(f"{_type_text(tag, level, types, top, animal)}: {action}")
        parts.append(MEANING.get(action, action))
        self._put(path, tag, action, reason("table", "; ".join(parts), row.tag if row else None, basic, deciding))

    def repeating(self, path: str, tag: int, action: str) -> None:
        """A curve (50xx) or an overlay's data or comments (60xx,3000/4000): their rows' action."""
        group, element = tag >> 16, tag & 0xFFFF
        row_tag, what = (("(50XX,XXXX)", "curve (50xx)") if group < 0x6000
                         else ("(60XX,3000)" if element == 0x3000 else "(60XX,4000)", "overlay (60xx)"))
        row = self.profile.tables.row(row_tag)
        assert row is not None  # the profile refuses tables without them (resolve_profile)
        resolved, deciding = self.profile.resolution[row_tag]
        parts = [f"repeating group {what}: PS3.15 Table E.1-1 {row.tag} {row.keyword}: basic profile {row.basic}"]
        if deciding:
            parts.append(", ".join(f"{o.value} {row.options[o.value]}" for o in deciding) + f": {resolved}")
        if resolved == CLEAN_GRAPHICS and action == REMOVE:
            parts.append("overlay bitmaps may carry burned-in text and are not cleaned without a pixel option: X")
        parts.append(MEANING.get(action, action))
        self._put(path, tag, action, reason("repeating-group", "; ".join(parts), row.tag, row.basic, deciding))

    def overlay_plane(self, path: str, tag: int) -> None:
        """An attribute of an overlay plane whose Overlay Data was removed: the plane goes."""
        row_tag = "(60XX,3000)"
        row = self.profile.tables.row(row_tag)
        assert row is not None
        _, deciding = self.profile.resolution[row_tag]
        self._put(path, tag, REMOVE, reason(
            "repeating-group", "repeating group 60xx (overlay): the plane goes with its Overlay Data (60xx,3000), "
            "which is removed (its label or description may carry text)", row.tag, row.basic, deciding))

    def private(self, path: str, tag: int, kept: bool, why: str) -> None:
        """A private attribute: removed, or kept as Table E.3.10-1 lists it (``why``)."""
        rule = self.profile.tables.private_rule
        options = [Option.RetainSafePrivateOption] if Option.RetainSafePrivateOption in self.profile.options else []
        text = f"{why}, {'kept' if kept else 'removed'}"
        if not options:
            text = (f"private attribute: PS3.15 Table E.1-1 Private Attributes: basic profile {rule.basic}, removed "
                    "(RetainSafePrivateOption would keep those Table E.3.10-1 lists)")
        self._put(path, tag, KEEP if kept else REMOVE, reason("private", text, rule.tag, rule.basic, options))

    def unlisted(self, path: str, tag: int, action: str, subtree: str | None, why: str | None = None) -> None:
        """An attribute the table does not list: kept, or inside a D or C subtree handled as
        its element anonymizer said (``why``)."""
        if subtree is None:
            self._put(path, tag, KEEP, reason("not-in-table", "not in PS3.15 Table E.1-1: kept"))
            return
        within, options = self.within(path)
        text = f"not in PS3.15 Table E.1-1, inside {within}: {why or MEANING.get(action, action)}"
        self._put(path, tag, action, reason("not-in-table", text, options=options))

    def cleaned_too(self, path: str, tag: int, action: str, why: str) -> None:
        """An attribute the table keeps (K), inside a C subtree: its text cleaned all the same."""
        earlier = self.decisions.get(path)
        within, options = self.within(path)
        note = f"inside {within}: {why}"
        text = f"{earlier.reason['text']}; {note}" if earlier is not None else note
        base = earlier.reason if earlier is not None else reason("not-in-table", text)
        self._put(path, tag, action, {**base, "text": text, "options": sorted({*base["options"], *options})})

    def sequence_in_subtree(self, path: str, tag: int) -> None:
        """A sequence the table does not list, inside a D or C subtree: kept, its items walked."""
        within, options = self.within(path)
        self._put(path, tag, KEEP, reason(
            "not-in-table", f"not in PS3.15 Table E.1-1: kept; inside {within}, its items' values are handled in turn",
            options=options))

    def pixel_data(self, path: str, tag: int, cleaned: str | None) -> None:
        """Top-level pixel data: passed through byte for byte, or cleaned (``cleaned``: why)."""
        if cleaned is not None:
            self._put(path, tag, KEEP, reason(
                "pixel-data", f"not in PS3.15 Table E.1-1; CleanPixelDataOption: {cleaned}, masked frame by frame",
                options=[Option.CleanPixelDataOption]))
        elif Option.CleanPixelDataOption in self.profile.options:
            self._put(path, tag, KEEP, reason(
                "pixel-data", "not in PS3.15 Table E.1-1; CleanPixelDataOption: nothing to clean in this image "
                "(the settings' regions and text found none): passed through byte for byte",
                options=[Option.CleanPixelDataOption]))
        else:
            self._put(path, tag, KEEP, reason(
                "not-in-table", "not in PS3.15 Table E.1-1: kept byte for byte (CleanPixelDataOption would mask "
                "burned-in text)"))

    def fell_back(self, path: str, tag: int, action: str, tried: str) -> None:
        """A C (``tried``) could not apply to the value (binary data, no date): the basic action."""
        earlier = self.decisions.get(path)
        what = "shifted" if tried == SHIFT_DATES else "cleaned"
        note = f"this value could not be {what}: the basic profile's action applied ({action})"
        why = (reason("table", note) if earlier is None
               else {**earlier.reason, "text": f"{earlier.reason['text']}; {note}"})
        self._put(path, tag, action, why)

    def unconditioned(self, path: str, tag: int) -> None:
        """A Type 1C attribute whose condition went with another's value (profile.VALUE_DEPENDENT)."""
        on = VALUE_DEPENDENT[tag]
        self._put(path, tag, REMOVE, reason(
            "not-in-table", f"not in PS3.15 Table E.1-1; Type 1C in the IOD, only while {tag_text(on)} "
            f"{keyword_of(on)} has a value, and it has none now: removed"))

    def context_item(self, path: str, tag: int) -> None:
        """An observation context content item (HAS OBS CONTEXT), removed whole from its tree."""
        within, options = self.within(path)
        self._put(path, tag, REMOVE, reason(
            "sequence", "an observation context content item (HAS OBS CONTEXT: who observed, who was observed), "
            f"removed whole from {within}", options=options))

    def method(self, path: str, tag: int, what: str) -> None:
        """An attribute the de-identifier writes to state what it did (method.MethodStatement)."""
        self._put(path, tag, None, reason("method", what))

    # -- --------------------------------------------------------------------------------------

    def within(self, path: str) -> tuple[str, list[str]]:
        """The D or C subtree ``path`` is in: the innermost enclosing sequence whose action made
        its items one ("the items of (0040,A730) ContentSequence (C:structured)"), and the options
        that decided that action."""
        parts = path.split(">")
        for end in range(len(parts) - 1, 0, -1):
            sequence = ">".join(parts[:end]).rsplit("[", 1)[0]
            decision = self.decisions.get(sequence)
            if decision is not None and decision.action in SUBTREE_ACTIONS:
                text = f"the items of {sequence} {keyword_of(decision.tag)} ({decision.action})"
                return text, decision.reason["options"]
        return "its sequence", []


def _type_text(tag: int, level: int, types: ItemTypes | None, top: bool, animal: bool) -> str:
    """What the IOD's type says; for a conditional type the instance decides, its condition."""
    if top and tag in ANIMAL_ONLY and level != UNKNOWN_TYPE and (types is None or tag in types.conditional
                                                                  or not level):
        return ("Type 2C in the IOD, required of an animal: the patient is one (a Patient Species is present)"
                if animal else "Type 2C in the IOD, required of an animal only: no Patient Species, not one")
    if types is not None and level in (1, 2) and tag in types.conditional:
        return (f"Type {level}C in the IOD: required under a condition of PS3.3 that the data does not tell "
                "here, so counted as required")
    return _TYPES[level]


__all__ = ["Decision", "MAX_DECISIONS", "Reason", "Record", "keyword_of", "reason", "tag_text"]
