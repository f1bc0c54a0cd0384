"""`Telentir`: one user's data plane, as the TypeScript SDK shapes it (repositories, events, credits, billing)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, overload

from . import crypto
from .errors import INVALID_RESPONSE, TelentirError
from .events import EventStream
from .keyring import Keyring
from .stores import StoreRepository
from .transport import DEFAULT_TIMEOUT, Timeout, Transport

if TYPE_CHECKING:
    from types import TracebackType

DEFAULT_API = "http://127.0.0.1:8000/api"  # `make run`'s server
API_KEY_VARIABLE, API_VARIABLE = "TELENTIR_API_KEY", "TELENTIR_API"
STORES = (
    "contacts",
    "calls",
    "agents",
    "tasks",
    "conversational-pathways",
    "campaigns",
    "sms-messages",
    "performance-metrics",
)
# Python names of the stores whose wire name is not one (and the SDK's `pathways`).
ALIASES = {"pathways": "conversational-pathways", "sms_messages": "sms-messages"}
RUNNING_JOB = frozenset({"reserving", "running"})
JOB_POLL_SECONDS = 0.5


def store_name(name: str) -> str:
    """The wire name of a store: `contacts`, `conversational-pathways`, … (Python spellings accepted)."""
    lowered = name.strip().lower()
    return ALIASES.get(lowered, lowered.replace("_", "-"))


class _Open(Protocol):
    def __call__(
        self,
        api_key: str | None = None,
        api: str | None = None,
        private_keys: Mapping[str, crypto.PrivateKeyText] | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> Telentir: ...


class _RunJob(Protocol):
    def __call__(
        self, repository: str, path: str, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]: ...


class _ConnectName:
    """`Telentir.connect(...)` opens a client; `client.connect(repository, path, params)` runs an ingestion job.

    The SDK uses the one name for both; a descriptor lets Python do the same.
    """

    @overload
    def __get__(self, instance: None, owner: type[Telentir]) -> _Open: ...

    @overload
    def __get__(self, instance: Telentir, owner: type[Telentir] | None = None) -> _RunJob: ...

    def __get__(self, instance: Telentir | None, owner: type[Telentir] | None = None) -> _Open | _RunJob:
        if instance is None:
            assert owner is not None
            return owner.open
        return instance.run_job


class Credits:
    """The prepaid balance (`GET /credits`)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def get_balance(self) -> dict[str, Any]:
        """`{"amount": <minor units, e.g. cents>, "currency": "usd"}`."""
        balance: dict[str, Any] = self._transport.json("GET", "/credits")
        return balance


class Billing:
    """Plan, usage and balance (`GET /billing/state`)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def get_state(self) -> dict[str, Any]:
        """`{"plan", "usage", "hasCard", "balance", "paymentFailure"}` as docs/protocol.md §7 describes."""
        state: dict[str, Any] = self._transport.json("GET", "/billing/state")
        return state


class Events:
    """The user's event streams."""

    def __init__(self, transport: Transport, keyring: Keyring) -> None:
        self._transport, self._keyring = transport, keyring

    def listen(
        self,
        type: str,
        filter: Mapping[str, str] | None = None,
        last_event_id: int | str | None = None,
        reconnect: bool = True,
    ) -> EventStream:
        """Open the stream of one event type (`object_created`, …) now; iterate it for the events after this moment.

        `filter` holds the type's camelCase filters (`{"relatedId": store.id}`). `object_created`
        events come as the decrypted object with `"id"` (see `Event`). `last_event_id` resumes
        after an event id a previous stream gave. Dropped connections are resumed by themselves.
        """
        return EventStream(self._transport, self._keyring, type, filter, last_event_id, reconnect)


