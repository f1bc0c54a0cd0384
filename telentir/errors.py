"""The error family every layer raises, and the one JSON body they all become.

    ApiError (500 internal_error)
    ├── BadRequest (400 invalid_request)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    │   └── PhoneNotVerified (403 phone_not_verified)
    ├── NotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    │   └── QuotaExceeded (413 quota_exceeded)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── RateLimited (429 rate_limited, carries retry_after seconds)
    ├── UpstreamFailed (502 upstream_failed)
    ├── ServiceUnavailable (503 service_unavailable)
    │   └── EngineUnavailable (503 service_unavailable, names the storage engine, Retry-After)
    ├── UpstreamTimeout (504 upstream_timeout)
    └── InsufficientStorage (507 insufficient_storage: the disk is full)

Services raise these without knowing about Flask; `telentir.api.errors` turns them
into responses.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base of every error that reaches a client as `{"error", "message"}`."""

    status = 500
    code = "internal_error"
    retry_after: int | None = None  # seconds; sent as Retry-After when set (429, 503)

    def __init__(
        self,
        message: str = "Something went wrong on our side.",
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_body(self.code, self.message, **self.extra)


class BadRequest(ApiError):
    status, code = 400, "invalid_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class PhoneNotVerified(Forbidden):
    code = "phone_not_verified"

    def __init__(self, message: str = "Verify your phone number before using the data plane.") -> None:
        super().__init__(message)


class NotFound(ApiError):
    status, code = 404, "not_found"

    def __init__(self, message: str = "No such resource.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class QuotaExceeded(PayloadTooLarge):
    code = "quota_exceeded"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, retry_after: int, message: str = "Too many attempts; try again later.") -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class UpstreamFailed(ApiError):
    status, code = 502, "upstream_failed"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class UpstreamTimeout(ApiError):
    status, code = 504, "upstream_timeout"


# The storage engines an EngineUnavailable names (also the values of the metric's `engine` label).
ENGINES = ("postgresql", "sqlite", "s3", "redis")
ENGINE_TITLES = {
    "postgresql": "PostgreSQL",
    "sqlite": "The SQLite database",
    "s3": "The S3 store",
    "redis": "Redis",
    "storage": "A storage engine",
}


class EngineUnavailable(ServiceUnavailable):
    """A storage engine (PostgreSQL, SQLite, S3, Redis) could not be reached: retry in a moment.

    Raised by the storage layer, which maps its driver's connection failures, timeouts and
    throttling here; `cause` is the driver's own words, for the log only (never the client).
    """

    retry_after = 2

    def __init__(
        self, engine: str = "storage", cause: str = "", *, code: str | None = None, message: str | None = None
    ) -> None:
        title = ENGINE_TITLES.get(engine, engine)
        super().__init__(message or f"{title} is unavailable right now; retry in a moment.", code=code)
        self.engine, self.cause = engine, cause


class InsufficientStorage(ApiError):
    """No space left where data is written (a full disk or quota, or below TELENTIR_MIN_FREE_BYTES).

    Nothing was written; reads and deletes keep working, and writes resume once space is freed.
    """

    status, code = 507, "insufficient_storage"

    def __init__(self, where: str = "the data folder", cause: str = "") -> None:
        super().__init__(
            f"The server has no storage space left ({where}); nothing was written. Reads and deletes still work; "
            "writes resume once the operator frees space."
        )
        self.where, self.cause = where, cause


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """Build the canonical error body; the only place its shape is defined."""
    return {"error": code, "message": message, **extra}
