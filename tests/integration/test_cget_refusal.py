"""C-GET retrieves are Orthanc's own, outside every plugin callback: a peer that outgoing rules
name and that may C-GET would retrieve the originals. Orthanc with such a configuration does
not start (nor does a reload bring such a rule in) unless Coercion.UnsafeCGetBypassesRules
accepts it."""

from __future__ import annotations

import pytest

from orthanc_server import OrthancServer, free_port, needs_orthanc

pytestmark = needs_orthanc
OUTGOING = """
- name: viewers
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [{aet}]
  uri: "deidentify:"
"""


def modalities(allow_get: bool) -> dict:
    return {"DicomModalities": {
        "viewer": ["viewer", "127.0.0.1", free_port()],  # list form: Orthanc lets it C-GET
        "research": {"AET": "RESEARCH", "Host": "127.0.0.1", "Port": free_port(), "AllowGet": allow_get}}}


def test_a_modality_that_may_c_get_around_an_outgoing_rule_stops_orthanc(tmp_path):
    # Named VIEWER by the rule, viewer in DicomModalities: one caller as Orthanc compares them.
    server = OrthancServer(tmp_path / "orthanc", rules=OUTGOING.format(aet="VIEWER"), settings=modalities(False))
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    log = server.log()
    assert "coercion: refusing to start: " in log
    assert "rule 'viewers': modality 'viewer' (AE title 'viewer') may C-GET" in log
    assert '"AllowGet": false' in log and '"UnsafeCGetBypassesRules": true' in log


def test_dicom_always_allow_get_stops_orthanc_whatever_the_modalities_say(tmp_path):
    settings = {**modalities(False), "DicomAlwaysAllowGet": True}
    server = OrthancServer(tmp_path / "orthanc", rules=OUTGOING.format(aet="RESEARCH"), settings=settings)
    with pytest.raises(RuntimeError, match="exited with 78"):
        server.start()
    assert "DicomAlwaysAllowGet is true: any caller may C-GET" in server.log()


def test_the_acknowledgement_lets_it_start_and_a_reload_is_refused_the_same_way(tmp_path):
    server = OrthancServer(tmp_path / "orthanc", rules=OUTGOING.format(aet="RESEARCH"), settings=modalities(False))
    server.start()
    try:
        (server.rules_dir / "rules.yaml").write_text(OUTGOING.format(aet="VIEWER"))
        answer = server.admin_post("/coercion/rules/reload")
        assert answer.status_code == 400 and "modality 'viewer'" in answer.json()["error"], answer.text
        assert "the old rules stay active" in answer.json()["error"]
        rules = server.get("/coercion/rules").json()["rules"]
        assert [r["receiving-aet"] for r in rules] == [["RESEARCH"]]
    finally:
        server.stop()
    accepted = OrthancServer(tmp_path / "accepted", rules=OUTGOING.format(aet="VIEWER"), settings=modalities(True),
                             coercion={"UnsafeCGetBypassesRules": True}).start()
    try:
        warnings = accepted.get("/coercion/rules").json()["warnings"]
        assert any("modality 'viewer'" in w and "accepted: Coercion.UnsafeCGetBypassesRules is true" in w
                   for w in warnings), warnings
        assert not any("modality 'research'" in w for w in warnings), warnings  # the rule does not name it
    finally:
        accepted.stop()
