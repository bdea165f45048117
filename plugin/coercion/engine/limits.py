"""Bounds on what the engine accepts, so that no input can exhaust a stack or the memory.

Sequences are nested a few levels deep in real data (an SR content tree of 10 to 15, enhanced
multi-frame functional groups 4); parsers recurse once or more per level, and a thread of
Orthanc's HTTP server has a small stack: a pydicom read of about 200 levels crashed the
interpreter there. Everything the project parses or walks is refused beyond this depth, with a
message naming the limit.
"""

MAX_SEQUENCE_DEPTH = 32


class NestingError(ValueError):
    """Sequences nested deeper than MAX_SEQUENCE_DEPTH (the message says so, without values)."""


def too_deep() -> NestingError:
    return NestingError(f"sequences are nested deeper than {MAX_SEQUENCE_DEPTH} levels, the most accepted")
