"""Who is asking, as plain code: AE titles compared as Orthanc compares them, modalities named
by their DicomModalities entry, the checks that warn of AE titles two modalities share, the
refusal of an open REST API, the cross-site rule, and the REST credential `coercion serve` adds.
(tests/integration/test_who_is_asking.py sends from real peers.)"""

from __future__ import annotations

import json
import textwrap
from argparse import Namespace

import pytest

from coercion.checks import OPEN_REST_API_ACKNOWLEDGEMENT, WARNING, check_rules, rest_api_authenticated, \
    startup_refusals
from coercion.exchanges.crosssite import cross_site_refusal
from coercion.rules import DEFAULT_PEERS, Peers, RuleError, RuleSet, Transaction, aet_key, load_rules
from coercion.serve import ServeError, effective_configuration


def rules(tmp_path, text: str, peers: Peers = DEFAULT_PEERS) -> RuleSet:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text))
    return load_rules(tmp_path, peers)


def store_from(aet, host="127.0.0.1"):
    return Transaction("C_STORE_RQ", "SCU", aet, "ORTHANC", host, sop_class_uid="1.2.840.10008.5.1.4.1.1.2")


RULE = """
- name: research
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [RESEARCH_CT, "MOD_[0-9]+"]
  uri: "deidentify:"
"""


@pytest.mark.parametrize("aet,strict,key", [
    ("research_ct", False, "RESEARCH_CT"), ("RESEARCH_CT  ", False, "RESEARCH_CT"), ("  ct01 ", False, "CT01"),
    ("research_ct", True, "research_ct"), ("RESEARCH_CT ", True, "RESEARCH_CT"),
    ("séance", False, "SéANCE"),  # Orthanc lower-cases ASCII only, byte by byte
])
def test_an_ae_title_is_keyed_as_orthanc_compares_it(aet, strict, key):
    assert aet_key(aet, strict) == key


@pytest.mark.parametrize("calling", ["RESEARCH_CT", "research_ct", "Research_Ct", "RESEARCH_CT   ", " RESEARCH_CT",
                                     "MOD_12", "mod_12", "Mod_12 "])
def test_a_rule_matches_every_caller_orthanc_admits_under_its_ae_titles(tmp_path, calling):
    assert rules(tmp_path, RULE).match(store_from(calling)).name == "research"


@pytest.mark.parametrize("calling", ["RESEARCH_CTX", "RESEARCH", "MOD_", "MOD_1A", None])
def test_other_callers_are_not_matched(tmp_path, calling):
    assert rules(tmp_path, RULE).match(store_from(calling)) is None


def test_with_strict_comparison_the_case_counts_and_the_padding_does_not(tmp_path):
    ruleset = rules(tmp_path, RULE, Peers(strict=True))
    assert ruleset.match(store_from("RESEARCH_CT ")).name == "research"
    assert ruleset.match(store_from("research_ct")) is None
    assert ruleset.match(store_from("mod_12")) is None


def test_a_rule_may_name_a_modality_and_follows_its_ae_title_as_orthanc_knows_it(tmp_path):
    live = {"ct-room": "CT_ROOM_1"}
    ruleset = rules(tmp_path, """
        - name: by-name
          dimse: C_STORE_RQ
          role: SCU
          sending-modality: [ct-room]
          uri: "deidentify:"
        - name: out
          dimse: C_STORE_RQ
          role: SCP
          receiving-modality: ct-room
          uri: "deidentify:"
    """, Peers(modalities=lambda: dict(live), ttl=0))
    assert ruleset.match(store_from("ct_room_1")).name == "by-name"
    assert ruleset.match(Transaction("C_STORE_RQ", "SCP", "ORTHANC", "CT_ROOM_1 ")).name == "out"
    assert ruleset.match(store_from("CT_ROOM_2")) is None
    live["ct-room"] = "CT_ROOM_2"  # PUT /modalities/ct-room while Orthanc runs
    assert ruleset.match(store_from("CT_ROOM_1")) is None
    assert ruleset.match(store_from("ct_room_2")).name == "by-name"
    live.clear()  # the modality removed: the rule matches nobody
    assert ruleset.match(store_from("CT_ROOM_2")) is None
    assert not ruleset.peer_independent("C_STORE_RQ", "SCU")
    assert ruleset.by_name("by-name").as_dict()["sending-modality"] == ["ct-room"]


def test_a_modality_is_named_by_a_non_empty_key(tmp_path):
    with pytest.raises(RuleError, match="rule 'x': field 'sending-modality'"):
        rules(tmp_path, "- {name: x, dimse: C_STORE_RQ, role: SCU, sending-modality: [''], uri: 'deidentify:'}")


