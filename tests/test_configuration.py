"""One table of configuration keys (configuration.py): the plugin's settings, coercion serve's
options and the administrator's guide read the same facts and cannot disagree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from coercion import configuration
from coercion.configuration import MppsSettings
from coercion.service import Settings

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "administrators-guide.md"


def guide_table(header: str) -> list[list[str]]:
    text = GUIDE.read_text()
    start = text.index(header)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_guide_lists_every_key_and_no_other():
    documented = {re.sub(r"`", "", row[0]) for row in guide_table("| key | meaning | default |")}
    assert documented == {key.name for key in configuration.KEYS}


def test_the_guide_and_serve_list_every_option_with_its_variable():
    table = guide_table("| option | environment variable |")
    rows = {row[0].strip("`").split()[0]: row[1] for row in table if row[0].strip("`").startswith("--")}
    options = [(option, variable) for _, variable, option, _ in configuration.ORTHANC_OVERRIDES]
    options += [(key.option, key.variable) for key in configuration.KEYS if key.option]
    help_text = " ".join(subprocess.run([sys.executable, "-m", "coercion.cli", "serve", "--help"],
                                        capture_output=True, text=True, check=True).stdout.split())
    for option, variable in options:
        assert variable in rows.get(option, ""), option
        assert option in help_text and variable in help_text, option
    assert set(rows) - {"--config", "--"} == {option for option, _ in options}
    variables = " ".join(row[1] for row in table)
    for key in configuration.KEYS:
        assert key.variable is None or key.variable in variables, key.variable


def test_a_variable_wins_over_the_section_which_wins_over_the_default(tmp_path):
    config = {"Coercion": {"RulesDirectory": "rules", "LinkageDatabase": "/data/links.sqlite",
                           "SendBatchSize": 8}}
    values = configuration.read(config, {"COERCION_RULES": "/etc/rules"})
    assert values["RulesDirectory"] == "/etc/rules" and values["SendBatchSize"] == 8
    assert values["ForwardsDatabase"] == "/data/forwards.sqlite"  # beside the linkage store
    assert values["DateShiftWindow"] == [-1095, 1095]
    url = configuration.read({"Coercion": {"LinkageDatabase": "postgresql://u@db/links"}}, {})
    assert url["MppsDatabase"] == "postgresql://u@db/links"  # in the same database


def test_the_service_settings_are_the_tables_values(tmp_path):
    secret = tmp_path / "site.key"
    secret.write_bytes(b"s" * 48)
    token = tmp_path / "admin.token"
    token.write_text("admin-token-0123456789abcdef\n")
    config = {"Coercion": {"RulesDirectory": str(tmp_path), "SecretFile": str(secret),
                           "LinkageDatabase": str(tmp_path / "links.sqlite"), "SendBatchSize": 4}}
    settings = Settings.from_configuration(config, {"COERCION_ADMIN_TOKEN_FILE": str(token)})
    assert settings.admin_token == "admin-token-0123456789abcdef" and settings.send_batch_size == 4
    assert settings.activity_database == str(tmp_path / "activity.sqlite")


# -- Coercion.Mpps: read here like every other key of the section ------------------------------



def test_the_mpps_section_is_read_with_orthancs_own_settings_around_it():
    config = {"DicomAet": "SITE", "DicomScpTimeout": 12, "StrictAetComparison": True,
              "Coercion": {"Mpps": {"Port": 11114, "Host": "0.0.0.0", "MaxAssociations": 8}}}
    settings = MppsSettings.from_configuration(config)
    assert (settings.port, settings.aet, settings.host, settings.scp_timeout, settings.strict_aet,
            settings.max_associations) == (11114, "SITE", "0.0.0.0", 12, True, 8)
    assert MppsSettings.from_configuration({"Coercion": {}}) is None  # no MPPS SCP
    assert MppsSettings.from_configuration({"Coercion": {"Mpps": {"Host": "127.0.0.1"}}}) is None


@pytest.mark.parametrize("mpps, message", [
    ({"Port": 70000}, "Coercion.Mpps.Port must be a port number"),
    ({"Port": 4242}, "Coercion.Mpps.Port 4242 is Orthanc's DicomPort"),
    ({"Port": 11114, "Aet": "A" * 17}, "Coercion.Mpps.Aet must be an AE title"),
    ({"Port": 11114, "Colour": 1}, "Coercion.Mpps: unknown setting(s) Colour"),
    ({"Port": 11114, "MaxAssociations": 2, "MaxAssociationsPerHost": 3}, "is more than"),
    ({"Port": 11114, "RequestTimeout": 0}, "Coercion.Mpps.RequestTimeout must be"),
])
def test_a_bad_mpps_setting_is_named(mpps, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MppsSettings.from_configuration({"Coercion": {"Mpps": mpps}})


def test_views_are_read_and_checked():
    from coercion.configuration import views_of

    views = views_of({"Coercion": {"Views": {"research": {"Rule": "r", "TokenFile": "t", "Users": ["u"]}}}})
    assert (views["research"].rule, views["research"].token_file, views["research"].users) == ("r", "t", ("u",))
    assert views_of({}) == {}
    for bad, message in (
            ({"servers": {"Rule": "r", "Users": ["u"]}}, "a view's name"),
            ({"a b": {"Rule": "r", "Users": ["u"]}}, "a view's name"),
            ({"v": {"Users": ["u"]}}, "Rule must name"),
            ({"v": {"Rule": "r"}}, "give TokenFile, Users or both"),
            ({"v": {"Rule": "r", "Users": "u"}}, "Users must be a list"),
            ({"v": {"Rule": "r", "Users": ["u"], "Extra": 1}}, "unknown setting"),
            ({"v": {"Rule": "r", "Users": ["u"]}, "w": {"Rule": "r", "Users": ["u"]}}, "one view only"),
            ([], "must be an object")):
        with pytest.raises(ValueError, match=message):
            views_of({"Coercion": {"Views": bad}})
