"""Read a DICOM instance as header datasets around untouched pixel data bytes, and write it back.

pydicom parses everything up to a top-level pixel data element; that element (tag, VR,
length, value or encapsulated fragments) is located by its length fields alone and kept as
a slice of the input, and whatever follows it (trailing private groups, padding) is parsed as
another dataset. Pixel data is therefore never decoded, and is copied exactly once: into
the output.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO, DicomFileLike, DicomIO
from pydicom.filereader import (
    _read_file_meta_info,
    read_dataset,
    read_preamble,
    read_sequence,
)
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.values import convert_string, converters

from .limits import MAX_SEQUENCE_DEPTH, too_deep
from .sniff import PREAMBLE_LENGTH, looks_like_dicom

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


_COPY_LIMIT = 64 * 1024 * 1024

# A piece of the output: encoded bytes, or a slice of the input (pixel data).
Chunk = bytes | memoryview
# What write_instance returns: a list, or a stream made as it is taken (cleaned frames).
Chunks = list[Chunk] | Iterator[Chunk]


class BufferFile:
    """A read-only file over a buffer, read in place (for pydicom's readers and frame
    generator: a BytesIO would copy the whole buffer)."""

    def __init__(self, buffer: bytes | bytearray | memoryview) -> None:
        self._buffer, self._pos = memoryview(buffer), 0
        self.name = "<memory>"

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._buffer) if size is None or size < 0 else min(self._pos + size, len(self._buffer))
        data = bytes(self._buffer[self._pos:end])
        self._pos = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = max(0, {0: 0, 1: self._pos, 2: len(self._buffer)}[whence] + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        pass


def _reader(buf: memoryview) -> BinaryIO:
    """A pydicom file over ``buf``. A BytesIO over anything but a whole bytes object copies it:
    a large buffer (a file mapped into memory) is read in place instead."""
    whole = buf.obj if isinstance(buf, memoryview) and isinstance(buf.obj, bytes) and len(buf) == len(buf.obj) \
        else None
    if whole is not None:
        return _binary(DicomBytesIO(whole))
    if len(buf) < _COPY_LIMIT:
        return _binary(DicomBytesIO(buf))
    return _binary(DicomFileLike(BufferFile(buf)))


def _binary(fp: DicomIO) -> BinaryIO:
    """``fp`` as pydicom's readers are annotated to take it (they read its own DicomIO wrappers)."""
    return cast(BinaryIO, fp)


class DicomError(ValueError):
    """The input is not DICOM, or is corrupt; the message says why (without any value)."""


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


# -- the header of explicit VR little endian data, read straight from the buffer -----------
# Nearly everything modalities send is explicit VR little endian, and parsing the header is
# the largest part of a coercion. This reader yields what pydicom's reader yields for the
# top level (the same RawDataElements; sequences of undefined length parsed by pydicom
# itself) and can leave out the private elements a profile would remove anyway, which on a
# scanner's header are about half of all elements. Anything unusual (another VR encoding, a
# non-sequence of undefined length, data cut short) gives up: pydicom then reads the header
# and says what is wrong. tests/test_dicomio.py checks both readers agree.

_EXPLICIT_HEADER = struct.Struct("<HH2sH")
_UINT32 = struct.Struct("<L")
_VALID_VRS = frozenset(vr.encode() for vr in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
    "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"))
_LONG_VR_BYTES = frozenset(vr.encode() for vr in (
    "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"))
_PIXEL_TAG_VALUES = frozenset(int(t) for t in PIXEL_TAGS)


