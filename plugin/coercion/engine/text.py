"""Text: C for descriptors, graphics and SR text, cleaned by the descriptor rules of clean.py.

A C on a sequence keeps it and cleans what is inside: its listed attributes get their own
actions, and its unlisted text is cleaned too (the items are a C subtree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .profile import CLEAN_GRAPHICS, DUMMY, KEEP
from .record import CODED_ENTRY, NAME_REPLACED, NOT_TEXT, TEXT_CLEANED
from .values import CODE_TAGS, DUMMY_STRINGS, TEXT_VRS, put, values_of, vr_of

if TYPE_CHECKING:
    from .context import Scope, Walk

_SINGLE_VALUED = frozenset({"LT", "ST", "UT"})


def clean_text(ds: Dataset, tag: int, vr: str, scope: Scope) -> None:
    """Apply the descriptor rules to every value of a text attribute. A Type 1 attribute
    that nothing is left of gets a dummy (an empty value would break the IOD)."""
    clean = scope.instance.identifiers.clean
    values = [clean(str(v)) for v in values_of(ds[tag].value)]
    value: str | list[str]
    if vr in _SINGLE_VALUED:
        value = values[0] if values else ""
    else:
        values = [v for v in values if v]
        value = values[0] if len(values) == 1 else (values or "")
    if not value and values_of(ds[tag].value) and _required(scope, tag):
        value = DUMMY_STRINGS.get(vr, "")
    put(ds, tag, vr, value)


def _required(scope: Scope, tag: int) -> bool:
    types = scope.types
    return types is not None and types.required.get(tag) == 1


def clean_unlisted(ds: Dataset, tag: int, vr: str, scope: Scope) -> tuple[str, str]:
    """An attribute the table does not list, inside a C subtree: names go, text is cleaned,
    coded entries (terminology) stay. What was done: (action, why), for the walk's record."""
    if tag in CODE_TAGS:
        return KEEP, CODED_ENTRY
    if vr == "PN":
        put(ds, tag, vr, DUMMY_STRINGS["PN"])
        return DUMMY, NAME_REPLACED
    if vr in TEXT_VRS:
        clean_text(ds, tag, vr, scope)
        return scope.subtree or KEEP, TEXT_CLEANED
    return KEEP, NOT_TEXT


class TextCleaner:
    """One of C:text, C:structured, C:graphics on one attribute."""

    def __init__(self, action: str, walk: Walk) -> None:
        self.action = action
        self.walk = walk

    def __call__(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
        vr = vr_of(ds, tag)
        if vr == "SQ":
            self.walk.walk_items(ds[tag], scope.items(self.action, tag))
        elif vr in TEXT_VRS or vr == "CS":
            clean_text(ds, tag, vr, scope)
        elif self.action == CLEAN_GRAPHICS and vr != "PN":
            pass  # curve data and other non-text graphics are kept as they are
        else:
            self.walk.fallback(ds, tag, keyword, scope, self.action)