def test_peers_read_the_live_list_at_most_every_ttl_seconds():
    calls = []
    peers = Peers(modalities=lambda: calls.append(1) or {"a": "A"}, ttl=60)
    assert peers.aet_of("a") == "A" and peers.aet_of("b") is None and peers.aet_of("a") == "A"
    assert len(calls) == 1


CONFIG = {"DicomAet": "ORTHANC", "DicomAlwaysAllowStore": False, "DicomModalities": {
    "research": {"AET": "RESEARCH_CT", "Host": "127.0.0.1", "Port": 104, "AllowGet": False},
    "research-lower": {"AET": "research_ct ", "Host": "127.0.0.2", "Port": 104, "AllowGet": False},
    "clinic": ["CLINIC", "127.0.0.1", 104],
}}


def test_checks_warn_of_ae_titles_two_modalities_share_up_to_case_and_of_unknown_modalities(tmp_path):
    (tmp_path / "rules.yaml").write_text(
        "- {name: in, dimse: C_STORE_RQ, role: SCU, sending-aet: [research_ct], uri: 'deidentify:'}\n"
        "- {name: gone, dimse: C_STORE_RQ, role: SCU, sending-modality: [nope], uri: 'deidentify:'}\n")
    findings = check_rules(tmp_path, {**CONFIG, "DicomModalities": {**CONFIG["DicomModalities"]}})
    text = "\n".join(f.message for f in findings)
    assert all(f.level == WARNING for f in findings)
    assert "'research' ('RESEARCH_CT'), 'research-lower' ('research_ct ') have the same AE title" in text
    assert "rule 'gone': field 'sending-modality': no modality 'nope'" in text
    # The rule's lower-case AE title names a modality, as Orthanc compares: no "can never match".
    assert "rule 'in': can never match" not in text
    # Two titles that differ only in case are distinct callers with StrictAetComparison, yet
    # still worth a warning (one letter away from the other's rules).
    strict = check_rules(tmp_path, {**CONFIG, "StrictAetComparison": True})
    assert any("have the same AE title" in f.message for f in strict)


USERS = {"RegisteredUsers": {"coercion": "a-password-of-the-site-0123"}}


@pytest.mark.parametrize("config,authenticated", [
    ({}, False), ({"AuthenticationEnabled": False, **USERS}, False), ({"AuthenticationEnabled": True, **USERS}, True),
    ({"RemoteAccessAllowed": True, **USERS}, True),
    ({"RemoteAccessAllowed": True, "AuthenticationEnabled": False, **USERS}, False),
    # Orthanc then makes the user orthanc:orthanc itself (its log: "Your setup is INSECURE").
    ({"AuthenticationEnabled": True}, False), ({"RemoteAccessAllowed": True}, False),
    ({"AuthenticationEnabled": True, "RegisteredUsers": {}}, False),
    ({"AuthenticationEnabled": True, "RegisteredUsers": {"orthanc": "orthanc"}}, False),
    ({"AuthenticationEnabled": True, "RegisteredUsers": {"orthanc": "orthanc", "coercion": "x" * 20}}, False),
])
def test_the_rest_api_is_authenticated_as_orthanc_decides_it(config, authenticated):
    assert rest_api_authenticated(config) is authenticated


def test_modalities_kept_in_orthancs_database_cannot_be_checked_for_c_get(tmp_path):
    ruleset = rules(tmp_path, "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [VIEWER], uri: 'deidentify:'}")
    config = {"AuthenticationEnabled": True, **USERS, "DicomModalitiesInDatabase": True}
    (reason,) = startup_refusals(ruleset, config)
    assert "DicomModalitiesInDatabase" in reason and "UnsafeCGetBypassesRules" in reason
    assert startup_refusals(ruleset, {**config, "Coercion": {"UnsafeCGetBypassesRules": True}}) == []


