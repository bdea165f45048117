"""Clean Pixel Data: burned-in text masked in every frame.

``PixelCleaner.plan`` decides, from the original header, whether an instance is cleaned and
how (``policy``: which images; the site's regions); ``PixelCleaner.apply``, after the header
walk, replaces the instance's pixel data by a stream that cleans one frame at a time as it is
written (``frames``), and states what was done in the header.

Text is found frame by frame, but not found again where nothing could have changed: the
foreground Tesseract reads (``text.foreground``) is compared with the previous frame's, and
only the part of the frame where it differs (widened, and with the lines found before that it
touches) is read again; where it is identical, so is what Tesseract would find. A frame whose
text moved, changed or appeared is read where it did; a cine whose text stays put is read
once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar, cast

import numpy as np
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit

from . import frames as fr
from .identifying import identifying_boxes
from .jpegmask import JpegLayout, JpegMaskError, mask_jpeg, read_layout, snap
from .policy import reason_to_clean
from .settings import PixelSettings
from .boxes import Box, joined_lines, outermost
from .text import TextFinder, find_text_finder, foreground

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..clean import Identifiers
    from ..dicomio import Chunk, Instance

_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, UID("1.2.840.10008.1.2.4.81")})  # JPEG-LS near-lossless
# A frame is read again only within the part where its foreground changed, this much wider.
_CHANGE_MARGIN = 24
# ...unless that part is most of the frame: then the whole frame (one call, not many).
_WHOLE_FRAME = 0.6
# A change of fewer pixels than this (together) is a speck of the image coming and going, not
# text: no glyph is so small, and inside the boxes found before, a change is masked anyway.
_MIN_CHANGE = 12

_Source = TypeVar("_Source")  # where a frame comes from: its index, or its compressed bytes
_Written = TypeVar("_Written")  # what is written of it
_Result = TypeVar("_Result")  # what a worker's function returns


@dataclass
class CleanPlan:
    reason: str
    fixed: tuple[Box, ...] = ()  # the site's regions
    ocr: bool = True
    signature: str | None = None
    identifiers: Identifiers | None = None  # for "identifying"


class PixelCleaner:
    def __init__(self, settings: PixelSettings | None = None, finder: TextFinder | None = None):
        self.settings = settings or PixelSettings()
        self._finder = finder

    @property
    def finder(self) -> TextFinder:
        return self._finder or find_text_finder()

    def plan(self, header: Dataset, identifiers: Identifiers | None = None) -> CleanPlan | None:
        """Whether (and why) the instance is cleaned, from its original header; None: its
        pixel data stays as it is."""
        signature = self.settings.regions.matching(header)
        if signature is not None:
            return CleanPlan(f"signature {signature.name!r}", signature.regions, signature.ocr, signature.name,
                             identifiers)
        reason = reason_to_clean(header)
        return CleanPlan(reason, identifiers=identifiers) if reason else None

    # -- the instance -------------------------------------------------------------------------

    def apply(self, plan: CleanPlan, instance: Instance) -> None:
        """Replace the pixel data of ``instance`` by its cleaned stream and state the change in
        its header (Burned In Annotation NO; photometric interpretation, transfer syntax and
        planar configuration of what is written). PixelError when it cannot be cleaned."""
        from ..dicomio import PixelElement, StreamedPixels

        header = instance.header
        pixels = [s for s in instance.segments if isinstance(s, PixelElement)]
        if not pixels:
            raise fr.PixelError("the image has no pixel data to clean")
        element = pixels[0]
        if element.tag != 0x7FE00010:
            raise fr.PixelError("float or double float pixel data cannot be cleaned")
        syntax = instance.transfer_syntax
        encapsulated = element.undefined_length
        fmt = fr.pixel_format(header, UID(str(syntax)) if encapsulated else syntax, instance.is_little_endian)
        palette = _palette(header) if fmt.photometric == "PALETTE COLOR" else None
        if not encapsulated:
            if len(element.value) < fmt.frame_bytes * fmt.frames:
                raise fr.PixelError("the pixel data is shorter than its frames")
            if fmt.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
                raise fr.PixelError(f"native {fmt.photometric} pixel data cannot be cleaned")
            stream = self._native(plan, element.value, fmt, palette)
            replacement = StreamedPixels(element.tag, element.vr, stream, len(element.value))
        elif fmt.transfer_syntax in (JPEGBaseline8Bit, JPEGExtended12Bit) and palette is None and \
                self._dct_maskable(element.value, fmt):
            replacement = StreamedPixels(element.tag, "OB", self._jpeg(plan, element.value, fmt), None)
        else:
            fr.decoder_for(fmt)  # refused now, before anything is written, if it cannot be decoded
            out_photometric = "RGB" if fmt.samples == 3 else fmt.photometric
            # The syntax is chosen before anything is written (the file meta comes first): by
            # encoding an empty frame of the format (what an encoder accepts depends on it only).
            blank = np.zeros((fmt.rows, fmt.columns, 3) if fmt.samples == 3 else (fmt.rows, fmt.columns),
                             fmt.dtype.newbyteorder("="))
            _, out_syntax = fr.encode_frame(blank, fmt, fr.output_syntax(fmt), out_photometric)
            replacement = StreamedPixels(element.tag, "OB", self._decoded(plan, element.value, fmt, palette,
                                                                          out_photometric, out_syntax), None)
            if out_syntax != fmt.transfer_syntax:
                instance.file_meta.TransferSyntaxUID = out_syntax
            header.PhotometricInterpretation = out_photometric
            if fmt.samples == 3:
                header.PlanarConfiguration = 0
        instance.segments[instance.segments.index(element)] = replacement
        for tag in (0x7FE00001, 0x7FE00002):  # Extended Offset Table (Lengths): offsets change
            if tag in header:
                del header[tag]
        header.BurnedInAnnotation = "NO"
        if fmt.transfer_syntax in _LOSSY and str(header.get("LossyImageCompression", "") or "") != "01":
            header.LossyImageCompression = "01"  # written losslessly now, but once compressed with loss

    # -- the three ways ------------------------------------------------------------------------
    # Each decodes a frame and finds where its text stands out (this thread) while the frame
    # before is read by Tesseract (a worker: Tesseract lets go of the interpreter), then masks
    # and writes it: a few frames in memory at a time.

    def _frames(self, plan: CleanPlan, fmt: fr.PixelFormat, sources: Iterable[_Source],
                decode: Callable[[_Source], tuple[np.ndarray, list[np.ndarray]]],
                write: Callable[[_Source, np.ndarray, list[Box]], _Written]) -> Iterator[_Written]:
        """``write(source, frame, boxes)`` of every frame, in order; ``decode(source)``:
        (the frame as an array, the 8-bit pictures text is looked for in)."""
        reader = _FrameReader(self, plan, fmt)
        count = 0
        with (ThreadPoolExecutor(1, thread_name_prefix="coercion-ocr") if fmt.frames > 1 else _Inline()) as worker:
            pending: deque[tuple[_Source, np.ndarray, Future[list[Box]]]] = deque()
            for source in sources:
                count += 1
                frame, channels = decode(source)
                mask = foreground(channels) if plan.ocr else None
                pending.append((source, frame, worker.submit(reader.boxes, mask, channels)))
                if len(pending) > _IN_FLIGHT:
                    source, frame, found = pending.popleft()
                    yield write(source, frame, found.result())
            while pending:
                source, frame, found = pending.popleft()
                yield write(source, frame, found.result())
        if count != fmt.frames:
            raise fr.PixelError("the pixel data holds fewer frames than Number of Frames says")

    def _native(self, plan: CleanPlan, value: memoryview, fmt: fr.PixelFormat,
                palette: np.ndarray | None) -> Iterator[Chunk]:
        size = fmt.frame_bytes

        def decode(index: int) -> tuple[np.ndarray, list[np.ndarray]]:
            frame = fr.native_frame(value, fmt, index)
            return frame, fr.channels_for_text(frame, fmt, palette)

        def write(index: int, frame: np.ndarray, boxes: list[Box]) -> Chunk:
            if not boxes:
                return value[index * size:(index + 1) * size]
            return fr.native_bytes(fr.mask_array(frame, boxes, fr.fills(frame, boxes, palette)), fmt)

        return self._frames(plan, fmt, range(fmt.frames), decode, write)

    def _dct_maskable(self, value: memoryview, fmt: fr.PixelFormat) -> bool:
        first = next(fr.encapsulated_frames(value, fmt.frames), None)
        if first is None:
            raise fr.PixelError("the encapsulated pixel data holds no frame")
        try:
            return read_layout(first).precision == 8
        except JpegMaskError:
            return False

    def _jpeg(self, plan: CleanPlan, value: memoryview, fmt: fr.PixelFormat) -> Iterator[bytes]:
        def decode(data: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
            picture = fr.jpeg_frame_picture(data)
            return picture, [picture] if picture.ndim == 2 else fr.colour_channels(picture)

        def write(data: bytes, picture: np.ndarray, boxes: list[Box]) -> bytes:
            if not boxes:
                return fr.item(data)
            try:
                layout = read_layout(data)
                rectangles = [snap(layout, *b.as_tuple()) for b in boxes]
                fills = [_coded(layout, value) for value in
                         fr.fills(picture, [Box(*r) for r in rectangles], None)]
                return fr.item(mask_jpeg(data, rectangles, fills))
            except JpegMaskError as exc:
                raise fr.PixelError(str(exc)) from None

        def chunks() -> Iterator[bytes]:
            yield fr.EMPTY_OFFSET_TABLE
            yield from self._frames(plan, fmt, fr.encapsulated_frames(value, fmt.frames), decode, write)
            yield fr.SEQUENCE_DELIMITER
        return chunks()

    def _decoded(self, plan: CleanPlan, value: memoryview, fmt: fr.PixelFormat, palette: np.ndarray | None,
                 photometric: str, syntax: UID) -> Iterator[bytes]:
        def decode(data: bytes) -> tuple[np.ndarray, list[np.ndarray]]:
            frame, decoded_as = fr.decode_frame(data, fmt)
            if decoded_as != photometric and not (fmt.samples == 1 and decoded_as == fmt.photometric):
                raise fr.PixelError(f"a frame decoded as {decoded_as}, not {photometric}")
            return frame, fr.channels_for_text(frame, fmt, palette)

        def write(data: bytes, frame: np.ndarray, boxes: list[Box]) -> bytes:
            if boxes:
                frame = fr.mask_array(frame, boxes, fr.fills(frame, boxes, palette))
            encoded, used = fr.encode_frame(frame, fmt, syntax, photometric)
            if used != syntax:
                raise fr.PixelError(f"a cleaned frame could not be encoded in {syntax.name} as the others")
            return fr.item(encoded)

        def chunks() -> Iterator[bytes]:
            yield fr.EMPTY_OFFSET_TABLE
            yield from self._frames(plan, fmt, fr.encapsulated_frames(value, fmt.frames), decode, write)
            yield fr.SEQUENCE_DELIMITER
        return chunks()


_IN_FLIGHT = 2  # frames decoded ahead of the one being written


class _Inline:
    """A worker that does the work at once (one frame: nothing to overlap)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *_: object) -> Literal[False]:
        return False

    def submit(self, function: Callable[..., _Result], *args: object) -> Future[_Result]:
        future: Future[_Result] = Future()
        try:
            future.set_result(function(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _coded(layout: JpegLayout, value: fr.Fill) -> tuple[int, ...]:
    """A fill colour (grey or RGB, 8-bit) as the JPEG stream codes its components."""
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if len(layout.components) == 1:
        return (int(round(values.mean())),)
    red, green, blue = values[:3] if values.size >= 3 else (values[0],) * 3
    if not layout.ycc:
        return int(red), int(green), int(blue)
    # JFIF's RGB -> YCbCr, full range (what libjpeg decodes back).
    y = 0.299 * red + 0.587 * green + 0.114 * blue
    return (int(round(y)), int(round(128 - 0.168736 * red - 0.331264 * green + 0.5 * blue)),
            int(round(128 + 0.5 * red - 0.418688 * green - 0.081312 * blue)))


def _palette(header: Dataset) -> np.ndarray:
    """The palette as an (entries x 3) array of 16-bit values."""
    from pydicom.pixels import apply_color_lut

    descriptor = header.get("RedPaletteColorLookupTableDescriptor")
    try:
        entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
    except (TypeError, ValueError, IndexError):
        raise fr.PixelError("PALETTE COLOR without a valid Red Palette Color Lookup Table Descriptor") from None
    try:
        indices = np.arange(first, first + entries, dtype=np.uint16 if first + entries > 256 else np.uint8)
        colours = apply_color_lut(indices, header)
    except Exception as exc:
        raise fr.PixelError(f"the palette cannot be read ({type(exc).__name__})") from None
    table = np.zeros((max(first + entries, 256 if indices.dtype == np.uint8 else 65536), 3), np.uint16)
    table[first:first + entries] = colours
    return table


class _FrameReader:
    """The text boxes of successive frames, read again only where the foreground changed."""

    def __init__(self, cleaner: PixelCleaner, plan: CleanPlan, fmt: fr.PixelFormat) -> None:
        self.cleaner, self.plan, self.fmt = cleaner, plan, fmt
        self.fixed = [b.padded(0, fmt.columns, fmt.rows) for b in plan.fixed]
        self.previous: np.ndarray | None = None
        self.found: list[Box] = []

    def boxes(self, mask: np.ndarray | None, channels: list[np.ndarray]) -> list[Box]:
        """The boxes to mask in a frame whose foreground is ``mask`` (None: no OCR), of the
        8-bit pictures ``channels``."""
        if mask is None:
            return self.fixed
        finder = self.cleaner.finder
        if self.previous is None or self.previous.shape != mask.shape:
            self.found = self._find(finder, mask, channels, None)
        else:
            changed = _significant((mask ^ self.previous).any(axis=0))
            if changed.any():
                region = self._changed_region(changed)
                if region.w * region.h >= _WHOLE_FRAME * changed.size:
                    self.found = self._find(finder, mask, channels, None)
                else:
                    kept = [b for b in self.found if not b.meets(region)]
                    self.found = kept + self._find(finder, mask, channels, region)
        self.previous = mask
        return outermost(self.fixed + self.found)

    def _changed_region(self, changed: np.ndarray) -> Box:
        rows = np.flatnonzero(changed.any(axis=1))
        columns = np.flatnonzero(changed.any(axis=0))
        height, width = changed.shape
        region = Box(int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1),
                     int(rows[-1] - rows[0] + 1)).padded(_CHANGE_MARGIN, width, height)
        # With every line found before that it touches, whole: it is read again with them.
        grown = True
        while grown:
            grown = False
            for box in self.found:
                if box.meets(region) and not box.inside(region):
                    x0, y0 = min(box.x, region.x), min(box.y, region.y)
                    x1 = max(box.x + box.w, region.x + region.w)
                    y1 = max(box.y + box.h, region.y + region.h)
                    region = Box(x0, y0, x1 - x0, y1 - y0)
                    grown = True
        return region

    def _find(self, finder: TextFinder, mask: np.ndarray, channels: list[np.ndarray], region: Box | None) -> list[Box]:
        height, width = mask.shape[1:]
        lines = finder.lines(mask, region)
        if self.cleaner.settings.text == "identifying":
            from ..clean import Identifiers

            identifiers = self.plan.identifiers
            boxes = identifying_boxes(finder.words(channels, mask, lines),
                                      identifiers if identifiers is not None else Identifiers(set()))
        else:
            # (numpy annotates any() given an axis as a scalar or an array: of a 3-D mask, it is an array)
            boxes = grown(joined_lines(lines), cast(np.ndarray, mask.any(axis=0)))
        # A glyph's anti-aliased edge, and sideways a faint last glyph the foreground lost.
        return [b.padded(max(2, b.h // 2), width, height, max(2, b.h // 4 + 1)) for b in boxes]


def grown(boxes: list[Box], strokes: np.ndarray) -> list[Box]:
    """Lines as Tesseract boxed them, grown over the strokes it left out: a glyph at either
    end (within the line's height, and about as tall), an ascender or descender across
    its edge (at most twice its height). The strokes are the foreground's connected pieces,
    so that a line grows by whole glyphs, never over a structure taller than its text."""
    from scipy import ndimage

    if not boxes:
        return []
    labels, count = ndimage.label(strokes, structure=np.ones((3, 3), bool))
    if not count:
        return boxes
    pieces = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)])
    px0, py0, px1, py1 = pieces.T
    heights = py1 - py0
    out = []
    for box in boxes:
        h = box.h
        reach = max(3, h)
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
        for _ in range(64):
            overlap = np.minimum(py1, y1) - np.maximum(py0, y0)
            across = (px0 < x1) & (px1 > x0) & (overlap > 0) & (heights <= 2 * h)
            beside = (px0 <= x1 + reach) & (px1 >= x0 - reach) & (2 * overlap >= heights) & (heights <= 3 * h // 2 + 1)
            taken = across | beside
            if not taken.any():
                break
            n0, n1 = min(x0, int(px0[taken].min())), max(x1, int(px1[taken].max()))
            m0, m1 = min(y0, int(py0[taken].min())), max(y1, int(py1[taken].max()))
            if (n0, m0, n1, m1) == (x0, y0, x1, y1):
                break
            x0, y0, x1, y1 = n0, m0, n1, m1
        out.append(Box(x0, y0, x1 - x0, y1 - y0))
    return out


def _significant(changed: np.ndarray) -> np.ndarray:
    """The changed pixels that make up changes of at least _MIN_CHANGE pixels together."""
    from scipy import ndimage

    if changed.sum() < _MIN_CHANGE:
        return np.zeros_like(changed)
    labels, count = ndimage.label(changed, structure=np.ones((3, 3), bool))
    kept = np.bincount(labels.ravel()) >= _MIN_CHANGE
    kept[0] = False
    return cast(np.ndarray, kept[labels])  # (scipy is not typed: its labels are Any)
