"""The program's keys: private keys of the servers it holds, public keys of every server, unwrapped key records.

Private keys: the custodial `default` one from `GET /root`, plus the BYOK servers' keys the
program was given. Public keys: the user's servers (the root) and the platform's (`GET
/server`, read on first need: publishing encrypts for the platform's current server).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto
from .errors import CANNOT_DECRYPT, INVALID_RESPONSE, TelentirError
from .transport import Transport

# Records the client made carry this metadata, so that the key of an object it replaced or
# deleted can be deleted too (no other key is ever deleted). The console marks its own the same
# way (`createdBy: "telentir-console"`); those are retired on the same terms.
CREATED_BY = "telentir-client-python"
RETIRABLE_CREATORS = frozenset({CREATED_BY, "telentir-console"})
PUBLISH_PURPOSE = "publish"
CACHE_LIMIT = 10_000  # unwrapped key records kept (32-byte keys: a few hundred KiB at most)
PREFETCH_THREADS = 8  # single key reads at once, where the batch read is missing (requests pools 10 connections)
KEYS_PER_READ = 100  # the most ids `GET /keys?ids=` takes


@dataclass(frozen=True)
class OpenKey:
    """A key record with its AES key unwrapped."""

    id: str
    server: str
    aes_key: bytes
    iv: bytes
    metadata: dict[str, Any]

    @property
    def retirable(self) -> bool:
        """Made by this client (or the console) for one object: delete it when that object lets go of it."""
        return self.metadata.get("createdBy") in RETIRABLE_CREATORS


class Keyring:
    """Unwrap key records and seal values for servers, for one user."""

    def __init__(
        self, transport: Transport, root: Mapping[str, Any], private_keys: Mapping[str, crypto.PrivateKeyText]
    ) -> None:
        self.transport = transport
        self.servers: dict[str, dict[str, Any]] = {name.lower(): dict(s) for name, s in root["servers"].items()}
        self.private: dict[str, rsa.RSAPrivateKey] = {}
        self.public: dict[str, rsa.RSAPublicKey] = {}
        self.platform_current: str | None = None
        self._cache: OrderedDict[str, OpenKey] = OrderedDict()
        self._batch_reads = True  # until the server answers GET /keys?ids= with an error
        self._lock = threading.Lock()
        custodial = self.servers.get("default", {}).get("privateKey")
        if not isinstance(custodial, str):
            raise TelentirError(200, INVALID_RESPONSE, "GET /root carries no private key of the default server.")
        self.private["default"] = crypto.load_private_key(custodial)
        for name, key in private_keys.items():
            self.hold(name, key)

    def hold(self, server: str, key: crypto.PrivateKeyText) -> None:
        """Use `key` for `server` (a BYOK server of the root), after checking it is that server's key pair."""
        name = server.lower()
        if name not in self.servers:
            known = ", ".join(sorted(self.servers))
            raise ValueError(f"private_keys: the user has no server named {server!r} (their servers: {known}).")
        try:
            private_key = crypto.load_private_key(key)
        except ValueError as exc:
            raise ValueError(f"private_keys[{server!r}]: {exc}.") from exc
        if not crypto.same_key_pair(self.public_key(name), private_key):
            raise ValueError(f"private_keys[{server!r}] is not the private key of server {name!r}.")
        self.private[name] = private_key

    def public_key(self, server: str) -> rsa.RSAPublicKey:
        """The public key of one of the user's servers or of a platform server."""
        name = server.lower()
        if name not in self.public:
            entry = self.servers.get(name)
            if entry is None:
                self._load_platform()
                entry = self.servers.get(name)
            if entry is None:
                raise ValueError(f"No server named {server!r}: the user's servers are {', '.join(self.servers)}.")
            self.public[name] = crypto.load_public_key(entry["publicKey"])
        return self.public[name]

    def platform_server(self) -> str:
        """The name of the platform's current server (what publishing encrypts for)."""
        if self.platform_current is None:
            self._load_platform()
        assert self.platform_current is not None
        return self.platform_current

    def _load_platform(self) -> None:
        document = self.transport.json("GET", "/server")
        try:
            current, keys = str(document["current"]).lower(), document["keys"]
            for name, formats in keys.items():
                self.servers.setdefault(name.lower(), {"publicKey": formats["application/pkix-spki"], "platform": True})
        except (KeyError, TypeError, AttributeError) as exc:
            raise TelentirError(200, INVALID_RESPONSE, "GET /server did not answer the platform's keys.") from exc
        self.platform_current = current

    def open_key(self, key_id: str) -> OpenKey:
        """A key record, fetched and unwrapped once (TelentirError `cannot_decrypt` without its server's key)."""
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None:
                self._cache.move_to_end(key_id)
                return cached
        try:
            record = self.transport.json("GET", f"/keys/{key_id}")
        except TelentirError as exc:
            if exc.status == 404:
                raise TelentirError(0, CANNOT_DECRYPT, f"The object's key {key_id} no longer exists.") from exc
            raise
        return self._remember(self._unwrap(record))

    def _remember(self, opened: OpenKey) -> OpenKey:
        """Cache an unwrapped record, the least recently used ones going past CACHE_LIMIT."""
        with self._lock:
            self._cache[opened.id] = opened
            while len(self._cache) > CACHE_LIMIT:
                self._cache.popitem(last=False)
        return opened

    def prefetch(self, key_ids: Iterable[str]) -> None:
        """Fetch and unwrap the key records not cached yet, up to 100 in one request.

        Every item written by this client or the console has a key of its own, so reading a
        page of items is a page of key reads: `GET /keys?ids=` answers them in one round trip.
        A server without that read (the hosted service: 405) gets them in parallel single
        reads. A key that fails here fails again, with its reason, when its item is opened.
        """
        with self._lock:
            missing = list(dict.fromkeys(key_id for key_id in key_ids if key_id not in self._cache))
        if len(missing) < 2:
            return
        if self._batch_reads:
            try:
                for start in range(0, len(missing), KEYS_PER_READ):
                    self._read_batch(missing[start : start + KEYS_PER_READ])
                return
            except TelentirError as exc:
                if exc.status not in (400, 404, 405):
                    return  # the server refused or failed: each item's own key read says why
                self._batch_reads = False  # a server that does not know the batch read (or this id form)
        with ThreadPoolExecutor(max_workers=min(PREFETCH_THREADS, len(missing))) as pool:
            for future in [pool.submit(self.open_key, key_id) for key_id in missing]:
                try:
                    future.result()
                except TelentirError:
                    pass

    def _read_batch(self, key_ids: list[str]) -> None:
        """Cache the unwrappable records among `key_ids`, read in one request (absent ones are left out)."""
        records = self.transport.json("GET", "/keys", params={"ids": ",".join(key_ids)})
        if not isinstance(records, list):
            raise TelentirError(200, INVALID_RESPONSE, "GET /keys?ids= did not answer a list of key records.")
        for record in records:
            try:
                self._remember(self._unwrap(record))
            except TelentirError:
                continue  # no private key for its server: open_key says so when the item is opened

    def _unwrap(self, record: Mapping[str, Any]) -> OpenKey:
        server = str(record["server"]).lower()
        private_key = self.private.get(server)
        if private_key is None:
            raise TelentirError(
                0,
                CANNOT_DECRYPT,
                f"Key {record['id']} is wrapped for server {server!r}, whose private key this program does not hold "
                "(pass it in private_keys).",
            )
        aes_key = crypto.unwrap(private_key, bytes.fromhex(record["key"]))
        return OpenKey(record["id"], server, aes_key, bytes.fromhex(record["iv"]), dict(record.get("metadata") or {}))

    def forget(self, key_id: str) -> None:
        """Drop a cached key record (it was deleted)."""
        with self._lock:
            self._cache.pop(key_id, None)

    def open_object(self, record: Mapping[str, Any]) -> Any:
        """The decrypted JSON value of an object record (or an `object_created` payload)."""
        if record.get("content") is None:
            raise TelentirError(0, CANNOT_DECRYPT, f"The content of {record.get('id')} is gone.")
        key = self.open_key(record["key_id"])
        content, tag = bytes.fromhex(record["content"]), bytes.fromhex(record["auth_tag"])
        return crypto.open_sealed(key.aes_key, key.iv, content, tag)

    def seal(self, server: str, value: Any, metadata: Mapping[str, Any] | None = None) -> tuple[str, crypto.Sealed]:
        """Encrypt `value` for `server` under a fresh key; the new key record's id and the sealed value.

        Only the wrapped key and the IV are sent (`POST /keys`); the raw AES key never leaves here.
        """
        sealed = crypto.seal(self.public_key(server), value)
        body = {
            "server": server.lower(),
            "key": sealed.wrapped_key.hex(),
            "iv": sealed.iv.hex(),
            "metadata": {"createdBy": CREATED_BY, **(metadata or {})},
        }
        record = self.transport.json("POST", "/keys", body)
        return record["id"], sealed

    def retire(self, key_id: str) -> None:
        """Delete a key record no object uses any more (one this client or the console made), best effort.

        It runs after a write succeeded, or after one failed: either way the caller's outcome is
        the write's, so a failure here is not raised. What it leaves is an unused key record
        (wrapped key material of no object), which `GET /keys/{id}` can still show and delete.
        """
        self.forget(key_id)
        try:
            self.transport.request("DELETE", f"/keys/{key_id}")
        except TelentirError:
            pass  # gone already (404), a store's default key (409), or the server is unreachable
