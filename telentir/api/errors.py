"""The one JSON error handler: domain errors, Flask's own HTTP errors, and the unexpected."""

from __future__ import annotations

import errno
import logging

from flask import Flask, Response, jsonify
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException

from ..errors import ApiError, InsufficientStorage, error_body

log = logging.getLogger("telentir.api")

_HTTP_CODES = {
    400: ("invalid_request", "The request is malformed."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
}


def register_error_handlers(app: Flask) -> None:
    """Make every failure answer `{"error", "message"}` with the right status."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ParseException, _malformed_body)
    app.register_error_handler(NoMoreData, _malformed_body)
    app.register_error_handler(Exception, _unexpected_error)


def _api_error(exc: ApiError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code, message = _HTTP_CODES.get(status, (_snake(exc.name), exc.description or exc.name))
    response = jsonify(error_body(code, message))
    response.status_code = status
    valid_methods = getattr(exc, "valid_methods", None)
    if valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def _malformed_body(exc: Exception) -> Response:
    # gunicorn parses a chunked body while the app reads it, so a malformed chunk (or a body
    # cut short) is raised inside the view: the client's fault, not ours. gunicorn closes the
    # connection afterwards, since where the next request would start is unknown.
    response = jsonify(error_body("invalid_request", f"The request body is malformed: {str(exc)[:200]}."))
    response.status_code = 400
    return response


def _unexpected_error(exc: Exception) -> Response:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # A full disk met outside the storage layer's mapping: still the operator's 507, not our 500.
        log.warning("no space left on device: %s", exc)
        return _api_error(InsufficientStorage("writing to disk", str(exc)))
    # Details go to the log only; the client learns nothing about our internals.
    log.exception("unhandled error")
    response = jsonify(error_body("internal_error", "Something went wrong on our side; try again later."))
    response.status_code = 500
    return response


def _snake(name: str) -> str:
    return "_".join(name.lower().replace("'", "").split())
