"""Rule files: validation with precise errors, and dcm4chee-style matching."""

from __future__ import annotations

import re
import textwrap

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.rules import RuleError, Transaction, load_rules, parse_condition

CT = "1.2.840.10008.5.1.4.1.1.2"


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def rules_from(tmp_path, text, name="rules.yaml"):
    write(tmp_path, name, text)
    return load_rules(tmp_path)


def tx(**kwargs):
    defaults = dict(dimse="C_STORE_RQ", role="SCU", calling_aet="CT01", called_aet="ORTHANC", host="127.0.0.1",
                    sop_class_uid=CT)
    defaults.update(kwargs)
    return Transaction(**defaults)


def test_full_rule_loads(tmp_path):
    ruleset = rules_from(tmp_path, """
        - name: research
          dimse: C_STORE_RQ
          role: SCU
          sending-aet: [CT01, "MOD_.*"]
          receiving-aet: ORTHANC
          sending-host: ["127\\\\.0\\\\.0\\\\.\\\\d+"]
          sop-class: [1.2.840.10008.5.1.4.1.1.2]
          conditions: ["Modality=CT|MR", "StudyDescription!=.*PHANTOM.*"]
          priority: 5
          uri: "deidentify:RetainPatientIDHashOption"
          on-failure: discard
    """)
    (rule,) = ruleset.rules
    assert rule.name == "research" and rule.priority == 5 and rule.on_failure == "discard"
    assert rule.as_dict()["uri"] == "deidentify:RetainPatientIDHashOption"
    ds = Dataset()
    ds.Modality = "CT"
    ds.StudyDescription = "Chest"
    assert ruleset.match(tx(dataset=ds)) is rule
    assert ruleset.match(tx(calling_aet="MOD_7", dataset=ds)) is rule
    assert ruleset.match(tx(calling_aet="CT02", dataset=ds)) is None
    assert ruleset.match(tx(host="10.0.0.1", dataset=ds)) is None
    assert ruleset.match(tx(called_aet="OTHER", dataset=ds)) is None
    assert ruleset.match(tx(sop_class_uid="1.2.3", dataset=ds)) is None
    assert ruleset.match(tx(role="SCP", dataset=ds)) is None
    assert ruleset.match(tx(dimse="C_FIND_RQ", dataset=ds)) is None
    ds.StudyDescription = "QA PHANTOM"
    assert ruleset.match(tx(dataset=ds)) is None
    ds.StudyDescription = "Chest"
    ds.Modality = "US"
    assert ruleset.match(tx(dataset=ds)) is None


def test_priority_then_file_and_list_order(tmp_path):
    write(tmp_path, "b.yaml", """
        - {name: b1, dimse: C_STORE_RQ, role: SCU, uri: "deidentify:", priority: 1}
        - {name: b2, dimse: C_STORE_RQ, role: SCU, uri: "deidentify:", priority: 9}
    """)
    write(tmp_path, "a.yml", """
        - {name: a1, dimse: C_STORE_RQ, role: SCU, uri: "deidentify:", priority: 1}
        - {name: a2, dimse: C_STORE_RQ, role: SCU, uri: "deidentify:", priority: 9}
    """)
    write(tmp_path, "ignored.txt", "not rules")
    ruleset = load_rules(tmp_path)
    assert [r.name for r in ruleset.rules] == ["a1", "a2", "b1", "b2"]
    assert ruleset.match(tx()).name == "a2"


def test_rules_without_sending_aet_match_uploads_without_one(tmp_path):
    ruleset = rules_from(tmp_path, """
        - {name: by-aet, dimse: C_STORE_RQ, role: SCU, sending-aet: [CT01], uri: "deidentify:"}
        - {name: any-local, dimse: C_STORE_RQ, role: SCU, sending-host: ["127\\\\..*"], uri: "deidentify:"}
    """)
    assert ruleset.match(tx(calling_aet=None)).name == "any-local"
    assert ruleset.match(tx(calling_aet=None, host="192.0.2.1")) is None
    assert ruleset.match(tx(calling_aet="CT01")).name == "by-aet"


