"""DICOM files with sequences nested to a given depth, written byte by byte (pydicom's own
writer recurses once per level, so it cannot build the hostile ones)."""

from __future__ import annotations

import struct

SR_CLASS = b"1.2.840.10008.5.1.4.1.1.88.11\x00"
_LONG = (b"SQ", b"OB", b"OW", b"UN", b"UT")


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, element, len(value)) + value
    if vr in _LONG:
        return struct.pack("<HH2sHL", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def nested(depth: int, defined: bool = False, implicit: bool = False, tag: int = 0x0040A730,
           vr: bytes = b"SQ", lead: bool = False) -> bytes:
    """A sequence element nested ``depth`` levels deep (items of defined or undefined length;
    ``lead``: each item holds an attribute before its sequence, as real content trees do)."""
    inner = _element(0x0040A040, b"CS", b"TEXT", implicit)
    undefined = struct.pack("<L", 0xFFFFFFFF)
    for _ in range(depth):
        if lead:
            inner = _element(0x0040A010, b"CS", b"CONTAINS", implicit) + inner
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = _element(tag, vr, item, implicit)
        else:
            item = struct.pack("<HH", 0xFFFE, 0xE000) + undefined + inner + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + (b"" if implicit else vr + b"\x00\x00")
            inner = head + undefined + item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return inner


def deep_file(depth: int, defined: bool = False, implicit: bool = False, **kwargs) -> bytes:
    """A Part 10 SR instance holding a content tree ``depth`` sequences deep."""
    ts = b"1.2.840.10008.1.2\x00\x00" if implicit else b"1.2.840.10008.1.2.1\x00"
    meta = b"".join(_element(tag, vr, value, False) for tag, vr, value in (
        (0x00020001, b"OB", b"\x00\x01"), (0x00020002, b"UI", SR_CLASS), (0x00020003, b"UI", b"1.2.3.4\x00"),
        (0x00020010, b"UI", ts)))
    meta = _element(0x00020000, b"UL", struct.pack("<L", len(meta)), False) + meta
    body = b"".join(_element(tag, vr, value, implicit) for tag, vr, value in (
        (0x00080016, b"UI", SR_CLASS), (0x00080018, b"UI", b"1.2.3.4\x00"), (0x00100010, b"PN", b"DOE^JOHN"),
        (0x00100020, b"LO", b"MRN-0001")))
    return b"\x00" * 128 + b"DICM" + meta + body + nested(depth, defined, implicit, **kwargs)
