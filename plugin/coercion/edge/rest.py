"""The REST API under /coercion: rules, statistics, previews, sends, forwards, re-identification."""

from __future__ import annotations

import json
import re
import urllib.parse

import orthanc

from ..rules import RuleError
from .answers import answer_json
from .state import log_failure, state


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