@pytest.mark.parametrize(
    "condition, expected",
    [
        ("Modality=CT", True),
        ("Modality=C.", True),
        ("Modality=MR|CT", True),
        ("Modality!=CT", False),
        ("(0008,0060)=CT", True),
        ("00080060=CT", True),
        ("ImageType=AXIAL", True),  # any value of a multi-valued attribute
        ("ImageType=ORIG", False),  # full match only
        ("PatientName=", True),  # present and empty
        ("AccessionNumber=.*", False),  # absent
        ("AccessionNumber!=.*", True),
        ("RequestAttributesSequence.ScheduledProcedureStepID=SPS-\\d+", True),
        ("RequestAttributesSequence.ScheduledProcedureStepID=OTHER", False),
    ],
)
def test_conditions(condition, expected):
    ds = Dataset()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = ""
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS-42"
    ds.RequestAttributesSequence = Sequence([Dataset(), item])
    assert parse_condition(condition).matches(ds) is expected


def test_conditions_parse_the_dataset_only_when_needed(tmp_path):
    ruleset = rules_from(tmp_path, """
        - {name: plain, dimse: C_STORE_RQ, role: SCU, sending-aet: [CT01], uri: "deidentify:"}
        - {name: cond, dimse: C_STORE_RQ, role: SCU, sending-aet: [XX], conditions: ["Modality=CT"], uri: "deidentify:"}
    """)
    calls = []
    ruleset.match(tx(dataset=lambda: calls.append(1) or Dataset()))
    assert calls == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("- {name: r, dimse: C_MOVE_RQ, role: SCU, uri: 'deidentify:'}", "rule 'r': field 'dimse' must be one of"),
        ("- {name: r, dimse: C_STORE_RQ, role: USER, uri: 'deidentify:'}", "rule 'r': field 'role'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:Nope'}", "rule 'r': field 'uri': unknown option 'Nope'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU}", "rule 'r': field 'uri' is required"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', priority: high}", "field 'priority' must be an integer"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', on-failure: ignore}", "field 'on-failure'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', sending-aet: ['(']}", "field 'sending-aet': '(' is not a valid regular"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', conditions: ['Nonsense=1']}", "unknown attribute 'Nonsense'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', conditions: ['Modality']}", "not of the form"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:', sendingaet: [X]}", "unknown field(s) 'sendingaet'"),
        ("- {dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}", "rule #1: field 'name' is required"),
        ("- [1, 2]", "rule #1: a rule must be a mapping"),
        ("name: r", "must hold a list of rules"),
        ("- {name: r\n  bad", "not valid YAML at line"),
        ("- {name: r, dimse: C_FIND_RQ, role: SCU, forward: {to: [X]}}", "field 'forward': only rules for C_STORE_RQ"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCP, forward: {to: [X]}}", "field 'forward': only rules for C_STORE_RQ"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, forward: {to: []}}", "field 'forward.to' must name at least one"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, forward: {to: [X], when: later}}", "field 'forward.when' must be"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, forward: {to: [X], retries: -1}}", "field 'forward.retries'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, forward: {to: [X], at: 3}}", "field 'forward': unknown field(s) 'at'"),
        ("- {name: r, dimse: C_STORE_RQ, role: SCU, forward: [X]}", "field 'forward' must be a mapping"),
    ],
)
def test_errors_name_the_file_the_rule_and_the_field(tmp_path, text, message):
    write(tmp_path, "site.yaml", text)
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path)
    assert message in str(info.value)
    assert "site.yaml" in str(info.value)


def test_duplicate_names_are_refused(tmp_path):
    write(tmp_path, "a.yaml", "- {name: r, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}")
    write(tmp_path, "b.yaml", "- {name: r, dimse: C_FIND_RQ, role: SCU, uri: 'deidentify:'}")
    with pytest.raises(RuleError, match="b.yaml: rule 'r': field 'name': already used in .*a.yaml"):
        load_rules(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(RuleError, match="does not exist"):
        load_rules(tmp_path / "nope")


def test_empty_file_and_rules_key(tmp_path):
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "wrapped.yaml", "rules:\n  - {name: w, dimse: C_FIND_RSP, role: SCP, uri: 'deidentify:'}\n")
    assert [r.name for r in load_rules(tmp_path).rules] == ["w"]


