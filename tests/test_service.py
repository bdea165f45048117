"""The coercion service without Orthanc: decisions, fail-closed, statistics, preview, reload."""

from __future__ import annotations

import io
import json
import textwrap

import pydicom
import pytest

from coercion import Keys
from coercion.rules import RuleError, Transaction
from coercion.service import COERCED, DISCARDED, REJECTED, UNCHANGED, CoercionService, Settings, audit_json, audit_record, decision_fields

from factory import SECRET, encode, make_ct

RULES = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
- name: dropper
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [DROP]
  uri: "deidentify:"
  on-failure: discard
- name: ct-only
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [COND]
  conditions: ["Modality=CT"]
  uri: "deidentify:"
"""


@pytest.fixture
def service(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "site.yaml").write_text(textwrap.dedent(RULES))
    settings = Settings.from_configuration(
        {"Coercion": {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "l.sqlite")}},
        {"COERCION_SECRET": SECRET.decode(), "COERCION_LINKAGE_TOKEN": "token-token-token-token"},
    )
    return CoercionService(settings)


def store(aet):
    return Transaction("C_STORE_RQ", "SCU", aet, "ORTHANC", "127.0.0.1")


def test_matched_instances_are_coerced_and_linked(service):
    data = encode(make_ct(patient_id="P-1"))
    decision = service.coerce(data, store("RESEARCH"))
    assert decision.action == COERCED and decision.rule.name == "research"
    out = pydicom.dcmread(io.BytesIO(decision.data))
    assert out.PatientID == Keys(SECRET).patient_id("P-1", "HOSPITAL_A")
    (link,) = service.linkage(out.PatientID)
    assert link["patient_id"] == "P-1" and link["rule"] == "research"
    assert service.stats()["research"]["coerced"] == 1


def test_unmatched_instances_are_not_even_parsed(service, monkeypatch):
    import coercion.service as module

    monkeypatch.setattr(module, "read_instance", lambda data: pytest.fail("parsed"))
    assert service.coerce(b"anything", store("OTHER")).action == UNCHANGED


def test_fail_closed(service):
    data = encode(make_ct())
    broken = data[:-100]
    decision = service.coerce(broken, store("RESEARCH"))
    assert decision.action == REJECTED and "truncated" in decision.reason and decision.data is None
    assert service.coerce(broken, store("DROP")).action == DISCARDED
    # a conditional rule that cannot read the data still refuses it
    assert service.coerce(b"\x00" * 300, store("COND")).action == REJECTED
    assert service.coerce(encode(make_ct()), store("COND")).action == COERCED
    stats = service.stats()
    assert stats["research"]["rejected"] == 1 and stats["dropper"]["discarded"] == 1


def test_no_phi_in_decisions_or_audit_lines(service):
    data = encode(make_ct(patient_id="PHI-PATIENT-ID", patient_name="Secret^Name"))
    for aet in ("RESEARCH", "DROP"):
        decision = service.coerce(data if aet == "RESEARCH" else data[:-50], store(aet))
        line = audit_json(audit_record("coercion", **decision_fields(decision, "DICOM", aet)))
        assert "PHI-PATIENT-ID" not in line + repr(decision.outcome) and "Secret" not in line
        assert json.loads(line)["rule"] in ("research", "dropper")


def test_preview_does_not_count_or_link(service):
    data = encode(make_ct(patient_id="P-PREVIEW"))
    coerced, outcome = service.preview(data, rule_name="research")
    assert pydicom.dcmread(io.BytesIO(coerced)).PatientIdentityRemoved == "YES"
    assert service.stats() == {} and service.linkage(outcome.patient_pseudonym) == []
    with pytest.raises(LookupError):
        service.preview(data, rule_name="nope")
    with pytest.raises(ValueError):
        service.preview(data)


def test_reload_keeps_the_old_rules_on_error(service, tmp_path):
    path = tmp_path / "rules" / "site.yaml"
    path.write_text("- {name: x, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:Bad'}")
    with pytest.raises(RuleError):
        service.reload()
    assert [r.name for r in service.ruleset.rules] == ["research", "dropper", "ct-only"]
    assert "Bad" in service.rules_report()["last_error"]
    path.write_text("- {name: x, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}")
    service.reload()
    assert [r.name for r in service.ruleset.rules] == ["x"] and service.rules_report()["last_error"] is None


def test_linkage_credential(service):
    assert service.authorised("token-token-token-token")
    assert not service.authorised("token-token-token-tokeN") and not service.authorised(None)


def test_settings_errors(tmp_path):
    with pytest.raises(ValueError, match="RulesDirectory"):
        Settings.from_configuration({}, {"COERCION_SECRET": SECRET.decode()})
    with pytest.raises(ValueError, match="no site secret"):
        Settings.from_configuration({"Coercion": {"RulesDirectory": "r"}}, {})
    with pytest.raises(ValueError, match="DateShiftWindow"):
        Settings.from_configuration({"Coercion": {"RulesDirectory": "r", "DateShiftWindow": [1]}},
                                    {"COERCION_SECRET": SECRET.decode()})
    with pytest.raises(ValueError, match="at least 16"):
        Settings.from_configuration({"Coercion": {"RulesDirectory": "r"}},
                                    {"COERCION_SECRET": SECRET.decode(), "COERCION_LINKAGE_TOKEN": "short"})


def test_every_dimse_and_role_a_rule_may_name_is_applied():
    from coercion import rules
    from coercion.service import ENFORCED

    assert ENFORCED == {(d, r) for d in rules.DIMSE for r in rules.ROLES}


def test_a_rule_the_plugin_does_not_apply_is_refused_not_ignored(service, tmp_path, monkeypatch):
    """What a new DIMSE in the rules' vocabulary gets until the edge applies it."""
    import coercion.service

    monkeypatch.setattr(coercion.service, "ENFORCED", coercion.service.ENFORCED - {("N_SET_RQ", "SCP")})
    path = tmp_path / "rules" / "site.yaml"
    path.write_text("- {name: later, dimse: N_SET_RQ, role: SCP, uri: 'deidentify:'}")
    with pytest.raises(RuleError, match="site.yaml: rule 'later': .*N_SET_RQ with role SCP is not applied"):
        service.reload()
    assert [r.name for r in service.ruleset.rules] == ["research", "dropper", "ct-only"]


