"""Pixel data passes through byte for byte, never decoded, for every file bundled with pydicom."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file

from coercion import DicomError
from coercion.engine.dicomio import PixelElement, read_instance

from factory import deidentifier

TEST_FILES = sorted(Path(get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))
# Corrupt by design: refused with a clear reason instead of being guessed at.
CORRUPT = {
    "MR_truncated.dcm": "pixel data is truncated",
    "rtplan_truncated.dcm": "truncated DICOM data",
    "no_meta.dcm": "not DICOM",  # shifted by one byte: pydicom itself reads only garbage from it
}
URIS = [
    "deidentify:",
    "deidentify:RetainSafePrivateOption,CleanDescriptorsOption,CleanStructuredContentOption,"
    "CleanGraphicsOption,RetainLongitudinalTemporalInformationModifiedDatesOption,RetainPatientIDHashOption",
]


def _raw_pixel_values(data: bytes):
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return {tag: ds[tag].value for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) if tag in ds}


@pytest.fixture(autouse=True)
def no_pixel_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "convert_pixel_data", refuse)
    monkeypatch.setattr(pydicom.pixels.decoders.base.Decoder, "as_array", refuse)
    monkeypatch.setattr(pydicom.pixels.decoders.base.Decoder, "iter_array", refuse)


@pytest.mark.parametrize("uri", URIS, ids=["basic", "all-options"])
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_every_pydicom_test_file(path, uri):
    data = path.read_bytes()
    digest = hashlib.sha256(data).digest()
    deid = deidentifier(uri)
    if path.name in CORRUPT:
        with pytest.raises(DicomError, match=CORRUPT[path.name]):
            deid.deidentify_bytes(data)
        return
    out = deid.deidentify_bytes(data)
    assert hashlib.sha256(data).digest() == digest  # the input is never modified
    assert _raw_pixel_values(out) == _raw_pixel_values(data)
    result = pydicom.dcmread(io.BytesIO(out))
    assert result.PatientIdentityRemoved == "YES"
    if "SOPInstanceUID" in result:
        assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID


def test_the_bundled_files_cover_every_kind_of_transfer_syntax():
    seen = set()
    for path in TEST_FILES:
        if path.name in CORRUPT:
            continue
        instance = read_instance(path.read_bytes())
        if any(isinstance(s, PixelElement) for s in instance.segments):
            seen.add(instance.transfer_syntax)
    for ts in (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian,
               uid.DeflatedExplicitVRLittleEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit,
               uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
               uid.RLELossless):
        assert ts in seen, ts


def test_pixel_data_is_a_view_of_the_input_not_a_copy():
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    instance = read_instance(data)
    assert 0x7FE00010 not in instance.header  # pydicom never parsed it
    pixels = [s for s in instance.segments if isinstance(s, PixelElement)]
    assert len(pixels) == 1 and pixels[0].value.obj is data


def test_encapsulated_fragments_pass_through():
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    out = deidentifier().deidentify_bytes(data)
    original = pydicom.dcmread(io.BytesIO(data)).PixelData
    assert pydicom.dcmread(io.BytesIO(out)).PixelData == original
    assert original in out


def test_trailing_elements_after_pixel_data_are_processed(tmp_path):
    from factory import encode, make_ct

    ds = make_ct()
    ds.add_new(0x7FE10010, "LO", "SIEMENS CSA NON-IMAGE")
    ds.add_new(0x7FE11010, "OB", b"Doe^Johnathan" * 4)
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # trailing padding
    data = encode(ds)
    out = deidentifier().deidentify_bytes(data)
    assert b"Doe^Johnathan" in data and b"Doe^Johnathan" not in out
    assert pydicom.dcmread(io.BytesIO(out)).PixelData == ds.PixelData


def test_truncated_encapsulated_data_is_refused():
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    with pytest.raises(DicomError, match="fragment is truncated|no sequence delimiter"):
        deidentifier().deidentify_bytes(data[:-100])


@pytest.mark.parametrize("junk", [b"", b"hello world", b"\x00" * 200, b"PK\x03\x04" + b"\x00" * 300])
def test_non_dicom_is_refused(junk):
    with pytest.raises(DicomError):
        deidentifier().deidentify_bytes(junk)
