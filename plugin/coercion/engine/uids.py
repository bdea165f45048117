"""UIDs: U replaces every UID by its keyed pseudonym, the same wherever it is referenced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .profile import nested_subtree
from .pseudonyms import Keys
from .tags import SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from .values import put, text_of, values_of

if TYPE_CHECKING:
    from .context import Scope, Walk

# Study, Series and SOP Instance UID: the UIDs a C-FIND or C-MOVE names, which a peer may
# query or retrieve by later (the outcome lists those replaced).
QUERY_UID_TAGS = (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)


def query_uids(ds: Dataset) -> list[str]:
    return [text_of(ds, tag) for tag in QUERY_UID_TAGS]


def replaced_uids(before: list[str], after: list[str]) -> tuple[tuple[str, str], ...]:
    """(original, pseudonym) of the query UIDs that changed."""
    return tuple((old, new) for old, new in zip(before, after) if old and new and old != new)


class UIDReplacer:
    """U: a UID attribute gets the pseudonyms of its values; a sequence (X/Z/U* resolved to
    its last alternative) is kept with the UIDs of its items replaced; another VR gets a dummy."""

    def __init__(self, keys: Keys, walk: Walk) -> None:
        self.keys = keys
        self.walk = walk

    def __call__(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
        elem = ds[tag]
        if elem.VR == "SQ":
            self.walk.walk_items(elem, scope.items(nested_subtree(scope.subtree), tag))
            return
        if elem.VR != "UI":
            self.walk.dummy(ds, tag, keyword, scope)
            return
        uid = self.keys.uid
        values = [uid(str(v)) for v in values_of(elem.value) if str(v).strip("\x00 ")]
        put(ds, tag, "UI", values[0] if len(values) == 1 else (values or None))
