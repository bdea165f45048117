"""HTTP answers of the plugin's routes, shaped like Orthanc's own where they stand in for it."""

from __future__ import annotations

import functools
import json

import orthanc

from .state import log_failure


def answer_json(output, value, status: int = 200) -> None:
    body = json.dumps(value, indent=2)
    if status == 200:
        output.AnswerBuffer(body, "application/json")
    else:
        output.SendHttpStatus(status, body, len(body.encode()))


# How Orthanc turns its error codes into HTTP statuses (the rest are 500).
_HTTP_STATUS_OF_ERROR_NAME = {
    "INEXISTENT_FILE": 404, "INEXISTENT_ITEM": 404, "INEXISTENT_TAG": 404, "UNKNOWN_RESOURCE": 404,
    "BAD_FILE_FORMAT": 400, "BAD_PARAMETER_TYPE": 400, "BAD_REQUEST": 400, "PARAMETER_OUT_OF_RANGE": 400,
    "URI_SYNTAX": 400, "UNAUTHORIZED": 401, "FORBIDDEN_ACCESS": 403, "NOT_IMPLEMENTED": 501,
}
_HTTP_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                 500: "Internal Server Error", 501: "Not Implemented"}


def orthanc_error(output, uri: str, method: str, status: int, message: str, details: str | None = None,
                   **extra) -> None:
    """An error shaped like Orthanc's own, so that clients of the core route read it alike."""
    body = {"HttpError": _HTTP_REASONS.get(status, "Error"), "HttpStatus": status, "Message": message,
            "Method": method, "Uri": uri, **extra}
    if details:
        body["Details"] = details
    text = json.dumps(body, indent=3)
    output.SendHttpStatus(status, text, len(text.encode()))


def answer_orthanc_exception(output, uri: str, method: str, exc) -> None:
    """Orthanc's error, as its own route would have answered it."""
    code, message = (exc.args + (None, ""))[:2]
    status = next((s for name, s in _HTTP_STATUS_OF_ERROR_NAME.items()
                   if getattr(orthanc.ErrorCode, name, None) == code), 500)
    # Orthanc 1.10 gives plugins the error code and message, not its details.
    orthanc_error(output, uri, method, status, str(message), OrthancError=str(message), OrthancStatus=code)


def passthrough_post(output, uri: str, body: bytes) -> None:
    """Let Orthanc's own route answer (a plugin's RestApiPost reaches the core route)."""
    try:
        answer = orthanc.RestApiPost(uri, body)
    except orthanc.OrthancException as exc:
        return answer_orthanc_exception(output, uri, "POST", exc)
    output.AnswerBuffer(answer, "application/json")


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
                return orthanc_error(output, uri, request.get("method", "POST"), 500,
                                      f"Internal error in the coercion plugin; {consequence}")

        return route

    return decorate
