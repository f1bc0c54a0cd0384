"""Client-side helpers for the data-plane acceptance tests.

The cryptography here is written against `cryptography` directly (not telentir.crypto), the
way an independent client would, so the tests prove interoperability with the wire format:
RSA-OAEP (SHA-256, MGF1-SHA-256) key wrapping, AES-256-GCM with the 16-byte tag kept apart,
SPKI / PKCS#8 DER as base64url.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from requests.structures import CaseInsensitiveDict

from telentir.runtime import Runtime
from telentir.streaming.feed import SELECT_EVENTS, sent_payload

from .support import Api

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
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
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
OBJ_ID = re.compile(r"obj_[A-Za-z0-9]{22}")
KEY_ID = re.compile(r"key_[A-Za-z0-9]{22}")
OBJECT_FIELDS = {
    "id",
    "user_id",
    "key_id",
    "content",
    "auth_tag",
    "related_object_id",
    "metadata",
    "created_at",
    "updated_at",
    "keyId",
    "authTag",
    "relatedId",
}
KEY_FIELDS = {"id", "user_id", "server", "key", "iv", "metadata", "created_at", "updated_at", "deprecated"}


# --- encodings and keys ---------------------------------------------------------------


def b64(data: bytes) -> str:
    """Standard base64 with padding (what the documented client sends)."""
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A local RSA keypair."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def spki(public_key: Any) -> str:
    """A public key as base64url SPKI DER."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64url(der)