def _read_header_explicit_little(data: memoryview, pos: int, drop_private: bool) -> tuple[Dataset, int, int] | None:
    """The top-level dataset from ``pos`` up to the pixel data or the end, where it stopped,
    and how many elements it met; None when pydicom should read it."""
    end = len(data)
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    met = 0
    encoding: str | list[str] = default_encoding
    fp = None  # made at the first sequence of undefined length (pydicom reads those)
    unpack_header, unpack_length = _EXPLICIT_HEADER.unpack_from, _UINT32.unpack_from
    while pos < end:
        if pos + 8 > end:
            return None  # a few stray bytes: pydicom's reader decides
        group, element, vr_bytes, length = unpack_header(data, pos)
        tag = group << 16 | element
        if tag in _PIXEL_TAG_VALUES:
            break
        if vr_bytes not in _VALID_VRS:
            return None
        if vr_bytes in _LONG_VR_BYTES:
            if pos + 12 > end:
                return None
            (length,) = unpack_length(data, pos + 8)
            value_tell = pos + 12
        else:
            value_tell = pos + 8
        met += 1
        vr = vr_bytes.decode()
        if (vr_bytes == b"SQ" or vr_bytes == b"UN" or length == 0xFFFFFFFF) and not (
                drop_private and group & 1 and length != 0xFFFFFFFF):  # dropped unread
            check_nesting(data, pos, False, True, single=True)  # before pydicom recurses into it
        if length == 0xFFFFFFFF:
            if vr != "SQ" or (drop_private and group & 1):
                return None
            if fp is None:
                fp = _reader(data)
            fp.seek(value_tell)
            sequence = read_sequence(fp, False, True, length, encoding)
            elements[BaseTag(tag)] = DataElement(BaseTag(tag), vr, sequence, value_tell, is_undefined_length=True)
            pos = fp.tell()
            continue
        if value_tell + length > end:
            return None
        pos = value_tell + length
        if drop_private and group & 1:
            continue
        # (raw, it is b"" or None; pydicom annotates it with the empty values of every kind)
        value = bytes(data[value_tell:pos]) if length else cast("bytes | None", empty_value_for_VR(vr, raw=True))
        if tag == 0x00080005:
            encoding = convert_encodings(convert_string(value or b"", True))
        elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, length, value, value_tell, False, True)
    ds = Dataset(elements, parent_encoding=default_encoding)
    ds.set_original_encoding(False, True, encoding)
    return ds, pos, met


@dataclass
class Instance:
    """A parsed instance: file meta, then datasets and raw pixel elements in file order."""

    preamble: bytes | None
    file_meta: FileMetaDataset
    # Dataset | PixelElement (StreamedPixels once cleaned), alternating, starting with the header Dataset
    segments: list[Dataset | PixelElement | StreamedPixels]
    is_implicit_VR: bool
    is_little_endian: bool
    deflated: bool
    source: memoryview  # what the datasets were read from (the inflated body if deflated)
    had_meta: bool = field(default=True)

    @property
    def header(self) -> Dataset:
        return _header(self.segments)

    def datasets(self) -> list[Dataset]:
        return [s for s in self.segments if isinstance(s, Dataset)]

    @property
    def transfer_syntax(self) -> UID:
        if self.deflated:
            return DeflatedExplicitVRLittleEndian
        ts = self.file_meta.get("TransferSyntaxUID")
        if ts:
            return UID(ts)
        if self.is_implicit_VR:
            return ImplicitVRLittleEndian
        return ExplicitVRLittleEndian if self.is_little_endian else ExplicitVRBigEndian


def _header(segments: list[Dataset | PixelElement | StreamedPixels]) -> Dataset:
    return cast(Dataset, segments[0])  # always the header dataset (read_instance puts it first)


def _encoding(file_meta: FileMetaDataset, fp: BinaryIO) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) as pydicom's reader decides them."""
    ts = file_meta.get("TransferSyntaxUID")
    if ts is None:
        # No transfer syntax: guess from the first element, as pydicom does.
        start = fp.tell()
        head = fp.read(6)
        fp.seek(start)
        if len(head) < 6:
            return True, True, False
        group, _, vr = struct.unpack("<HH2s", head)
        if vr.decode("latin-1") in converters:
            return False, group < 1024, False
        return True, True, False
    ts = UID(ts)
    if ts == DeflatedExplicitVRLittleEndian:
        return False, True, True
    if ts == ImplicitVRLittleEndian:
        return True, True, False
    if ts == ExplicitVRBigEndian:
        return False, False, False
    if ts.is_transfer_syntax:
        return ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated
    return False, True, False  # every other syntax is explicit VR little endian (PS3.5 A.4)


