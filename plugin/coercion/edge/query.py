"""Outgoing C-FIND: queries Orthanc sends, through the rules for C_FIND_RQ / C_FIND_RSP with role SCP.

Registered only when such rules exist at start-up (REST routes registered by a plugin are
called instead of Orthanc's own):

* ``POST /modalities/{id}/query`` and the older ``find-patient``, ``find-study``,
  ``find-series``, ``find-instance`` and ``find-worklist``: the query is put into the peer's
  world (``find_outgoing.coerce_query``) and sent by Orthanc's own route;
* the answers of a query a response rule applies to are de-identified when read
  (``/queries/{id}/answers?expand``, ``/queries/{id}/answers/{n}/content``, and the child
  queries ``/queries/{id}/answers/{n}/query-*`` create). Retrieves keep using the raw answers:
  they name the peer's own UIDs.

A query no rule applies to goes to Orthanc's route unchanged.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import Callable

import orthanc

from ..exchanges.find import FindRequest, query_dataset
from ..exchanges.find_outgoing import (
    QueryRefused,
    coerce_answer,
    coerce_query,
    parse_key,
)
from ..exchanges.orthanc_api import (
    JsonTooDeep,
    NotJson,
    OrthancError,
    older_find_answers_nothing,
    read_json_body,
    read_query_request,
)
from ..rules import MODALITY_WORKLIST_FIND, STUDY_ROOT_FIND, Rule, Transaction
from .answers import (
    JSON_TYPE,
    answer_error,
    answer_json,
    answer_orthanc_exception,
    guarded_route,
    orthanc_error,
    passthrough_post,
)
from .state import audit, modalities, modality_exists, orthanc_release, state

_FORMS = ("simplify", "short", "full")


class CoercedQueries:
    """The queries of this process whose answers a response rule de-identifies: query ID -> rule.

    Orthanc keeps a bounded number of queries (``QueryRetrieveSize``) in memory; entries are
    pruned only once Orthanc no longer lists their query, so a live query never loses its rule
    (which would show its answers raw)."""

    PRUNE_ABOVE = 256

    def __init__(self):
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}

    def add(self, query_id: str, rule: Rule, live: Callable[[], set] | None = None) -> None:
        with self._lock:
            self._rules[query_id] = rule
            if live is not None and len(self._rules) > self.PRUNE_ABOVE:
                existing = live() | {query_id}
                self._rules = {q: r for q, r in self._rules.items() if q in existing}

    def get(self, query_id: str) -> Rule | None:
        with self._lock:
            return self._rules.get(query_id)


coerced_queries = CoercedQueries()


def _live_queries() -> set:
    return set(json.loads(orthanc.RestApiGet("/queries")))


def _issuers_of(patient_id: str) -> list[str]:
    """The issuers this Orthanc knows ``patient_id`` under (hashed IDs include the issuer)."""
    found = json.loads(orthanc.RestApiPost("/tools/find", json.dumps(
        {"Level": "Patient", "Query": {"PatientID": patient_id}, "CaseSensitive": True})))
    issuers = set()
    for patient in found:
        instances = json.loads(orthanc.RestApiGet(f"/patients/{patient}/instances"))
        if instances:
            tags = json.loads(orthanc.RestApiGet(f"/instances/{instances[0]['ID']}/simplified-tags"))
            issuers.add(str(tags.get("IssuerOfPatientID", "")).strip())
    return sorted(issuers)


def _rules_for(modality: str, body: dict, query: dict, worklist: bool = False):
    """(peer, request rule, response rule) for a query to ``modality``; rules None if none applies."""
    peer = modalities().get(modality)
    if peer is None:
        return None, None, None
    calling = body.get("LocalAet") or peer.get("LocalAet") or state.orthanc_aet

    def dataset():
        pairs = []
        for key, value in query.items():
            if isinstance(value, str):
                try:
                    pairs.append((parse_key(key), value))
                except QueryRefused:
                    pass
        return query_dataset(FindRequest.from_pairs(sorted(pairs)))

    ruleset = state.service.ruleset
    sop_class = MODALITY_WORKLIST_FIND if worklist else STUDY_ROOT_FIND
    found = [ruleset.match(Transaction(dimse, "SCP", calling, peer["AET"], peer.get("Host"), sop_class_uid=sop_class,
                                       dataset=dataset)) for dimse in ("C_FIND_RQ", "C_FIND_RSP")]
    return peer, found[0], found[1]


_OLDER = ("find", "find-patient", "find-study", "find-series", "find-instance")


def _tag_of(key: str) -> int | None:
    try:
        return parse_key(key)
    except QueryRefused:
        return None


def _names_a_tag(key: str) -> bool:
    return _tag_of(key) is not None


def _audit(event: str, modality: str, rq: Rule | None, rsp: Rule | None, **more) -> None:
    audit(event, refused=event.endswith("refused"), modality=modality, request_rule=rq.name if rq else None,
          response_rule=rsp.name if rsp else None, **more)


@guarded_route("outgoing query", "nothing was sent")
def on_modality_query(output, uri, request):
    if request["method"] != "POST":
        return output.SendMethodNotAllowed("POST")
    modality, route = request["groups"][0], request["groups"][1]
    raw = request.get("body", b"")
    try:
        if route == "query":  # Orthanc's own checks first, answered as Orthanc answers them
            body = read_query_request(raw, modality_exists, modality, _names_a_tag, orthanc_release())
        else:
            body = read_json_body(raw)
    except OrthancError as error:
        return answer_error(output, "POST", uri, error)
    except JsonTooDeep as exc:  # Orthanc's own reader would crash on it: never handed on
        return orthanc_error(output, uri, "POST", "BadFileFormat", str(exc))
    except NotJson:
        body = None
    if route in _OLDER and older_find_answers_nothing(route, body, _tag_of):
        return output.SendHttpStatusCode(400)  # Orthanc's older routes return without an answer
    if body is None and route == "find-worklist":
        return orthanc_error(output, uri, "POST", "BadFileFormat", "Must provide a JSON object")
    if not isinstance(body, dict):
        return passthrough_post(output, uri, raw)  # Orthanc answers its own error
    # /query and find-worklist (1.9.5+) take {"Query": {...}}; the older find-* take the keys themselves.
    wrapped = route == "query" or (route == "find-worklist" and "Query" in body)
    query = body.get("Query", {}) if wrapped else body
    if not isinstance(query, dict):
        return passthrough_post(output, uri, raw)
    peer, rq, rsp = _rules_for(modality, body, query, worklist=route == "find-worklist")
    if rq is None and rsp is None:
        return passthrough_post(output, uri, raw)
    if route == "find":
        return orthanc_error(output, uri, "POST", "BadRequest",
                              f"coercion rules apply to C-FIND to modality {modality!r}: use "
                              f"/modalities/{modality}/query (the hierarchical /find is not coerced)")
    if rq is not None:
        try:
            coerced = coerce_query(query, state.service.deidentifier(rq), rq.name, _issuers_of)
        except QueryRefused as exc:
            _audit("c-find-scu-refused", modality, rq, rsp)
            return orthanc_error(output, uri, "POST", "BadRequest", str(exc))
        body = {**body, "Query": coerced} if wrapped else coerced
    try:
        answer = json.loads(orthanc.RestApiPost(uri, json.dumps(body)))
    except orthanc.OrthancException as exc:  # the peer refused, could not be reached...: Orthanc's error
        return answer_orthanc_exception(output, uri, "POST", exc)
    if rsp is not None:
        deidentifier = state.service.deidentifier(rsp)
        if route == "query":
            coerced_queries.add(answer["ID"], rsp, _live_queries)
        else:
            form = "short" if body.get("Short") else "full" if body.get("Full") else "simplify"
            answer = [coerce_answer(a, form, deidentifier) for a in answer]
    _audit("c-find-scu", modality, rq, rsp, **({"query": answer["ID"]} if route == "query" else
                                                {"answers": len(answer)}))
    return answer_json(output, answer)


def _core_uri(uri: str, request: dict) -> str:
    arguments = request.get("get") or {}
    return uri + ("?" + urllib.parse.urlencode(arguments) if arguments else "")


@guarded_route("query answer", "the answers are withheld")
def on_query_read(output, uri, request):
    query_id, tail = request["groups"][0], request["groups"][1]
    rule = coerced_queries.get(query_id)
    child = "/query-" in tail  # /answers/{n}/query-*: a child query of a coerced one is coerced too
    allowed = "POST" if child else "GET"
    if request["method"] != allowed:
        return output.SendMethodNotAllowed(allowed)
    try:
        if child:
            answer = orthanc.RestApiPost(_core_uri(uri, request), request.get("body", b""))
        else:
            answer = orthanc.RestApiGet(_core_uri(uri, request))
    except orthanc.OrthancException as exc:  # an unknown query or answer: Orthanc's own error
        return answer_orthanc_exception(output, uri, request["method"], exc)
    arguments = request.get("get") or {}
    if child and rule is not None:
        coerced_queries.add(json.loads(answer)["ID"], rule, _live_queries)
    if child or rule is None or (tail == "" and "expand" not in arguments):
        return output.AnswerBuffer(answer, JSON_TYPE)
    form = next((f for f in _FORMS if f in arguments), "full")
    deidentifier = state.service.deidentifier(rule)
    content = json.loads(answer)
    coerced = ([coerce_answer(a, form, deidentifier) for a in content] if tail == ""
               else coerce_answer(content, form, deidentifier))
    return answer_json(output, coerced)
