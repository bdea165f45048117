"""Rule checks and `coercion check-rules`: errors, warnings, exit statuses; `coercion --version`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coercion.checks import (
    CGET_ACKNOWLEDGEMENT,
    ERROR,
    OPEN_REST_API_ACKNOWLEDGEMENT,
    WARNING,
    check_rules,
    exit_status,
    startup_refusals,
)
from coercion.rules import Peers, load_rules
from coercion.engine.implementation import VERSION

CONFIG = {
    "DicomAet": "ORTHANC",
    "DicomAlwaysAllowStore": False,
    "DicomModalities": {
        "research-ct": {"AET": "RESEARCH_CT", "Host": "10.0.0.5", "Port": 104, "AllowGet": False},
        "viewer": ["VIEWER", "10.0.0.6", 104],  # may C-GET (AllowGet not false)
    },
}


def write(folder, text):
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(text)
    return folder


def test_a_clean_rule_set_has_no_finding(tmp_path):
    rules = write(tmp_path / "rules", "- {name: in, dimse: C_STORE_RQ, role: SCU, sending-aet: [RESEARCH_CT], "
                                      "uri: 'deidentify:'}\n"
                                      "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [RESEARCH_CT], "
                                      "uri: 'deidentify:'}\n")
    assert check_rules(rules, CONFIG) == []


def test_rules_that_cannot_work_with_this_configuration_are_warned_about(tmp_path):
    rules = write(tmp_path / "rules", "- {name: stranger, dimse: C_STORE_RQ, role: SCU, sending-aet: ['SITE_.*'], "
                                      "uri: 'deidentify:'}\n"
                                      "- {name: nowhere, dimse: C_STORE_RQ, role: SCP, receiving-aet: [GONE], "
                                      "uri: 'deidentify:'}\n")
    findings = check_rules(rules, CONFIG)
    assert [f.level for f in findings] == [WARNING] * 2
    text = "\n".join(map(str, findings))
    assert "rule 'stranger': can never match" in text
    assert "rule 'nowhere': names no modality" in text
    assert str(rules / "rules.yaml") in text
    assert exit_status(findings) == 1
    # With DicomAlwaysAllowStore, Orthanc lets any caller in: the first rule can match.
    assert len(check_rules(rules, {**CONFIG, "DicomAlwaysAllowStore": True})) == 1


VIEWERS = "- {name: viewers, dimse: C_STORE_RQ, role: SCP, receiving-aet: [VIEWER], uri: 'deidentify:'}\n"


def test_a_modality_that_may_c_get_around_an_outgoing_rule_is_an_error_and_a_refusal(tmp_path):
    rules = write(tmp_path / "rules", VIEWERS)
    (finding,) = check_rules(rules, CONFIG)
    assert finding.level == ERROR and exit_status([finding]) == 2
    assert f"{rules / 'rules.yaml'}: rule 'viewers': modality 'viewer' (AE title 'VIEWER') may C-GET" in finding.message
    assert '"AllowGet": false' in finding.message and CGET_ACKNOWLEDGEMENT in finding.message
    config = {**CONFIG, "Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: True}}  # that refusal is another test's
    (refusal,) = startup_refusals(load_rules(rules), config)
    assert refusal == finding.message
    # Only an explicit acknowledgement lets it start; the finding stays, as a warning.
    accepted = {**config, "Coercion": {**config["Coercion"], CGET_ACKNOWLEDGEMENT: True}}
    assert startup_refusals(load_rules(rules), accepted) == []
    (warning,) = check_rules(rules, accepted)
    assert warning.level == WARNING and f"accepted: Coercion.{CGET_ACKNOWLEDGEMENT} is true" in warning.message
    for not_quite in ("true", 1):
        assert startup_refusals(load_rules(rules), {**config, "Coercion": {**config["Coercion"],
                                                                           CGET_ACKNOWLEDGEMENT: not_quite}})
    # A modality that may not C-GET, and a rule for another modality, are no concern.
    assert check_rules(rules, {**CONFIG, "DicomModalities": {
        "viewer": {"AET": "VIEWER", "Host": "10.0.0.6", "Port": 104, "AllowGet": False},
        "other": ["OTHER", "10.0.0.7", 104]}}) == []


def test_ae_titles_are_compared_as_orthanc_compares_them(tmp_path):
    config = {**CONFIG, "Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: True}}
    lower = write(tmp_path / "lower", "- {name: viewers, dimse: C_STORE_RQ, role: SCP, receiving-aet: ['viewer '], "
                                      "uri: 'deidentify:'}\n")
    (refusal,) = startup_refusals(load_rules(lower), config)  # Orthanc ignores case and padding by default
    assert "modality 'viewer'" in refusal
    strict = {**config, "StrictAetComparison": True}
    assert startup_refusals(load_rules(lower, Peers(strict=True)), strict) == []
    by_name = write(tmp_path / "by-name", "- {name: viewers, dimse: C_STORE_RQ, role: SCP, "
                                          "receiving-modality: [viewer], uri: 'deidentify:'}\n")
    (refusal,) = startup_refusals(load_rules(by_name), config)
    assert "rule 'viewers': modality 'viewer'" in refusal


def test_dicom_always_allow_get_lets_any_caller_c_get_around_outgoing_rules(tmp_path):
    rules = write(tmp_path / "rules", "- {name: out, dimse: C_STORE_RQ, role: SCP, receiving-aet: [RESEARCH_CT], "
                                      "uri: 'deidentify:'}\n")
    config = {**CONFIG, "Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: True}}
    assert check_rules(rules, config) == [] and startup_refusals(load_rules(rules), config) == []
    always = {**config, "DicomAlwaysAllowGet": True}  # research-ct has "AllowGet": false: no matter
    (finding,) = check_rules(rules, always)
    assert finding.level == ERROR and "DicomAlwaysAllowGet is true" in finding.message
    assert "'out'" in finding.message and '"DicomAlwaysAllowGet": false' in finding.message
    assert startup_refusals(load_rules(rules), always) == [finding.message]
    assert startup_refusals(load_rules(rules), {**always, "Coercion": {OPEN_REST_API_ACKNOWLEDGEMENT: True,
                                                                        CGET_ACKNOWLEDGEMENT: True}}) == []
    # Without outgoing rules there is nothing to go around.
    incoming = write(tmp_path / "incoming", "- {name: in, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:'}\n")
    assert startup_refusals(load_rules(incoming), always) == []


def test_rules_that_do_not_load_are_errors(tmp_path):
    rules = write(tmp_path / "rules", "- {name: bad, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:NoSuchOption'}\n")
    (finding,) = check_rules(rules, CONFIG)
    assert finding.level == ERROR and "rule 'bad': field 'uri'" in finding.message
    assert exit_status([finding]) == 2


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "coercion.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("rules,status", [
    ("- {name: in, dimse: C_STORE_RQ, role: SCU, sending-aet: [RESEARCH_CT], uri: 'deidentify:'}\n", 0),
    ("- {name: in, dimse: C_STORE_RQ, role: SCU, sending-aet: [NOBODY], uri: 'deidentify:'}\n", 1),
    ("- {name: in, dimse: C_STORE_RQ, role: SCU, uri: 'deidentify:Nope'}\n", 2),
    (VIEWERS, 2),  # a modality may C-GET around an outgoing rule
])
def test_the_cli_prints_findings_with_an_exit_status(tmp_path, rules, status):
    write(tmp_path / "rules", rules)
    (tmp_path / "orthanc.json").write_text(json.dumps({**CONFIG, "Coercion": {"RulesDirectory": "rules"}}))
    result = run("check-rules", "--config", str(tmp_path / "orthanc.json"))
    assert result.returncode == status, result.stderr
    assert ("warning:" in result.stdout) == (status == 1) and ("error:" in result.stdout) == (status == 2)
    assert "error(s)" in result.stderr
    explicit = run("check-rules", str(tmp_path / "rules"), "--config", str(tmp_path / "orthanc.json"))
    assert explicit.returncode == status


def test_the_cli_checks_the_repositorys_own_rules_and_configuration():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = run("check-rules", cwd=repo)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # the example rules load


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"coercion {VERSION}"


def test_a_rule_naming_an_unknown_peer_or_server_is_warned_of(tmp_path):
    from coercion.checks import check_ruleset
    from coercion.rules import load_rules

    (tmp_path / "r.yaml").write_text(
        "- name: p\n  dimse: C_STORE_RQ\n  role: SCP\n  receiving-peer: [research]\n  uri: 'deidentify:'\n"
        "- name: w\n  dimse: C_STORE_RQ\n  role: SCP\n  receiving-dicomweb-server: [web]\n  uri: 'deidentify:'\n")
    ruleset = load_rules(str(tmp_path))
    messages = [f.message for f in check_ruleset(ruleset, {})]
    assert any("'receiving-peer'" in m and "OrthancPeers" in m for m in messages)
    assert any("'receiving-dicomweb-server'" in m and "DicomWeb.Servers" in m for m in messages)
    known = {"OrthancPeers": {"research": {"Url": "http://x"}}, "DicomWeb": {"Servers": {"web": ["http://y"]}}}
    assert not [m for m in (f.message for f in check_ruleset(ruleset, known)) if "names no entry" in m]
