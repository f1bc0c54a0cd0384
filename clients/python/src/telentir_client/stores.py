"""A store's items as Python dicts: read decrypted, written encrypted under a fresh key every time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import TelentirError
from .keyring import PUBLISH_PURPOSE, RETIRABLE_CREATORS, Keyring

if TYPE_CHECKING:
    from .transport import Transport

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000  # the server's bound on `limit`


def item_of(object_id: str, value: Any) -> dict[str, Any]:
    """The dict a read gives: the decrypted object with `"id"` added (a value that is not an object under `"value"`)."""
    if isinstance(value, dict):
        return {**value, "id": object_id}
    return {"value": value, "id": object_id}


def payload_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What is encrypted for a write: the payload without `"id"` (the object's own id is added on reading)."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"a payload is a dict of JSON values, not {type(payload).__name__}")
    return {key: value for key, value in payload.items() if key != "id"}


class StoreRepository:
    """One of the user's stores (`contacts`, `tasks`, …): the items are the objects related to the store object."""

    def __init__(self, transport: Transport, keyring: Keyring, name: str, store: Mapping[str, Any]) -> None:
        self.transport = transport
        self.keyring = keyring
        self.name = name
        self.id: str = store["id"]
        self.default_key: str = store["defaultKey"]

    def __repr__(self) -> str:
        return f"<StoreRepository {self.name} {self.id}>"

    # --- reading -------------------------------------------------------------------------------

    def all(self) -> list[dict[str, Any]]:
        """Every item of the store, decrypted, oldest first (one request; `iter()` for large stores)."""
        records = self.transport.json("GET", f"/objects/{self.id}/related")
        return self._open_all(records)

    def iter(self, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every item, decrypted, oldest first, read `page_size` at a time (1 to 1000): memory stays flat."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size is 1 to {MAX_PAGE_SIZE}, not {page_size}")
        after: str | None = None
        while True:
            params = {"limit": str(page_size), **({"after": after} if after else {})}
            response = self.transport.request("GET", f"/objects/{self.id}/related", params=params)
            yield from self._open_all(response.json())
            after = response.headers.get("X-Next-Cursor")
            if not after:
                return

    def get(self, id: str) -> dict[str, Any]:
        """One item, decrypted, with `"id"` added; TelentirError 404 `not_found` if it is not an item of this store."""
        return self._open(self._record(id))

    # --- writing -------------------------------------------------------------------------------

    def create(
        self, payload: Mapping[str, Any], server: str = "default", metadata: Mapping[str, Any] | None = None
    ) -> str:
        """Encrypt `payload` for `server` (the custodial `default`, or a BYOK server) and add it; its id.

        `metadata` is stored in the clear beside the ciphertext: never put secrets there.
        """
        key_id, sealed = self.keyring.seal(server, payload_of(payload))
        body: dict[str, Any] = {
            "keyId": key_id,
            "content": sealed.content.hex(),
            "authTag": sealed.tag.hex(),
            "relatedId": self.id,
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        try:
            record = self.transport.json("POST", "/objects", body)
        except TelentirError:
            self.keyring.retire(key_id)  # the write failed: its key is nobody's
            raise
        return str(record["id"])

    def update(self, id: str, payload: Mapping[str, Any], server: str | None = None) -> None:
        """Replace an item's content: encrypted under a fresh key, sent with that key in one PATCH.

        The item stays encrypted for the server its key was for (unless `server` says another,
        or that server is deprecated: then `default`); a key this client or the console made
        for the old content is deleted afterwards.
        """
        record = self._record(id)
        old = self._old_key(record["key_id"])
        target = server or self._server_for_update(old)
        key_id, sealed = self.keyring.seal(target, payload_of(payload))
        body = {"keyId": key_id, "content": sealed.content.hex(), "authTag": sealed.tag.hex()}
        try:
            self.transport.json("PATCH", f"/objects/{id}", body)
        except TelentirError:
            self.keyring.retire(key_id)
            raise
        if old and old["id"] != key_id and _retirable(old):
            self.keyring.retire(old["id"])

    def delete(self, id: str) -> None:
        """Delete an item with the objects under it (its published copies), and the keys made for them.

        Keys this client or the console made are deleted; others (a store's default key, the
        SDK's) stay.
        """
        record = self._record(id)
        keys = [record["key_id"], *(child["key_id"] for child in self._children(id))]
        self.transport.request("DELETE", f"/objects/{id}", params={"cascade": "true"})
        for key_id in keys:
            self._retire_if_ours(key_id)

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, id: str) -> str:
        """Publish an item for the platform, as the SDK does; the id of the published copy.

        The item is re-encrypted for the platform's current server (the platform can read what
        is published, nothing else) as a copy under the item, and the copy is published as the
        item under this store's type. A copy published earlier is deleted.
        """
        record = self._record(id)
        value = self.keyring.open_object(record)
        platform = self.keyring.platform_server()
        key_id, sealed = self.keyring.seal(platform, value, {"purpose": PUBLISH_PURPOSE})
        body = {
            "keyId": key_id,
            "content": sealed.content.hex(),
            "authTag": sealed.tag.hex(),
            "relatedId": id,
            "metadata": record.get("metadata") or {},
        }
        try:
            copy = self.transport.json("POST", "/objects", body)
            self.transport.json("PUT", self._publication(id), {"objectId": copy["id"]})
        except TelentirError:
            self.keyring.retire(key_id)
            raise
        self._drop_copies(id, keep=copy["id"])
        return str(copy["id"])

    def unpublish(self, id: str) -> None:
        """Withdraw an item's publication (TelentirError 404 if it is not published) and delete the published copy."""
        self.transport.request("DELETE", self._publication(id))
        self._drop_copies(id)

    # --- helpers -------------------------------------------------------------------------------

    def _publication(self, id: str) -> str:
        return f"/objects/publish/{quote(self.name, safe='')}/{quote(id, safe='')}"

    def _record(self, id: str) -> dict[str, Any]:
        """The object record of an item of this store; 404 `not_found` for anything else."""
        record: dict[str, Any] = self.transport.json("GET", f"/objects/{quote(id, safe='')}")
        if record.get("related_object_id") != self.id:
            raise TelentirError(404, "not_found", f"{id} is not an item of the {self.name} store.")
        return record

    def _open_all(self, records: list[dict[str, Any]], batch: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """Decrypt records, their key records fetched in parallel a batch at a time."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            self.keyring.prefetch(record["key_id"] for record in chunk)
            items.extend(self._open(record) for record in chunk)
        return items

    def _open(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return item_of(record["id"], self.keyring.open_object(record))

    def _children(self, id: str) -> list[dict[str, Any]]:
        children: list[dict[str, Any]] = self.transport.json("GET", f"/objects/{id}/related")
        return children

    def _server_for_update(self, old: Mapping[str, Any] | None) -> str:
        """The server an item's new content is sealed for: its old key's, if that is a live server of the user."""
        name = str(old["server"]).lower() if old else "default"
        entry = self.keyring.servers.get(name)
        if entry is None or entry.get("deprecated") or entry.get("platform"):
            return "default"
        return name

    def _old_key(self, key_id: str) -> dict[str, Any] | None:
        """A key record, or None if it is gone."""
        try:
            record: dict[str, Any] = self.transport.json("GET", f"/keys/{key_id}")
        except TelentirError as exc:
            if exc.status == 404:
                return None
            raise
        return record

    def _retire_if_ours(self, key_id: str) -> None:
        """Delete a key no object uses now, if this client or the console made it (best effort, as `retire`)."""
        try:
            key = self._old_key(key_id)
        except TelentirError:
            return
        if key and _retirable(key):
            self.keyring.retire(key_id)

    def _drop_copies(self, id: str, keep: str | None = None) -> None:
        """Delete the published copies under an item (objects whose key this client made to publish), but `keep`.

        Best effort, after the publication changed: what it cannot delete now stays under the item.
        """
        try:
            children = self._children(id)
        except TelentirError:
            return
        for child in children:
            if child["id"] == keep:
                continue
            try:
                key = self._old_key(child["key_id"])
                if not (key and key.get("metadata", {}).get("purpose") == PUBLISH_PURPOSE and _retirable(key)):
                    continue
                self.transport.request("DELETE", f"/objects/{child['id']}")
            except TelentirError:
                continue
            self.keyring.retire(child["key_id"])


def _retirable(key: Mapping[str, Any]) -> bool:
    """A key this client or the console made for one object."""
    return (key.get("metadata") or {}).get("createdBy") in RETIRABLE_CREATORS
