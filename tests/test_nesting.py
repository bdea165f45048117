"""No input can make the engine recurse without bound: sequences nested deeper than the limit
are refused, before pydicom parses them, on every way in (bytes, files, datasets)."""

from __future__ import annotations

import pytest
from coercion import Deidentifier, DicomError, Keys
from coercion.engine.dicomio import check_all_nesting, read_instance
from coercion.engine.limits import MAX_SEQUENCE_DEPTH, NestingError
from nesting import deep_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

KEYS = Keys(b"n" * 32)
URIS = ["deidentify:", "deidentify:CleanStructuredContentOption,RetainSafePrivateOption"]


@pytest.mark.parametrize("uri", URIS)
@pytest.mark.parametrize("defined", [False, True], ids=["undefined-length", "defined-length"])
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_the_limit_is_accepted_and_one_more_is_refused(uri, defined, implicit):
    deid = Deidentifier.from_uri(uri, KEYS)
    deid.deidentify_bytes(deep_file(MAX_SEQUENCE_DEPTH, defined, implicit))
    with pytest.raises(DicomError, match=f"deeper than {MAX_SEQUENCE_DEPTH} levels"):
        deid.deidentify_bytes(deep_file(MAX_SEQUENCE_DEPTH + 1, defined, implicit))


@pytest.mark.parametrize("depth", [200, 5000])
def test_hostile_depths_are_refused_quickly_and_without_recursion(depth):
    # 200 levels crashed Orthanc's HTTP thread inside pydicom's reader; 5000 exhausts any stack.
    with pytest.raises(DicomError, match="nested deeper"):
        read_instance(deep_file(depth))


@pytest.mark.parametrize("defined", [False, True])
def test_private_sequences_of_unknown_vr_are_measured_too(defined):
    # A private UN element holding items is read as a sequence by pydicom: it nests as well.
    data = deep_file(MAX_SEQUENCE_DEPTH + 1, defined, tag=0x00091010, vr=b"UN")
    with pytest.raises(DicomError, match="nested deeper"):
        Deidentifier.from_uri("deidentify:RetainSafePrivateOption", KEYS).deidentify_bytes(data)


def test_a_value_that_only_looks_like_items_is_not_a_sequence():
    # Bytes starting like an item inside a defined-length UN: skipped whole when they do not nest.
    import struct

    from nesting import _element
    fake = struct.pack("<HHL", 0xFFFE, 0xE000, 4) + b"\x01\x02\x03\x04" + b"\x99" * 40
    data = deep_file(1) + _element(0x00411010, b"UN", fake, False)
    read_instance(data)


def test_a_dataset_built_in_memory_is_bounded_too():
    root = leaf = Dataset()
    for _ in range(MAX_SEQUENCE_DEPTH + 1):
        child = Dataset()
        child.ValueType = "CONTAINER"
        leaf.ContentSequence = Sequence([child])
        leaf = child
    with pytest.raises(NestingError, match="nested deeper"):
        Deidentifier.from_uri("deidentify:CleanStructuredContentOption", KEYS).deidentify_dataset(root)


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-length", "defined-length"])
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_the_whole_dataset_is_measured_past_the_attributes_before_a_sequence(defined, implicit):
    """check_all_nesting (for small inputs that are kept: worklist items) measures every element."""
    check_all_nesting(deep_file(MAX_SEQUENCE_DEPTH, defined, implicit, lead=True))
    for depth in (MAX_SEQUENCE_DEPTH + 1, 5000):
        with pytest.raises(DicomError, match=f"deeper than {MAX_SEQUENCE_DEPTH} levels"):
            check_all_nesting(deep_file(depth, defined, implicit, lead=True))


@pytest.mark.parametrize("defined", [False, True])
@pytest.mark.parametrize("implicit", [False, True])
def test_every_reader_measures_past_the_attributes_before_a_sequence(defined, implicit):
    """read_instance's fast path too (ingest, previews, sends): an item that starts with an
    ordinary attribute does not end the measurement (it did, and 150 levels got through)."""
    read_instance(deep_file(MAX_SEQUENCE_DEPTH, defined, implicit, lead=True))
    for depth in (MAX_SEQUENCE_DEPTH + 1, 150, 5000):
        with pytest.raises(DicomError, match=f"deeper than {MAX_SEQUENCE_DEPTH} levels"):
            read_instance(deep_file(depth, defined, implicit, lead=True))