class Telentir:
    """One user's Telentir data plane. Make one with `Telentir.connect(api_key=..., api=...)`."""

    connect = _ConnectName()

    def __init__(self, transport: Transport, root: Mapping[str, Any], keyring: Keyring) -> None:
        self._transport = transport
        self.root = dict(root)
        self.keyring = keyring
        self.credits = Credits(transport)
        self.billing = Billing(transport)
        self.events = Events(transport, keyring)
        self._stores: dict[str, StoreRepository] = {}

    @classmethod
    def open(
        cls,
        api_key: str | None = None,
        api: str | None = None,
        private_keys: Mapping[str, crypto.PrivateKeyText] | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> Telentir:
        """Read the user's root and private keys; `Telentir.connect` is this.

        `api_key` defaults to `$TELENTIR_API_KEY`, `api` (the server's `/api` URL) to `$TELENTIR_API`
        or `http://127.0.0.1:8000/api`. `private_keys` maps the names of BYOK servers to their private
        keys (PEM, or base64 PKCS#8 DER) held by this program. Bad credentials: TelentirError 401.
        The server's own URL (without `/api`) works too.
        """
        key = api_key or os.environ.get(API_KEY_VARIABLE, "")
        if not key:
            raise TelentirError(401, "unauthorized", f"No API key: pass api_key= or set {API_KEY_VARIABLE}.")
        transport = Transport(api or os.environ.get(API_VARIABLE) or DEFAULT_API, key, timeout)
        try:
            root = _read_root(transport)
            if not isinstance(root, dict) or not isinstance(root.get("stores"), dict):
                raise TelentirError(200, INVALID_RESPONSE, "GET /root did not answer a root.")
            keyring = Keyring(transport, root, private_keys or {})
        except BaseException:
            transport.close()
            raise
        return cls(transport, root, keyring)

    # --- stores --------------------------------------------------------------------------------

    def store(self, name: str) -> StoreRepository:
        """A store by name (`tasks`, `conversational-pathways`, or `pathways`, `sms_messages`)."""
        wire = store_name(name)
        if wire not in self._stores:
            entry = self.root["stores"].get(wire)
            if entry is None:
                known = ", ".join(self.root["stores"])
                raise TelentirError(404, "not_found", f"There is no store named {name!r}; the stores are {known}.")
            self._stores[wire] = StoreRepository(self._transport, self.keyring, wire, entry)
        return self._stores[wire]

    @property
    def contacts(self) -> StoreRepository:
        """The `contacts` store."""
        return self.store("contacts")

    @property
    def calls(self) -> StoreRepository:
        """The `calls` store."""
        return self.store("calls")

    @property
    def agents(self) -> StoreRepository:
        """The `agents` store."""
        return self.store("agents")

    @property
    def tasks(self) -> StoreRepository:
        """The `tasks` store."""
        return self.store("tasks")

    @property
    def campaigns(self) -> StoreRepository:
        """The `campaigns` store."""
        return self.store("campaigns")

    @property
    def pathways(self) -> StoreRepository:
        """The `conversational-pathways` store."""
        return self.store("conversational-pathways")

    @property
    def sms_messages(self) -> StoreRepository:
        """The `sms-messages` store."""
        return self.store("sms-messages")

    @property
    def performance_metrics(self) -> StoreRepository:
        """The `performance-metrics` store."""
        return self.store("performance-metrics")

    # --- ingestion -----------------------------------------------------------------------------

    def run_job(
        self, repository: str, path: str, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run an ingestion job (`POST /connect`) to its end; the job's summary (`GET /connect/jobs/{id}`).

        `client.connect(repository, path, params)` is this. The server answers when the job has
        ended, so this waits as long as the job runs (`timeout` seconds at most, if given).
        A job that failed is still a summary (`status`, `error`), not an exception.
        """
        body = {"repository": store_name(repository), "path": path, "params": dict(params or {})}
        # The read timeout is the job's: the answer comes when the job has ended.
        response = self._transport.request("POST", "/connect", body, timeout=(10.0, timeout))
        job_id = response.headers.get("X-Connect-Job")
        if not job_id:
            raise TelentirError(response.status_code, INVALID_RESPONSE, "POST /connect did not name its job.")
        return self.job(job_id, wait=True)

    def job(self, job_id: str, wait: bool = False) -> dict[str, Any]:
        """An ingestion job's summary; with `wait`, once it is no longer running."""
        while True:
            summary: dict[str, Any] = self._transport.json("GET", f"/connect/jobs/{job_id}")
            if not wait or summary.get("status") not in RUNNING_JOB:
                return summary
            time.sleep(JOB_POLL_SECONDS)

    # --- the rest ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        """Any other route of the API (`path` under `/api`), authenticated; its JSON answer."""
        return self._transport.json(method, path, body, params)

    def close(self) -> None:
        """Release the connections."""
        self._transport.close()

    def __enter__(self) -> Telentir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_root(transport: Transport) -> Any:
    """`GET /root`; given the server's URL rather than its `/api` URL, the root is found under `/api`."""
    try:
        return transport.json("GET", "/root")
    except TelentirError as exc:
        if exc.status != 404 or transport.api.endswith("/api"):
            raise
    transport.api += "/api"
    return transport.json("GET", "/root")
