"""Which recognized words identify, when a rule masks identifying text only (``pixel-text:
identifying``), so that measurements and labels stay legible.

A word is masked when

* it is, or with its neighbours on the line makes up, one of the instance's identifying
  values (the names, IDs, dates and other values the descriptor rules remove, see ``clean``),
  read with at most one wrong character per five (OCR misreads: DOE^JANE as BOE*JANE);
* the line's text matches a date, a time of day, a telephone number or a run of five or more
  digits there (the descriptor rules' patterns, and times);
* it looks like a name: it holds ``^`` (a DICOM person name), it follows a label such as
  ``Name:``, ``Patient``, ``Dr.`` on its line, or it is written ``Family, Given``;
* Tesseract is not sure of it (confidence under ``UNSURE``): what cannot be read cannot be
  shown harmless.
"""

from __future__ import annotations

import re

from ..clean import EMAIL, GENERIC_PATTERNS, Identifiers
from .boxes import Box
from .text import Word

UNSURE = 60.0
# Times of day: 9:41, 09:41:07, 9:41 PM, 09h41, 09.41.07; not 4.52 (a measurement).
_TIME = re.compile(r"\b(?:\d{1,2}[:h]\d{2}(?::\d{2})?(?:\s*[AP]M)?|\d{1,2}\.\d{2}\.\d{2})\b", re.I)
_LABELS = frozenset({"NAME", "NAME:", "PATIENT", "PATIENT:", "PAT", "PAT:", "PT", "PT:", "DR", "DR.", "DR:",
                     "MR", "MR.", "MRS", "MRS.", "MS", "MS.", "PHYSICIAN", "PHYSICIAN:", "REF", "REF:",
                     "REFERRING", "OPERATOR", "OPERATOR:", "ID", "ID:", "MRN", "MRN:", "DOB", "DOB:", "BORN",
                     "ACC", "ACC:", "ACCESSION"})
_FAMILY_GIVEN = re.compile(r"^[A-Z][A-Za-z'-]+,$")
_NORMAL = re.compile(r"[^0-9A-Z]")


def _normal(text: str) -> str:
    return _NORMAL.sub("", text.upper())


def _close(a: str, b: str) -> bool:
    """Equal, or at most one edit per five characters apart (both at least four long)."""
    if a == b:
        return True
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > max(len(a), len(b)) // 5:
        return False
    budget = max(1, max(len(a), len(b)) // 5)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > budget:
            return False
        previous = current
    return previous[-1] <= budget


def _lines(words: list[Word]) -> list[list[Word]]:
    """Words grouped into lines (their boxes overlap vertically), each in reading order."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: (w.box.y, w.box.x)):
        for line in lines:
            first = line[0].box
            if word.box.y < first.y + first.h and first.y < word.box.y + word.box.h:
                line.append(word)
                break
        else:
            lines.append([word])
    return [sorted(line, key=lambda w: w.box.x) for line in lines]


def identifying_boxes(words: list[Word], identifiers: Identifiers) -> list[Box]:
    """The boxes of the words to mask."""
    values = [_normal(v) for v in identifiers.values]
    values = [v for v in values if len(v) >= 2]
    masked: list[Box] = []
    for line in _lines(words):
        flagged = [w.confidence < UNSURE for w in line]
        normal = [_normal(w.text) for w in line]
        # Identifying values, alone or spread over neighbouring words.
        for start in range(len(line)):
            joined = ""
            for end in range(start, min(start + 6, len(line))):
                joined += normal[end]
                if joined and any(_close(joined, v) for v in values):
                    for k in range(start, end + 1):
                        flagged[k] = True
        # Patterns over the line's text: mark the words the match covers.
        text, spans, pos = "", [], 0
        for word in line:
            if text:
                text += " "
                pos += 1
            spans.append((pos, pos + len(word.text)))
            text += word.text
            pos += len(word.text)
        for pattern in (EMAIL, *GENERIC_PATTERNS, _TIME):
            for match in pattern.finditer(text):
                for k, (a, b) in enumerate(spans):
                    if a < match.end() and match.start() < b:
                        flagged[k] = True
        # Names by their form or their label.
        after_label = False
        for k, word in enumerate(line):
            upper = word.text.upper()
            if "^" in word.text or _FAMILY_GIVEN.match(word.text):
                flagged[k] = True
                if k + 1 < len(line):
                    flagged[k + 1] = True
            if after_label:
                flagged[k] = True
            if upper in _LABELS or upper.rstrip(":") in _LABELS and upper.endswith(":"):
                after_label = True
        masked += [w.box for w, f in zip(line, flagged) if f]
    return masked
