"""C-MOVE, side by side: Orthanc without the plugin, and Orthanc whose outgoing rules make the
plugin's C-MOVE SCP replace Orthanc's, asked by dcmtk's movescu to send to a destination no
rule names. Every identifier form Orthanc's SCP takes delivers the same instances with the same
final status. Orthanc's Python plugin 4.0 runs a plugin's C-MOVE as one sub-operation created
before the plugin sees the request, which the tests pin down where it shows (see
docs/administrators-guide.md, What leaves Orthanc); from 4.2 on, the plugin's C-MOVE comes in
Orthanc's four parts, and answers as Orthanc's own."""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pydicom
import pytest

from factory import encode, make_ct
from orthanc_server import AET, OrthancServer, PlainOrthanc, StoreSCP, free_port, needs_orthanc

pytestmark = needs_orthanc
RULES = """
- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [RESEARCH], uri: "deidentify:"}
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("move-native")
    destination = StoreSCP(root / "destination", aet="DEST")
    peers = {"DEST": destination.port, "MOVER": free_port()}
    plain = PlainOrthanc(root / "plain", AET, peers)
    plugin = OrthancServer(root / "plugin", rules=RULES, modalities={**peers, "RESEARCH": free_port()}).start()
    study, series = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    made = []
    for number in range(3):
        ds = make_ct(patient_id="MRN-MOVE", study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        ds.AccessionNumber = "ACC-MOVE"
        made.append(ds)
        for server in (plain, plugin):
            assert server.post("/instances", encode(ds)).ok
    other = make_ct(patient_id="MRN-OTHER", study_uid=f"2.25.{uuid.uuid4().int}", sop_uid=f"2.25.{uuid.uuid4().int}")
    for server in (plain, plugin):
        assert server.post("/instances", encode(other)).ok
    yield plain, plugin, destination, made, other
    plugin.stop()
    plain.stop()
    destination.stop()


def move(server, keys: list[str], destination: str = "DEST", model: str = "-S") -> str:
    args = ["movescu", "-d", model, "-aet", "MOVER", "-aec", AET, "-aem", destination, "127.0.0.1",
            str(server.dicom_port)]
    for key in keys:
        args += ["-k", key]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ, TCP_NODELAY="1"))
    statuses = re.findall(r"^D: DIMSE Status\s*:\s*(0x[0-9a-f]{4})", run.stdout + run.stderr, re.M)
    return statuses[-1] if statuses else "no answer"


def delivered(destination, action) -> set[str]:
    for path in destination.received():
        path.unlink()
    status = action()
    return status, {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in destination.received()}


def forms(made, other) -> dict:
    study, series = made[0].StudyInstanceUID, made[0].SeriesInstanceUID
    two = f"{made[0].SOPInstanceUID}\\{made[1].SOPInstanceUID}"
    return {
        "study": ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"],
        "studies": ["QueryRetrieveLevel=STUDIES", f"StudyInstanceUID={study}"],
        "study-list": ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}\\{other.StudyInstanceUID}"],
        "study-by-accession": ["QueryRetrieveLevel=STUDY", "AccessionNumber=ACC-MOVE"],
        "series": ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={series}"],
        "image": ["QueryRetrieveLevel=IMAGE", f"SOPInstanceUID={made[2].SOPInstanceUID}"],
        "images-list": ["QueryRetrieveLevel=IMAGES", f"SOPInstanceUID={two}"],
        "instance": ["QueryRetrieveLevel=INSTANCE", f"SOPInstanceUID={made[2].SOPInstanceUID}"],
        "patient": ["QueryRetrieveLevel=PATIENT", "PatientID=MRN-MOVE"],
        "lower-case-level": ["QueryRetrieveLevel=series", f"SeriesInstanceUID={series}"],
    }


FORMS = sorted(forms([make_ct()] * 3, make_ct()))


@pytest.mark.parametrize("model", ["-S", "-P"], ids=["study-root", "patient-root"])
@pytest.mark.parametrize("form", FORMS)
def test_every_form_delivers_what_orthanc_delivers(sites, form, model):
    plain, plugin, destination, made, other = sites
    keys = forms(made, other)[form]
    if model == "-P" and form != "patient":
        keys = keys + ["PatientID=MRN-MOVE"] if "other" not in form else keys
    expected = delivered(destination, lambda: move(plain, keys, model=model))
    got = delivered(destination, lambda: move(plugin, keys, model=model))
    assert got == expected
    assert expected[1], "the form should move something (a test that moves nothing proves nothing)"


def sdk_has(server, feature: str) -> bool:
    """Whether the plugin found ``feature`` in this Orthanc's SDK (its start-up line)."""
    line = next(line for line in server.log().splitlines() if "SDK features found:" in line)
    return feature in line.split("SDK features found:")[1].split(";")[0]


@pytest.mark.parametrize("case", ["unknown-destination", "nothing-matches", "no-level"])
def test_failures_before_any_sub_operation(sites, case):
    # Orthanc's own SCP deduces a missing level and fails unknown destinations and empty matches
    # with 0xC000 before any sub-operation. With Orthanc's four-part callback (orthanc-python
    # 4.2) the plugin does the same; the plugin API 4.0 creates the one sub-operation before the
    # plugin sees the request, so there its failures are 0xB000 "one or more failures".
    plain, plugin, destination, made, _ = sites
    study = made[0].StudyInstanceUID
    keys, where = {"unknown-destination": (["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"], "NOBODY"),
                   "nothing-matches": (["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3.4"], "DEST"),
                   "no-level": ([f"StudyInstanceUID={study}"], "DEST")}[case]
    native = delivered(destination, lambda: move(plain, keys, where))
    plugin_answer = delivered(destination, lambda: move(plugin, keys, where))
    if case == "no-level":
        assert native[0] == "0x0000" and native[1]
    else:
        assert native == ("0xc000", set())
    if sdk_has(plugin, "move_with_suboperations"):
        # Orthanc's Python plugin turns a request without a level into an error before the
        # plugin's callback is called (its wrapper knows no level "None"): refused, nothing sent.
        assert plugin_answer == (("0xc000", set()) if case == "no-level" else native)
    else:
        assert plugin_answer == ("0xb000", set())  # a failure, and nothing sent


def test_every_instance_is_a_sub_operation_where_orthanc_has_the_four_part_callback(sites):
    plain, plugin, destination, made, _ = sites
    if not sdk_has(plugin, "move_with_suboperations"):
        pytest.skip("orthanc-python 4.0 (Debian 12) runs a plugin's C-MOVE as one sub-operation")
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={made[0].StudyInstanceUID}"]

    def counts(server):
        args = ["movescu", "-d", "-S", "-aet", "MOVER", "-aec", AET, "-aem", "DEST", "127.0.0.1",
                str(server.dicom_port)] + [arg for key in keys for arg in ("-k", key)]
        run = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ, TCP_NODELAY="1"))
        return re.findall(r"^D: (Remaining|Completed|Failed|Warning) Suboperations\s*: (\w+)$|^D: DIMSE Status\s*: (\S+)",
                          run.stdout + run.stderr, re.M)

    # Every response, as Orthanc's own SCP sends them: 2 remaining and 1 completed, then 1 and
    # 2, then none and 3, and the final status.
    expected = counts(plain)
    assert counts(plugin) == expected
    assert ("Completed", "3", "") in expected and ("", "", "0x0000:") in expected
