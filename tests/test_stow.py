"""The STOW-RS client's request and servers (exchanges/stow.py), as the DICOMweb plugin reads them."""

from __future__ import annotations

import json

import pytest

from coercion.exchanges.orthanc_api import OrthancError
from coercion.exchanges.stow import configured_server, read_stow_request

ONE = "6f1f4b2e-1d2c3b4a-5e6f7a8b-9c0d1e2f-3a4b5c6d"


def test_the_request_forms_the_dicomweb_plugin_takes():
    request = read_stow_request(json.dumps({"Resources": [f" {ONE} "], "HttpHeaders": {"X-A": "1"}}).encode())
    assert (request.resources, request.http_headers, request.synchronous, request.priority) == (
        (ONE,), {"X-A": "1"}, True, 0)
    assert read_stow_request(json.dumps({"Resources": [], "Asynchronous": True}).encode()).synchronous is False
    assert read_stow_request(json.dumps({"Resources": [], "Synchronous": False, "Priority": 3}).encode()).priority == 3


@pytest.mark.parametrize("body", [b"", b"nonsense", b"[]", b"{}", b'{"Resources": "x"}', b'{"Resources": [1]}',
                                  b'{"Resources": [], "HttpHeaders": []}', b'{"Resources": [], "Synchronous": 1}',
                                  b'{"Resources": [], "Priority": "high"}'])
def test_a_malformed_request_is_refused_as_bad_file_format(body):
    with pytest.raises(OrthancError) as refused:
        read_stow_request(body)
    assert refused.value.status == 400


def test_servers_as_the_configuration_writes_them():
    servers = {"a": ["http://a/dicom-web/", "user", "secret"], "b": {"Url": "http://b/", "HttpHeaders": {"K": "v"}},
               "c": ["http://c/"], "bad": 3}
    a = configured_server(servers, "a")
    assert (a.url, a.username, a.password) == ("http://a/dicom-web/", "user", "secret")
    assert "secret" not in repr(a)
    b = configured_server(servers, "b")
    assert (b.url, b.username, b.headers) == ("http://b/", None, {"K": "v"})
    assert configured_server(servers, "c").username is None
    assert configured_server(servers, "missing") is None
    with pytest.raises(ValueError, match="DicomWeb.Servers.bad"):
        configured_server(servers, "bad")
