"""The one exception the client raises: what the server answered, or why there was no answer."""

from __future__ import annotations

from typing import Any

# Codes of failures that happen on this side of the wire (status 0): no HTTP answer to show.
NETWORK = "network"
CANNOT_DECRYPT = "cannot_decrypt"
INVALID_RESPONSE = "invalid_response"


class TelentirError(Exception):
    """A request failed: `status` (HTTP, or 0 when no answer came), `code` and `message`.

    For an answer of the server, `code` is its `error` field (`not_found`, `unauthorized`, …)
    and `message` its sentence; `retry_after` holds a `Retry-After` in seconds, if one came.
    Failures without an answer use status 0: `network` (the server cannot be reached),
    `cannot_decrypt` (an object whose key this program cannot unwrap or whose ciphertext does
    not authenticate), `invalid_response` (an answer that is not what the protocol says).
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable with its fields (exceptions cross process boundaries in pools)."""
        return (type(self), (self.status, self.code, self.message, self.retry_after))
