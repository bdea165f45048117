"""Crafted input cannot take the PACS down: sequences nested past the engine's limit are refused
with a message naming it, on every way in, and Orthanc keeps serving."""

from __future__ import annotations

import subprocess
import sys

from pynetdicom import AE

from coercion.engine.limits import MAX_SEQUENCE_DEPTH

from nesting import SR_CLASS, deep_file
from orthanc_server import needs_orthanc, orthanc  # noqa: F401 (a fixture)

pytestmark = needs_orthanc
# Deeper than the engine's limit, shallower than what crashes Orthanc's own parser (about 48).
TOO_DEEP = MAX_SEQUENCE_DEPTH + 8


def test_a_preview_of_a_hostile_file_is_refused_and_orthanc_keeps_serving(orthanc):
    for depth in (TOO_DEEP, 200, 5000):  # 200 crashed Orthanc's HTTP thread inside pydicom
        answer = orthanc.admin_post("/coercion/preview/rule/research", deep_file(depth))
        assert answer.status_code == 400 and f"deeper than {MAX_SEQUENCE_DEPTH} levels" in answer.json()["error"]
    assert orthanc.get("/system").ok


def test_a_matched_rest_upload_nested_too_deep_is_refused(orthanc):
    answer = orthanc.post("/instances", deep_file(TOO_DEEP))  # the "uploads" rule matches loopback uploads
    assert answer.status_code == 400
    assert orthanc.get("/system").ok and orthanc.lookup("1.2.3.4") is None
    audit = [line for line in orthanc.log().splitlines() if '"action":"rejected"' in line and "nested deeper" in line]
    assert audit


def test_a_matched_c_store_nested_too_deep_is_refused(orthanc):
    ae = AE(ae_title="RESEARCH")
    ae.add_requested_context(SR_CLASS.rstrip(b"\x00").decode(), "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        # pynetdicom re-encodes a Dataset recursively: send the raw file, as an SCU may.
        path = orthanc.root / "deep.dcm"
        path.write_bytes(deep_file(TOO_DEEP))
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert status.Status in (0xC000, 0x0110, 0xA700), hex(status.Status)
    assert orthanc.get("/system").ok and orthanc.lookup("1.2.3.4") is None


def test_the_cli_refuses_a_hostile_file_and_goes_on(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "deep.dcm").write_bytes(deep_file(5000))
    (source / "fine.dcm").write_bytes(deep_file(2))
    run = subprocess.run([sys.executable, "-m", "coercion.cli", "deidentify", "--uri", "deidentify:",
                          "--out", str(tmp_path / "out"), str(source)], capture_output=True, text=True,
                         env={"COERCION_SECRET": "s" * 32, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert run.returncode == 1
    assert f"deeper than {MAX_SEQUENCE_DEPTH} levels" in run.stderr and "1 files de-identified" in run.stderr
    assert (tmp_path / "out" / "fine.dcm").exists() and not (tmp_path / "out" / "deep.dcm").exists()
