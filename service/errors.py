"""Every error leaves the service as JSON: {"error": {"code", "message", "request_id"}}.

Messages say what to fix; a 500 says only that something broke (the stack trace goes to the log,
under the request id that the client also gets).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("service.errors")

# Werkzeug's HTTP errors under stable machine-readable codes.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A request the service refuses: HTTP status, a stable code and a message saying what to fix."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "request_id": g.get("request_id", "")}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)


def _api_error(err: ApiError) -> Response:
    return error_response(err.status, err.code, err.message)


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    response = error_response(status, HTTP_CODES.get(status, f"http_{status}"), _http_message(err))
    for name, value in err.get_headers():  # keeps e.g. Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _http_message(err: HTTPException) -> str:
    path = request.path.encode("utf-8", "replace").decode("utf-8")  # never echo undecodable bytes
    if err.code == 404:
        return f"no such route: {request.method} {path} (the API is described at GET /openapi.json)"
    if err.code == 405:
        allowed = ", ".join(sorted(m for m in (err.valid_methods or []) if m not in ("HEAD", "OPTIONS")))
        return f"{request.method} is not allowed on {path}; use {allowed}"
    if err.code == 413:
        limit = request.max_content_length or 0
        return f"the request body is larger than {limit // 1024} KB: send fewer or shorter texts"
    return err.description or err.name


def _internal_error(err: Exception) -> Response:
    request_id = g.get("request_id", "")
    log.exception("unhandled error", extra={"request_id": request_id, "method": request.method, "path": request.path})
    return error_response(500, "internal_error", f"internal error; please report request id {request_id}")
