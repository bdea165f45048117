"""Masking rectangles of a JPEG (DCT) image without re-encoding it: the blocks that a rectangle
touches get a flat colour (their DC coefficient set, the AC coefficients zeroed), every other
block keeps its quantized coefficients exactly, so the image outside the masks decodes to the
same pixels as before and nothing is lost to a second lossy compression.

Done by libjpeg-turbo's lossless transform (``tjTransform`` of the TurboJPEG API, Debian's
``libturbojpeg0``) with a custom filter, through ctypes; the quantization tables (for the DC of
black) and the sampling factors (for where a rectangle falls in each component's plane) are
read from the stream's DQT and SOF segments. Markers other than those the image needs (APPn,
COM: free text) are not copied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import threading
from dataclasses import dataclass

import numpy as np


class JpegMaskError(RuntimeError):
    """The stream cannot be masked in the DCT domain (the caller decodes and re-encodes)."""


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]
    # (the fields, as type checkers know them: they do not read _fields_)
    x: int
    y: int
    w: int
    h: int


class _Transform(ctypes.Structure):
    pass


_FILTER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), _Region, _Region, ctypes.c_int,
                           ctypes.c_int, ctypes.POINTER(_Transform))
_Transform._fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int),
                       ("data", ctypes.c_void_p), ("customFilter", _FILTER)]
_TJXOPT_PERFECT = 1
_TJXOPT_COPYNONE = 64

_library: ctypes.CDLL | None = None
_library_lock = threading.Lock()


def _turbojpeg() -> ctypes.CDLL:
    global _library
    with _library_lock:
        if _library is None:
            name = ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                raise JpegMaskError("libjpeg-turbo's TurboJPEG library is not installed (Debian: libturbojpeg0)") \
                    from None
            lib.tjInitTransform.restype = ctypes.c_void_p
            lib.tjTransform.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                                        ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                        ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(_Transform), ctypes.c_int]
            lib.tjDestroy.argtypes = [ctypes.c_void_p]
            lib.tjFree.argtypes = [ctypes.POINTER(ctypes.c_ubyte)]
            lib.tjGetErrorStr2.restype = ctypes.c_char_p
            lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
            _library = lib
        return _library


@dataclass(frozen=True)
class JpegLayout:
    """What the mask needs of a JPEG stream: its size, components and their tables."""

    width: int
    height: int
    precision: int
    components: tuple[tuple[int, int, int], ...]  # (horizontal, vertical sampling, DC quantizer)
    ycc: bool = False  # three components coded as YCbCr (libjpeg's rule), not as RGB

    @property
    def max_sampling(self) -> tuple[int, int]:
        return max(c[0] for c in self.components), max(c[1] for c in self.components)


def read_layout(stream: bytes) -> JpegLayout:
    """The frame header and quantization tables of a JPEG stream (DCT processes only)."""
    if stream[:2] != b"\xff\xd8":
        raise JpegMaskError("not a JPEG stream (no SOI marker)")
    tables: dict[int, int] = {}
    jfif, adobe_transform = False, None
    pos, end = 2, len(stream)
    while pos + 4 <= end:
        if stream[pos] != 0xFF:
            raise JpegMaskError("JPEG stream: a marker was expected")
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", stream, pos + 2)
        segment = stream[pos + 4:pos + 2 + length]
        if marker == 0xE0 and segment[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]
        if marker == 0xDB:  # DQT: one or more tables
            p = 0
            while p < len(segment):
                precision, table = segment[p] >> 4, segment[p] & 15
                size = 128 if precision else 64
                if p + 1 + size > len(segment):
                    raise JpegMaskError("JPEG stream: a quantization table is cut short")
                tables[table] = struct.unpack_from(">H", segment, p + 1)[0] if precision else segment[p + 1]
                p += 1 + size
        elif marker in (0xC0, 0xC1, 0xC2):  # SOF of a Huffman DCT process
            precision, height, width, count = struct.unpack_from(">BHHB", segment, 0)
            components, ids = [], []
            for i in range(count):
                identifier, sampling, table = struct.unpack_from(">BBB", segment, 6 + 3 * i)
                ids.append(identifier)
                if table not in tables:
                    raise JpegMaskError("JPEG stream: a component names a quantization table not defined")
                components.append((sampling >> 4, sampling & 15, tables[table]))
            if not components or min(width, height) < 1 or any(q < 1 for *_, q in components):
                raise JpegMaskError("JPEG stream: an unusable frame header")
            # How libjpeg decides the colour space of three components (jdapimin.c).
            if jfif:
                ycc = True
            elif adobe_transform is not None:
                ycc = adobe_transform != 0
            else:
                ycc = ids != [ord("R"), ord("G"), ord("B")]
            return JpegLayout(width, height, precision, tuple(components), count == 3 and ycc)
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise JpegMaskError("JPEG stream of a process libjpeg-turbo does not transform (lossless, arithmetic "
                                "or hierarchical)")
        elif marker == 0xDA:
            break
        pos += 2 + length
    raise JpegMaskError("JPEG stream without a frame header")


def snap(layout: JpegLayout, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """A rectangle grown to whole MCUs (what mask_jpeg makes flat of it)."""
    max_h, max_v = layout.max_sampling
    mcu_w, mcu_h = 8 * max_h, 8 * max_v
    x0, y0 = max(x, 0) // mcu_w * mcu_w, max(y, 0) // mcu_h * mcu_h
    return x0, y0, -(-(x + w) // mcu_w) * mcu_w - x0, -(-(y + h) // mcu_h) * mcu_h - y0


def mask_jpeg(stream: bytes, rectangles: list[tuple[int, int, int, int]], fills: list[tuple[int, ...]]) -> bytes:
    """``stream`` with every MCU that meets one of ``rectangles`` (x, y, width, height in
    pixels) made flat, each of its sample values in ``fills`` (one per component, as coded: Y,
    Cb, Cr for YCbCr). Raises JpegMaskError when the stream cannot be transformed."""
    layout = read_layout(stream)
    if layout.precision != 8:
        raise JpegMaskError(f"{layout.precision}-bit JPEG: TurboJPEG transforms 8-bit streams only")
    if any(len(fill) != len(layout.components) for fill in fills) or len(fills) != len(rectangles):
        raise JpegMaskError("JPEG stream: its number of components is not the image's")
    max_h, max_v = layout.max_sampling
    # Per component: (first block column, row, end column, row, quantized DC) of each rectangle.
    in_planes: list[list[tuple[int, int, int, int, int]]] = [[] for _ in layout.components]
    for rectangle, fill in zip(rectangles, fills):
        if rectangle[2] < 1 or rectangle[3] < 1:
            continue
        # Whole MCUs: a chroma block shared with pixels outside a rectangle would tint them.
        x, y, w, hh = snap(layout, *rectangle)
        for c, ((h, v, q), value) in enumerate(zip(layout.components, fill)):
            x0, y0 = (x * h) // max_h // 8, (y * v) // max_v // 8
            x_end, y_end = -(-((x + w) * h) // max_h), -(-((y + hh) * v) // max_v)  # exclusive, in the plane
            # The quantized DC of a flat block of value v: 8 * (v - 128) / Q (level shift, DCT gain).
            in_planes[c].append((x0, y0, (x_end - 1) // 8 + 1, (y_end - 1) // 8 + 1, int(round(8 * (value - 128) / q))))

    def apply(coeffs: ctypes._Pointer[ctypes.c_short], array: _Region, plane: _Region, component: int,
              transform: int, _: object) -> int:
        rows, columns = array.h // 8, array.w // 8
        values = np.ctypeslib.as_array(coeffs, shape=(rows, columns, 64))
        top = array.y // 8
        for x0, y0, x1, y1, dc in in_planes[component]:
            r0, r1 = max(y0 - top, 0), min(y1 - top, rows)
            if r0 < r1 and x0 < columns:
                values[r0:r1, x0:min(x1, columns), :] = 0
                values[r0:r1, x0:min(x1, columns), 0] = dc
        return 0

    lib = _turbojpeg()
    callback = _FILTER(apply)
    transform = _Transform(_Region(0, 0, 0, 0), 0, _TJXOPT_PERFECT | _TJXOPT_COPYNONE, None, callback)
    handle = lib.tjInitTransform()
    if not handle:
        raise JpegMaskError("TurboJPEG could not be initialized")
    out = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    try:
        if lib.tjTransform(handle, stream, len(stream), 1, ctypes.byref(out), ctypes.byref(size),
                           ctypes.byref(transform), 0) != 0:
            message = (lib.tjGetErrorStr2(handle) or b"").decode("ascii", "replace")
            raise JpegMaskError(f"TurboJPEG could not transform the stream: {message}")
        return ctypes.string_at(out, size.value)
    finally:
        if out:
            lib.tjFree(out)
        lib.tjDestroy(handle)
