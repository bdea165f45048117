"""An instance cut short is refused, even where the cut leaves well-formed data: a receiver that
re-encodes what it got (DCMTK inside Orthanc does) gives consistent lengths, and only the
pixel data its own header describes shows that something is missing."""

from __future__ import annotations

import pytest

from coercion import DicomError

from factory import deidentifier, encode, make_ct


def test_native_pixel_data_shorter_than_its_header_describes_is_refused():
    ds = make_ct()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # a cut file, re-encoded whole
    with pytest.raises(DicomError, match="pixel data is truncated: 256 of the 512 bytes"):
        deidentifier().deidentify_bytes(encode(ds))


def test_an_image_whose_pixel_data_is_missing_is_refused():
    ds = make_ct()
    del ds.PixelData  # cut before the pixel data, at an element boundary
    with pytest.raises(DicomError, match="has no pixel data"):
        deidentifier().deidentify_bytes(encode(ds))


def test_multi_frame_and_subsampled_colour_count_as_their_header_says():
    ds = make_ct(rows=4)
    ds.NumberOfFrames = "3"
    ds.PixelData = b"\x01\x00" * (4 * 4 * 3)  # BitsAllocated 16, 4 rows, 4 columns, 3 frames
    deidentifier().deidentify_bytes(encode(ds))
    ds.PixelData = ds.PixelData[:-2]
    with pytest.raises(DicomError, match="truncated"):
        deidentifier().deidentify_bytes(encode(ds))
    colour = make_ct(rows=4)
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "YBR_FULL_422"
    colour.BitsAllocated, colour.BitsStored, colour.HighBit, colour.PlanarConfiguration = 8, 8, 7, 0
    colour.PixelData = b"\x10" * (4 * 4 * 2)  # 4:2:2, two bytes per pixel
    deidentifier().deidentify_bytes(encode(colour))


def test_data_without_image_attributes_is_not_judged():
    ds = make_ct()
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelData",
                    "SamplesPerPixel", "PhotometricInterpretation", "PixelRepresentation"):
        if keyword in ds:
            delattr(ds, keyword)
    deidentifier().deidentify_bytes(encode(ds))
