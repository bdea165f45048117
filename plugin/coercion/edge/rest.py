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
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Callable

import orthanc

from ..checks import check_ruleset
from ..rules import RuleError
from .answers import answer_json
from .mpps import mpps_route
from .peers import coerced_stow
from .views import view_request
from .forwarding import wake_forwards
from .state import log_event, log_failure, orthanc_release, recent_audit, state
from .worklist import worklists_route

# Where each credential is configured, said in the answer when it is not.
_HOW_TO_ENABLE = {
    "admin": "configure Coercion.AdminTokenFile (or COERCION_ADMIN_TOKEN_FILE) with a token of at least 16 "
             "characters and send it as 'X-Coercion-Token: <token>'",
    "linkage": "configure Coercion.LinkageTokenFile (or COERCION_LINKAGE_TOKEN_FILE) with a token of at least 16 "
               "characters and send it as 'X-Coercion-Token: <token>'",
}
_NAMES = {"admin": "administration", "linkage": "re-identification", "view": "the view's"}
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


def on_rest_index(output, uri, **request):
    """GET /coercion: what the API offers (no value, nothing of a patient), read from ROUTES."""
    from ..engine.implementation import VERSION

    if request["method"] != "GET":
        return output.SendMethodNotAllowed("GET")
    return answer_json(output, {"version": VERSION, "routes": [
        {"method": method, "path": route.path, "credential": _NAMES.get(route.credential), "answer": route.answer}
        for route in (_INDEX, *ROUTES) for method in route.methods]})


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
    orthanc_release()  # what this release keeps the rules from doing is known once it is read
    return {**state.service.rules_report(), "warnings": [*state.rule_warnings, *state.release_warnings]}


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


# -- the handlers: (output, request, route, match) -> answer; the table below binds them -------


def _rules(output, request, route, match):
    return answer_json(output, rules_report())


def _audit(output, request, route, match):
    try:
        limit = int(request.get("get", {}).get("limit") or 200)
    except ValueError:
        return _error(output, 400, "limit must be a whole number")
    return answer_json(output, list(reversed(recent_audit))[:max(limit, 0)])


def _stats(output, request, route, match):
    return answer_json(output, state.service.stats())


def _activity(output, request, route, match):
    return answer_json(output, state.service.activity())


def _preview(output, request, route, match):
    if len(request.get("body") or b"") > MAX_PREVIEW_BYTES:
        return _error(output, 413, f"a preview takes one DICOM file of at most {MAX_PREVIEW_BYTES} bytes "
                                   "(MAX_PREVIEW_BYTES)")
    # Orthanc 1.10 drops the query string of POST requests before plugins see it:
    # /coercion/preview/rule/NAME and /coercion/preview/uri/URI say the same thing.
    args, headers = request.get("get", {}), request.get("headers", {})
    chosen = {"rule": args.get("rule") or headers.get("x-coercion-rule"),
              "uri": args.get("uri") or headers.get("x-coercion-uri")}
    if match.group("kind"):
        chosen[match.group("kind")] = urllib.parse.unquote(match.group("name"))
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
    log_event("preview", route="preview", outcome="answered", rule=chosen["rule"], uri=chosen["uri"], format=form)
    if form == "json":
        return answer_json(output, answer)
    return output.AnswerBuffer(answer[0], "application/dicom")


def _sends(output, request, route, match):
    return answer_json(output, [job.as_dict() for job in state.sends.all()])


def _send(output, request, route, match):
    job = state.sends.get(match.group("id"))
    if job is None:
        return _error(output, 404, f"no send job {match.group('id')} (jobs are kept in memory until a restart)")
    return answer_json(output, job.as_dict())


def _forwards(output, request, route, match):
    return answer_json(output, state.forwards.list(request.get("get", {}).get("state") or None))


def _forward(output, request, route, match):
    row = state.forwards.get(int(match.group("id")))
    return answer_json(output, row) if row else _error(output, 404, f"no forward {match.group('id')}")


