"""SR content (CleanStructuredContentOption): the content tree is kept, cleaned item by item.

Content items under HAS OBS CONTEXT (observer and subject context, TID 1001-1024) name who
observed and who was observed: they are removed whole. What remains is walked as a C subtree:
TEXT values cleaned, PNAME, DATE, TIME, DATETIME and UIDREF values as the table says, coded
entries kept.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
RELATIONSHIP_TYPE = 0x0040A010


def _relationship(item: Dataset) -> str:
    elem = item.get(RELATIONSHIP_TYPE)
    return str(elem.value).strip() if elem is not None and elem.value is not None else ""


def without_context(elem: DataElement) -> list[Dataset]:
    """The items of a content sequence, the observation context ones removed from it."""
    items = elem.value or []
    kept = [item for item in items if _relationship(item) != HAS_OBS_CONTEXT]
    if len(kept) != len(items):
        elem.value = Sequence(kept)
    return kept
