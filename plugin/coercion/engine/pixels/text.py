"""Where the text of an image is: Tesseract (Debian's tesseract-ocr, in-process through
tesserocr) reading a picture of the image's sharp features.

Burned-in text is drawn in flat shades with sharp edges, on whatever lies beneath. Before
Tesseract sees it, each channel is compared with its own local mean (a box blur) at two
scales, and only what stands out by more than ``CONTRAST`` levels, brighter or darker, is
kept, as black on white: the speckle of an ultrasound or the gradients of a photograph fall
away, text of any shade on any background stays, and Tesseract's page layout analysis then
finds its lines in milliseconds (no recognition is needed to mask them). Recognition runs
only when the masks are to spare text that does not identify (``words``).

Tesseract engines are not thread-safe and load their model once: a few are kept and lent to
one thread at a time.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .boxes import Box

if TYPE_CHECKING:
    from tesserocr import PyTessBaseAPI

# Tesseract's OpenMP threads spin-wait for work: on small pictures they cost 8x the work itself
# (100 ms against 12 for a line). One thread each; the engines run side by side. libgomp reads
# this when it loads, with tesserocr: before any import of it. An administrator's value stays.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

# Levels (of 255) by which a text stroke stands out from its surroundings.
CONTRAST = 64
# Pixels in a stroke (8-connected) at the least: what is smaller is a speck.
MIN_STROKE = 5
_NEAR = 2  # ...unless it lies this close to a stroke (a thin stroke, broken)
# Box-blur radii: thin strokes against the first; the strokes of large text against the second.
_RADII = (5, 18)
UPSCALE = 2  # text lines are found at twice their size
_READ_HEIGHT = 36  # pixels: the height words are recognized at (Tesseract's best is 20-40)
_ENGINES = 2  # Tesseract engines shared by all threads (each holds its model: ~20 MB)


class OcrUnavailable(RuntimeError):
    """Tesseract cannot be used here (not installed, no English model)."""


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float  # 0-100, Tesseract's
    box: Box


def foreground(channels: list[np.ndarray]) -> np.ndarray:
    """Where the image has sharp features, as two planes: what is brighter than its
    surroundings by more than CONTRAST, at either scale, in some 8-bit channel (light text),
    and what is darker (dark text). Kept apart, each shows its text as solid strokes (taken
    together they would be outlines: the dark side of a light stroke is its edge)."""
    from PIL import Image, ImageFilter
    from scipy import ndimage

    height, width = channels[0].shape
    planes = np.zeros((2, height, width), bool)
    for channel in channels:
        picture = Image.fromarray(channel)
        values = channel.astype(np.int16)
        for radius in _RADII:
            difference = values - np.asarray(picture.filter(ImageFilter.BoxBlur(radius)), dtype=np.int16)
            planes[0] |= difference > CONTRAST
            planes[1] |= difference < -CONTRAST
    # Specks are noise (speckle, grain), never a stroke: a few pixels together at most, where
    # the strokes of even small text are larger. Away with them, and with the work they would
    # give Tesseract (and the lines it would draw through them); but not with the broken bits of
    # a thin stroke, right next to a whole one.
    eight = np.ones((3, 3), bool)
    for plane in planes:
        labels, count = ndimage.label(plane, structure=eight)
        if not count:
            continue
        kept = np.bincount(labels.ravel()) >= MIN_STROKE
        kept[0] = False
        strokes = kept[labels]
        # Within _NEAR of a stroke: a box blur of it is not zero (Pillow's is fast; its MaxFilter is not).
        near = np.asarray(Image.fromarray(strokes.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(_NEAR))) > 0
        kept[np.unique(labels[near & plane])] = True
        kept[0] = False
        plane[...] = kept[labels]
    return planes


class TextFinder:
    """Text lines (and, when asked, words) of 8-bit images, found by Tesseract."""

    def __init__(self, engines: int = _ENGINES) -> None:
        self._size = engines
        self._engines: queue.SimpleQueue[PyTessBaseAPI] | None = None
        self._made = 0
        self._lock = threading.Lock()

    # -- the engines ----------------------------------------------------------------------

    def _borrow(self) -> PyTessBaseAPI:
        with self._lock:
            if self._engines is None:
                self._engines = queue.SimpleQueue()
            if self._made < self._size and self._engines.empty():
                self._engines.put(_new_engine())
                self._made += 1
        return self._engines.get()

    def _give_back(self, engine: PyTessBaseAPI) -> None:
        assert self._engines is not None  # made by the _borrow that lent it
        self._engines.put(engine)

    # -- finding --------------------------------------------------------------------------

    def lines(self, mask: np.ndarray, within: Box | None = None) -> list[Box]:
        """The text lines Tesseract's layout analysis finds in a foreground ``mask`` (see
        foreground: each plane is read), in image coordinates; ``within``: only in that part."""
        from PIL import Image
        from tesserocr import RIL

        x0, y0 = (within.x, within.y) if within else (0, 0)
        found: list[Box] = []
        for plane in mask:
            part = plane[y0:y0 + within.h, x0:x0 + within.w] if within else plane
            if not part.any():
                continue
            # Twice the size: Tesseract finds no line in text under about 8 pixels high.
            scale = UPSCALE
            picture = Image.fromarray(np.where(part, 0, 255).astype(np.uint8))
            if scale > 1:
                picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
            engine = self._borrow()
            try:
                engine.SetImage(picture)
                components = engine.GetComponentImages(RIL.TEXTLINE, True) or []
                engine.Clear()
            finally:
                self._give_back(engine)
            for _, rect, *_ in components:
                x, y = rect["x"] // scale, rect["y"] // scale
                w, h = -(-(rect["x"] + rect["w"]) // scale) - x, -(-(rect["y"] + rect["h"]) // scale) - y
                if w * h >= 12:
                    found.append(Box(x0 + x, y0 + y, w, h))
        return found

    def words(self, channels: list[np.ndarray], mask: np.ndarray, lines: list[Box]) -> list[Word]:
        """The words Tesseract recognizes on each of ``lines`` (found in ``mask``), with its
        confidence, read in the image itself (the 8-bit ``channels``), not in its foreground:
        each line alone, in the channel where it stands out most, dark on light, enlarged to
        the size Tesseract reads best. A line where nothing is recognized is one word of no
        confidence."""
        from PIL import Image
        from tesserocr import PSM, RIL, iterate_level

        height, width = mask.shape[1:]
        found: list[Word] = []
        for line in _distinct(lines):
            part = line.padded(max(2, line.h // 2), width, height)
            window = np.s_[part.y:part.y + part.h, part.x:part.x + part.w]
            channel = max(channels, key=lambda c: int(np.ptp(c[window])))
            piece = channel[window]
            if mask[0][window].sum() >= mask[1][window].sum():  # light text: make it dark
                piece = 255 - piece
            scale = min(4, max(2, -(-_READ_HEIGHT // max(line.h, 1))))
            picture = Image.fromarray(np.ascontiguousarray(piece)).resize((part.w * scale, part.h * scale),
                                                                         Image.Resampling.LANCZOS)
            read: list[Word] = []
            engine = self._borrow()
            try:
                engine.SetPageSegMode(PSM.SINGLE_LINE)
                engine.SetImage(picture)
                engine.Recognize()
                iterator = engine.GetIterator()
                if iterator is not None:
                    for word in iterate_level(iterator, RIL.WORD):
                        box = word.BoundingBox(RIL.WORD)
                        text = word.GetUTF8Text(RIL.WORD)
                        if box is None or not text or not text.strip():
                            continue
                        x0, y0, x1, y1 = box
                        x0, y0 = part.x + x0 // scale, part.y + y0 // scale
                        x1, y1 = part.x + -(-x1 // scale), part.y + -(-y1 // scale)
                        read.append(Word(text.strip(), float(word.Confidence(RIL.WORD)),
                                         Box(x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))))
                engine.Clear()
            finally:
                engine.SetPageSegMode(PSM.SPARSE_TEXT)
                self._give_back(engine)
            found += read or [Word("", 0.0, line)]
        return found


def _distinct(lines: list[Box]) -> list[Box]:
    """Lines found in both foreground planes (a light line's dark outline) once: a line mostly
    within another is left out."""
    out: list[Box] = []
    for line in sorted(lines, key=lambda b: -b.w * b.h):
        if not any(_shared(line, o) * 2 >= line.w * line.h for o in out):
            out.append(line)
    return out


def _shared(a: Box, b: Box) -> int:
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(w, 0) * max(h, 0)


# Where Debian's tesseract-ocr-eng puts the English model (the version folder changes with
# Tesseract's major release). PyPI's tesserocr wheels bundle a Tesseract of their own that looks
# for its models elsewhere and ships none: they are pointed here.
DEBIAN_TESSDATA = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata")


def tessdata_folders() -> list[str]:
    """The folders holding eng.traineddata: TESSDATA_PREFIX first, then Debian's."""
    from glob import glob

    candidates = [os.environ["TESSDATA_PREFIX"]] if os.environ.get("TESSDATA_PREFIX") else []
    for pattern in DEBIAN_TESSDATA:
        candidates += sorted(glob(pattern), reverse=True)  # the newest release first
    return [c for c in dict.fromkeys(candidates) if os.path.isfile(os.path.join(c, "eng.traineddata"))]


def _new_engine() -> PyTessBaseAPI:
    try:
        from tesserocr import PSM, PyTessBaseAPI
    except ImportError:
        raise OcrUnavailable("CleanPixelDataOption needs Tesseract: install Debian's tesseract-ocr and the "
                             "Python package tesserocr (plugin/scripts/common.sh does)") from None
    # Sparse text: as much text as possible, in no particular order (captions, not pages).
    try:
        return PyTessBaseAPI(lang="eng", psm=PSM.SPARSE_TEXT)  # where this Tesseract looks itself
    except RuntimeError:
        pass
    for folder in tessdata_folders():
        try:
            return PyTessBaseAPI(path=folder + os.sep, lang="eng", psm=PSM.SPARSE_TEXT)
        except RuntimeError:
            continue
    raise OcrUnavailable("Tesseract has no English model: install Debian's tesseract-ocr-eng (or set "
                         "TESSDATA_PREFIX to a folder holding eng.traineddata)") from None


def find_text_finder() -> TextFinder:
    """The process's finder (its engines are made at first use)."""
    return _FINDER


_FINDER = TextFinder()
