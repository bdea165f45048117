"""Whether bytes are DICOM at all, decided from their first bytes, without pydicom.

Apart from dicomio so that the command line can sort files before any worker loads pydicom.
"""

from __future__ import annotations

PREAMBLE_LENGTH = 128
# The groups a dataset without file meta can start with: command, meta, directory, identifying.
_FIRST_GROUPS = frozenset({0x0000, 0x0002, 0x0004, 0x0008})


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file are DICOM: the DICM prefix, or a dataset's first element.

    A file that is neither is refused rather than force-read: a forced read of foreign data
    yields made-up attributes whose values nobody checks, which would leak whatever they hold.
    """
    if len(head) >= PREAMBLE_LENGTH + 4 and head[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] == b"DICM":
        return True
    if len(head) < 8:
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    for order in ("little", "big"):
        group = int.from_bytes(head[0:2], order)
        element = int.from_bytes(head[2:4], order)
        if group not in _FIRST_GROUPS or element > 0x1000:
            continue
        if explicit:
            length = int.from_bytes(head[6:8], order)
        elif order == "little":
            length = int.from_bytes(head[4:8], "little")
        else:
            continue
        if element == 0 and length != 4:
            continue  # a group length is always a 4-byte UL
        if length < 1 << 24:
            return True
    return False
