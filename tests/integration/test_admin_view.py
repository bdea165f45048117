"""The administrator's view through a real Orthanc: one form for every audit record, reloads
audited with what changed, the rule checks at reload, the page's files and Orthanc Explorer's
link to it. (The page itself, in a browser: test_admin_page.py.)"""

from __future__ import annotations

import re
import uuid

import pytest

from factory import encode, make_ct
from orthanc_server import ADMIN, RULES, OrthancServer, needs_orthanc, storescu

pytestmark = needs_orthanc
PATIENT = "MRN-VIEW-4242"
KEY = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture
def server(tmp_path):
    orthanc = OrthancServer(tmp_path / "view").start()
    yield orthanc
    orthanc.stop()


def audit(server, **params) -> list[dict]:
    answer = server.get("/coercion/audit", headers=ADMIN, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_audit_record_has_one_form_and_the_logged_lines_are_the_records(server, tmp_path):
    import json

    path = tmp_path / "ct.dcm"
    path.write_bytes(encode(make_ct(patient_id=PATIENT, sop_uid=f"2.25.{uuid.uuid4().int}")))
    storescu(server, "RESEARCH", path)
    server.post("/coercion/rules/reload", headers=ADMIN)
    server.post("/coercion/rules/reload")  # refused: no credential
    server.post("/coercion/preview/rule/research", path.read_bytes(), headers=ADMIN)
    records = audit(server)
    assert {"coercion", "rules-reload", "preview"} <= {r["event"] for r in records}
    for record in records:
        assert list(record)[:2] == ["event", "time"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])
        assert all(KEY.match(key) for key in record), record
        assert None not in record.values()
        assert PATIENT not in json.dumps(record)
    logged = [json.loads(line.split("coercion-audit ", 1)[1]) for line in server.log().splitlines()
              if "coercion-audit " in line]
    assert list(reversed(records)) == logged[-len(records):]  # newest first, as logged
    assert len(audit(server, limit=2)) == 2
    assert server.get("/coercion/audit").status_code == 403  # it names AE titles and clients: administration


def test_a_reload_is_audited_with_who_and_what_changed_and_warns_of_rules_that_cannot_bite(tmp_path):
    server = OrthancServer(tmp_path / "strict", settings={"DicomAlwaysAllowStore": False}).start()
    try:
        _reload_audited(server)
    finally:
        server.stop()


def _reload_audited(server):
    rules = server.rules_dir / "rules.yaml"
    rules.write_text(RULES.replace("name: research", "name: research-renamed") + """
- name: from-nobody
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [NOBODY]
  uri: "deidentify:"
""")
    answer = server.post("/coercion/rules/reload", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert any("from-nobody" in w and "can never match" in w for w in answer.json()["warnings"])
    assert server.get("/coercion/rules").json()["warnings"] == answer.json()["warnings"]
    assert "from-nobody" in server.log().split("rules-reload")[-2]  # the warning was logged at the reload
    (reload,) = [r for r in audit(server) if r["event"] == "rules-reload"][:1]
    assert reload["outcome"] == "accepted" and reload["credential"] == "administration"
    assert reload["client"] == "127.0.0.1"
    assert reload["added"] == ["from-nobody", "research-renamed"] and reload["removed"] == ["research"]
    assert reload["warnings"] == len(answer.json()["warnings"])

    rules.write_text("- name: broken\n  dimse: C_STORE_RQ\n  role: SCU\n  uri: 'deidentify:NoSuchOption'\n")
    refused = server.post("/coercion/rules/reload", headers=ADMIN)
    assert refused.status_code == 400
    (record,) = [r for r in audit(server) if r["event"] == "rules-reload"][:1]
    assert record["outcome"] == "refused: invalid rules" and "rules.yaml" in record["error"] and "broken" in record["error"]
    assert server.get("/coercion/rules").json()["last_error"]


def test_the_page_is_served_and_orthanc_explorer_links_to_it(server):
    import base64
    import hashlib

    for path in ("/coercion/ui/", "/coercion/ui", "/coercion/ui/index.html"):
        page = server.get(path)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]
    script = re.search(r"<script>(.*)</script>", page.text, re.S).group(1)
    assert f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'" in policy
    assert "innerHTML" not in script  # nothing read is ever parsed as HTML
    assert server.get("/coercion/ui/secret.txt").status_code == 404
    assert server.post("/coercion/ui", b"").status_code == 405
    explorer = server.get("/plugins/explorer.js")  # where Orthanc serves the plugins' extensions
    assert "../coercion/ui/" in explorer.text and "coercion-link" in explorer.text
