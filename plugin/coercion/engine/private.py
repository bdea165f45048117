"""Private attributes: removed, unless RetainSafePrivateOption keeps what Table E.3.10-1 lists.

A private attribute is safe only as (group, private creator, element low byte) of the table;
a block keeps its creator while it keeps an attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .record import tag_text
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
        kept = self.is_kept(tag, creators)
        record = scope.instance.record
        if record is not None:
            record.private(scope.path + tag_text(tag), tag, kept, self.describe(tag, creators, kept))
        if not kept:
            del ds[tag]
        elif tag & 0xFFFF > 0x00FF and vr_of(ds, tag) == "SQ":
            self.walk.walk_items(ds[tag], scope.items(None, tag, types=False))

    def is_kept(self, tag: int, creators: dict[tuple[int, int], str]) -> bool:
        group, element = tag >> 16, tag & 0xFFFF
        if element < 0x0010 or group in _NOT_PRIVATE_GROUPS:
            return False
        if element <= 0x00FF:  # the block keeps its creator only while it keeps an attribute
            return any((group, creators[(group, element)], low) in self.safe for low in range(256))
        creator = creators.get((group, element >> 8))
        return creator is not None and (group, creator, element & 0xFF) in self.safe

    @staticmethod
    def describe(tag: int, creators: dict[tuple[int, int], str], kept: bool) -> str:
        """Why :meth:`is_kept` said ``kept`` (for the walk's record)."""
        group, element = tag >> 16, tag & 0xFFFF
        if element < 0x0010 or group in _NOT_PRIVATE_GROUPS:
            return "private group length, or a group that cannot carry private data"
        if element <= 0x00FF:
            creator = creators.get((group, element), "")
            return (f"private creator {creator!r}: " + ("its block keeps a safe attribute (RetainSafePrivateOption C)"
                                                         if kept else "Table E.3.10-1 lists no attribute of it"))
        block_creator = creators.get((group, element >> 8))
        if kept:
            return (f"private attribute {element & 0xFF:02X} of {block_creator!r}: safe in PS3.15 Table E.3.10-1 "
                    "(RetainSafePrivateOption C)")
        of = f"of {block_creator!r}" if block_creator is not None else "without a private creator"
        return f"private attribute {of}: not in PS3.15 Table E.3.10-1 (RetainSafePrivateOption keeps only those listed)"