def test_the_example_rules_of_the_repository_load():
    from pathlib import Path

    ruleset = load_rules(Path(__file__).parents[1] / "rules")
    assert ruleset.rules


@pytest.mark.parametrize("rule, independent", [
    ("{name: a, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}", True),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, conditions: ['Modality=CT'], uri: 'deidentify:'}", True),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, receiving-aet: [ORTHANC], uri: 'deidentify:'}", True),  # our own
    ("{name: a, dimse: C_STORE_RQ, role: SCU, sending-aet: [CT01], uri: 'deidentify:'}", False),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, sending-host: ['10\\\\..*'], uri: 'deidentify:'}", False),
    ("{name: a, dimse: C_STORE_RQ, role: SCP, receiving-aet: [CT01], uri: 'deidentify:'}", True),  # other role
])
def test_peer_independent_rules_let_the_data_alone_decide(tmp_path, rule, independent):
    assert rules_from(tmp_path, f"- {rule}\n").peer_independent("C_STORE_RQ", "SCU") is independent


def test_routes_and_coercion_rules(tmp_path):
    ruleset = rules_from(tmp_path, """
        - {name: route, dimse: C_STORE_RQ, role: SCU, forward: {to: [RESEARCH], conditions: ["Modality=CT"]}}
        - {name: both, dimse: C_STORE_RQ, role: SCU, sending-aet: [CT01], uri: "deidentify:",
           forward: {to: [a, b], when: received, retries: 0, retry-interval: 5}}
    """)
    assert [r.name for r in ruleset.rules] == ["both"]  # only rules with a uri coerce
    assert [r.name for r in ruleset.routes] == ["route", "both"]
    route = ruleset.routes[0].forward
    assert (route.to, route.when, route.retries, route.retry_interval) == (("RESEARCH",), "stable-study", 5, 30)
    assert ruleset.routes[1].as_dict()["forward"] == {"to": ["a", "b"], "when": "received", "conditions": [],
                                                       "retries": 0, "retry-interval": 5}


@pytest.mark.parametrize("rule, reads", [
    ("{name: a, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}", False),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:RetainSafePrivateOption'}", True),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, conditions: ['(0009,1001)=X'], uri: 'deidentify:'}", True),
    ("{name: a, dimse: C_STORE_RQ, role: SCU, conditions: ['Modality=CT'], uri: 'deidentify:'}", False),
])
def test_whether_private_attributes_must_be_read(tmp_path, rule, reads):
    assert rules_from(tmp_path, f"- {rule}\n").reads_private is reads


def test_a_c_find_rule_with_sop_classes_tells_query_retrieve_from_worklist(tmp_path):
    from coercion.rules import MODALITY_WORKLIST_FIND, QUERY_RETRIEVE_FIND, STUDY_ROOT_FIND
    (tmp_path / "r.yaml").write_text(
        "- {name: qr, dimse: C_FIND_RQ, role: SCU, sop-class: [1.2.840.10008.5.1.4.1.2.1.1], uri: 'deidentify:'}\n"
        "- {name: mwl, dimse: C_FIND_RQ, role: SCU, sop-class: [1.2.840.10008.5.1.4.31], uri: 'deidentify:',"
        " scheduled-station-aet: calling-aet}\n"
        "- {name: any, dimse: C_FIND_RSP, role: SCU, uri: 'deidentify:'}\n")
    rules = load_rules(tmp_path)
    qr = Transaction("C_FIND_RQ", "SCU", "PEER", "ORTHANC", sop_class_uid=STUDY_ROOT_FIND)
    mwl = Transaction("C_FIND_RQ", "SCU", "PEER", "ORTHANC", sop_class_uid=MODALITY_WORKLIST_FIND)
    assert rules.match(qr).name == "qr"  # Orthanc does not say which Q/R model: one stands for all
    assert rules.by_name("qr").sop_classes == QUERY_RETRIEVE_FIND
    assert rules.match(mwl).name == "mwl" and rules.by_name("mwl").calling_aet_as_station
    for dimse_sop in (STUDY_ROOT_FIND, MODALITY_WORKLIST_FIND):  # without sop-class: every C-FIND
        assert rules.match(Transaction("C_FIND_RSP", "SCU", "PEER", "ORTHANC", sop_class_uid=dimse_sop)).name == "any"