@dataclass(frozen=True)
class PixelElement:
    """A top-level pixel data element kept as raw bytes; only its header is re-encoded."""

    tag: int
    vr: str
    value: memoryview  # the value, or the encapsulated items up to their delimiter
    undefined_length: bool

    def encode_header(self, implicit: bool, little: bool) -> bytes:
        order = "<" if little else ">"
        length = 0xFFFFFFFF if self.undefined_length else len(self.value)
        tag = struct.pack(order + "HH", self.tag >> 16, self.tag & 0xFFFF)
        if implicit:
            return tag + struct.pack(order + "L", length)
        return tag + self.vr.encode("ascii") + b"\x00\x00" + struct.pack(order + "L", length)


class StreamedPixels:
    """Pixel data made as it is written (cleaned frame by frame): ``chunks`` yields its value,
    of ``length`` bytes (None: encapsulated, of undefined length). Iterated once."""

    def __init__(self, tag: int, vr: str, chunks: Iterable[Chunk], length: int | None) -> None:
        self.tag, self.vr, self.chunks, self.length = tag, vr, chunks, length

    @property
    def undefined_length(self) -> bool:
        return self.length is None

    def encode_header(self, implicit: bool, little: bool) -> bytes:
        order = "<" if little else ">"
        length = 0xFFFFFFFF if self.length is None else self.length
        tag = struct.pack(order + "HH", self.tag >> 16, self.tag & 0xFFFF)
        if implicit:
            return tag + struct.pack(order + "L", length)
        return tag + self.vr.encode("ascii") + b"\x00\x00" + struct.pack(order + "L", length)

    def values(self) -> Iterator[Chunk]:
        written = 0
        for chunk in self.chunks:
            written += len(chunk)
            yield chunk
        if self.length is not None and written != self.length:
            raise DicomError(f"cleaned pixel data has {written} bytes, not the {self.length} its header says")


