"""What the walk knows about the instance it de-identifies, and where in it it is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from .clean import IDENTIFYING_KEYWORDS, Identifiers, date_forms, person_name_values
from .limits import MAX_SEQUENCE_DEPTH, too_deep
from .profile import ItemTypes, Tables, patient_is_animal
from .pseudonyms import Keys
from .tags import ISSUER_OF_PATIENT_ID, PATIENT_ID, SOP_CLASS_UID, STUDY_INSTANCE_UID
from .values import text_of, values_of

if TYPE_CHECKING:
    from .record import Record


_NO_IDENTIFIERS = Identifiers(set())


class InstanceContext:
    """Per-instance facts gathered before any attribute is touched."""

    def __init__(self, header: Dataset, keys: Keys, needs_identifiers: bool, tables: Tables | None = None,
                 record: Record | None = None) -> None:
        self.keys = keys
        self.sop_class_uid = text_of(header, SOP_CLASS_UID)
        # The types of the attributes of the instance's IOD (None: not a standard SOP Class),
        # for its kind of patient (the conditions of some 2C attributes).
        self.animal = patient_is_animal(header)
        self.types = tables.item_types(self.sop_class_uid, self.animal) if tables is not None else None
        # Where the walk writes down its decisions (record.py), when one is asked for.
        self.record = record
        self.patient_id = text_of(header, PATIENT_ID)
        self.issuer = text_of(header, ISSUER_OF_PATIENT_ID)
        self._study_uid = text_of(header, STUDY_INSTANCE_UID)
        # The values text cleaning removes wherever they appear (only gathered when needed).
        self.identifiers = collect_identifiers(header) if needs_identifiers else _NO_IDENTIFIERS
        self.overlays_removed = False

    @cached_property
    def date_shift(self) -> int:
        if self.patient_id:
            return self.keys.date_shift_days(self.patient_id, self.issuer)
        # Without a patient ID, keep at least the intervals within the study.
        return self.keys.date_shift_days("StudyInstanceUID:" + self._study_uid)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where the walk is: in which instance, at its top level or in an item, inside which
    C subtree (whose unlisted text is cleaned too) or D subtree (whose values are replaced),
    if any, and the types the IOD gives the attributes at this place (None: not known).
    ``path``, only while a record is kept: the record's path of this dataset's attributes
    ("(0040,A730)[2]>"; the items' scope has the sequence's until :meth:`item` gives an index)."""

    instance: InstanceContext
    top: bool
    subtree: str | None = None
    depth: int = 0  # sequences around this dataset
    types: ItemTypes | None = None
    path: str = ""

    def items(self, subtree: str | None, tag: int, types: bool = True) -> "Scope":
        """The scope of the items of the sequence ``tag`` met here (refused beyond the nesting
        limit); ``types``: whether the IOD's types of its items apply (not in private blocks)."""
        if self.depth >= MAX_SEQUENCE_DEPTH:
            raise too_deep()
        children = self.types.children.get(tag) if self.types is not None and types else None
        path = f"{self.path}({tag >> 16:04X},{tag & 0xFFFF:04X})" if self.instance.record is not None else ""
        return Scope(self.instance, False, subtree, self.depth + 1, children, path)

    def item(self, index: int) -> "Scope":
        """The scope of item ``index`` of the sequence whose items' scope this is (recording)."""
        return Scope(self.instance, False, self.subtree, self.depth, self.types, f"{self.path}[{index}]>")


class Walk(Protocol):
    """The walk, as the element anonymizers call back into it (deidentify.Deidentifier): the items
    of a sequence walked, the basic action where a C cannot apply, a D."""

    def walk_items(self, elem: DataElement, scope: Scope) -> None: ...

    def fallback(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope, tried: str) -> None: ...

    def dummy(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None: ...


def collect_identifiers(ds: Dataset) -> Identifiers:
    """Every person name (with its parts) and identifying value of the instance, at any depth."""
    values: set[str] = set()
    wanted = set(IDENTIFYING_KEYWORDS)

    def visit(d: Dataset, depth: int) -> None:
        for elem in d:
            if elem.tag.group & 1:
                continue
            if elem.VR == "SQ":
                if depth >= MAX_SEQUENCE_DEPTH:
                    raise too_deep()
                for item in elem.value:
                    visit(item, depth + 1)
                continue
            if elem.VR == "PN":
                for v in values_of(elem.value):
                    values.update(person_name_values(str(v)))
            elif elem.keyword in wanted:
                for v in values_of(elem.value):
                    text = str(v)
                    values.add(text)
                    if elem.VR in ("DA", "DT"):
                        values.update(date_forms(text[:8]))

    visit(ds, 0)
    return Identifiers(values)