def _forward_retry(output, request, route, match):
    row = state.forwards.retry(int(match.group("id")))
    if row is None:
        return _error(output, 404, f"no forward {match.group('id')}")
    if row["state"] == "sending":
        log_event("forward-retry", route=route, outcome="refused: being sent")
        return _error(output, 409, f"forward {match.group('id')} is being sent; retry it once it has ended")
    log_event("forward-retry", route=route, outcome="accepted")
    wake_forwards()
    return answer_json(output, row)


def _worklists(output, request, route, match):
    method = request["method"]
    status, answer = worklists_route(route, method, request)
    if status == 405:
        return output.SendMethodNotAllowed(answer)
    if method in ("POST", "DELETE"):
        log_event("worklists", route=route, method=method, outcome="done" if status == 200 else f"{status}")
    return answer_json(output, answer, status)


def _mpps(output, request, route, match):
    # The kept steps show patient data unless a rule coerced them: administration only.
    status, answer = mpps_route(route, request.get("get", {}))
    which = {"sop_instance_uid": match.group("uid")} if match.group("uid") else {}
    log_event("mpps-read", route="mpps/{uid}" if which else "mpps",
              outcome="answered" if status == 200 else f"not answered: {status}", **which)
    return answer_json(output, answer, status)


def _linkage(output, request, route, match):
    pseudonym = match.group("pseudonym")
    links = state.service.linkage(pseudonym)
    # The pseudonym is a keyed hash, not PHI: the trail says which record was re-identified.
    log_event("re-identification", route="linkage", outcome="answered" if links else "unknown pseudonym",
              pseudonym=pseudonym, links=len(links))
    if not links:
        return _error(output, 404, "no patient is linked to this pseudonym")
    return answer_json(output, {"pseudonym": pseudonym, "links": links})


def _ui(output, request, route, match):
    return _ui_page(output, route, request["method"])


def _reload_route(output, request, route, match):
    return _reload(output, route)


@dataclass(frozen=True)
class Route:
    """One entry of the API: methods, the path under /coercion (``{name}`` a segment, as the
    index and docs/rest-api.md show it), the credential it needs (None, "admin", "linkage"), the
    audit event of a refusal (and the route it names: the path matched, unless given), the
    handler, what it answers. ``pattern``: a regular expression with named groups, when the
    path's ``{name}`` segments are not enough."""

    methods: tuple[str, ...]
    path: str
    credential: str | None
    event: str | None
    handler: Callable | None
    answer: str
    pattern: str | None = None
    audit_route: str | None = None
    methods_by_handler: bool = False  # its handler answers 405 itself (paths under one pattern differ)

    @cached_property
    def regex(self) -> re.Pattern:
        if self.pattern is not None:
            return re.compile(self.pattern)
        relative = self.path.removeprefix("/coercion").lstrip("/")
        return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(relative)))


