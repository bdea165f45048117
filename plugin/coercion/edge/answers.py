"""HTTP answers of the plugin's routes, shaped like Orthanc's own where they stand in for it."""

from __future__ import annotations

import functools
import json
import time

import orthanc

from ..exchanges.orthanc_api import OrthancError
from .state import log_failure

JSON_TYPE = "application/json; charset=utf-8"  # what Orthanc's AnswerJson sends


def send_status(output, status: int, text: str) -> None:
    """An HTTP status with a body. orthanc-python 4.2 fixed the signature of SendHttpStatus
    (status, body); 4.0 and 4.1 take the body's size too. What the running plugin takes is
    found by calling it: a wrong count of arguments is refused before anything is sent."""
    body = text.encode()
    try:
        output.SendHttpStatus(status, body)
    except TypeError:
        output.SendHttpStatus(status, text, len(body))


def answer_json(output, value, status: int = 200) -> None:
    body = json.dumps(value, indent=2)
    if status == 200:
        output.AnswerBuffer(body, JSON_TYPE)
    else:
        send_status(output, status, body)


def answer_error(output, method: str, uri: str, error: OrthancError, **extra) -> None:
    """An error answered as Orthanc's HTTP server answers one (HttpServer.cpp: tab-indented
    JSON, no content type), with ``extra`` fields of the plugin's own after Orthanc's."""
    body = error.body(method, uri)
    lines = [f'\t"{key}" : {json.dumps(value)}' for key, value in {**body, **extra}.items()]
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    send_status(output, error.status, text)


def orthanc_error(output, uri: str, method: str, name: str, details: str | None = None, **extra) -> None:
    """One of Orthanc's errors (by ErrorCode name) with the plugin's details."""
    answer_error(output, method, uri, OrthancError.of(name, details), **extra)


def exception_parts(exc) -> tuple[int, str]:
    """(code, description) of an orthanc.OrthancException (Orthanc 1.10 gives plugins these,
    not the details)."""
    code, message = (tuple(exc.args) + (-1, ""))[:2]
    return int(code), str(message)


def answer_orthanc_exception(output, uri: str, method: str, exc) -> None:
    """Orthanc's error, as its own route answers it."""
    answer_error(output, method, uri, OrthancError(*exception_parts(exc)))


def passthrough_post(output, uri: str, body: bytes) -> None:
    """Let Orthanc's own route answer (a plugin's RestApiPost reaches the core route)."""
    try:
        answer = orthanc.RestApiPost(uri, body)
    except orthanc.OrthancException as exc:
        return answer_orthanc_exception(output, uri, "POST", exc)
    output.AnswerBuffer(answer, JSON_TYPE)


def run_as_orthanc_job(output, uri: str, body: dict) -> None:
    """Orthanc's own synchronous job route, answered as Orthanc answers it, details included.

    Orthanc runs a synchronous request as a job and waits for it (SubmitAndWait); through the
    SDK a plugin would get only the code of a failure. The same job is submitted
    asynchronously here and waited for: its content, or its error code, description and
    details, make exactly the answer Orthanc would have given."""
    try:
        job = orthanc_job(uri, body)
    except orthanc.OrthancException as exc:
        return answer_orthanc_exception(output, uri, "POST", exc)
    if job["State"] == "Success":
        return answer_json(output, job.get("Content", {}))
    error = OrthancError(int(job["ErrorCode"]), job["ErrorDescription"], job.get("ErrorDetails") or None)
    return answer_error(output, "POST", uri, error)


def orthanc_job(uri: str, body: dict, post=None) -> dict:
    """Submit Orthanc's job route ``uri`` asynchronously and wait for the job to end: its
    description (State Success or Failure). Waiting here, not in a synchronous call, leaves
    the interpreter to the plugin's other threads (plugin API 4.0 keeps the GIL during a
    call into Orthanc): a long send does not stop the forward leases from being renewed."""
    body = {k: v for k, v in body.items() if k != "Synchronous"}
    # ``post``: orthanc.RestApiPostAfterPlugins for another plugin's job route (DICOMweb's)
    submitted = json.loads((post or orthanc.RestApiPost)(uri, json.dumps({**body, "Asynchronous": True})))
    delay = 0.002
    while True:
        job = json.loads(orthanc.RestApiGet(f"/jobs/{submitted['ID']}"))
        if job["State"] in ("Success", "Failure"):
            return job
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def guarded_route(what: str, consequence: str):
    """A REST callback that answers an Orthanc-shaped 500 (saying what did not happen) when
    the handler fails, rather than whatever Orthanc makes of a Python exception."""

    def decorate(handler):
        @functools.wraps(handler)
        def route(output, uri, **request):
            try:
                return handler(output, uri, request)
            except Exception:
                log_failure(f"{what} error")
                return answer_error(output, request.get("method", "POST"), uri,
                                    OrthancError(-1, "Internal error",
                                                 f"Internal error in the coercion plugin; {consequence}"))

        return route

    return decorate
