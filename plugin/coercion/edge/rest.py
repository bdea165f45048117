"""The REST API under /coercion: rules, statistics, previews, sends, forwards, re-identification.

What reveals what the keys make of submitted data (previews), changes behaviour (reloads) or
controls sends needs the administration credential; re-identification needs the
re-identification credential. Each is compared in constant time, and each use and each
refused attempt leaves an audit line (route, client address, outcome; never PHI). The reads
that stay open show configuration, counts and states, nothing of a patient.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from importlib import resources

import orthanc

from ..checks import check_ruleset
from ..rules import RuleError
from .answers import answer_json
from .mpps import mpps_route
from .routes import wake_forwards
from .state import log_event, log_failure, recent_audit, state
from .worklist import worklists_route

# Where each credential is configured, said in the answer when it is not.
_HOW_TO_ENABLE = {
    "admin": "configure Coercion.AdminTokenFile (or COERCION_ADMIN_TOKEN_FILE) with a token of at least 16 "
             "characters and send it as 'X-Coercion-Token: <token>'",
    "linkage": "configure Coercion.LinkageTokenFile (or COERCION_LINKAGE_TOKEN_FILE) with a token of at least 16 "
               "characters and send it as 'X-Coercion-Token: <token>'",
}
_NAMES = {"admin": "administration", "linkage": "re-identification"}
# A preview is a dry run of one instance, held several times over while it is coerced and
# answered (the body, the result, Orthanc's copy of the answer): large enough for an
# ultrasound cine; a larger instance is previewed by a smaller one of its kind. The other
# bodies are bounded where they are read (worklist items: exchanges/worklist.py); reloads and
# retries take none.
MAX_PREVIEW_BYTES = 256 << 20


def _error(output, status: int, message: str, **extra) -> None:
    answer_json(output, {"error": message, "status": status, **extra}, status)


def _credential(headers: dict) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-coercion-token")


def _granted(output, request: dict, kind: str, route: str, event: str) -> bool:
    """Whether the request carries the credential of ``kind``; if not, it is answered 403 and audited."""
    configured = state.service.settings.admin_token if kind == "admin" else state.service.settings.linkage_token
    if configured and state.service.authorised(_credential(request.get("headers", {})), kind):
        return True
    outcome = "refused: no credential configured" if not configured else "refused: bad or missing credential"
    log_event(event, route=route, outcome=outcome)
    if not configured:
        _error(output, 403, f"/coercion/{route.split('/')[0]} is disabled until a {_NAMES[kind]} credential is "
                            f"configured: {_HOW_TO_ENABLE[kind]}")
    else:
        _error(output, 403, f"a valid {_NAMES[kind]} credential is required (X-Coercion-Token: ...)")
    return False


# The API, for GET /coercion (README.md's table says the same; tests/test_checks.py compares).
API = (
    ("GET", "/coercion", None, "this list and the version"),
    ("GET", "/coercion/rules", None, "the active rules, their files, when they were loaded, the last load error, "
                                     "the rule checks' warnings"),
    ("POST", "/coercion/rules/reload", "administration", "reload the rules atomically"),
    ("POST", "/coercion/preview/rule/{name}", "administration",
     "a DICOM file coerced by a rule, nothing stored; with Accept: application/json (or ?format=json, "
     "X-Coercion-Format: json) each attribute's result, values before and after, and reason"),
    ("POST", "/coercion/preview/uri/{uri}", "administration",
     "a DICOM file coerced by a URI, nothing stored; as JSON, each attribute explained (as above)"),
    ("GET", "/coercion/stats", None, "per rule: matched, coerced, rejected, discarded, bytes, seconds, last seen"),
    ("GET", "/coercion/activity", None, "per rule and per calling AE title: counts, first and last seen, last failure"),
    ("GET", "/coercion/audit", "administration", "this node's recent audit records, newest first (?limit=N)"),
    ("GET", "/coercion/ui/", None, "the administrator's page (it asks for the administration credential)"),
    ("GET", "/coercion/sends", None, "the coerced send jobs of this process"),
    ("GET", "/coercion/sends/{id}", None, "one send job"),
    ("GET", "/coercion/forwards", None, "the forwarding queue (?state=...)"),
    ("GET", "/coercion/forwards/{id}", None, "one forward"),
    ("POST", "/coercion/forwards/{id}/retry", "administration", "make a forward due now"),
    ("GET", "/coercion/mpps", "administration", "the kept MPPS steps"),
    ("GET", "/coercion/mpps/{uid}", "administration", "one kept step"),
    ("GET", "/coercion/worklists", "administration", "the worklist items"),
    ("POST", "/coercion/worklists", "administration", "add a worklist item"),
    ("GET", "/coercion/worklists/{id}", "administration", "one worklist item"),
    ("DELETE", "/coercion/worklists/{id}", "administration", "remove a worklist item"),
    ("GET", "/coercion/linkage/{pseudonym}", "re-identification", "the originals behind a pseudonymous patient ID"),
)


def on_rest_index(output, uri, **request):
    """GET /coercion: what the API offers (no value, nothing of a patient)."""
    from ..engine.implementation import VERSION

    if request["method"] != "GET":
        return output.SendMethodNotAllowed("GET")
    return answer_json(output, {"version": VERSION, "routes": [
        {"method": method, "path": path, "credential": credential, "answer": answer}
        for method, path, credential, answer in API]})


def _ui_page(output, route: str, method: str):
    """The administrator's page: one document, its script and style sheet inlined (Orthanc
    drops a trailing slash, so the page cannot count on relative links). Plain files of the
    package: no value in them."""
    if method != "GET":
        return output.SendMethodNotAllowed("GET")
    if route not in ("ui", "ui/index.html"):
        return _error(output, 404, f"no such file of the page: /coercion/{route}")
    page, script_hash = admin_page()
    output.SetHttpHeader("Cache-Control", "no-cache")
    output.SetHttpHeader("X-Content-Type-Options", "nosniff")
    output.SetHttpHeader("Content-Security-Policy", f"default-src 'self'; script-src '{script_hash}'; "
                         "style-src 'unsafe-inline'; frame-ancestors 'none'")
    return output.AnswerBuffer(page, "text/html; charset=utf-8")


def ui_file(name: str) -> bytes:
    return (resources.files(__package__) / "ui" / name).read_bytes()


def admin_page() -> tuple[bytes, str]:
    """index.html with app.js and style.css in it, and the CSP source of its script."""
    script = ui_file("app.js").decode()
    page = ui_file("index.html").decode()
    page = page.replace('<link rel="stylesheet" href="style.css">', f"<style>\n{ui_file('style.css').decode()}</style>")
    page = page.replace('<script src="app.js"></script>', f"<script>{script}</script>")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return page.encode(), f"sha256-{digest}"


def rules_report() -> dict:
    """The rules as loaded, the last load error and what the checks warn of them."""
    return {**state.service.rules_report(), "warnings": list(state.rule_warnings)}


def _reload(output, route: str):
    """POST /coercion/rules/reload: the new rules or the refusal, audited with what changed."""
    before = {r.name: r.as_dict() for r in state.service.ruleset.rules + state.service.ruleset.routes}
    try:
        ruleset = state.service.reload()
    except RuleError as exc:
        log_event("rules-reload", route=route, credential="administration", outcome="refused: invalid rules",
                  error=str(exc)[:500])
        return _error(output, 400, f"the new rules were refused; the previous rules stay active: {exc}")
    after = {r.name: r.as_dict() for r in ruleset.rules + ruleset.routes}
    state.rule_warnings = [finding.message for finding in check_ruleset(ruleset, state.config)]
    for warning in state.rule_warnings:
        orthanc.LogWarning(f"coercion: {warning}")
    log_event("rules-reload", route=route, credential="administration", outcome="accepted", rules=len(after),
              added=sorted(after.keys() - before.keys()), removed=sorted(before.keys() - after.keys()),
              changed=sorted(n for n in after.keys() & before.keys() if after[n] != before[n]),
              warnings=len(state.rule_warnings))
    return answer_json(output, rules_report())


def _preview_format(headers: dict, args: dict) -> str | None:
    """"json" or "dicom" (None: asked for neither): ?format= or X-Coercion-Format (Orthanc 1.10
    drops the query strings of POST requests), else the Accept header; the DICOM file unless
    application/json is accepted and preferred to application/dicom."""
    asked = (args.get("format") or headers.get("x-coercion-format") or "").strip().lower()
    if asked:
        return {"json": "json", "application/json": "json", "dicom": "dicom",
                "application/dicom": "dicom"}.get(asked)
    quality = {}
    for part in headers.get("accept", "").split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    json_q = quality.get("application/json", 0.0)
    return "json" if json_q > 0 and json_q > quality.get("application/dicom", 0.0) else "dicom"


def on_rest(output, uri, **request):
    method = request["method"]
    route = request["groups"][0] if request.get("groups") else ""
    args = request.get("get", {})
    try:
        if route == "rules" and method == "GET":
            return answer_json(output, rules_report())
        if route == "rules/reload":
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            if not _granted(output, request, "admin", route, "rules-reload"):
                return None
            return _reload(output, route)
        if route == "ui" or route.startswith("ui/"):
            return _ui_page(output, route, method)
        if route == "audit":
            if method != "GET":
                return output.SendMethodNotAllowed("GET")
            if not _granted(output, request, "admin", route, "audit-read"):
                return None
            try:
                limit = int(args.get("limit") or 200)
            except ValueError:
                return _error(output, 400, "limit must be a whole number")
            return answer_json(output, list(reversed(recent_audit))[:max(limit, 0)])
        if route == "stats" and method == "GET":
            return answer_json(output, state.service.stats())
        if route == "activity" and method == "GET":
            return answer_json(output, state.service.activity())
        preview = re.fullmatch(r"preview(?:/(rule|uri)/(.+))?", route)
        if preview:
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            if not _granted(output, request, "admin", "preview", "preview"):
                return None
            if len(request.get("body") or b"") > MAX_PREVIEW_BYTES:
                return _error(output, 413, f"a preview takes one DICOM file of at most {MAX_PREVIEW_BYTES} bytes "
                                           "(MAX_PREVIEW_BYTES)")
            # Orthanc 1.10 drops the query string of POST requests before plugins see it:
            # /coercion/preview/rule/NAME and /coercion/preview/uri/URI say the same thing.
            headers = request.get("headers", {})
            chosen = {"rule": args.get("rule") or headers.get("x-coercion-rule"),
                      "uri": args.get("uri") or headers.get("x-coercion-uri")}
            if preview.group(1):
                chosen[preview.group(1)] = urllib.parse.unquote(preview.group(2))
            form = _preview_format(headers, args)
            if form is None:
                return _error(output, 400, "format must be json or dicom (?format=, X-Coercion-Format or Accept)")
            explained = state.service.preview_explained if form == "json" else state.service.preview
            try:
                answer = explained(request.get("body", b""), chosen["rule"], chosen["uri"])
            except LookupError as exc:
                return _error(output, 404, str(exc))
            except ValueError as exc:  # URIError, DicomError and bad arguments
                return _error(output, 400, str(exc))
            # The JSON answer holds values of the upload: the audit line says only that it was given.
            log_event("preview", route="preview", outcome="answered", rule=chosen["rule"], uri=chosen["uri"],
                      format=form)
            if form == "json":
                return answer_json(output, answer)
            return output.AnswerBuffer(answer[0], "application/dicom")
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
        match = re.fullmatch(r"forwards/([0-9]+)/retry", route)
        if match:
            if method != "POST":
                return output.SendMethodNotAllowed("POST")
            if not _granted(output, request, "admin", route, "forward-retry"):
                return None
            row = state.forwards.retry(int(match.group(1)))
            if row is None:
                return _error(output, 404, f"no forward {match.group(1)}")
            if row["state"] == "sending":
                log_event("forward-retry", route=route, outcome="refused: being sent")
                return _error(output, 409, f"forward {match.group(1)} is being sent; retry it once it has ended")
            log_event("forward-retry", route=route, outcome="accepted")
            wake_forwards()
            return answer_json(output, row)
        if route == "worklists" or route.startswith("worklists/"):
            if not _granted(output, request, "admin", "worklists", "worklists"):
                return None
            status, answer = worklists_route(route, method, request)
            if status == 405:
                return output.SendMethodNotAllowed(answer)
            if method in ("POST", "DELETE"):
                log_event("worklists", route=route, method=method, outcome="done" if status == 200 else f"{status}")
            return answer_json(output, answer, status)
        if re.fullmatch(r"mpps(/[^/]+)?", route):
            # The kept steps show patient data unless a rule coerced them: administration only.
            if method != "GET":
                return output.SendMethodNotAllowed("GET")
            if not _granted(output, request, "admin", "mpps", "mpps-read"):
                return None
            status, answer = mpps_route(route, args)
            which = {"sop_instance_uid": route[len("mpps/"):]} if route != "mpps" else {}
            log_event("mpps-read", route="mpps/{uid}" if which else "mpps",
                      outcome="answered" if status == 200 else f"not answered: {status}", **which)
            return answer_json(output, answer, status)
        match = re.fullmatch(r"linkage/([^/]+)", route)
        if match:
            if method != "GET":
                return output.SendMethodNotAllowed("GET")
            if not _granted(output, request, "linkage", "linkage", "re-identification"):
                return None
            links = state.service.linkage(match.group(1))
            # The pseudonym is a keyed hash, not PHI: the trail says which record was re-identified.
            log_event("re-identification", route="linkage", outcome="answered" if links else "unknown pseudonym",
                      pseudonym=match.group(1), links=len(links))
            if not links:
                return _error(output, 404, "no patient is linked to this pseudonym")
            return answer_json(output, {"pseudonym": match.group(1), "links": links})
        return _error(output, 404, f"no such route: /coercion/{route} ({method}); GET /coercion lists them")
    except Exception as exc:  # never leak a traceback with values to the client
        log_failure("REST error")
        return _error(output, 500, f"internal error: {type(exc).__name__}")