_INDEX = Route(("GET",), "/coercion", None, None, None, "this list and the version")
# The API: the dispatcher and GET /coercion read it; docs/rest-api.md's table is compared with
# GET /coercion by tests/integration/test_admin_routes.py. One entry a route, as pynetdicom
# binds one handler an event.
ROUTES = (
    Route(("GET",), "/coercion/rules", None, None, _rules,
          "the active rules, their files, when they were loaded, the last load error, the rule checks' warnings"),
    Route(("POST",), "/coercion/rules/reload", "admin", "rules-reload", _reload_route, "reload the rules atomically"),
    Route(("POST",), "/coercion/preview/rule/{name}", "admin", "preview", _preview,
          "a DICOM file coerced by a rule, nothing stored; with Accept: application/json (or ?format=json, "
          "X-Coercion-Format: json) each attribute's result, values before and after, and reason",
          pattern=r"preview(?:/(?P<kind>rule|uri)/(?P<name>.+))?", audit_route="preview"),
    Route(("POST",), "/coercion/preview/uri/{uri}", "admin", "preview", None,
          "a DICOM file coerced by a URI, nothing stored; as JSON, each attribute explained (as above)"),
    Route(("GET",), "/coercion/stats", None, None, _stats,
          "per rule: matched, coerced, rejected, discarded, bytes, seconds, last seen"),
    Route(("GET",), "/coercion/activity", None, None, _activity,
          "per rule and per calling AE title: counts, first and last seen, last failure"),
    Route(("GET",), "/coercion/audit", "admin", "audit-read", _audit,
          "this node's recent audit records, newest first (?limit=N)"),
    Route(("GET",), "/coercion/ui/", None, None, _ui,
          "the administrator's page (it asks for the administration credential)", pattern=r"ui(?:/.*)?"),
    Route(("POST",), "/coercion/dicom-web/servers/{name}/stow", None, None, coerced_stow,
          "the DICOMweb plugin's STOW-RS client request (same body), sent coerced to a server a rule names"),
    Route(("GET",), "/coercion/dicom-web/{view}/...", "view", None, view_request,
          "a de-identified DICOMweb view: QIDO-RS (studies, series, instances) and WADO-RS (retrieve, metadata, "
          "frames) in one outgoing rule's pseudonyms", pattern=r"dicom-web/(?P<view>[^/]+)/(?P<path>.*)",
          methods_by_handler=True),
    Route(("GET",), "/coercion/sends", None, None, _sends, "the coerced send jobs of this process"),
    Route(("GET",), "/coercion/sends/{id}", None, None, _send, "one send job"),
    Route(("GET",), "/coercion/forwards", None, None, _forwards, "the forwarding queue (?state=...)"),
    Route(("GET",), "/coercion/forwards/{id}", None, None, _forward, "one forward", pattern=r"forwards/(?P<id>[0-9]+)"),
    Route(("POST",), "/coercion/forwards/{id}/retry", "admin", "forward-retry", _forward_retry,
          "make a forward due now", pattern=r"forwards/(?P<id>[0-9]+)/retry"),
    Route(("GET",), "/coercion/mpps", "admin", "mpps-read", _mpps, "the kept MPPS steps",
          pattern=r"mpps(?:/(?P<uid>[^/]+))?", audit_route="mpps"),
    Route(("GET",), "/coercion/mpps/{uid}", "admin", "mpps-read", None, "one kept step"),
    Route(("GET", "POST"), "/coercion/worklists", "admin", "worklists", _worklists,
          "the worklist items; POST: add one", pattern=r"worklists(?:/.*)?", audit_route="worklists",
          methods_by_handler=True),
    Route(("GET", "DELETE"), "/coercion/worklists/{id}", "admin", "worklists", None,
          "one worklist item; DELETE: remove it"),
    Route(("GET",), "/coercion/linkage/{pseudonym}", "linkage", "re-identification", _linkage,
          "the originals behind a pseudonymous patient ID", audit_route="linkage"),
)


def _dispatch(output, request: dict, route: str):
    """The first entry whose pattern matches the route; its methods, its credential, its handler."""
    for entry in ROUTES:
        if entry.handler is None:  # listed only: another entry's pattern serves it
            continue
        match = entry.regex.fullmatch(route)
        if match is None:
            continue
        if request["method"] not in entry.methods and not entry.methods_by_handler:
            return output.SendMethodNotAllowed(",".join(entry.methods))
        if entry.credential in ("admin", "linkage") and not _granted(  # a view checks its own (edge/views.py)
                output, request, entry.credential, entry.audit_route or route, entry.event):
            return None
        return entry.handler(output, request, route, match)
    return _error(output, 404, f"no such route: /coercion/{route} ({request['method']}); GET /coercion lists them")


def on_rest(output, uri, **request):
    route = request["groups"][0] if request.get("groups") else ""
    try:
        return _dispatch(output, request, route)
    except Exception as exc:  # never leak a traceback with values to the client
        log_failure("REST error")
        return _error(output, 500, f"internal error: {type(exc).__name__}")
