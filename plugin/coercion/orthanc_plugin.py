"""The Orthanc edge: callbacks that turn Orthanc's events into plain calls of the service.

Imported by ``plugin/orthanc_entry.py`` inside Orthanc's Python plugin (API 4.0, Orthanc
1.10+). No rule logic lives at the edge. ``start`` reads the configuration, loads the rules
(stopping Orthanc if they are bad) and registers the callbacks the rules need:

* orthanc_ingest.py: everything that enters Orthanc (received-instance callback, C-STORE
  filter, HTTP filter);
* orthanc_outgoing.py: what leaves it (``/modalities/{id}/store``, C-MOVE SCP);
* orthanc_routes.py: forwarding what was received;
* orthanc_find.py: the C-FIND SCP (peers query Orthanc);
* orthanc_query.py: the queries Orthanc sends and their answers;
* here: the REST API under ``/coercion``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import urllib.parse

import orthanc

from ._quiet import quiet_pydicom
from .forwarding import ForwardQueue
from .orthanc_find import find_settings, on_find
from .orthanc_ingest import on_cstore_instance, on_http_request, on_received_instance
from .orthanc_outgoing import on_modality_store, on_move
from .orthanc_query import on_modality_query, on_query_read
from .orthanc_routes import forward_worker, on_change
from .orthanc_state import answer_json, log_failure, state
from .rules import RuleError, RuleSet, Transaction
from .service import FIND, CoercionService, Settings

# -- REST API -----------------------------------------------------------------------------


def _error(output, status: int, message: str, **extra) -> None:
    answer_json(output, {"error": message, "status": status, **extra}, status)


def _credential(headers: dict) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-coercion-token")


def on_rest(output, uri, **request):
    method = request["method"]
    route = request["groups"][0] if request.get("groups") else ""
    args = request.get("get", {})
    try:
        if route == "rules" and method == "GET":
            return answer_json(output, state.service.rules_report())
        if route == "rules/reload":
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            try:
                state.service.reload()
            except RuleError as exc:
                return _error(output, 400, f"the new rules were refused; the previous rules stay active: {exc}")
            return answer_json(output, state.service.rules_report())
        if route == "stats" and method == "GET":
            return answer_json(output, state.service.stats())
        preview = re.fullmatch(r"preview(?:/(rule|uri)/(.+))?", route)
        if preview:
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            # Orthanc 1.10 drops the query string of POST requests before plugins see it:
            # /coercion/preview/rule/NAME and /coercion/preview/uri/URI say the same thing.
            headers = request.get("headers", {})
            chosen = {"rule": args.get("rule") or headers.get("x-coercion-rule"),
                      "uri": args.get("uri") or headers.get("x-coercion-uri")}
            if preview.group(1):
                chosen[preview.group(1)] = urllib.parse.unquote(preview.group(2))
            try:
                data, outcome = state.service.preview(request.get("body", b""), chosen["rule"], chosen["uri"])
            except LookupError as exc:
                return _error(output, 404, str(exc))
            except ValueError as exc:  # URIError, DicomError and bad arguments
                return _error(output, 400, str(exc))
            return output.AnswerBuffer(data, "application/dicom")
        if route == "sends" and method == "GET":
            return answer_json(output, [job.as_dict() for job in state.sends.all()])
        match = re.fullmatch(r"sends/([^/]+)", route)
        if match and method == "GET":
            job = state.sends.get(match.group(1))
            if job is None:
                return _error(output, 404, f"no send job {match.group(1)} (jobs are kept in memory until a restart)")
            return answer_json(output, job.as_dict())
        if route == "forwards" and method == "GET":
            return answer_json(output, state.forwards.list(args.get("state") or None))
        match = re.fullmatch(r"forwards/([0-9]+)", route)
        if match and method == "GET":
            row = state.forwards.get(int(match.group(1)))
            return answer_json(output, row) if row else _error(output, 404, f"no forward {match.group(1)}")
        match = re.fullmatch(r"linkage/([^/]+)", route)
        if match:
            if method != "GET":
                return output.SendMethodNotAllowed("GET")
            if not state.service.settings.linkage_token:
                return _error(output, 403, "re-identification is disabled: no linkage credential is configured")
            if not state.service.authorised(_credential(request.get("headers", {}))):
                return _error(output, 403, "a valid linkage credential is required (Authorization: Bearer ...)")
            links = state.service.linkage(match.group(1))
            if not links:
                return _error(output, 404, "no patient is linked to this pseudonym")
            orthanc.LogWarning("coercion-audit " + json.dumps({"event": "re-identification", "pseudonym": match.group(1)}))
            return answer_json(output, {"pseudonym": match.group(1), "links": links})
        return _error(output, 404, f"no such route: /coercion/{route} ({method}); see GET /coercion/rules")
    except Exception as exc:  # never leak a traceback with values to the client
        log_failure("REST error")
        return _error(output, 500, f"internal error: {type(exc).__name__}")


def _check_restart_needed(ruleset: RuleSet) -> None:
    """Callbacks are registered at start-up only, and only those the rules need (an idle
    change callback still competes with ingest for the interpreter): a reload that needs
    one more is refused."""
    if not state.move_registered and any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in ruleset.rules):
        raise RuleError("rules for C_STORE_RQ with role SCP were added while Orthanc runs without them: restart "
                        "Orthanc so that C-MOVE retrieves are coerced too (the old rules stay active)")
    if not state.query_registered and any(r.dimse in FIND and r.role == "SCP" for r in ruleset.rules):
        raise RuleError("rules for C_FIND_RQ or C_FIND_RSP with role SCP were added while Orthanc runs without them: "
                        "restart Orthanc so that the queries it sends go through them (the old rules stay active)")
    if not state.find_registered and any(r.dimse in FIND and r.role == "SCU" for r in ruleset.rules):
        raise RuleError("rules for C_FIND_RQ or C_FIND_RSP with role SCU were added while Orthanc runs without them: "
                        "restart Orthanc so that its C-FIND SCP applies them (the old rules stay active)")
    if not state.routes_registered and ruleset.routes:
        raise RuleError("routes (rules with 'forward') were added while Orthanc runs without them: restart Orthanc "
                        "so that what it receives can be forwarded (the old rules stay active)")


# -- start-up -----------------------------------------------------------------------------


def _stop_orthanc(message: str) -> None:
    # Running without the protection the rules promise is worse than not running at all.
    text = f"coercion: refusing to start: {message}"
    orthanc.LogError(text)
    print(text, file=sys.stderr, flush=True)
    os._exit(78)  # EX_CONFIG


def start() -> None:
    quiet_pydicom()
    try:
        config = json.loads(orthanc.GetConfiguration())
        state.orthanc_aet = config.get("DicomAet", "ORTHANC")
        state.scu_timeout = int(config.get("DicomScuTimeout", 10))
        for value in (config.get("DicomModalities") or {}).values():
            if isinstance(value, list) and len(value) >= 2:
                state.modality_hosts[value[0]] = value[1]
            elif isinstance(value, dict) and "AET" in value:
                state.modality_hosts[value["AET"]] = value.get("Host")
        state.service = CoercionService(Settings.from_configuration(config))
    except Exception as exc:  # RuleError, SecretError, bad settings: all stop Orthanc
        _stop_orthanc(str(exc))
        return
    orthanc.RegisterIncomingHttpRequestFilter(on_http_request)
    orthanc.RegisterReceivedInstanceCallback(on_received_instance)
    orthanc.RegisterIncomingCStoreInstanceFilter(on_cstore_instance)
    orthanc.RegisterRestCallback("/coercion/(.*)", on_rest)
    # Called instead of Orthanc's own route; sends no rule applies to go to Orthanc's route.
    orthanc.RegisterRestCallback("/modalities/([^/]+)/store", on_modality_store)
    if any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in state.service.ruleset.rules):
        orthanc.RegisterMoveCallback(on_move)
        state.move_registered = True
    if any(r.dimse in FIND and r.role == "SCU" for r in state.service.ruleset.rules):
        # Replaces Orthanc's C-FIND SCP as a whole: without C-FIND rules, Orthanc's own answers.
        state.find_settings = find_settings(config)
        orthanc.RegisterFindCallback(on_find)
        state.find_registered = True
        if orthanc.CheckVersionAdvanced(1, 11, 0):
            # The answers for callers no rule matches are rebuilt after Orthanc 1.10's C-FIND SCP.
            orthanc.LogWarning("coercion: the plugin's C-FIND SCP answers callers no rule matches as Orthanc 1.10 "
                               "does; this Orthanc is newer, and its own C-FIND SCP may answer differently")
    if any(r.dimse in FIND and r.role == "SCP" for r in state.service.ruleset.rules):
        # Called instead of Orthanc's own routes; queries no rule applies to go to Orthanc's.
        orthanc.RegisterRestCallback(
            "/modalities/([^/]+)/(query|find|find-patient|find-study|find-series|find-instance|find-worklist)",
            on_modality_query)
        orthanc.RegisterRestCallback(
            "/queries/([^/]+)/answers((?:/[0-9]+/(?:content|query-studies|query-series|query-instances))?)",
            on_query_read)
        state.query_registered = True
    state.service.validators.append(_check_restart_needed)
    state.forwards = ForwardQueue(state.service.settings.forwards_database)  # its status stays readable
    if state.service.ruleset.routes:
        orthanc.RegisterOnChangeCallback(on_change)
        state.routes_registered = True
        threading.Thread(target=forward_worker, name="coercion-forwards", daemon=True).start()
    orthanc.LogWarning(
        f"coercion: {len(state.service.ruleset.rules)} rule(s) active from {state.service.settings.rules_directory}"
    )
    _warn_about_c_get(config)


def _warn_about_c_get(config: dict) -> None:
    """C-GET retrieves bypass the rules (no plugin hook): say so for each peer they concern."""
    outgoing = [r for r in state.service.ruleset.rules if r.dimse == "C_STORE_RQ" and r.role == "SCP"]
    for name, value in (config.get("DicomModalities") or {}).items():
        if isinstance(value, list) and len(value) >= 3:
            value = {"AET": value[0], "Host": value[1]}
        if not isinstance(value, dict) or value.get("AllowGet") is False:
            continue
        peer = Transaction("C_STORE_RQ", "SCP", state.orthanc_aet, value.get("AET"), value.get("Host"))
        if any(r.matches_peers(peer) for r in outgoing):
            orthanc.LogWarning(f"coercion: modality {name!r} may C-GET, and C-GET retrieves do not go through the "
                               "rules: set \"AllowGet\": false for it in DicomModalities")