def test_a_provisional_decision_is_counted_and_linked_only_once_confirmed(service):
    data = encode(make_ct(patient_id="P-2"))
    decision = service.coerce(data, store("RESEARCH"), provisional=True)
    assert decision.action == COERCED
    pseudonym = pydicom.dcmread(io.BytesIO(decision.data)).PatientID
    assert service.linkage(pseudonym) == [] and "research" not in service.stats()
    service.confirm(decision)
    assert service.linkage(pseudonym)[0]["instance_count"] == 1
    assert service.stats()["research"]["coerced"] == 1 and service.stats()["research"]["bytes_in"] == len(data)


def test_an_unexpected_error_is_refused_without_quoting_its_message(service, monkeypatch):
    from coercion.engine.deidentify import Deidentifier

    def broken(self, instance):
        raise ValueError("could not convert 'Doe^Johnathan^Q'")  # a library quoting the data

    monkeypatch.setattr(Deidentifier, "deidentify_instance", broken)
    decision = service.coerce(encode(make_ct()), store("RESEARCH"))
    assert decision.action == REJECTED and decision.data is None
    assert "ValueError" in decision.reason and "Doe" not in decision.reason
    assert "Doe" not in audit_json(audit_record("coercion", **decision_fields(decision, "DICOM", "RESEARCH")))


def test_uids_handed_out_to_a_peer_are_remembered_and_received_ones_are_not(service, tmp_path):
    (tmp_path / "rules" / "out.yaml").write_text(
        "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [PEER], uri: 'deidentify:'}")
    service.reload()
    keys = Keys(SECRET)
    sent = make_ct(sop_uid="1.2.3.4.5", study_uid="1.2.3.4", series_uid="1.2.3.4.1")
    assert service.coerce(encode(sent), Transaction("C_STORE_RQ", "SCP", "ORTHANC", "PEER")).action == COERCED
    assert service.store.original_uids([keys.uid("1.2.3.4"), keys.uid("1.2.3.4.1"), keys.uid("1.2.3.4.5")]) == {
        keys.uid("1.2.3.4"): "1.2.3.4", keys.uid("1.2.3.4.1"): "1.2.3.4.1", keys.uid("1.2.3.4.5"): "1.2.3.4.5"}
    received = make_ct(sop_uid="1.9.9", study_uid="1.9", series_uid="1.9.1")
    assert service.coerce(encode(received), store("RESEARCH")).action == COERCED
    assert service.store.original_uids([keys.uid("1.9")]) == {}  # stored under its pseudonyms here


def test_c_find_rules_are_chosen_by_ae_titles_and_cannot_name_a_host(service, tmp_path):
    (tmp_path / "rules" / "find.yaml").write_text(textwrap.dedent("""
        - {name: asks, dimse: C_FIND_RQ, role: SCU, sending-aet: [PEER], uri: 'deidentify:'}
        - {name: sees, dimse: C_FIND_RSP, role: SCU, sending-aet: [PEER], conditions: ["QueryRetrieveLevel=STUDY"],
           uri: 'deidentify:'}
        """))
    service.reload()
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    rq, rsp = service.find_rules("PEER", "ORTHANC", query)
    assert (rq.name, rsp.name) == ("asks", "sees")
    query.QueryRetrieveLevel = "SERIES"
    assert [r and r.name for r in service.find_rules("PEER", "ORTHANC", query)] == ["asks", None]
    assert service.find_rules("OTHER", "ORTHANC", query) == (None, None)
    (tmp_path / "rules" / "find.yaml").write_text(
        "- {name: by-host, dimse: C_FIND_RSP, role: SCU, sending-host: ['127.0.0.1'], uri: 'deidentify:'}")
    with pytest.raises(RuleError, match="find.yaml: rule 'by-host': field 'sending-host' cannot be applied to C_FIND_RSP"):
        service.reload()
    # Where Orthanc tells the caller's host (its SDK 1.12.10 connection), the rule applies.
    service.find_caller_hosts = True
    service.reload()
    assert service.find_rules("PEER", "ORTHANC", query, host="127.0.0.1")[1].name == "by-host"
    assert service.find_rules("PEER", "ORTHANC", query, host="10.0.0.1") == (None, None)
    assert service.find_rules("PEER", "ORTHANC", query) == (None, None)  # no host told: no match


def test_only_the_projects_own_error_messages_reach_logs_and_reasons():
    from coercion.engine.deidentify import DeidentificationError
    from coercion.engine.dicomio import DicomError, read_instance
    from coercion.exchanges.find_outgoing import QueryRefused
    from coercion.service import safe_message

    assert safe_message(DeidentificationError("no implementation for action 'Q'")) == (
        "no implementation for action 'Q'")
    assert "PatientName" in safe_message(QueryRefused("rule 'r' de-identifies PatientName"))
    assert "Doe" not in safe_message(ValueError("Invalid value for VR PN: 'Doe^John'"))
    garbage = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x10\x00\x10\x00PN\xff\xffDoe^John"
    with pytest.raises(DicomError) as caught:
        read_instance(garbage)
    assert "Doe" not in safe_message(caught.value) and "Doe" not in str(caught.value)