def _read_pixel_element(
    buf: memoryview, pos: int, implicit: bool, little: bool, header: Dataset
) -> tuple[PixelElement, int]:
    """The pixel data element that starts at ``pos`` (found by its length fields alone), and its end."""
    end = len(buf)
    order = "<" if little else ">"
    if pos + 8 > end:
        raise DicomError("truncated pixel data element header")
    group, element = struct.unpack_from(order + "HH", buf, pos)
    raw_vr = bytes(buf[pos + 4 : pos + 6])
    # Some writers use implicit VR whatever the transfer syntax says (pydicom reads them too).
    if not implicit and not (raw_vr.isalpha() and raw_vr.isupper()):
        implicit = True
    if implicit:
        (length,) = struct.unpack_from(order + "L", buf, pos + 4)
        value = pos + 8
        vr = "OB" if length == 0xFFFFFFFF or header.get("BitsAllocated", 16) <= 8 else "OW"
    else:
        vr = raw_vr.decode("ascii")
        if raw_vr in _LONG_VRS:
            if pos + 12 > end:
                raise DicomError("truncated pixel data element header")
            (length,) = struct.unpack_from(order + "L", buf, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from(order + "H", buf, pos + 6)
            value = pos + 8
    tag = group << 16 | element
    if length != 0xFFFFFFFF:
        if value + length > end:
            raise DicomError(
                f"pixel data is truncated: {value + length - end} of {length} bytes missing"
            )
        return PixelElement(tag, vr, buf[value : value + length], False), value + length
    # Encapsulated: walk the items by their lengths up to the sequence delimiter.
    p = value
    while True:
        if p + 8 > end:
            raise DicomError("encapsulated pixel data has no sequence delimiter")
        item_group, item_element, item_length = struct.unpack_from(order + "HHL", buf, p)
        item_tag = item_group << 16 | item_element
        if item_tag == _SEQUENCE_DELIMITER:
            return PixelElement(tag, vr, buf[value : p + 8], True), p + 8
        if item_tag != _ITEM or item_length == 0xFFFFFFFF:
            raise DicomError(
                f"unexpected tag ({item_group:04X},{item_element:04X}) in encapsulated pixel data"
            )
        p += 8 + item_length
        if p > end:
            raise DicomError("encapsulated pixel data fragment is truncated")


# -- how deep sequences nest, read from the bytes before any parser recurses into them -------
# pydicom (and DCMTK) parse a sequence by recursion, and a thread of Orthanc's HTTP server has a
# small stack: the nesting is measured here without recursion and refused beyond the limit.
# Every element that pydicom would read as a sequence is entered: VR SQ, an undefined length
# (other than encapsulated pixel data), and, in implicit VR or as UN, a value that starts with
# an item (a sequence known to a dictionary). A value entered on that last guess that turns
# out not to be one is skipped whole, as pydicom keeps it as bytes.

_ITEM_DELIMITER = 0xFFFEE00D
_Unpack = Callable[[bytes | bytearray | memoryview, int], tuple[int, ...]]
_Readers = tuple[struct.Struct, _Unpack, _Unpack]
# How the scan reads tags, 32-bit and 16-bit lengths, by byte order (True: little endian); made
# once, as check_nesting runs for every top-level sequence of an instance on the fast path.
_READERS: dict[bool, _Readers] = {
    True: (struct.Struct("<HH"), struct.Struct("<L").unpack_from, struct.Struct("<H").unpack_from),
    False: (struct.Struct(">HH"), struct.Struct(">L").unpack_from, struct.Struct(">H").unpack_from),
}


class _Frame:
    """A sequence or an item the scan is in: where it ends (None: at its delimiter), how its
    elements are encoded, whether it was entered on a guess, and how many sequences deep it is
    (kept here, so that leaving a frame is popping it)."""

    __slots__ = ("end", "sequence", "implicit", "guessed", "depth")

    def __init__(self, end: int | None, sequence: bool, implicit: bool, guessed: bool, depth: int) -> None:
        self.end, self.sequence, self.implicit, self.guessed, self.depth = end, sequence, implicit, guessed, depth


def check_nesting(buf: bytes | bytearray | memoryview, pos: int, implicit: bool, little: bool,
                  single: bool = False) -> None:
    """Raise DicomError if sequences in ``buf[pos:]`` nest deeper than MAX_SEQUENCE_DEPTH
    (up to the top-level pixel data; ``single``: only the element at ``pos``).

    Two loops, as this runs on every instance: this one goes in and out of sequences and their
    items, and the elements of an item (or of the top-level dataset), by far the most, are
    skipped by a loop of their own that calls nothing per element (_skip_to_sequence)."""
    readers = _READERS[little]
    head, uint32, _ = readers
    end = len(buf)
    stack: list[_Frame] = []  # the sequences and items around pos, innermost last
    entered = False
    while True:
        while stack and stack[-1].end is not None and pos >= stack[-1].end:
            stack.pop()
        if single and entered and not stack:
            return
        if pos + 8 > end:
            return  # what is left is too short to nest: the readers judge it
        frame = stack[-1] if stack else None
        if frame is not None and frame.sequence:  # between its items
            group, element = head.unpack_from(buf, pos)
            tag = group << 16 | element
            if tag == _ITEM:
                length = uint32(buf, pos + 4)[0]
                item_implicit = frame.implicit
                if not item_implicit and pos + 14 <= end:
                    item_vr = bytes(buf[pos + 12:pos + 14])
                    item_implicit = not (item_vr.isalpha() and item_vr.isupper())  # as pydicom switches
                stack.append(_Frame(None if length == 0xFFFFFFFF else pos + 8 + length, False, item_implicit,
                                    False, frame.depth))
                pos += 8
                continue
            if tag == _SEQUENCE_DELIMITER:
                stack.pop()
                pos += 8
                continue
            resume = _unwind_guess(stack)
            if resume is None:
                return  # not a sequence after all: pydicom's reader says what is wrong
            pos = resume
            continue
        found = _skip_to_sequence(buf, pos, frame, frame.implicit if frame else implicit, single, readers)
        if found is None:
            return
        pos, sequence = found
        if sequence is None:  # the item ended, at its end or its delimiter
            stack.pop()
            continue
        if sequence.depth > MAX_SEQUENCE_DEPTH:
            raise DicomError(str(too_deep()))
        entered = True
        stack.append(sequence)


def _skip_to_sequence(buf: bytes | bytearray | memoryview, pos: int, item: _Frame | None, implicit: bool,
                      single: bool, readers: _Readers) -> tuple[int, _Frame | None] | None:
    """Skip the elements of ``item`` (None: of the top-level dataset) from ``pos`` that are no
    sequence: where the next sequence's value starts and its frame, or where the item ends and
    None; None when nothing more is to be checked (the pixel data, the end, data cut short)."""
    head, uint32, uint16 = readers
    end = len(buf)
    item_end = item.end if item is not None else None
    while True:
        if item_end is not None and pos >= item_end:
            return pos, None
        if pos + 8 > end:
            return None  # what is left is too short to nest: the readers judge it
        group, element = head.unpack_from(buf, pos)
        tag = group << 16 | element
        if item is not None and tag == _ITEM_DELIMITER:
            return pos + 8, None
        if item is None and tag in _PIXEL_TAG_VALUES:
            return None  # the pixel data is located and checked by its own reader; nothing nests there
        if implicit:
            vr = None
            length = uint32(buf, pos + 4)[0]
            value = pos + 8
        else:
            raw_vr = bytes(buf[pos + 4:pos + 6])
            vr = raw_vr.decode("latin-1")
            if raw_vr in _LONG_VRS:
                if pos + 12 > end:
                    return None
                length = uint32(buf, pos + 8)[0]
                value = pos + 12
            else:
                length = uint16(buf, pos + 6)[0]
                value = pos + 8
        undefined = length == 0xFFFFFFFF
        if vr == "SQ" or (undefined and vr not in ("OB", "OW")):
            guessed = False
        elif (vr is None or vr == "UN") and length >= 8 and value + 4 <= end \
                and head.unpack_from(buf, value) == (0xFFFE, 0xE000):
            guessed = True
        elif single and item is None:
            return None  # the element asked about is no sequence: nothing nests in it
        elif undefined:  # encapsulated data outside the pixel data: its fragments do not nest
            after = _after_fragments(buf, value, head, uint32)
            if after is None:
                return None  # cut short: the readers judge it
            pos = after
            continue
        else:
            # Every element of an item is measured, not only those before the first plain one:
            # a sequence after an ordinary attribute nests as deep as one before it.
            pos = value + length
            continue
        depth = item.depth + 1 if item is not None else 1
        return value, _Frame(None if undefined else value + length, True, implicit, guessed, depth)


def _unwind_guess(stack: list[_Frame]) -> int | None:
    """Leave the innermost sequence entered on a guess (it was bytes after all), and what is in
    it: where to go on, after it; None if no sequence was a guess."""
    while stack:
        frame = stack.pop()
        if frame.guessed:
            return frame.end
    return None


def _after_fragments(buf: bytes | bytearray | memoryview, pos: int, head: struct.Struct,
                     uint32: Callable[[bytes | bytearray | memoryview, int], tuple[int, ...]]) -> int | None:
    """Where undefined-length encapsulated data that starts at ``pos`` ends (after its
    Sequence Delimitation Item); None if it is cut short or not made of items."""
    end = len(buf)
    while pos + 8 <= end:
        group, element = head.unpack_from(buf, pos)
        length = uint32(buf, pos + 4)[0]
        if (group, element) == (0xFFFE, 0xE0DD):
            return pos + 8
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return None
        pos += 8 + length
    return None


def check_all_nesting(data: bytes | bytearray | memoryview) -> None:
    """Raise DicomError if sequences anywhere in ``data`` (a Part 10 file or a bare dataset) nest
    deeper than MAX_SEQUENCE_DEPTH, every element of the dataset measured before any parser
    sees it, the whole input at once: for small inputs that are kept and read again by other
    parsers (a worklist item: DCMTK's matcher). Deflated data is refused: inflating is for
    readers that bound it."""
    buf = memoryview(data)
    fp = _reader(buf)
    try:
        read_preamble(fp, force=True)
        file_meta = _read_file_meta_info(fp)
        implicit, little, deflated = _encoding(file_meta, fp)
    except Exception:  # pydicom raises many kinds on garbage; read_instance says what is wrong
        return
    if deflated:
        raise DicomError("deflated data is not taken here")
    check_nesting(buf, fp.tell(), implicit, little)


# An instance cut short at an element boundary parses cleanly: what tells is the pixel data
# its own header describes (PS3.5 8.1.1, native encoding), or its absence.
_ROWS, _COLUMNS, _SAMPLES, _BITS_ALLOCATED, _FRAMES = 0x00280010, 0x00280011, 0x00280002, 0x00280100, 0x00280008
_PHOTOMETRIC, _PIXEL_DATA_PROVIDER_URL = 0x00280004, 0x00287FE0


def _raw_value(ds: Dataset, tag: int) -> Any:
    """A value read without converting the element in place: a converted element is no longer
    copied from the input as it came, but encoded again (the writer's slow path)."""
    item = ds.get_item(tag)
    if item is None:
        return None
    if not isinstance(item, RawDataElement):
        return item.value
    data = bytes(item.value or b"")
    if tag in (_ROWS, _COLUMNS, _SAMPLES, _BITS_ALLOCATED):  # US
        return int.from_bytes(data[:2], "little" if item.is_little_endian else "big") if len(data) >= 2 else None
    return data.decode("ascii", "replace").strip(" \x00")  # IS, CS


def _number(ds: Dataset, tag: int, default: int | None = None) -> int | None:
    try:
        value = _raw_value(ds, tag)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return None


def _describes_pixels(header: Dataset) -> bool:
    return all(tag in header for tag in (_ROWS, _COLUMNS, _BITS_ALLOCATED)) and _PIXEL_DATA_PROVIDER_URL not in header


def _check_pixel_length(header: Dataset, pixels: PixelElement) -> None:
    """Refuse native pixel data shorter than its header says (a cut file re-encoded whole)."""
    if pixels.undefined_length:
        return  # encapsulated: its fragments were walked to their delimiter already
    rows, columns, bits = _number(header, _ROWS), _number(header, _COLUMNS), _number(header, _BITS_ALLOCATED)
    samples, frames = _number(header, _SAMPLES, 1), _number(header, _FRAMES, 1)
    if rows is None or columns is None or bits is None or samples is None or frames is None \
            or not all(v > 0 for v in (rows, columns, bits, samples, frames)):
        return  # the header does not say: nothing to compare with
    photometric = str(_raw_value(header, _PHOTOMETRIC) or "")
    if photometric.strip() in ("YBR_FULL_422", "YBR_PARTIAL_422") and samples == 3:
        samples = 2  # two of three samples per pixel: Cb and Cr shared by pairs
    expected = (rows * columns * samples * frames * bits + 7) // 8
    expected += expected % 2
    if len(pixels.value) < expected:
        raise DicomError(f"pixel data is truncated: {len(pixels.value)} of the {expected} bytes its header describes")


def _check_complete(ds: Dataset, size: int, after_pixels: bool) -> None:
    """Refuse data cut short inside an element: pydicom drops such an element silently.

    Only after the pixel data are a few stray bytes (less than an element header) taken for
    padding, as some writers leave them.
    """
    if not len(ds):
        return  # nothing was parsed here: the caller refuses an empty header
    last = ds.get_item(max(ds.keys()))
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return  # a sequence of undefined length: pydicom itself fails on a cut one
    end = last.value_tell + last.length
    if end > size:
        raise DicomError(f"truncated DICOM data: the last data element misses {end - size} bytes")
    if size - end >= (8 if after_pixels else 1):
        raise DicomError(f"truncated DICOM data: {size - end} bytes at the end are an incomplete data element")


def read_instance(data: bytes | bytearray | memoryview, drop_private: bool = False) -> Instance:
    """Parse ``data`` (a Part 10 file, or a dataset without file meta).

    ``drop_private``: leave out the top-level private elements where the fast reader applies
    (for a profile that removes every private attribute; they may still be there otherwise).
    """
    buf = memoryview(data)
    if not looks_like_dicom(bytes(buf[: PREAMBLE_LENGTH + 4])):
        raise DicomError("not DICOM: no DICM prefix, and the data does not start like a DICOM dataset")
    fp = _reader(buf)
    try:
        preamble = read_preamble(fp, force=True)
        file_meta = _read_file_meta_info(fp)
        had_meta = preamble is not None or len(file_meta) > 0
        implicit, little, deflated = _encoding(file_meta, fp)
        if deflated:
            body = zlib.decompress(bytes(buf[fp.tell():]), -zlib.MAX_WBITS)
            buf = memoryview(body)
            fp = _binary(DicomBytesIO(body))
        segments: list[Dataset | PixelElement | StreamedPixels] = []
        met = None
        while True:
            fast = None if segments or implicit or not little else \
                _read_header_explicit_little(buf, fp.tell(), drop_private)
            if fast is not None:
                ds, pos, met = fast
                fp.seek(pos)
            else:
                check_nesting(buf, fp.tell(), implicit, little)
                ds = read_dataset(fp, implicit, little, stop_when=_at_pixel_data)
                pos = fp.tell()
            segments.append(ds)
            if pos >= len(buf):
                if fast is None:  # the fast reader stops short of any incomplete element
                    _check_complete(ds, len(buf), after_pixels=len(segments) > 1)
                break
            pixels, end = _read_pixel_element(buf, pos, implicit, little, _header(segments))
            if len(segments) == 1:
                _check_pixel_length(_header(segments), pixels)
            segments.append(pixels)
            if end >= len(buf):
                break
            fp.seek(end)
    except DicomError:
        raise
    except zlib.error as exc:
        raise DicomError(f"deflated dataset cannot be inflated: {exc}") from None
    except (EOFError, struct.error) as exc:
        raise DicomError(f"truncated DICOM data: {exc}") from None
    except Exception as exc:  # pydicom raises many kinds on garbage input; its message may quote values
        raise DicomError(f"not a readable DICOM dataset ({type(exc).__name__} while parsing)") from None
    if len(_header(segments)) == 0 and not met:
        raise DicomError("no DICOM data element found (empty or cut short before the first one)")
    if len(segments) == 1 and _describes_pixels(_header(segments)):
        raise DicomError("the image has no pixel data (cut short?): Rows, Columns and Bits Allocated describe "
                         "pixels that are not there")
    return Instance(preamble, file_meta, segments, implicit, little, deflated, buf, had_meta)


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                       "UC", "UI", "UR", "UT"})
_TEXT_LONG_VRS = frozenset({"UC", "UR", "UT"})


