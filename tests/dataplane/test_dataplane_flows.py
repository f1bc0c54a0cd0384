"""End-to-end flows against the real gunicorn server, with the client's cryptography done here.

1. the documented client (PUT, camelCase, base64), 2. the SDK (POST keys, hex, snake_case,
full records), 3. bring-your-own-key servers. Protocol: docs/protocol.md §2-§5.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..dataplane_support import (
    KEY_FIELDS,
    KEY_ID,
    OBJ_ID,
    OBJECT_FIELDS,
    STORES,
    TIMESTAMP,
    LocalKey,
    b64,
    b64url,
    decrypt,
    encrypt,
    load_private,
    load_public,
    new_rsa,
    spki,
    unwrap,
    wrap,
)
from ..support import assert_error

# --- 1. the documented flow -------------------------------------------------------------


@pytest.mark.parametrize("encode", [b64, b64url], ids=["standard-padded", "urlsafe-unpadded"])
def test_documented_flow_put_key_put_object_get_and_decrypt(vault, encode):
    api = vault.api
    resp = api.put("/keys", json={"server": "default"})
    assert resp.status_code == 201, resp.text
    key_id = resp.json()
    assert isinstance(key_id, str) and KEY_ID.fullmatch(key_id), resp.text

    record = api.get(f"/keys/{key_id}").json()
    aes = unwrap(vault.private_key, bytes.fromhex(record["key"]))
    iv = bytes.fromhex(record["iv"])
    assert (len(aes), len(iv), record["server"]) == (32, 12, "default")

    plaintext = json.dumps({"name": "Ada Lovelace", "phone": "+15555550123"}).encode()
    ciphertext, tag = encrypt(aes, iv, plaintext)
    store = vault.store("contacts")
    resp = api.put(
        "/objects", json={"keyId": key_id, "content": encode(ciphertext), "authTag": encode(tag), "relatedId": store}
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert OBJ_ID.fullmatch(created["id"]) and created["relatedId"] == store and created["keyId"] == key_id

    fetched = api.get(f"/objects/{created['id']}").json()
    assert fetched["content"] == ciphertext.hex() and fetched["auth_tag"] == tag.hex()
    assert decrypt(aes, iv, bytes.fromhex(fetched["content"]), bytes.fromhex(fetched["authTag"])) == plaintext
    assert created["id"] in vault.related_ids(store)


def test_store_objects_decrypt_to_their_names_under_their_default_keys(vault):
    for store in STORES:
        key = vault.api.get(f"/keys/{vault.default_key(store)}").json()
        aes = unwrap(vault.private_key, bytes.fromhex(key["key"]))
        assert (
            vault.read(LocalKey(key["id"], aes, bytes.fromhex(key["iv"])), vault.store(store))
            == json.dumps({"name": store}).encode()
        )


# --- 2. the SDK flow --------------------------------------------------------------------


def test_sdk_post_key_wrapped_locally_answers_the_full_record(vault):
    aes, iv = os.urandom(32), os.urandom(12)
    wrapped = wrap(load_public(vault.root["servers"]["default"]["publicKey"]), aes)
    resp = vault.api.post("/keys", json={"server": "default", "key": wrapped.hex(), "iv": iv.hex()})
    assert resp.status_code == 201, resp.text
    record = resp.json()
    assert set(record) == KEY_FIELDS
    assert (record["key"], record["iv"], record["server"]) == (wrapped.hex(), iv.hex(), "default")
    assert (record["user_id"], record["metadata"], record["deprecated"]) == (vault.user["id"], {}, False)
    assert TIMESTAMP.fullmatch(record["created_at"]) and TIMESTAMP.fullmatch(record["updated_at"])
    assert unwrap(vault.private_key, bytes.fromhex(record["key"])) == aes
    assert vault.api.get(f"/keys/{record['id']}").json() == record


def test_sdk_objects_put_hex_post_snake_case_and_patch(vault):
    key = vault.new_key()
    campaigns = vault.store("campaigns")
    ciphertext, tag = encrypt(key.aes, key.iv, b"first campaign")
    resp = vault.api.put(
        "/objects",
        json={"keyId": key.id, "content": ciphertext.hex(), "authTag": tag.hex(), "related_object_id": campaigns},
    )
    assert resp.status_code == 201, resp.text
    first = resp.json()
    assert (first["related_object_id"], first["content"]) == (campaigns, ciphertext.hex())

    ciphertext, tag = encrypt(key.aes, key.iv, b"second campaign")
    resp = vault.api.post(
        "/objects",
        json={
            "key_id": key.id,
            "content": ciphertext.hex(),
            "auth_tag": tag.hex(),
            "related_object_id": campaigns,
            "metadata": {"kind": "sdk"},
        },
    )
    assert resp.status_code == 201, resp.text
    second = resp.json()
    assert set(second) == OBJECT_FIELDS and second["metadata"] == {"kind": "sdk"}
    assert vault.read(key, second["id"]) == b"second campaign"

    rotated = vault.new_key()
    ciphertext, tag = encrypt(rotated.aes, rotated.iv, b"second campaign, edited")
    time.sleep(0.01)  # timestamps have millisecond resolution
    resp = vault.api.patch(
        f"/objects/{second['id']}", json={"key_id": rotated.id, "content": ciphertext.hex(), "auth_tag": tag.hex()}
    )
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched["updated_at"] > second["updated_at"] and patched["created_at"] == second["created_at"]
    assert (patched["key_id"], patched["related_object_id"], patched["metadata"]) == (
        rotated.id,
        campaigns,
        {"kind": "sdk"},
    )
    assert vault.read(rotated, second["id"]) == b"second campaign, edited"
    assert vault.related_ids(campaigns) == [first["id"], second["id"]]


def test_sdk_related_listing_streamed_and_paged(vault):
    key = vault.new_key()
    parent = vault.put(key, b"parent", related=vault.store("tasks"))["id"]
    children = [vault.put(key, f"task {i}".encode(), related=parent)["id"] for i in range(5)]

    resp = vault.api.get(f"/objects/{parent}/related")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert "X-Next-Cursor" not in resp.headers
    listed = resp.json()
    assert [r["id"] for r in listed] == children
    assert all(set(r) == OBJECT_FIELDS and r["relatedId"] == parent for r in listed)
    assert [decrypt(key.aes, key.iv, bytes.fromhex(r["content"]), bytes.fromhex(r["auth_tag"])) for r in listed] == [
        f"task {i}".encode() for i in range(5)
    ]

    pages, cursors, after = [], [], None
    while True:
        params = {"limit": 2} if after is None else {"limit": 2, "after": after}
        resp = vault.api.get(f"/objects/{parent}/related", params=params)
        assert resp.status_code == 200, resp.text
        pages.append([r["id"] for r in resp.json()])
        after = resp.headers.get("X-Next-Cursor")
        cursors.append(after)
        if after is None:
            break
    assert pages == [children[0:2], children[2:4], children[4:5]]
    assert cursors == [children[1], children[3], None]

    resp = vault.api.get(f"/objects/{parent}/related", params={"limit": 5})
    assert [r["id"] for r in resp.json()] == children and "X-Next-Cursor" not in resp.headers


def test_sdk_publish_a_copy_encrypted_for_the_platform(vault, live_rt):
    key = vault.new_key()
    original = vault.put(key, b'{"name": "Spring sale"}', related=vault.store("campaigns"))["id"]

    server = vault.api.get("/server").json()
    current = server["current"]
    platform_public = load_public(server["keys"][current]["application/pkix-spki"])
    raw, iv = os.urandom(32), os.urandom(12)
    resp = vault.api.put("/keys", json={"server": current, "key": b64(raw), "iv": b64(iv)})
    assert resp.status_code == 201, resp.text
    platform_key = LocalKey(resp.json(), raw, iv)
    record = vault.api.get(f"/keys/{platform_key.id}").json()
    assert record["server"] == current and record["iv"] == iv.hex()
    # The service forgot the raw bytes: what it kept opens only with the platform's private key.
    wrapped = bytes.fromhex(record["key"])
    assert raw.hex() not in record["key"] and len(wrapped) == platform_public.key_size // 8
    assert unwrap(live_rt.platform.private_key, wrapped) == raw
    with pytest.raises(ValueError):
        unwrap(vault.private_key, wrapped)

    copy = vault.put(platform_key, b'{"name": "Spring sale"}')["id"]
    resp = vault.api.put(f"/objects/publish/campaigns/{original}", json={"objectId": copy})
    assert resp.status_code == 200, resp.text
    publication = resp.json()
    assert set(publication) == {"type", "related_id", "object_id", "created_at"}
    assert (publication["type"], publication["related_id"], publication["object_id"]) == ("campaigns", original, copy)
    assert TIMESTAMP.fullmatch(publication["created_at"])
    assert vault.api.get("/objects/publish/campaigns").json() == [publication]

    # What the platform can read is exactly the published copy.
    assert vault.read(platform_key, copy) == b'{"name": "Spring sale"}'

    assert vault.api.delete(f"/objects/publish/campaigns/{original}").status_code == 204
    assert_error(vault.api.delete(f"/objects/publish/campaigns/{original}"), 404)
    assert vault.api.get("/objects/publish/campaigns").json() == []
    assert vault.api.get(f"/objects/{copy}").status_code == 200  # the ciphertext stays


# --- 3. bring your own key --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["generate", "upload_public"])
def test_byok_server_keys_are_unreadable_by_the_service(vault, live_rt, mode):
    name = f"vault-{mode.replace('_', '-')}"
    local = new_rsa()
    body = {"name": name, "mode": mode} | ({"publicKey": spki(local.public_key())} if mode == "upload_public" else {})
    resp = vault.api.post("/servers", json=body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert set(created) == {"name", "publicKey", "privateKey"} and created["name"] == name
    if mode == "generate":
        private = load_private(created["privateKey"])
        assert created["publicKey"] == spki(private.public_key())
        assert private.key_size >= 2048
    else:
        private = local
        assert created["privateKey"] is None and created["publicKey"] == spki(local.public_key())

    listed = vault.api.get("/servers").json()
    assert [(s["name"], s["mode"], s["publicKey"], s["deprecated"]) for s in listed] == [
        (name, mode, created["publicKey"], False)
    ]
    assert set(listed[0]) == {"name", "mode", "publicKey", "deprecated", "created_at"}
    assert TIMESTAMP.fullmatch(listed[0]["created_at"])
    root = vault.api.get("/root").json()
    assert root["servers"][name] == {"publicKey": created["publicKey"], "deprecated": False}
    assert "privateKey" not in json.dumps(root["servers"][name])
    sealed = live_rt.db.query_one(
        "SELECT private_key_sealed FROM servers WHERE user_id = ? AND name = ?", (vault.user["id"], name)
    )[0]
    assert sealed is None  # nothing on the service could ever unwrap these keys

    minted = vault.api.put("/keys", json={"server": name})
    assert minted.status_code == 201, minted.text
    raw, iv = os.urandom(32), os.urandom(12)
    brought = vault.api.put("/keys", json={"server": name.upper(), "key": raw.hex(), "iv": iv.hex()})
    assert brought.status_code == 201, brought.text
    for key_id, expected in ((minted.json(), None), (brought.json(), raw)):
        record = vault.api.get(f"/keys/{key_id}").json()
        assert record["server"] == name
        wrapped = bytes.fromhex(record["key"])
        with pytest.raises(ValueError):
            unwrap(vault.private_key, wrapped)
        with pytest.raises(ValueError):
            unwrap(live_rt.platform.private_key, wrapped)
        aes = unwrap(private, wrapped)
        assert len(aes) == 32 and (expected is None or aes == expected)
    assert raw.hex() not in json.dumps(vault.api.get(f"/keys/{brought.json()}").json())


def _ec_spki() -> str:
    return spki(ec.generate_private_key(ec.SECP256R1()).public_key())


def _ed25519_spki() -> str:
    return spki(ed25519.Ed25519PrivateKey.generate().public_key())


def _pem_spki() -> str:
    return (
        new_rsa()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


BAD_PUBLIC_KEYS: list[tuple[str, Callable[[], Any]]] = [
    ("rsa-1024-weak", lambda: spki(new_rsa(1024).public_key())),
    ("ec-p256", _ec_spki),
    ("ed25519", _ed25519_spki),
    ("pem-instead-of-der", _pem_spki),
    ("garbage", lambda: "not-a-key"),
    ("random-bytes", lambda: b64url(os.urandom(294))),
    ("empty", lambda: ""),
    ("missing", lambda: None),
    ("number", lambda: 12345),
]
BAD_REGISTRATIONS: list[dict[str, Any]] = [
    {"name": "x", "mode": "custodial"},
    {"name": "x"},
    {"name": "x", "mode": 1},
    {"name": "", "mode": "generate"},
    {"name": "../etc", "mode": "generate"},
    {"name": 5, "mode": "generate"},
    {"mode": "generate"},
    {"name": "a" * 65, "mode": "generate"},
    {"name": "x y", "mode": "generate"},
]


def test_upload_public_refuses_weak_foreign_or_garbage_keys(vault):
    for case, public_key in BAD_PUBLIC_KEYS:
        body = {"name": "byok", "mode": "upload_public"}
        value = public_key()
        if value is not None:
            body["publicKey"] = value
        resp = vault.api.post("/servers", json=body)
        assert resp.status_code == 400, (case, resp.status_code, resp.text[:200])
        assert_error(resp, 400)
    assert vault.api.get("/servers").json() == []


def test_register_server_refuses_bad_mode_or_name(vault):
    for body in BAD_REGISTRATIONS:
        resp = vault.api.post("/servers", json=body)
        assert resp.status_code == 400, (body, resp.status_code, resp.text[:200])
        assert_error(resp, 400)
    assert vault.api.get("/servers").json() == []


def test_server_names_taken_or_reserved_conflict(vault):
    assert vault.api.post("/servers", json={"name": "eu-vault", "mode": "generate"}).status_code == 201
    for name in ("eu-vault", "EU-Vault", "default", "DEFAULT", vault.api.get("/server").json()["current"]):
        assert_error(vault.api.post("/servers", json={"name": name, "mode": "generate"}), 409)
    assert [s["name"] for s in vault.api.get("/servers").json()] == ["eu-vault"]
    assert (
        vault.api.get("/root").json()["servers"]["default"]["privateKey"]
        == vault.root["servers"]["default"]["privateKey"]
    )


def test_deprecated_server_refuses_new_keys_and_keeps_old_ones_readable(vault):
    created = vault.api.post("/servers", json={"name": "old-vault", "mode": "generate"}).json()
    private = load_private(created["privateKey"])
    raw, iv = os.urandom(32), os.urandom(12)
    key_id = vault.api.put("/keys", json={"server": "old-vault", "key": raw.hex(), "iv": iv.hex()}).json()
    ciphertext, tag = encrypt(raw, iv, b"sealed for old-vault")
    object_id = vault.api.put(
        "/objects", json={"keyId": key_id, "content": b64(ciphertext), "authTag": b64(tag)}
    ).json()["id"]

    resp = vault.api.patch("/servers/old-vault", json={"deprecated": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["deprecated"] is True and resp.json()["name"] == "old-vault"
    assert vault.api.get("/servers").json()[0]["deprecated"] is True
    assert vault.api.get("/root").json()["servers"]["old-vault"]["deprecated"] is True

    assert_error(vault.api.put("/keys", json={"server": "old-vault"}), 409)
    assert_error(vault.api.post("/keys", json={"server": "old-vault", "key": raw.hex(), "iv": iv.hex()}), 409)
    record = vault.api.get(f"/keys/{key_id}").json()
    assert unwrap(private, bytes.fromhex(record["key"])) == raw
    assert vault.read(LocalKey(key_id, raw, iv), object_id) == b"sealed for old-vault"

    assert vault.api.patch("/servers/old-vault", json={"deprecated": False}).json()["deprecated"] is False
    assert vault.api.put("/keys", json={"server": "old-vault"}).status_code == 201
    assert_error(vault.api.patch("/servers/no-such-vault", json={"deprecated": True}), 404)
    assert_error(vault.api.patch("/servers/default", json={"deprecated": True}), 404)
