"""Which images Clean Pixel Data cleans, and the site's regions of known burned-in text.

An image is cleaned when

* it says it has burned-in text (Burned In Annotation YES), or
* it is of a kind that usually carries text in its pixels, whatever it says (modalities and
  consoles rarely fill Burned In Annotation, and not always truly): ultrasound, secondary
  capture (screenshots, scanned documents, exported reports), and visible-light photography,
  endoscopy, microscopy and ophthalmic photography (``USUAL_TEXT_SOP_CLASSES``, or Modality US,
  OT, XC, ES, GM, SM, OP), or
* a region of the site's file matches it by header signature.

Other images (CT, MR, CR, DX, MG, NM, PT...) keep their pixel data byte for byte unless they
declare burned-in text: their text is in the header, and OCR of their anatomy would only mask
parts of it.

The regions file (``pixel-regions.yaml`` in the rules folder) names, CTP-style, the rectangles
where a device writes its text::

    - name: acme-us-console
      match:                          # every attribute must match: a regular expression
        Manufacturer: "ACME.*"        #   (case-insensitive, full match) or a list of them
        ManufacturerModelName: "US 9000"
        Rows: 768                     #   numbers compare as numbers
        Columns: 1024
      regions:                        # x, y, width, height in pixels
        - [0, 0, 1024, 64]
        - [0, 700, 300, 68]
      ocr: false                      # false (default): these rectangles, no OCR; true: both

Matching images are cleaned (masked without OCR unless ``ocr: true``); a signature that does
not match leaves the image to the rules above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .boxes import Box

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

USUAL_TEXT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1",    # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",    # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.6",      # Ultrasound Image (retired)
    "1.2.840.10008.5.1.4.1.1.3",      # Ultrasound Multi-frame Image (retired)
    "1.2.840.10008.5.1.4.1.1.7",      # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.1",    # Multi-frame Single Bit Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",    # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",    # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",    # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.77.1.1",    # VL Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2",    # VL Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.3",    # VL Slide-Coordinates Microscopic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",    # VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit Image
})
USUAL_TEXT_MODALITIES = frozenset({"US", "OT", "XC", "ES", "GM", "SM", "OP"})
REGIONS_FILE = "pixel-regions.yaml"
_MAX_REGIONS = 1000
# What a signature wants of an attribute: a number, or patterns one of which its text matches.
Condition = int | tuple[re.Pattern[str], ...]


class RegionsError(ValueError):
    """A regions file that cannot be used; the message names the file, the entry and the field."""


def _text(header: Dataset, keyword: str) -> str:
    value = header.get(keyword)
    if value is None:
        return ""
    value = getattr(value, "value", value)
    return str(value).strip().upper() if value not in (None, "") else ""


def reason_to_clean(header: Dataset) -> str | None:
    """Why this image's pixels are cleaned (no values), or None."""
    if _text(header, "BurnedInAnnotation") == "YES":
        return "Burned In Annotation YES"
    if _text(header, "SOPClassUID") in USUAL_TEXT_SOP_CLASSES:
        return "a kind of image that usually carries burned-in text"
    if _text(header, "Modality") in USUAL_TEXT_MODALITIES:
        return "a modality whose images usually carry burned-in text"
    return None


@dataclass(frozen=True)
class Signature:
    name: str
    match: tuple[tuple[str, Condition], ...]  # (keyword, what it must be)
    regions: tuple[Box, ...]
    ocr: bool = False

    def matches(self, header: Dataset) -> bool:
        for keyword, wanted in self.match:
            value = header.get(keyword)
            value = getattr(value, "value", value) if value is not None else None
            if isinstance(wanted, int):
                try:
                    if value is None or int(value) != wanted:
                        return False
                except (TypeError, ValueError):
                    return False
            else:
                values = [str(v).strip() for v in (value if isinstance(value, (list, tuple)) else [value])
                          if v not in (None, "")] or [""]
                try:
                    if not any(p.fullmatch(v) for p in wanted for v in values):
                        return False
                except TypeError:
                    return False
        return True


@dataclass(frozen=True)
class SiteRegions:
    source: str
    signatures: tuple[Signature, ...] = ()

    def matching(self, header: Dataset) -> Signature | None:
        return next((s for s in self.signatures if s.matches(header)), None)


