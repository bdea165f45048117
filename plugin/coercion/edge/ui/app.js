// The administrator's page: plain JavaScript, no build step. Every request carries the
// administration token (kept for this browser tab only, in sessionStorage). Values from the
// archive are never shown here; the preview shows the values of the file the administrator
// gives, and is answered to this page only. Everything is written as text (textContent):
// nothing read from the server or from a file is ever parsed as HTML.
"use strict";

// The page is /coercion/ui (behind a proxy maybe under a prefix): the API is /coercion/ beside it.
const API = new URL(window.location.pathname.replace(/\/coercion\/ui(\/.*)?$/, "/coercion/"), window.location.href);
const TOKEN_KEY = "coercion-admin-token";
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function say(text, isError) {
  const message = $("message");
  message.textContent = text || "";
  message.className = isError ? "error" : "";
}

async function call(path, options = {}) {
  // X-Coercion-Token, not Authorization: that header carries Orthanc's own credential (Basic).
  const headers = Object.assign({ "X-Coercion-Token": token() }, options.headers || {});
  const response = await fetch(new URL(path, API), Object.assign({}, options, { headers }));
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error((body && body.error) || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}

function text(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(text).join(", ");
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => k + ": " + text(v)).join("; ");
  return String(value);
}

// A table of records: columns [key, heading] (default: every key of the first record);
// ``decorate(tr, record)`` may set classes, and adds one cell under ``extra`` when given.
function fill(tableId, records, columns, decorate, extra) {
  const table = $(tableId);
  table.replaceChildren();
  if (!records || records.length === 0) {
    const row = table.insertRow();
    const cell = row.insertCell();
    cell.className = "empty";
    cell.textContent = "none";
    return;
  }
  columns = columns || Object.keys(records[0]).map((key) => [key, key]);
  const head = table.createTHead().insertRow();
  for (const [, heading] of columns) {
    const th = document.createElement("th");
    th.textContent = heading;
    head.appendChild(th);
  }
  if (extra !== undefined) {
    const th = document.createElement("th");
    th.textContent = extra;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const record of records) {
    const row = body.insertRow();
    for (const [key] of columns) {
      const cell = row.insertCell();
      cell.textContent = text(record[key]);
      cell.dataset.key = key;
    }
    if (decorate) decorate(row, record);
  }
}

async function section(name, work) {
  try {
    await work();
  } catch (error) {
    if (error.status === 403) throw error;
    const table = document.querySelector("#" + name + " table");
    if (table) {
      table.replaceChildren();
      const cell = table.insertRow().insertCell();
      cell.className = "empty";
      cell.textContent = error.message;
    }
  }
}

