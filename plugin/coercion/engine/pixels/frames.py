"""Pixel data frame by frame: read from the instance as it came, written back losslessly.

Three ways, chosen by the transfer syntax:

* native (uncompressed, also inside a deflated dataset): each frame is a view of the input,
  masked in a copy and written back in the same layout;
* JPEG of the DCT processes, 8-bit (Baseline, Extended): each frame is decoded to find its
  text, then masked in the DCT domain (``jpegmask``): the transfer syntax, the compression
  and every block outside the masks stay as they were; nothing is compressed again;
* any other compressed syntax pydicom's pixel handlers decode (RLE, JPEG Lossless, JPEG-LS,
  JPEG 2000, HTJ2K): each frame is decoded, masked and encoded losslessly again, in the same
  syntax where it is lossless and pydicom can write it (RLE Lossless, JPEG-LS Lossless, JPEG
  2000 Lossless), else in JPEG-LS Lossless (RLE Lossless when JPEG-LS cannot hold the data).

Only one frame is decoded at a time: the output is a stream of chunks produced as it is
written, so memory holds a few frames whatever the number of frames.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, overload

import numpy as np
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
)

from .boxes import Box

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.pixels.decoders.base import Decoder


class PixelError(ValueError):
    """The pixel data cannot be cleaned (the message says why, never a value)."""


# The syntaxes written again as they came when they are lossless and pydicom encodes them.
_REENCODED_AS_ITSELF = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
_JPEG_DCT = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"})
# What a mask is filled with: a palette index, or a pixel value (one, or one per sample).
Fill = int | np.generic | np.ndarray


@dataclass(frozen=True)
class PixelFormat:
    """How an instance's pixels are laid out, from its header and transfer syntax."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    frames: int
    transfer_syntax: UID
    little_endian: bool = True

    @property
    def frame_bytes(self) -> int:
        """The length of one native frame."""
        samples = 2 if self.photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and self.samples == 3 else self.samples
        return self.rows * self.columns * samples * self.bits_allocated // 8

    @property
    def dtype(self) -> np.dtype:
        kind = "i" if self.signed else "u"
        order = "<" if self.little_endian else ">"
        return np.dtype(f"{order}{kind}{self.bits_allocated // 8}")

    def options(self, **changes: object) -> dict[str, Any]:
        """pydicom's pixel options for one frame of this format."""
        values: dict[str, Any] = dict(rows=self.rows, columns=self.columns, samples_per_pixel=self.samples,
                                      bits_allocated=self.bits_allocated, bits_stored=self.bits_stored,
                                      pixel_representation=int(self.signed),
                                      photometric_interpretation=self.photometric,
                                      number_of_frames=1, planar_configuration=self.planar)
        values.update(changes)
        return values


