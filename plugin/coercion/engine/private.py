"""Private attributes: removed, unless RetainSafePrivateOption keeps what Table E.3.10-1 lists.

A private attribute is safe only as (group, private creator, element low byte) of the table;
a block keeps its creator while it keeps an attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .values import vr_of

if TYPE_CHECKING:
    from .context import Scope, Walk

# Group length, and the odd groups that cannot carry private data.
_NOT_PRIVATE_GROUPS = frozenset({0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF})


def private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    """(group, block) -> creator, for the private blocks of one dataset."""
    creators: dict[tuple[int, int], str] = {}
    for tag in ds.keys():
        if tag >> 16 & 1 and 0x0010 <= tag & 0xFFFF <= 0x00FF:
            creators[(tag >> 16, tag & 0xFF)] = str(ds[tag].value or "").strip()
    return creators


class SafePrivateBlocks:
    """Keeps the safe private attributes of a dataset and removes every other one."""

    def __init__(self, safe: frozenset[tuple[int, str, int]], walk: Walk) -> None:
        self.safe = safe  # (group, creator, element low byte)
        self.walk = walk

    def __call__(self, ds: Dataset, tag: int, creators: dict[tuple[int, int], str], scope: Scope) -> None:
        group, element = tag >> 16, tag & 0xFFFF
        safe = self.safe
        if element < 0x0010 or group in _NOT_PRIVATE_GROUPS:
            del ds[tag]
            return
        if element <= 0x00FF:
            if not any((group, creators[(group, element)], low) in safe for low in range(256)):
                del ds[tag]  # the block keeps its creator only while it keeps an attribute
            return
        creator = creators.get((group, element >> 8))
        if creator is None or (group, creator, element & 0xFF) not in safe:
            del ds[tag]
            return
        if vr_of(ds, tag) == "SQ":
            self.walk.walk_items(ds[tag], scope.items(None))
