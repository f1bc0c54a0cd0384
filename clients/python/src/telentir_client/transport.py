"""HTTP to one Telentir API with one credential: JSON in and out, every failure a TelentirError."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import requests

from .errors import INVALID_RESPONSE, NETWORK, TelentirError
from .version import __version__

# (connect, read) seconds. Reads of ordinary answers are short; ingestion jobs and event
# streams pass their own.
Timeout = float | tuple[float, float | None] | None
DEFAULT_TIMEOUT: Timeout = (10.0, 60.0)


class Transport:
    """requests against `api` (the `/api` base URL) with `Authorization: Bearer <api_key>`."""

    def __init__(self, api: str, api_key: str, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers["User-Agent"] = f"telentir-client-python/{__version__}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: Timeout | Literal["default"] = "default",
    ) -> requests.Response:
        """Send one request to `api` + `path`; the response if it is 2xx, else TelentirError."""
        try:
            response = self.session.request(
                method,
                self.api + path,
                data=None if body is None else json.dumps(body, separators=(",", ":")),
                headers={**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})},
                params=params,
                stream=stream,
                timeout=self.timeout if isinstance(timeout, str) else timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TelentirError(0, NETWORK, f"{method} {path}: the server cannot be reached ({exc}).") from exc
        if response.status_code >= 300:
            raise error_of(response)
        return response

    def json(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        """The JSON answer of one request (None for an empty one, as a 204 is)."""
        response = self.request(method, path, body, params)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TelentirError(
                response.status_code, INVALID_RESPONSE, f"{method} {path} answered something that is not JSON."
            ) from exc

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()


def error_of(response: requests.Response) -> TelentirError:
    """The TelentirError for a non-2xx answer: its `error` and `message`, or the HTTP reason if it is not JSON."""
    code, message = "http_error", response.reason or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        message = str(body.get("message") or message)
    retry_after: float | None = None
    try:
        retry_after = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        pass
    response.close()
    return TelentirError(response.status_code, code, message, retry_after)
