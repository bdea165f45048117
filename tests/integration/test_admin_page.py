"""The administrator's page in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver (nothing downloaded), against a real Orthanc with the plugin:
the token asked for, the rules seen, a file previewed attribute by attribute, a failed
forward retried, and Orthanc Explorer's link to the page."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from factory import encode, make_ct
from orthanc_server import ADMIN_TOKEN, REST_AUTH, RULES, OrthancServer, StoreSCP, free_port, needs_orthanc, storescu

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [needs_orthanc, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed")]
PATIENT_NAME, PATIENT_ID = "Page^Tester", "MRN-PAGE-7"
PAGE_RULES = RULES + """
- name: nowhere
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [LOST]
  forward: {to: [nowhere], when: received, retries: 0}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    orthanc = OrthancServer(tmp_path_factory.mktemp("page"), rules=PAGE_RULES,
                            modalities={"NOWHERE": free_port(), "LOST": free_port()}).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser to download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                     "--no-first-run", "--disable-background-networking", "--disable-sync",
                     "--disable-component-update", "--disable-default-apps"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    # A browser that holds Orthanc's credential (as after a log-in to Orthanc Explorer): it
    # sends it with every request, to whichever page asked.
    basic = base64.b64encode(":".join(REST_AUTH).encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}})
    yield driver
    driver.quit()