def load_private(text: str) -> rsa.RSAPrivateKey:
    """A base64url PKCS#8 private key."""
    key = serialization.load_der_private_key(unb64url(text), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_public(text: str) -> rsa.RSAPublicKey:
    """A base64url SPKI public key."""
    key = serialization.load_der_public_key(unb64url(text))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def wrap(public_key: rsa.RSAPublicKey, raw: bytes) -> bytes:
    """RSA-OAEP SHA-256 wrap."""
    return public_key.encrypt(raw, OAEP)


def unwrap(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """RSA-OAEP SHA-256 unwrap (ValueError when it was wrapped for someone else)."""
    return private_key.decrypt(wrapped, OAEP)


def encrypt(aes: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """AES-GCM: (ciphertext, 16-byte tag)."""
    sealed = AESGCM(aes).encrypt(iv, plaintext, None)
    return sealed[:-16], sealed[-16:]


def decrypt(aes: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """AES-GCM decrypt with a separate tag."""
    return AESGCM(aes).decrypt(iv, ciphertext + tag, None)


def ghost_id(prefix: str) -> str:
    """A well-formed id that nobody has."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "_" + "".join(secrets.choice(alphabet) for _ in range(22))


# --- a user's vault: root, keys, objects ----------------------------------------------


@dataclass
class LocalKey:
    """A key the client knows in the clear, with its server-side id."""

    id: str
    aes: bytes
    iv: bytes


@dataclass
class Vault:
    """One user's view of the data plane: the Api client, the root and the custodial private key."""

    api: Api
    user: dict[str, Any]
    root: dict[str, Any] = field(init=False)
    private_key: rsa.RSAPrivateKey = field(init=False)

    def __post_init__(self) -> None:
        resp = self.api.get("/root")
        assert resp.status_code == 200, resp.text
        self.root = resp.json()
        self.private_key = load_private(self.root["servers"]["default"]["privateKey"])

    def store(self, name: str = "contacts") -> str:
        """The store object id."""
        return self.root["stores"][name]["id"]

    def default_key(self, name: str = "contacts") -> str:
        """The store's default key id."""
        return self.root["stores"][name]["defaultKey"]

    def new_key(self) -> LocalKey:
        """A fresh AES key wrapped locally for `default` and registered the SDK way (POST, hex)."""
        aes, iv = os.urandom(32), os.urandom(12)
        wrapped = wrap(load_public(self.root["servers"]["default"]["publicKey"]), aes)
        resp = self.api.post("/keys", json={"server": "default", "key": wrapped.hex(), "iv": iv.hex()})
        assert resp.status_code == 201, resp.text
        return LocalKey(resp.json()["id"], aes, iv)

    def put(self, key: LocalKey, plaintext: bytes, related: str | None = None, **extra: Any) -> dict[str, Any]:
        """Encrypt and create an object (hex, SDK spelling); the record."""
        ciphertext, tag = encrypt(key.aes, key.iv, plaintext)
        body = {"key_id": key.id, "content": ciphertext.hex(), "auth_tag": tag.hex(), **extra}
        if related is not None:
            body["related_object_id"] = related
        resp = self.api.post("/objects", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def read(self, key: LocalKey, object_id: str) -> bytes:
        """GET an object and decrypt it."""
        resp = self.api.get(f"/objects/{object_id}")
        assert resp.status_code == 200, resp.text
        record = resp.json()
        return decrypt(key.aes, key.iv, bytes.fromhex(record["content"]), bytes.fromhex(record["auth_tag"]))

    def related_ids(self, parent: str) -> list[str]:
        """Ids of the parent's children, in listing order."""
        resp = self.api.get(f"/objects/{parent}/related")
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]


# --- database views (through the live runtime) ----------------------------------------


def counts(rt: Runtime, user_id: str) -> dict[str, int]:
    """Rows the user owns in every data-plane table, and the number of files no row names (global)."""
    tables = ("objects", "keys", "events", "publications", "servers", "stores")
    found = {t: rt.db.query_one(f"SELECT count(*) FROM {t} WHERE user_id = ?", (user_id,))[0] for t in tables}
    return found | {"orphan_files": len(orphan_files(rt))}


def events_after(rt: Runtime, user_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The user's event rows with id > after, oldest first, payload as streams send it (parsed)."""
    rows = rt.db.query(f"{SELECT_EVENTS} WHERE e.user_id = ? AND e.id > ? ORDER BY e.id", (user_id, after))
    return [
        {
            "id": r["id"],
            "type": r["type"],
            "channel": r["channel"],
            "payload": sent_payload(rt, r["type"], r["payload"], r["content"])[0],
        }
        for r in rows
    ]


def orphan_files(rt: Runtime) -> set[str]:
    """Files in the blob folder that no object row names (none may exist while no request is in flight)."""
    referenced = {r["blob"] for r in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
    return set(rt.blobs.list_names()) - referenced


def blob_exists(rt: Runtime, blob_id: str) -> bool:
    """Whether the blob store (a folder or a bucket) still holds this blob."""
    try:
        rt.blobs.read(blob_id)
    except FileNotFoundError:
        return False
    return True


def last_event_id(rt: Runtime, user_id: str) -> int:
    """The user's newest event id (0 when none)."""
    return rt.db.query_one("SELECT coalesce(max(id), 0) FROM events WHERE user_id = ?", (user_id,))[0]


# --- raw HTTP (no client-side path normalization) -------------------------------------


def raw_request(
    base_url: str,
    method: str,
    target: str,
    credential: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """Send `target` byte for byte (requests/urllib3 would resolve `..`); a requests.Response back."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        sent = dict(headers or {})
        if credential:
            sent["Authorization"] = f"Bearer {credential}"
        conn.request(method, target, body=body, headers=sent)
        raw = conn.getresponse()
        response = requests.Response()
        response.status_code = raw.status
        response.headers = CaseInsensitiveDict(raw.getheaders())
        response._content = raw.read()
        response.encoding = "utf-8"
        return response
    finally:
        conn.close()


# Spec §6: the fields of each event type's payload.
PAYLOAD_FIELDS = {
    "key_created": {"key_id", "user_id", "created_at"},
    "key_deleted": {"key_id", "user_id", "deleted_at"},
    "object_created": {
        "id",
        "user_id",
        "metadata",
        "key_id",
        "related_object_id",
        "content",
        "auth_tag",
        "created_at",
        "updated_at",
    },
    "object_updated": {"object_id", "key_id", "user_id", "updated_at"},
    "object_deleted": {"object_id", "user_id", "deleted_at"},
    "publish": {"user_id", "type", "related_id", "object_id", "timestamp"},
    "unpublish": {"user_id", "type", "related_id", "timestamp"},
}