@pytest.mark.parametrize("rule", [
    "{name: x, dimse: C_FIND_RQ, role: SCU, uri: 'deidentify:', scheduled-station-aet: yes}",
    "{name: x, dimse: C_FIND_RSP, role: SCU, uri: 'deidentify:', scheduled-station-aet: calling-aet}",
    "{name: x, dimse: C_FIND_RQ, role: SCP, uri: 'deidentify:', scheduled-station-aet: calling-aet}",
])
def test_scheduled_station_aet_is_for_worklist_queries_only(tmp_path, rule):
    (tmp_path / "r.yaml").write_text(f"- {rule}\n")
    with pytest.raises(RuleError, match="field 'scheduled-station-aet'"):
        load_rules(tmp_path)


PEER_RULES = """
- name: to-peers
  dimse: C_STORE_RQ
  role: SCP
  receiving-peer: [research, "lab-.*"]
  uri: "deidentify:"
- name: to-web
  dimse: C_STORE_RQ
  role: SCP
  receiving-dicomweb-server: [research-web]
  uri: "deidentify:"
- name: to-modality
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "deidentify:"
"""


def test_each_way_out_is_named_by_its_own_field(tmp_path):
    from coercion.rules import DICOMWEB, PEER

    ruleset = rules_from(tmp_path, PEER_RULES)

    def winner(**transaction):
        rules = ruleset.for_peers(Transaction("C_STORE_RQ", "SCP", "ORTHANC", **transaction))
        return [r.name for r in rules]

    assert winner(exit=PEER, target="research") == ["to-peers"]
    assert winner(exit=PEER, target="lab-2") == ["to-peers"]
    assert winner(exit=PEER, target="clinic") == []
    assert winner(exit=DICOMWEB, target="research-web") == ["to-web"]
    assert winner(exit=DICOMWEB, target="research") == []
    assert winner(called_aet="RESEARCH") == ["to-modality"]  # DICOM: a rule naming only peers never matches
    assert winner(called_aet="research") == ["to-modality"]  # AE titles compared as Orthanc compares
    assert winner(called_aet="OTHER") == []


def test_a_rule_naming_no_receiver_applies_to_every_way_out(tmp_path):
    from coercion.rules import DICOMWEB, PEER

    ruleset = rules_from(tmp_path, """
- name: everywhere
  dimse: C_STORE_RQ
  role: SCP
  uri: "deidentify:"
""")
    for transaction in (dict(called_aet="ANY"), dict(exit=PEER, target="p"), dict(exit=DICOMWEB, target="w")):
        assert ruleset.may_match(Transaction("C_STORE_RQ", "SCP", "ORTHANC", **transaction)), transaction


@pytest.mark.parametrize("rule, message", [
    ("dimse: C_STORE_RQ\n  role: SCU\n  receiving-peer: [x]", "only rules for C_STORE_RQ with role SCP"),
    ("dimse: C_FIND_RQ\n  role: SCP\n  receiving-dicomweb-server: [x]", "only rules for C_STORE_RQ with role SCP"),
    ("dimse: C_STORE_RQ\n  role: SCP\n  receiving-peer: ['']", "not an empty string"),
    ("dimse: C_STORE_RQ\n  role: SCP\n  receiving-peer: ['(']", "not a valid regular expression"),
])
def test_peer_and_server_fields_are_checked(tmp_path, rule, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        rules_from(tmp_path, f"- name: bad\n  {rule}\n  uri: 'deidentify:'\n")
