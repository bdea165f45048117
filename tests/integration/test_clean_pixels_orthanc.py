"""Clean Pixel Data in a real Orthanc: a C-STORE rule with CleanPixelDataOption cleans what a
probe sends (single frame, a 1,000-frame cine in bounded memory, the site's regions), leaves
images that need no cleaning byte for byte, and refuses what cannot be cleaned."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit

from coercion import Keys

from orthanc_server import COERCED_STATUSES, SECRET, OrthancServer, needs_orthanc, store_statuses, storescu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pixelimages as pi  # noqa: E402 (tests/ is the parent folder)

pytestmark = needs_orthanc
KEYS = Keys(SECRET)
RULES = """
- name: probes
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: USPROBE
  uri: "deidentify:CleanPixelDataOption"
"""
REGIONS = """
- name: acme-console
  match: {Manufacturer: "ACME.*", Rows: 480}
  regions: [[0, 0, 640, 60]]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("pixels"), rules=RULES)
    (server.rules_dir / "pixel-regions.yaml").write_text(REGIONS)
    server.start()
    yield server
    server.stop()


def send(server, tmp_path: Path, ds) -> tuple[list[str], pydicom.Dataset | None]:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(pi.encode(ds))
    statuses = store_statuses(storescu(server, "USPROBE", path, options=("-xy",)))
    assert server.lookup(ds.SOPInstanceUID) is None  # never the original
    stored = server.lookup(KEYS.uid(ds.SOPInstanceUID))
    return statuses, pydicom.dcmread(io.BytesIO(server.file(stored))) if stored else None


def test_an_ultrasound_is_stored_cleaned(server, tmp_path):
    picture = pi.burned_in()
    statuses, stored = send(server, tmp_path, pi.dataset([picture.pixels]))
    assert statuses[0] in COERCED_STATUSES
    assert (stored.pixel_array != picture.pixels)[picture.text_mask].all()
    assert (stored.pixel_array != picture.pixels)[picture.outside_lines(8)].mean() < 0.02
    assert stored.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in stored.DeidentificationMethodCodeSequence}
    assert pi.legible(picture.words, stored.pixel_array, picture.lines) == []


def test_a_ct_keeps_its_pixel_data_byte_for_byte(server, tmp_path):
    ds = pi.dataset([pi.burned_in().pixels], pi.CT_IMAGE)
    statuses, stored = send(server, tmp_path, ds)
    assert statuses[0] in COERCED_STATUSES
    assert stored.PixelData == ds.PixelData and stored.PatientName != ds.PatientName


def test_the_sites_regions_beside_the_rules_are_masked(server, tmp_path):
    picture = pi.burned_in()
    ds = pi.dataset([picture.pixels], pi.CT_IMAGE, Manufacturer="Acme Medical")
    _, stored = send(server, tmp_path, ds)
    assert (stored.pixel_array[:60] != picture.pixels[:60]).any()
    assert (stored.pixel_array[62:] == picture.pixels[62:]).all()


def test_an_image_that_cannot_be_cleaned_is_refused(server, tmp_path):
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    ds = pi.dataset([pi.burned_in(pi.ultrasound(seed=i)).pixels for i in range(4)], pi.US_MULTIFRAME)
    ds.compress(RLELossless)
    items = list(generate_frames(ds.PixelData, number_of_frames=4))
    items[2] = b"\x01\x00\x00\x00" + b"\xff" * 60  # a frame whose RLE header lies: found only when it comes
    ds.PixelData = encapsulate(items)
    path = tmp_path / "broken.dcm"
    path.write_bytes(pi.encode(ds))
    statuses = store_statuses(storescu(server, "USPROBE", path, options=("-xr",)))
    assert statuses and not statuses[0].startswith(("Success", "Warning"))  # refused: Processing Failure
    assert server.lookup(ds.SOPInstanceUID) is None and server.lookup(KEYS.uid(ds.SOPInstanceUID)) is None
    assert "pixel data cannot be cleaned" in server.log()


def _orthanc_pid(server) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_thousand_frame_rgb_cine_is_cleaned_in_bounded_memory(tmp_path_factory):
    # A server of its own: its peak memory is this instance's alone.
    server = OrthancServer(tmp_path_factory.mktemp("cine"), rules=RULES).start()
    try:
        path = tmp_path_factory.mktemp("cine-file") / "cine.dcm"
        pi.write_cine(path)
        original = pydicom.dcmread(path, stop_before_pixels=True)
        before = _peak_mb(_orthanc_pid(server))
        statuses = store_statuses(storescu(server, "USPROBE", path, options=("-xy",)))
        assert statuses and statuses[0] in COERCED_STATUSES
        peak = _peak_mb(_orthanc_pid(server))
        print(f"Orthanc's peak: {peak:.0f} MB (before the cine: {before:.0f} MB)")
        assert peak < 500, f"Orthanc's peak was {peak:.0f} MB (before the cine: {before:.0f} MB)"
        stored = pydicom.dcmread(io.BytesIO(server.file(server.lookup(KEYS.uid(original.SOPInstanceUID)))))
        assert stored.NumberOfFrames == 1000 and stored.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        from pydicom.pixels import iter_pixels

        for index, (was, frame) in enumerate(zip(iter_pixels(path), iter_pixels(stored))):
            if index % 99 == 0 or 500 <= index < 510:
                text = pi.cine_picture(index).text_mask
                assert (was != frame).any(axis=-1)[text].all(), index
    finally:
        server.stop()
