"""docker/ cannot run here (no Docker engine): check that its files agree with the project."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from coercion.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


def test_every_file_the_dockerfile_copies_exists():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG ORTHANC_IMAGE=orthancteam/orthanc", dockerfile, re.M)
    sources = [s for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for s in line.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
    assert "TCP_NODELAY=1" in dockerfile
    assert "COERCION_TABLES" not in dockerfile and "rules/standard" not in dockerfile  # the package's own
    # The install steps are the script's (run in CI in a Debian testing chroot), not the file's.
    assert re.search(r"^RUN sh /opt/coercion/install\.sh /opt/coercion/src\b", dockerfile, re.M)
    assert "apt-get install" not in dockerfile


def test_the_install_script_installs_what_the_set_up_does():
    script = (DOCKER / "install.sh").read_text().replace("\\\n", " ")
    common = (REPO / "plugin" / "scripts" / "common.sh").read_text()
    packages = re.search(r'^PIXEL_DEBIAN_PACKAGES="([^"]+)"', common, re.M).group(1).split()
    installed = set(re.search(r"apt-get install ([^\n]+)", script).group(1).split())
    assert set(packages) | {"dcmtk"} <= installed  # storescu sends coerced instances
    assert "PIP_NO_BINARY=tesserocr" in script and "PIP_NO_BINARY=tesserocr" in common
    assert "python3.1" not in script  # the plugin's Python is read from its library


def test_the_orthanc_configuration_of_the_image_points_where_the_image_puts_things():
    config = json.loads((DOCKER / "coercion.json").read_text())
    dockerfile = (DOCKER / "Dockerfile").read_text()
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["orthanc"]
    assert config["PythonScript"] == "/opt/coercion/src/plugin/orthanc_entry.py"
    assert "COPY plugin /opt/coercion/src/plugin" in dockerfile
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert config["Coercion"]["RulesDirectory"] in mounts
    assert str(Path(config["Coercion"]["LinkageDatabase"]).parent) in mounts
    secrets = {f"/run/secrets/{name}" for name in service["secrets"]}
    assert {config["Coercion"][key] for key in ("SecretFile", "LinkageTokenFile", "AdminTokenFile")} <= secrets
    # Published on the host's loopback only.
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    published = {port.split(":")[2].split()[0] for port in service["ports"]}
    assert str(config["Coercion"]["Mpps"]["Port"]) in published
    # The image loads its own worklists plugin when the section is there: one plugin may answer.
    assert "Worklists" not in config
    modalities = json.loads(service["environment"]["ORTHANC__DICOM_MODALITIES"])
    assert all(m["AllowGet"] is False for m in modalities.values())  # C-GET bypasses the rules


def test_the_rules_the_image_mounts_load():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    source = next(v.split(":")[0] for v in compose["services"]["orthanc"]["volumes"] if "/etc/coercion/rules" in v)
    assert load_rules((DOCKER / source).resolve()).rules


def test_the_cluster_compose_file_agrees_with_its_configuration():
    compose = yaml.safe_load((DOCKER / "compose.cluster.yaml").read_text())
    config = json.loads((DOCKER / "cluster.json").read_text())
    init = (DOCKER / "postgres-init.sh").read_text()
    nodes = [compose["services"][name] for name in ("orthanc-a", "orthanc-b")]
    url = config["Coercion"]["LinkageDatabase"]
    assert "Password" not in config["PostgreSQL"] and ":" not in url.removeprefix("postgresql://").split("@")[0]
    for node in nodes:
        mounts = dict(volume.split(":")[:2][::-1] for volume in node["volumes"])
        assert mounts["/etc/orthanc/coercion.json"] == "./cluster.json"  # in place of the single node's
        assert mounts[config["StorageDirectory"]] == "shared-storage"  # one storage for both
        secrets = {f"/run/secrets/{s if isinstance(s, str) else s['target']}" for s in node["secrets"]}
        assert {config["Coercion"][key] for key in ("SecretFile", "DatabasePasswordFile", "LinkageTokenFile",
                                                     "AdminTokenFile")} <= secrets
        assert "/run/secrets/ORTHANC__POSTGRESQL__PASSWORD" in secrets  # Orthanc's index, from the same secret
        assert all(port.startswith("127.0.0.1:") for port in node["ports"])
    assert len({port for node in nodes for port in node["ports"]}) == 4
    # The users and databases the URLs name are the ones PostgreSQL's first start creates.
    assert f"CREATE USER {config['PostgreSQL']['Username']} " in init
    assert f"CREATE DATABASE {config['PostgreSQL']['Database']} " in init
    user, database = url.removeprefix("postgresql://").split("@")[0], url.rsplit("/", 1)[1]
    assert f"CREATE USER {user} " in init and f"CREATE DATABASE {database} " in init
    assert url.split("@")[1].startswith("postgres:")  # the compose service


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_the_compose_files_ask_for_orthancs_credential_from_a_secret(name):
    """The plugin refuses to start on an open REST API: each node has Orthanc's user, from a
    secret (never in the file)."""
    compose = yaml.safe_load((DOCKER / name).read_text())
    nodes = [s for n, s in compose["services"].items() if n.startswith("orthanc")]
    assert nodes
    for node in nodes:
        assert node["environment"]["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
        assert "ORTHANC__REGISTERED_USERS" not in node["environment"]
        targets = {s["target"] for s in node["secrets"] if isinstance(s, dict)}
        assert "ORTHANC__REGISTERED_USERS" in targets