def _encode_ascii_text(elem: DataElement | RawDataElement, implicit: bool, little: bool) -> bytes | None:
    """The encoding of a string attribute whose values are plain ASCII, or None for pydicom.

    The attributes de-identification writes (empty values, dummies, new UIDs) are almost
    all of this kind; encoding them here instead of through pydicom's general writer halves
    the cost of writing a header. Any other value goes to pydicom; tests compare both.
    """
    vr = elem.VR
    if vr not in _TEXT_VRS or getattr(elem, "is_raw", False):
        return None
    value = elem.value
    if value is None or value == "":
        text = ""
    elif type(value) is str or type(value).__name__ in ("UID", "PersonName"):
        text = str(value)
    elif isinstance(value, (list, tuple, MultiValue)) and all(type(v) is str or type(v).__name__ == "UID" for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    order = "<" if little else ">"
    tag = elem.tag
    if implicit:
        return struct.pack(order + "HHL", tag >> 16, tag & 0xFFFF, len(data)) + data
    if vr in _TEXT_LONG_VRS:
        return struct.pack(order + "HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(data)) + data
    if len(data) > 0xFFFF:
        return None
    return struct.pack(order + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(data)) + data


def _encode_dataset(ds: Dataset, implicit: bool, little: bool, source: memoryview) -> bytes:
    """Encode ``ds`` as pydicom's write_dataset does, but copy untouched elements as they came.

    Attributes the de-identification did not touch are still RawDataElements holding their
    position in ``source``; runs of them are copied from there instead of being re-encoded
    one by one, which is most of the cost of writing. Anything else (changed attributes, a
    changed encoding or character set) goes through pydicom.
    """
    out = DicomBytesIO()
    out.is_implicit_VR = implicit
    out.is_little_endian = little
    if ds.original_encoding != (implicit, little) or ds.original_character_set != ds._character_set:
        write_dataset(out, ds)
        return out.getvalue()
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    elements = ds._dict
    run_start = run_end = -1
    for tag in sorted(elements):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does
        elem = elements[tag]
        if (
            isinstance(elem, RawDataElement)
            and elem.value is not None
            and elem.value_tell >= 0  # -1: made here, not read from the source
            and elem.length != 0xFFFFFFFF
            and elem.is_implicit_VR == implicit
            and elem.is_little_endian == little
        ):
            # (explicit VR: the element was read with its VR)
            start = elem.value_tell - (8 if implicit or cast(str, elem.VR).encode() not in _LONG_VRS else 12)
            if start != run_end:
                if run_end > run_start:
                    out.write(source[run_start:run_end])
                run_start = start
            run_end = elem.value_tell + elem.length
            continue
        if run_end > run_start:
            out.write(source[run_start:run_end])
            run_start = run_end = -1
        elem = ds.get_item(tag)
        encoded = _encode_ascii_text(elem, implicit, little)
        if encoded is not None:
            out.write(encoded)
        else:
            write_data_element(out, elem, encodings)
    if run_end > run_start:
        out.write(source[run_start:run_end])
    return out.getvalue()


_META_VRS = {0x00020001: "OB", 0x00020002: "UI", 0x00020003: "UI", 0x00020010: "UI", 0x00020012: "UI",
             0x00020013: "SH", 0x00020016: "AE"}


def encode_file_meta(elements: dict[int, str | bytes]) -> bytes:
    """File meta information (PS3.10 7.1), explicit VR little endian, with its group length.

    Written by hand because it is a handful of fixed elements and pydicom's general writer
    costs more than the rest of the header; tests check it against pydicom byte for byte.
    """
    body = bytearray()
    for tag in sorted(elements):
        vr = _META_VRS[tag]
        value = elements[tag]
        if isinstance(value, str):
            value = value.encode("ascii")
        if len(value) % 2:
            value += b"\x00" if vr in ("UI", "OB") else b" "
        if vr == "OB":
            body += struct.pack("<HH2sHL", 2, tag & 0xFFFF, b"OB", 0, len(value))
        else:
            body += struct.pack("<HH2sH", 2, tag & 0xFFFF, vr.encode(), len(value))
        body += value
    return struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + bytes(body)


def write_instance(instance: Instance, file_meta: dict[int, str | bytes]) -> Chunks:
    """The output as byte chunks, made as they are taken (pixel data chunks are slices of the
    input, or frames cleaned one at a time: see StreamedPixels)."""
    # The preamble is application-defined and may carry anything: it is never copied.
    head = b"\x00" * 128 + b"DICM" + encode_file_meta(file_meta)
    # The datasets are encoded first: a failure there shows before anything is written.
    encoded = [
        _encode_dataset(segment, instance.is_implicit_VR, instance.is_little_endian, instance.source)
        if isinstance(segment, Dataset) else segment
        for segment in instance.segments
    ]

    def body() -> Iterator[Chunk]:
        for segment in encoded:
            if isinstance(segment, bytes):
                yield segment
                continue
            yield segment.encode_header(instance.is_implicit_VR, instance.is_little_endian)
            if isinstance(segment, StreamedPixels):
                yield from segment.values()
            else:
                yield segment.value

    if instance.deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = b"".join(compressor.compress(chunk) for chunk in body()) + compressor.flush()
        if len(deflated) % 2:
            deflated += b"\x00"
        return [head, deflated]
    if not any(isinstance(s, StreamedPixels) for s in encoded):
        return [head, *body()]
    return _chain(head, body())


def joined(chunks: Iterable[Chunk]) -> bytes:
    """The bytes of what write_instance returned. A stream (cleaned frames) is gathered in one
    growing buffer that becomes the result without a copy, so that memory holds the output once,
    not its chunks and their join."""
    if isinstance(chunks, list):
        return b"".join(chunks)
    out = io.BytesIO()
    for chunk in chunks:
        out.write(chunk)
    return out.getvalue()


def _chain(head: bytes, rest: Iterable[Chunk]) -> Iterator[Chunk]:
    yield head
    yield from rest