def test_an_open_rest_api_with_rules_is_refused_unless_acknowledged(tmp_path):
    ruleset = rules(tmp_path, RULE)
    (reason,) = startup_refusals(ruleset, {"AuthenticationEnabled": False})
    assert "REST API is open" in reason and OPEN_REST_API_ACKNOWLEDGEMENT in reason
    assert startup_refusals(ruleset, {"AuthenticationEnabled": True, **USERS}) == []
    assert startup_refusals(ruleset, {"AuthenticationEnabled": True}) != []  # orthanc:orthanc
    assert startup_refusals(ruleset, {"Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: True}}) == []
    assert startup_refusals(ruleset, {"Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: "yes"}}) != []
    assert startup_refusals(RuleSet(), {}) == []  # no rule: nothing the plugin promises


BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0"
HOST = {"host": "127.0.0.1:8042"}


@pytest.mark.parametrize("method,headers", [
    ("POST", {"origin": "http://evil.example"}),
    ("PUT", {"origin": "null"}),
    ("DELETE", {"referer": "https://evil.example/x"}),
    ("POST", {"origin": "http://127.0.0.1:8042.evil.example"}),
    ("POST", {"origin": "http://127.0.0.1:8043"}),
    ("POST", {"sec-fetch-site": "cross-site", "content-type": "application/json"}),
    ("POST", {"user-agent": BROWSER, "content-type": "text/plain;charset=UTF-8"}),
    ("POST", {"user-agent": BROWSER, "content-type": "application/x-www-form-urlencoded"}),
    ("POST", {"sec-fetch-mode": "navigate", "content-type": "multipart/form-data; boundary=b"}),
])
def test_state_changing_requests_from_other_sites_are_refused(method, headers):
    assert cross_site_refusal(method, {**HOST, **headers}) is not None


@pytest.mark.parametrize("method,headers", [
    ("GET", {"origin": "http://evil.example"}),  # reads: the browser's same-origin policy keeps the answer
    ("POST", {"origin": "http://127.0.0.1:8042", "user-agent": BROWSER, "content-type": "text/plain"}),
    ("POST", {"referer": "http://127.0.0.1:8042/app/explorer.html", "user-agent": BROWSER,
              "content-type": "application/x-www-form-urlencoded"}),
    ("POST", {"content-type": "application/x-www-form-urlencoded"}),  # Orthanc's own peers (libcurl)
    ("POST", {"content-type": "application/x-www-form-urlencoded", "user-agent": "curl/7.88.1"}),
    ("POST", {"content-type": "application/dicom", "user-agent": BROWSER}),  # needs a CORS preflight
    ("DELETE", {}),
])
def test_other_requests_go_on(method, headers):
    assert cross_site_refusal(method, {**HOST, **headers}) is None


def test_origins_the_site_allows_may_change_state_behind_a_proxy():
    behind = {"host": "127.0.0.1:8042", "origin": "https://pacs.example.org", "user-agent": BROWSER,
              "content-type": "application/x-www-form-urlencoded"}
    assert cross_site_refusal("POST", behind) is not None
    assert cross_site_refusal("POST", behind, ("https://pacs.example.org",)) is None
    assert cross_site_refusal("POST", {**behind, "origin": "https://evil.example"}, ("https://pacs.example.org",))
    viewer = {**behind, "origin": "https://viewer.example.org", "sec-fetch-site": "cross-site"}
    assert cross_site_refusal("POST", viewer, ("https://viewer.example.org",)) is None
    assert cross_site_refusal("POST", {**viewer, "origin": None}, ("https://viewer.example.org",)) is not None


def serve_config(tmp_path, coercion: dict, environ: dict | None = None) -> dict:
    (tmp_path / "orthanc.json").write_text(json.dumps({"AuthenticationEnabled": True, "Coercion": coercion}))
    return effective_configuration(Namespace(config=str(tmp_path / "orthanc.json")), environ or {})


def test_serve_adds_the_rest_credential_from_its_file(tmp_path):
    (tmp_path / "rest.credential").write_text("coercion:0123456789abcdefXYZ\n")
    config = serve_config(tmp_path, {"RestCredentialFile": "rest.credential"})
    assert config["RegisteredUsers"] == {"coercion": "0123456789abcdefXYZ"}
    (tmp_path / "other").write_text("alice:another-password-0123\n")
    config = serve_config(tmp_path, {"RestCredentialFile": "rest.credential"},
                          {"COERCION_REST_CREDENTIAL_FILE": str(tmp_path / "other")})
    assert config["RegisteredUsers"] == {"alice": "another-password-0123"}


@pytest.mark.parametrize("content,message", [(None, "does not exist"), ("nocolon", "one line 'user:password'"),
                                             ("u:short", "at least 16"), ("u:" + "p" * 20 + "\nv:w", "one line")])
def test_a_bad_rest_credential_file_stops_serve_naming_it_without_its_content(tmp_path, content, message):
    if content is not None:
        (tmp_path / "rest.credential").write_text(content)
    with pytest.raises(ServeError, match=message) as refused:
        serve_config(tmp_path, {"RestCredentialFile": "rest.credential"})
    assert "rest.credential" in str(refused.value) and "p" * 20 not in str(refused.value)


def test_rules_naming_only_peers_or_servers_are_not_bypassed_by_c_get(tmp_path):
    from coercion.checks import cget_bypasses
    from coercion.rules import load_rules

    (tmp_path / "r.yaml").write_text(
        "- name: p\n  dimse: C_STORE_RQ\n  role: SCP\n  receiving-peer: [research]\n  uri: 'deidentify:'\n")
    assert cget_bypasses(load_rules(str(tmp_path)), {"DicomAlwaysAllowGet": True}) == []
    (tmp_path / "r.yaml").write_text("- name: any\n  dimse: C_STORE_RQ\n  role: SCP\n  uri: 'deidentify:'\n")
    assert cget_bypasses(load_rules(str(tmp_path)), {"DicomAlwaysAllowGet": True})  # every way out, DICOM too