NO_REGIONS = SiteRegions("(none)")


def load_regions(path: str | Path) -> SiteRegions:
    """The signatures of a regions file; RegionsError naming the file, entry and field."""
    path = Path(path)
    raw = _read_regions_file(path)
    if raw is None:
        return SiteRegions(str(path))
    if not isinstance(raw, list):
        raise RegionsError(f"{path}: must hold a list of signatures (- name: ..., match: ..., regions: ...)")
    signatures, names = [], set()
    total = 0
    for index, entry in enumerate(raw, start=1):
        name = _entry_name(entry, f"{path}: entry {index}")
        where = f"{path}: signature {name!r}"
        if name in names:
            raise RegionsError(f"{where}: field 'name': another signature has this name")
        names.add(name)
        conditions = _conditions(entry.get("match"), where)
        boxes = _boxes(entry.get("regions"), where)
        total += len(boxes)
        if total > _MAX_REGIONS:
            raise RegionsError(f"{path}: more than {_MAX_REGIONS} regions")
        ocr = entry.get("ocr", False)
        if not isinstance(ocr, bool):
            raise RegionsError(f"{where}: field 'ocr' must be true or false")
        signatures.append(Signature(name, conditions, boxes, ocr))
    return SiteRegions(str(path), tuple(signatures))


def _read_regions_file(path: Path) -> Any:
    """What a regions file holds, as YAML reads it (None: nothing)."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegionsError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise RegionsError(f"{path}: not valid YAML{line}") from None


def _entry_name(entry: object, where: str) -> str:
    """The name of a signature entry, once the entry is a mapping of known fields only."""
    if not isinstance(entry, dict):
        raise RegionsError(f"{where}: must be a mapping with name, match and regions")
    unknown = sorted(set(entry) - {"name", "match", "regions", "ocr", "description"})
    if unknown:
        raise RegionsError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; known: name, match, "
                           "regions, ocr, description")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RegionsError(f"{where}: field 'name' must be a non-empty string")
    return name


def _conditions(match: object, where: str) -> tuple[tuple[str, Condition], ...]:
    """What field 'match' of a signature wants of each attribute: a number, or patterns."""
    from pydicom.datadict import tag_for_keyword

    if not isinstance(match, dict) or not match:
        raise RegionsError(f"{where}: field 'match' must map attribute keywords to values")
    conditions: list[tuple[str, Condition]] = []
    for keyword, wanted in match.items():
        if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
            raise RegionsError(f"{where}: field 'match': {keyword!r} is not a DICOM attribute keyword")
        if isinstance(wanted, bool):
            raise RegionsError(f"{where}: field 'match.{keyword}' must be a number, a string or a list of strings")
        if isinstance(wanted, int):
            conditions.append((keyword, wanted))
            continue
        conditions.append((keyword, _patterns(wanted, f"{where}: field 'match.{keyword}'")))
    return tuple(conditions)


def _patterns(wanted: object, field: str) -> tuple[re.Pattern[str], ...]:
    """The regular expressions of a condition on text (one, or a list of them; numbers in it
    are patterns too), matched case-insensitively."""
    compiled = []
    for pattern in wanted if isinstance(wanted, list) else [wanted]:
        if not isinstance(pattern, (str, int, float)) or isinstance(pattern, bool):
            raise RegionsError(f"{field} must be a number, a string or a list of strings")
        try:
            compiled.append(re.compile(str(pattern), re.I))
        except re.error as exc:
            raise RegionsError(f"{field}: invalid regular expression ({exc})") from None
    return tuple(compiled)


def _boxes(regions: object, where: str) -> tuple[Box, ...]:
    """The rectangles of field 'regions' of a signature."""
    if not isinstance(regions, list) or not regions:
        raise RegionsError(f"{where}: field 'regions' must be a list of [x, y, width, height]")
    boxes = []
    for number, region in enumerate(regions, start=1):
        if (not isinstance(region, list) or len(region) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in region)
                or region[2] < 1 or region[3] < 1):
            raise RegionsError(f"{where}: field 'regions', region {number}: must be [x, y, width, height], "
                               "whole numbers of pixels, width and height at least 1")
        boxes.append(Box(*region))
    return tuple(boxes)