@overload
def _number(header: Dataset, keyword: str, default: int) -> int: ...  # a default: always a number
@overload
def _number(header: Dataset, keyword: str, default: int | None = None) -> int | None: ...
def _number(header: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = header.get(keyword, default)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PixelError(f"{keyword} is not a number") from None


def pixel_format(header: Dataset, transfer_syntax: UID, little_endian: bool = True) -> PixelFormat:
    """The format of the instance's pixels; PixelError for one that cannot be cleaned."""
    rows, columns = _number(header, "Rows"), _number(header, "Columns")
    samples, bits = _number(header, "SamplesPerPixel", 1), _number(header, "BitsAllocated")
    stored = _number(header, "BitsStored", bits)
    frames = _number(header, "NumberOfFrames", 1) or 1
    photometric = str(header.get("PhotometricInterpretation", "") or "").strip().upper()
    if not rows or not columns or not bits:
        raise PixelError("Rows, Columns or Bits Allocated missing")
    if bits not in (8, 16, 32):
        raise PixelError(f"{bits}-bit pixel data cannot be cleaned (8, 16 and 32 bits can)")
    if samples not in (1, 3) or frames < 1:
        raise PixelError("Samples per Pixel must be 1 or 3")
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", *_COLOUR, "YBR_PARTIAL_422"):
        raise PixelError(f"photometric interpretation {photometric or '(none)'} cannot be cleaned")
    if (samples == 3) != (photometric in _COLOUR or photometric == "YBR_PARTIAL_422"):
        raise PixelError("Samples per Pixel does not agree with the photometric interpretation")
    if stored is None or not 1 <= stored <= bits:
        raise PixelError("Bits Stored must be between 1 and Bits Allocated")
    return PixelFormat(rows, columns, samples, bits, stored, _number(header, "PixelRepresentation", 0) == 1,
                       photometric, _number(header, "PlanarConfiguration", 0) or 0, frames, UID(str(transfer_syntax)),
                       little_endian)


# -- what text detection looks at, and what a mask is filled with ---------------------------


def channels_for_text(frame: np.ndarray, fmt: PixelFormat, palette: np.ndarray | None = None) -> list[np.ndarray]:
    """8-bit pictures of a frame (rows x columns [x samples], as decoded) for text detection:
    each colour channel (text may differ from its background in one only), or the grey levels
    stretched from the frame's own darkest to brightest value."""
    if palette is not None:
        frame = palette[frame]
    if frame.ndim == 2:
        return [_stretch(frame)]
    return colour_channels(frame)


def colour_channels(frame: np.ndarray) -> list[np.ndarray]:
    """One grey picture of a colour frame that is grey (R = G = B within a few levels: most
    ultrasound), else its three channels (text may stand out in one only)."""
    red, green, blue = (frame[..., c] for c in range(3))
    if frame.dtype == np.uint8:
        spread = max(int(np.abs(red.astype(np.int16) - green).max()), int(np.abs(green.astype(np.int16) - blue).max()))
        if spread <= 12:
            return [green]
    return [_stretch(red), _stretch(green), _stretch(blue)]


def _stretch(plane: np.ndarray) -> np.ndarray:
    if plane.dtype == np.uint8:
        return plane
    low, high = int(plane.min()), int(plane.max())
    if high <= low:
        return np.zeros(plane.shape, np.uint8)
    return ((plane.astype(np.float32) - low) * (255.0 / (high - low))).astype(np.uint8)


def fills(frame: np.ndarray, boxes: list[Box], palette: np.ndarray | None = None) -> list[Fill]:
    """What each box is filled with: the median of the pixels around it that no box covers
    (its background, so that the text's own pixels all change, whatever their shade); for a
    palette, the index most used there."""
    height, width = frame.shape[:2]
    covered = np.zeros((height, width), bool)
    for box in boxes:
        covered[box.y:box.y + box.h, box.x:box.x + box.w] = True
    values: list[Fill] = []
    for box in boxes:
        x0, y0 = max(box.x - 1, 0), max(box.y - 1, 0)
        x1, y1 = min(box.x + box.w + 1, width), min(box.y + box.h + 1, height)
        ring = (np.s_[y0, x0:x1], np.s_[y1 - 1, x0:x1], np.s_[y0:y1, x0], np.s_[y0:y1, x1 - 1])
        around = np.concatenate([frame[r].reshape(-1, *frame.shape[2:]) for r in ring])
        free = np.concatenate([~covered[r].ravel() for r in ring])
        if free.any():
            around = around[free]
        if palette is not None:
            values.append(int(np.argmax(np.bincount(around.astype(np.int64).ravel()))))
        else:
            values.append(np.median(around, axis=0).astype(frame.dtype))
    return values


def mask_array(frame: np.ndarray, boxes: list[Box], values: list[Fill]) -> np.ndarray:
    """A copy of ``frame`` with each box filled with its value."""
    out = np.array(frame, copy=True)
    for box, value in zip(boxes, values):
        out[box.y:box.y + box.h, box.x:box.x + box.w] = value
    return out


# -- reading the frames -------------------------------------------------------------------


def encapsulated_frames(value: bytes | memoryview, frames: int) -> Iterator[bytes]:
    """The compressed frames of encapsulated pixel data (fragments joined)."""
    from pydicom.encaps import generate_frames

    from ..dicomio import BufferFile

    try:
        yield from generate_frames(BufferFile(value), number_of_frames=frames)
    except (ValueError, struct.error) as exc:
        raise PixelError(f"the encapsulated pixel data cannot be split into its frames ({type(exc).__name__})") \
            from None


def native_frame(value: bytes | memoryview, fmt: PixelFormat, index: int) -> np.ndarray:
    """One native frame as an array (rows x columns [x samples]); a view of the input."""
    size = fmt.frame_bytes
    data = value[index * size:(index + 1) * size]
    if len(data) < size:
        raise PixelError("the pixel data holds fewer frames than Number of Frames says")
    flat = np.frombuffer(data, dtype=fmt.dtype)
    if fmt.samples == 1:
        return flat.reshape(fmt.rows, fmt.columns)
    if fmt.planar:
        return flat.reshape(fmt.samples, fmt.rows, fmt.columns).transpose(1, 2, 0)
    return flat.reshape(fmt.rows, fmt.columns, fmt.samples)


def native_bytes(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    """A frame laid out as ``fmt`` stores it."""
    frame = frame.astype(fmt.dtype, copy=False)
    if fmt.samples == 3 and fmt.planar:
        frame = frame.transpose(2, 0, 1)
    return np.ascontiguousarray(frame).tobytes()


def decoder_for(fmt: PixelFormat) -> Decoder:
    """pydicom's decoder of the format's transfer syntax; PixelError when there is none here."""
    from pydicom.pixels import get_decoder

    decoder: Decoder | None
    try:
        decoder = get_decoder(fmt.transfer_syntax)
    except NotImplementedError:  # pydicom knows no decoder for it at all (MPEG, HEVC...)
        decoder = None
    if decoder is None or not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) if decoder is not None else "no decoder"
        raise PixelError(f"pixel data in {fmt.transfer_syntax.name} cannot be decoded here ({missing})")
    return decoder


def decode_frame(data: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """A compressed frame decoded by pydicom's pixel handlers: (array, its photometric
    interpretation; colour comes out as RGB)."""
    from pydicom.encaps import encapsulate

    decoder = decoder_for(fmt)
    try:
        # pydicom annotates as_array's **kwargs as DecodeOptions (each), not Unpack[DecodeOptions]
        array, meta = decoder.as_array(encapsulate([data]), **fmt.options(), as_rgb=True)  # type: ignore[arg-type]
    except Exception as exc:
        raise PixelError(f"a frame of {fmt.transfer_syntax.name} cannot be decoded ({type(exc).__name__})") \
            from None
    photometric = str(meta.get("photometric_interpretation", fmt.photometric))
    return array, photometric


def output_syntax(fmt: PixelFormat) -> UID:
    """The lossless syntax a decoded frame of ``fmt`` is written in."""
    if fmt.transfer_syntax in _REENCODED_AS_ITSELF:
        return fmt.transfer_syntax
    return JPEGLSLossless


def encode_frame(frame: np.ndarray, fmt: PixelFormat, syntax: UID, photometric: str) -> tuple[bytes, UID]:
    """A frame encoded losslessly in ``syntax`` (RLE Lossless when that cannot hold it)."""
    from pydicom.pixels import get_encoder

    options = fmt.options(photometric_interpretation=photometric, planar_configuration=0)
    if syntax == JPEG2000Lossless:
        options["use_mct"] = False  # photometric stays RGB
    for candidate in (syntax, RLELossless):
        try:
            encoder = get_encoder(candidate)
        except NotImplementedError:
            continue
        if encoder is None or not encoder.is_available:
            continue
        try:
            return encoder.encode(np.ascontiguousarray(frame), **options), candidate
        except Exception:
            continue
    raise PixelError(f"a cleaned frame cannot be encoded losslessly ({syntax.name} or RLE Lossless)")


def item(data: bytes) -> bytes:
    """One item of encapsulated pixel data (even length)."""
    if len(data) % 2:
        data += b"\x00"
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(data)) + data


SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
EMPTY_OFFSET_TABLE = struct.pack("<HHL", 0xFFFE, 0xE000, 0)


def jpeg_frame_picture(data: bytes) -> np.ndarray:
    """A JPEG frame decoded for text detection (8-bit, as RGB or grey)."""
    from PIL import Image

    picture: Image.Image  # the file's own, or converted
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            if picture.mode not in ("L", "RGB"):
                picture = picture.convert("RGB")
            return np.asarray(picture)
    except Exception as exc:
        raise PixelError(f"a JPEG frame cannot be decoded ({type(exc).__name__})") from None