def wait(browser, condition, what: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By

    try:
        # A table the page re-renders while it is read is read again at the next poll.
        return WebDriverWait(browser, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition())
    except TimeoutException:  # what the page said, for the reader of the failure
        raise AssertionError(f"timed out waiting for {what}; the page says: "
                             f"{browser.find_element(By.ID, 'message').text!r}") from None


def cells(browser, table_id: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[c.text for c in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def log_in(browser, server, token: str = ADMIN_TOKEN):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/coercion/ui/")
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def test_the_page_asks_for_the_token_and_shows_nothing_without_the_right_one(browser, server):
    from selenium.webdriver.common.by import By

    log_in(browser, server, token="wrong-wrong-wrong-wrong")
    wait(browser, lambda: "refused" in browser.find_element(By.ID, "message").text, "the refusal")
    assert not browser.find_element(By.ID, "page").is_displayed()


def test_the_page_shows_the_rules_previews_a_file_and_retries_a_forward(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # A forward that fails for good (nobody listens at NOWHERE, no retries).
    lost = tmp_path / "lost.dcm"
    lost.write_bytes(encode(make_ct(sop_uid=f"2.25.{uuid.uuid4().int}")))
    storescu(server, "LOST", lost)
    deadline = time.monotonic() + 30
    while not [f for f in server.get("/coercion/forwards").json() if f["state"] == "failed"]:
        assert time.monotonic() < deadline, "the forward did not fail"
        time.sleep(0.3)

    log_in(browser, server)
    wait(browser, lambda: browser.find_element(By.ID, "page").is_displayed(), "the page")
    rules = {row[0]: row for row in cells(browser, "rules-table")}
    assert {"research", "uploads", "nowhere"} <= rules.keys()
    assert "RetainPatientIDHashOption" in rules["research"][6]

    # The preview: choose a rule, give a file, read what each attribute became.
    upload = tmp_path / "preview.dcm"
    upload.write_bytes(encode(make_ct(patient_name=PATIENT_NAME, patient_id=PATIENT_ID,
                                      sop_uid=f"2.25.{uuid.uuid4().int}")))
    Select(browser.find_element(By.ID, "preview-rule")).select_by_visible_text("research")
    browser.find_element(By.ID, "preview-file").send_keys(str(upload))
    wait(browser, lambda: cells(browser, "preview-table") and len(cells(browser, "preview-table")[0]) == 6,
         "the preview")
    shown = {row[1]: row for row in cells(browser, "preview-table")}
    assert shown["PatientName"][3] == PATIENT_NAME and shown["PatientName"][4] != PATIENT_NAME
    assert shown["PatientID"][3] == PATIENT_ID and shown["PatientID"][2] == "replaced"
    assert "RetainPatientIDHashOption" in shown["PatientID"][5]
    assert shown["StudyInstanceUID"][2] == "uid-mapped"
    assert "kept" not in {row[2] for row in shown.values()}  # only what changed, by default
    screenshot = os.environ.get("COERCION_SCREENSHOT")  # README's picture: COERCION_SCREENSHOT=docs/admin-page.png
    if screenshot:
        browser.execute_script("document.getElementById('preview').scrollIntoView()")
        browser.save_screenshot(screenshot)
    browser.find_element(By.ID, "preview-changed").click()
    wait(browser, lambda: "kept" in {row[2] for row in cells(browser, "preview-table")}, "every attribute")

    # A retry of the failed forward, from its row.
    (failed,) = [f for f in server.get("/coercion/forwards").json() if f["state"] == "failed"][:1]
    browser.find_element(By.ID, "refresh").click()

    def click_retry():  # the table is drawn anew by the refresh: click the button of the last drawing
        from selenium.common.exceptions import (ElementClickInterceptedException, NoSuchElementException,
                                                StaleElementReferenceException)

        try:
            button = browser.find_element(By.CSS_SELECTOR, f"button.retry[data-forward='{failed['id']}']")
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)  # not under the nav
            button.click()
            return True
        except (NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException):
            return False

    wait(browser, click_retry, "the retry button")
    wait(browser, lambda: f"Forward {failed['id']} is" in browser.find_element(By.ID, "message").text, "the retry")
    assert server.get(f"/coercion/forwards/{failed['id']}").json()["attempts"] >= 1
    audit = server.get("/coercion/audit", headers={"X-Coercion-Token": ADMIN_TOKEN}).json()
    assert any(r["event"] == "forward-retry" and r["outcome"] == "accepted" for r in audit)
    wait(browser, lambda: any(r and r[1] == "forward-retry" for r in cells(browser, "audit-table")), "the audit")
    assert PATIENT_NAME not in server.log()  # the preview's values went to the page only


def test_orthanc_explorer_links_to_the_page(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/app/explorer.html")
    link = wait(browser, lambda: [a for a in browser.find_elements(By.CSS_SELECTOR, "a.coercion-link") if a.is_displayed()],
                "the link")[0]
    link.click()
    wait(browser, lambda: browser.current_url.rstrip("/").endswith("/coercion/ui"), "the page")
    assert browser.find_element(By.ID, "token")


def test_no_browser_was_downloaded():
    assert shutil.which("chromium") == str(CHROMIUM) or CHROMIUM.exists()
    assert not (Path.home() / ".cache" / "selenium").exists()


ATTACK = """<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{url}/modalities/target/store">
<input name='{{"Resources": ["{study}"], "Synchronous": true, "x": "' value='"}}'></form>
<script>
fetch("{url}/modalities/target/store", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{Resources: ["{study}"], Synchronous: true}})}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


def test_a_page_of_another_site_cannot_make_the_browser_send_a_study(browser, server, tmp_path):
    """The attack of issue 19, in a real browser: a page served from another origin posts a form
    and a no-cors fetch to Orthanc's send route; the browser adds Orthanc's credential."""
    target = StoreSCP(tmp_path / "target", aet="TARGET")
    try:
        assert server.put("/modalities/target", json.dumps({"AET": "TARGET", "Host": "127.0.0.1",
                                                             "Port": target.port})).ok
        study_id = server.post("/instances", encode(make_ct(study_uid=f"2.25.{uuid.uuid4().int}"))).json()["ParentStudy"]
        page = ATTACK.format(url=server.url, study=study_id).encode()

        class Attacker(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Attacker)
        threading.Thread(target=site.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://127.0.0.1:{site.server_address[1]}/")
            audit = []
            for _ in range(100):
                audit = [r for r in server.get("/coercion/audit", headers={"X-Coercion-Token": ADMIN_TOKEN}).json()
                         if r["event"] == "cross-site-request" and r.get("route") == "/modalities/target/store"]
                if len(audit) >= 2:
                    break
                time.sleep(0.1)
            assert len(audit) >= 2, "the fetch and the form both reached Orthanc and were refused"
            time.sleep(1)
            assert target.received() == []
        finally:
            site.shutdown()
    finally:
        target.stop()
        server.delete("/modalities/target")