async function showRules() {
  const report = await call("rules");
  $("rules-directory").textContent = report.directory;
  $("rules-loaded").textContent = report.loaded_at;
  $("rules-error").hidden = !report.last_error;
  $("rules-error").textContent = report.last_error ? "Last load refused: " + report.last_error : "";
  const warnings = $("rules-warnings");
  warnings.replaceChildren(...(report.warnings || []).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  fill("rules-table", report.rules, [["name", "Rule"], ["source", "File"], ["dimse", "DIMSE"], ["role", "Role"],
    ["sending-aet", "Sending AET"], ["receiving-aet", "Receiving AET"], ["uri", "URI"], ["priority", "Priority"],
    ["forward", "Forward"]]);
  const select = $("preview-rule");
  const chosen = select.value;
  select.replaceChildren(...report.rules.filter((r) => r.uri).map((r) => new Option(r.name, r.name)));
  if (chosen) select.value = chosen;
}

async function showActivity() {
  let activity;
  try {
    activity = await call("activity");
  } catch (error) {
    if (error.status !== 404) throw error;
    const stats = await call("stats");  // a plugin without the activity store: per rule only
    activity = { rules: Object.entries(stats).map(([rule, s]) => Object.assign({ rule }, s)), calling_aets: [] };
  }
  fill("activity-rules", activity.rules);
  fill("activity-aets", activity.calling_aets);
}

async function showForwards() {
  const rows = await call("forwards");
  fill("forwards-table", rows, [["id", "#"], ["route", "Route"], ["destination", "To"], ["level", "Level"],
    ["state", "State"], ["attempts", "Attempts"], ["last_error", "Reason"], ["next_attempt", "Next attempt"],
    ["updated", "Updated"], ["owner", "Node"]], (row, record) => {
    const cell = row.insertCell();
    if (record.state !== "sending") {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Retry";
      button.className = "retry";
      button.dataset.forward = record.id;
      button.addEventListener("click", () => retry(record.id));
      cell.appendChild(button);
    }
  }, "");
  const jobs = await call("sends");
  fill("sends-table", jobs, [["ID", "Job"], ["Modality", "To"], ["State", "State"], ["InstancesCount", "Instances"],
    ["SentInstancesCount", "Sent"], ["FailedInstancesCount", "Failed"], ["Rules", "Rules"], ["CreationTime", "Created"]]);
}

async function retry(id) {
  try {
    const row = await call("forwards/" + id + "/retry", { method: "POST" });
    say("Forward " + id + " is " + row.state + " again.");
  } catch (error) {
    say("Forward " + id + ": " + error.message, true);
  }
  await section("forwards", showForwards);
  await section("audit", showAudit);
}

async function showWorklists() {
  await section("worklists", async () => fill("worklists-table", await call("worklists")));
  try {
    fill("mpps-table", await call("mpps"));
  } catch (error) {
    if (error.status === 403) throw error;
    fill("mpps-table", [{ MPPS: error.message }]);
  }
}

async function showAudit() {
  const records = await call("audit");
  fill("audit-table", records, [["time", "Time"], ["event", "Event"], ["outcome", "Outcome"], ["rule", "Rule"],
    ["calling_aet", "Calling AET"], ["client", "Client"], ["route", "Route"]], (row, record) => {
    const rest = Object.fromEntries(Object.entries(record).filter(([k]) =>
      !["time", "event", "outcome", "rule", "calling_aet", "client", "route"].includes(k)));
    row.insertCell().textContent = text(rest);
  }, "Details");
}

async function refresh() {
  say("");
  try {
    await showRules();
    await section("activity", showActivity);
    await section("forwards", showForwards);
    await showWorklists();
    await section("audit", showAudit);
    $("page").hidden = false;
    $("logout").hidden = false;
  } catch (error) {
    $("page").hidden = true;
    say(error.status === 403 ? "The administration token was refused: " + error.message : error.message, true);
  }
}

async function reload() {
  try {
    await call("rules/reload", { method: "POST" });
    say("The rules were reloaded.");
  } catch (error) {
    say(error.message, true);
  }
  await refresh();
}

let lastPreview = null;

async function preview(file) {
  const rule = $("preview-rule").value;
  if (!rule || !file) return;
  say("Previewing " + file.name + " with rule " + rule + "...");
  try {
    lastPreview = await call("preview/rule/" + encodeURIComponent(rule), {
      method: "POST", body: await file.arrayBuffer(),
      headers: { Accept: "application/json", "Content-Type": "application/dicom" },
    });
    say("");
    showPreview();
  } catch (error) {
    lastPreview = null;
    $("preview-table").replaceChildren();
    $("preview-summary").textContent = "";
    say("Preview of " + file.name + ": " + error.message, true);
  }
}

function showPreview() {
  if (!lastPreview) return;
  const entries = lastPreview.attributes || [];
  const counts = {};
  for (const entry of entries) counts[entry.result] = (counts[entry.result] || 0) + 1;
  $("preview-summary").textContent = "Rule " + (lastPreview.rule || "") + " (" + (lastPreview.uri || "") + "): " +
    Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
  const shown = ($("preview-changed").checked ? entries.filter((e) => e.result !== "kept") : entries)
    .map((e) => Object.assign({}, e, { why: (e.reason && e.reason.text) || text(e.reason) }));
  if (lastPreview.truncated) $("preview-summary").textContent += " (more attributes than shown)";
  fill("preview-table", shown, [["path", "Attribute"], ["keyword", "Name"], ["result", "Became"],
    ["before", "In the file"], ["after", "Coerced"], ["why", "Why"]], (row, entry) => {
    row.className = entry.result;
    for (const cell of row.cells) {
      if (cell.dataset.key === "before" || cell.dataset.key === "after") cell.className = "value";
      if (cell.dataset.key === "result") cell.className = "result";
    }
  });
}

function start() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("page").hidden = true;
    $("logout").hidden = true;
    say("The token is forgotten.");
  });
  $("refresh").addEventListener("click", refresh);
  $("reload").addEventListener("click", reload);
  $("preview-file").addEventListener("change", (event) => preview(event.target.files[0]));
  $("preview-changed").addEventListener("change", showPreview);
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    preview(event.dataTransfer.files[0]);
  });
  fetch(API).then((r) => r.json()).then((index) => { $("version").textContent = "version " + index.version; })
    .catch(() => {});
  if (token()) refresh();
}

start();
