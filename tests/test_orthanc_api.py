"""Orthanc's own checks of a store request, made by the plugin before anything else: every form
Orthanc accepts, and every error it answers with its message (compared with a real Orthanc in
tests/integration/test_store_native.py)."""

from __future__ import annotations

import json

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from coercion.exchanges.orthanc_api import (
    MAX_JSON_DEPTH,
    JsonTooDeep,
    OrthancError,
    OrthancRelease,
    StoreRequest,
    instance_id,
    is_sha1,
    json_depth,
    read_json_body,
    read_store_request,
)

ID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
OTHER = "ffffffff-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
KNOWN = {ID, OTHER}


def read(body, modality="peer"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return read_store_request(data, KNOWN.__contains__, lambda name: name == "peer", modality)


@pytest.mark.parametrize("body, resources, arguments", [
    (ID.encode(), (ID,), {}),
    (f" \t{ID}\n".encode(), (ID,), {}),
    (ID, (ID,), {}),
    (f" {ID} ", (ID,), {}),  # a JSON string: stripped like every resource
    ([ID, OTHER], (ID, OTHER), {}),
    ([], (), {}),
    ({"Resources": [ID]}, (ID,), {}),
    ({"Resources": [ID], "Priority": 3, "Anything": [1]}, (ID,), {"Priority": 3, "Anything": [1]}),
])
def test_every_form_orthanc_accepts(body, resources, arguments):
    request = read(body)
    assert request.resources == resources and request.arguments == arguments
    assert request.body == {**arguments, "Resources": list(resources)}


def test_the_options_are_read_as_orthanc_reads_them():
    request = read({"Resources": [ID], "LocalAet": "ME", "MoveOriginatorAet": "MOVER", "MoveOriginatorID": 7,
                    "StorageCommitment": True, "Timeout": 0, "Permissive": True, "Asynchronous": True, "Priority": -2})
    assert request == StoreRequest((ID,), request.arguments, "ME", "MOVER", 7, True, 0, True, False, -2)
    assert read({"Resources": [ID], "Synchronous": False, "Asynchronous": False}).synchronous is False  # Synchronous wins
    assert read({"Resources": [ID]}).synchronous is True


@pytest.mark.parametrize("body, code, details", [
    (b"", 15, "Must provide a JSON value"),
    (b"nonsense", 15, "Must provide a JSON value"),
    (b"[1, 2", 15, "Must provide a JSON value"),
    (b"{'Resources': []}", 15, "Must provide a JSON value"),  # jsoncpp takes no single quotes
    (3, 15, "Must provide a JSON object, or a JSON array of strings"),
    (None, 15, "Must provide a JSON object, or a JSON array of strings"),
    ({}, 15, 'Missing field in JSON: "Resources"'),
    ({"Resources": ID}, 15, 'JSON field "Resources" must contain an array'),
    ([1], 15, "Resources to be exported must be specified as a JSON array of strings"),
    (["nosuch"], 15, "This string is not a valid Orthanc identifier: nosuch"),
    ([" nosuch "], 15, "This string is not a valid Orthanc identifier: nosuch"),
    (["00000000-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"], 17, None),  # well formed, not in Orthanc
    (f"{ID}\x00".encode(), 17, None),  # IsSHA1 ignores the NUL, the look-up does not
    ({"Resources": [ID], "LocalAet": 1}, 5, None),
    ({"Resources": [ID], "MoveOriginatorID": "7"}, 5, None),
    ({"Resources": [ID], "MoveOriginatorID": 7.0}, 5, None),
    ({"Resources": [ID], "StorageCommitment": "yes"}, 5, None),
    ({"Resources": [ID], "Timeout": "x"}, 15, "Integer value expected in field: Timeout"),
    ({"Resources": [ID], "Timeout": -1}, 15, "Unsigned integer value expected in field: Timeout"),
    ({"Resources": [ID], "Permissive": 1}, 15, "Boolean value expected in field: Permissive"),
    ({"Resources": [ID], "Synchronous": "yes"}, 15, "Boolean value expected in field: Synchronous"),
    ({"Resources": [ID], "Asynchronous": None}, 15, "Boolean value expected in field: Asynchronous"),
    ({"Resources": [ID], "Priority": "high"}, 15, "Integer value expected in field: Priority"),
])
def test_every_error_orthanc_answers(body, code, details):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(OrthancError) as caught:
        read(data)
    assert (caught.value.code, caught.value.details) == (code, details)


def test_the_modality_is_checked_after_the_resources_and_before_the_options():
    with pytest.raises(OrthancError) as caught:
        read({"Resources": ["bad"]}, modality="unknown")
    assert caught.value.details == "This string is not a valid Orthanc identifier: bad"
    with pytest.raises(OrthancError) as caught:
        read({"Resources": [ID], "Timeout": "x"}, modality="unknown")
    assert (caught.value.code, caught.value.details) == (7, "No modality with symbolic name: unknown")
    assert caught.value.status == 404
    assert caught.value.body("POST", "/modalities/unknown/store") == {
        "Details": "No modality with symbolic name: unknown", "HttpError": "Not Found", "HttpStatus": 404,
        "Message": "Accessing an inexistent item", "Method": "POST", "OrthancError": "Accessing an inexistent item",
        "OrthancStatus": 7, "Uri": "/modalities/unknown/store"}


def test_identifiers_as_orthanc_recognises_them():
    assert is_sha1(ID) and is_sha1(ID.upper()) and is_sha1(" " + ID + "\x00")
    assert is_sha1("zzzzzzzz-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d")  # Orthanc checks alphanumerics, not hex
    assert not is_sha1(ID[:-1]) and not is_sha1(ID.replace("-", "_")) and not is_sha1("")


@pytest.mark.parametrize("text, value", [
    ('{"Resources": [], } ', {"Resources": []}),  # a trailing comma
    ("[] trailing", []),  # what follows the value is ignored
    ('{"Resources": [] /* comment */}', {"Resources": []}),
    ("// comment\n[1, 2,]", [1, 2]),
    ("\ufeff[]", []),  # a byte order mark
    ('{"a": "// not a comment, /* nor this */"}', {"a": "// not a comment, /* nor this */"}),
])
def test_json_as_orthancs_reader_takes_it(text, value):
    assert read_json_body(text.encode()) == value


def test_json_nested_deeper_than_orthanc_survives_is_never_read():
    assert json_depth('[["]]]\\"[[[", {"a": [1]}]]') == 4 and json_depth("3") == 0
    read_json_body(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    with pytest.raises(JsonTooDeep):
        read_json_body(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooDeep):
        read(b"[" * 100000)


# -- where later releases answer otherwise (compared with Orthanc 1.12.7 and 1.13.0 in the
# platform runs, tests/test_platforms.py) -----------------------------------------------------

RELEASE_1_13 = OrthancRelease((1, 13, 0), resource_finder=True)


def read_as(release, body, modality="peer"):
    return read_store_request(json.dumps(body).encode(), KNOWN.__contains__, lambda name: name == "peer", modality,
                              release)


def test_orthanc_1_13_looks_the_modality_up_before_the_options():
    with pytest.raises(OrthancError) as caught:
        read_as(RELEASE_1_13, {"Resources": [ID], "LocalAet": 1}, modality="unknown")
    assert (caught.value.code, caught.value.details) == (7, "No modality with symbolic name: unknown")


@pytest.mark.parametrize("release, code, details", [
    (OrthancRelease((1, 12, 7)), 15, "Unsigned integer value expected in field: Timeout"),
    (RELEASE_1_13, 5, "Negative value found while expecting an unsigned int in field 'Timeout'"),
])
def test_a_negative_timeout_as_each_release_refuses_it(release, code, details):
    with pytest.raises(OrthancError) as caught:
        read_as(release, {"Resources": [ID], "Timeout": -1})
    assert (caught.value.code, caught.value.details) == (code, details)


def test_an_unknown_resource_as_each_release_refuses_it():
    unknown = "12345678-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
    for release, status in ((OrthancRelease((1, 12, 7)), 404), (RELEASE_1_13, 500)):
        with pytest.raises(OrthancError) as caught:
            read_as(release, [unknown])
        assert caught.value.status == status


def test_a_destination_for_one_send_is_read_where_orthanc_takes_it():
    body = {"Resources": [ID], "CalledAet": "ELSEWHERE", "Port": 104}
    assert read_as(OrthancRelease((1, 10, 1)), body).destination_overrides == {}
    assert read_as(OrthancRelease((1, 12, 7)), body).destination_overrides == {"CalledAet": "ELSEWHERE", "Port": 104}


def test_instance_id_is_orthancs():
    # What Orthanc 1.13.0 logged storing pydicom's CT_small.dcm: "New instance stored (f689ddd2-...)".
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    assert instance_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) \
        == "f689ddd2-662f8fe1-8b18180d-ec2a2cee-937917af"
    assert instance_id("", "1.2", "1.2.3", "1.2.3.4") != instance_id("x", "1.2", "1.2.3", "1.2.3.4")
