"""Incoming C-FIND: the plugin's C-FIND SCP (registered only when C-FIND rules exist at start-up).

Orthanc's own C-FIND SCP is replaced as a whole once a plugin registers a C-FIND callback, so a
caller no rule matches gets Orthanc's answer rebuilt by ``find.OrthancFind`` (Orthanc's own
lookup through its REST API, answers assembled as Orthanc assembles them); a caller that
C_FIND_RQ / C_FIND_RSP rules match is answered in its de-identified world
(``find_coercion``). Answers are computed in full before the first is added: a failure
answers a C-FIND failure status, never part of the answers unmodified.
"""

from __future__ import annotations

import json
import time

import orthanc

from ..exchanges.find import (
    FindBehaviour,
    FindError,
    FindRequest,
    FindSettings,
    OrthancFind,
    encode_answer,
    query_dataset,
)
from ..exchanges.find_coercion import coerced_answers
from .state import Refused, audit, log_failure, orthanc_release, state


class PluginRest:
    """Orthanc's REST API from inside the process (no HTTP, no authentication)."""

    @staticmethod
    def get(path: str):
        return json.loads(orthanc.RestApiGet(path))

    @staticmethod
    def post(path: str, body: dict):
        return json.loads(orthanc.RestApiPost(path, json.dumps(body)))

    @staticmethod
    def get_text(path: str) -> str:
        return orthanc.RestApiGet(path).decode("utf-8")


def find_settings(config: dict) -> FindSettings:
    return FindSettings(
        retrieve_aet=config.get("DicomAet", "ORTHANC"),
        case_sensitive_pn=bool(config.get("CaseSensitivePN", False)),
        limit_results=int(config.get("LimitFindResults", 0)),
        limit_instances=int(config.get("LimitFindInstances", 0)),
        storage_access=str(config.get("StorageAccessOnFind", "Always")),
    )


def _value(query, index: int) -> str:
    try:
        return query.GetFindQueryValue(index)
    except orthanc.OrthancException:
        return ""  # a null (or binary) value: Orthanc's own SCP makes it a return key too


def _request(query) -> FindRequest:
    return FindRequest.from_pairs(
        ((query.GetFindQueryTagGroup(i) << 16) | query.GetFindQueryTagElement(i), _value(query, i))
        for i in range(query.GetFindQuerySize()))


def on_find_connection(answers, query, connection) -> None:
    """The C-FIND callback with the DICOM connection (orthanc-python 7.0): the caller's host too."""
    on_find(answers, query, connection.GetConnectionRemoteAet(), connection.GetConnectionCalledAet(),
            connection.GetConnectionRemoteIp())


def on_find(answers, query, issuer_aet, called_aet, host: str | None = None) -> None:
    started = time.perf_counter()
    service = state.service
    settings = state.find_settings
    try:
        request = _request(query)
        rq_rule, rsp_rule = service.find_rules(issuer_aet, called_aet, lambda: query_dataset(request), host=host)
        finder = OrthancFind(PluginRest, settings, FindBehaviour.of(orthanc_release()))
        if rq_rule is None and rsp_rule is None:
            encoded, complete = finder.answers(request)
        else:
            # The request rule says in which world the caller asks, the response rule what it
            # is shown; one of them alone stands for both sides of its own world.
            world = service.deidentifier(rq_rule or rsp_rule)
            shown = service.deidentifier(rsp_rule) if rsp_rule else None
            limit = settings.limit_instances if request.level == "Instance" else settings.limit_results
            datasets, complete, handed_out = coerced_answers(finder, request, world, shown, service.store, limit)
            rule = rsp_rule or rq_rule
            service.record_find(rule, len(datasets), handed_out, time.perf_counter() - started, issuer_aet)
            audit("c-find", rule=rule.name, request_rule=rq_rule.name if rq_rule else None,
                  calling_aet=issuer_aet, called_aet=called_aet, level=request.level,
                  answers=len(datasets), complete=complete)
            encoded = [encode_answer(ds) for ds in datasets]
    except FindError as exc:
        orthanc.LogError(f"coercion: C-FIND from {issuer_aet!r} refused: {exc}")
        raise
    except Exception:  # fail closed: no answer at all rather than an unmodified one
        log_failure(f"C-FIND from {issuer_aet!r} failed")
        raise Refused("the C-FIND failed; nothing was answered") from None
    for data in encoded:
        answers.FindAddAnswer(data)
    if not complete:
        answers.FindMarkIncomplete()
