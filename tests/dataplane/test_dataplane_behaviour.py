"""Behaviour the contract pins down beyond the happy paths: the encoding rule, record shapes,
deletes and their relations, the root's stability and its one-time creation, the outbox.
Against the real gunicorn server; database rows read through `live_rt`."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from contextlib import closing

import pytest

from ..dataplane_support import (
    OBJECT_FIELDS,
    PAYLOAD_FIELDS,
    STORES,
    LocalKey,
    Vault,
    b64,
    b64url,
    blob_exists,
    counts,
    decrypt,
    encrypt,
    events_after,
    last_event_id,
    orphan_files,
    unwrap,
)
from ..support import Api, assert_error


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _stored(vault: Vault, body: dict) -> tuple[bytes, bytes]:
    resp = vault.api.put("/objects", json=body)
    assert resp.status_code == 201, resp.text
    record = resp.json()
    return bytes.fromhex(record["content"]), bytes.fromhex(record["auth_tag"])


# --- the encoding rule (§1) -------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [bytes.hex, lambda b: b.hex().upper(), b64, b64url, lambda b: base64.b64encode(b).decode().rstrip("=")],
    ids=["hex", "HEX", "base64", "base64url", "base64-unpadded"],
)
def test_the_same_bytes_in_any_encoding_are_stored_identically(vault, encode):
    for tag_size in (12, 13, 14, 15, 16):
        content, tag = os.urandom(30 + tag_size), os.urandom(tag_size)
        body = {"keyId": vault.default_key(), "content": encode(content), "authTag": encode(tag)}
        assert _stored(vault, body) == (content, tag), tag_size


def test_the_tag_decides_and_the_content_follows(vault):
    key = vault.default_key()
    # "00ff" is hex of 2 bytes and base64 of 3: the tag says which.
    assert _stored(vault, {"keyId": key, "content": "00ff", "authTag": "ab" * 16})[0] == bytes.fromhex("00ff")
    assert _stored(vault, {"keyId": key, "content": "00ff", "authTag": b64(b"\xab" * 16)})[0] == _unb64("00ff")
    # 22 hex digits are 11 bytes as hex (no GCM tag) but 16 bytes as base64, so base64 it is.
    tag_text = "0123456789abcdef012345"
    assert _stored(vault, {"keyId": key, "content": "abcd", "authTag": tag_text}) == (_unb64("abcd"), _unb64(tag_text))


def test_an_explicit_encoding_wins(vault):
    key = vault.default_key()
    tag_text = "0123456789abcdef012345"
    assert _stored(vault, {"keyId": key, "content": "abcd", "authTag": tag_text, "encoding": "base64"}) == (
        _unb64("abcd"),
        _unb64(tag_text),
    )
    body = assert_error(
        vault.api.put("/objects", json={"keyId": key, "content": "abcd", "authTag": tag_text, "encoding": "hex"}), 400
    )
    assert "authTag" in body["message"]
    body = assert_error(
        vault.api.put("/objects", json={"keyId": key, "content": "00ff", "authTag": "ab" * 16, "encoding": "base64"}),
        400,
    )
    assert "authTag" in body["message"]
    content = os.urandom(20)
    assert (
        _stored(vault, {"keyId": key, "content": content.hex(), "authTag": "ab" * 16, "encoding": "hex"})[0] == content
    )


def test_key_material_follows_the_iv_encoding(vault):
    raw, iv = os.urandom(32), os.urandom(12)
    private = vault.private_key
    for body in (
        {"key": raw.hex(), "iv": iv.hex()},
        {"key": b64(raw), "iv": b64(iv)},
        {"key": b64url(raw), "iv": b64url(iv)},
        {"key": raw.hex().upper(), "iv": iv.hex().upper()},
    ):
        resp = vault.api.post("/keys", json={"server": "default", **body})
        assert resp.status_code == 201, (body, resp.text)
        record = resp.json()
        assert record["iv"] == iv.hex() and unwrap(private, bytes.fromhex(record["key"])) == raw
    # A 16-byte raw key is also a valid AES key.
    short = os.urandom(16)
    record = vault.api.post("/keys", json={"server": "default", "key": b64(short), "iv": b64(iv)}).json()
    assert unwrap(private, bytes.fromhex(record["key"])) == short
    body = assert_error(
        vault.api.post("/keys", json={"server": "default", "key": b64(raw), "iv": b64(iv), "encoding": "hex"}), 400
    )
    assert "iv" in body["message"]


# --- record shapes (§3, §4) -------------------------------------------------------------


def test_records_carry_snake_and_camel_aliases_and_metadata_defaults_to_empty(vault):
    key = vault.new_key()
    ciphertext, tag = encrypt(key.aes, key.iv, b"shape")
    bare = vault.api.put("/objects", json={"keyId": key.id, "content": b64(ciphertext), "authTag": b64(tag)}).json()
    nulled = vault.api.put(
        "/objects",
        json={"keyId": key.id, "content": b64(ciphertext), "authTag": b64(tag), "metadata": None, "relatedId": None},
    ).json()
    child = vault.api.put(
        "/objects",
        json={
            "keyId": key.id,
            "content": b64(ciphertext),
            "authTag": b64(tag),
            "relatedObjectId": bare["id"],
            "metadata": {"n": [1, 2]},
            "surprise": "ignored",
        },
    ).json()
    for record in (bare, nulled, child, vault.api.get(f"/objects/{child['id']}").json()):
        assert set(record) == OBJECT_FIELDS
        assert (record["keyId"], record["authTag"], record["relatedId"]) == (
            record["key_id"],
            record["auth_tag"],
            record["related_object_id"],
        )
        assert record["user_id"] == vault.user["id"] and record["content"] == ciphertext.hex()
    assert (bare["metadata"], bare["relatedId"], nulled["metadata"], nulled["relatedId"]) == ({}, None, {}, None)
    assert (child["metadata"], child["relatedId"]) == ({"n": [1, 2]}, bare["id"])
    assert vault.api.get(f"/objects/{bare['id']}").json() == bare
    key_record = vault.api.get(f"/keys/{key.id}").json()
    assert key_record["metadata"] == {} and vault.api.get(f"/keys/{key.id}").json() == key_record


def test_patch_key_changes_metadata_deprecation_and_rewraps(vault):
    key = vault.new_key()
    record = vault.api.get(f"/keys/{key.id}").json()
    time.sleep(0.01)  # timestamps have millisecond resolution: the patch must land in a later one
    patched = vault.api.patch(f"/keys/{key.id}", json={"metadata": {"label": "q3"}, "deprecated": True}).json()
    assert (patched["metadata"], patched["deprecated"]) == ({"label": "q3"}, True)
    assert patched["updated_at"] > record["updated_at"] and patched["created_at"] == record["created_at"]
    assert (patched["key"], patched["iv"]) == (record["key"], record["iv"])
    raw, iv = os.urandom(32), os.urandom(12)
    rewrapped = vault.api.patch(f"/keys/{key.id}", json={"key": b64(raw), "iv": b64(iv)}).json()
    assert rewrapped["iv"] == iv.hex() and rewrapped["key"] != record["key"]
    assert unwrap(vault.private_key, bytes.fromhex(rewrapped["key"])) == raw
    assert (rewrapped["metadata"], rewrapped["deprecated"], rewrapped["server"]) == ({"label": "q3"}, True, "default")
    assert vault.api.get(f"/keys/{key.id}").json() == rewrapped


def test_metadata_may_nest_a_reasonable_depth(vault):
    metadata: dict = {"leaf": True}
    for _ in range(31):
        metadata = {"next": metadata}
    key = vault.new_key()
    record = vault.put(key, b"deep", metadata=metadata)
    assert vault.api.get(f"/objects/{record['id']}").json()["metadata"] == metadata


def test_patch_replaces_only_what_it_names(vault):
    key = vault.new_key()
    parent = vault.put(key, b"parent")["id"]
    record = vault.put(key, b"child", related=parent, metadata={"a": 1})
    time.sleep(0.01)  # timestamps have millisecond resolution: the patch must land in a later one
    patched = vault.api.patch(f"/objects/{record['id']}", json={"metadata": {"b": 2}}).json()
    assert patched["metadata"] == {"b": 2} and patched["updated_at"] > record["updated_at"]
    assert {k: patched[k] for k in ("content", "auth_tag", "key_id", "relatedId")} == {
        k: record[k] for k in ("content", "auth_tag", "key_id", "relatedId")
    }
    detached = vault.api.patch(f"/objects/{record['id']}", json={"relatedId": None}).json()
    assert detached["relatedId"] is None and vault.related_ids(parent) == []
    moved = vault.api.patch(f"/objects/{record['id']}", json={"related_object_id": parent}).json()
    assert moved["relatedId"] == parent and vault.related_ids(parent) == [record["id"]]


def test_relations_cannot_loop_and_stores_stay_at_the_top(vault):
    key = vault.new_key()
    top = vault.put(key, b"top")["id"]
    middle = vault.put(key, b"middle", related=top)["id"]
    bottom = vault.put(key, b"bottom", related=middle)["id"]
    for target in (top, middle, bottom):
        assert_error(vault.api.patch(f"/objects/{top}", json={"relatedId": target}), 409)
    assert vault.api.get(f"/objects/{top}").json()["relatedId"] is None
    assert_error(vault.api.patch(f"/objects/{vault.store()}", json={"relatedId": top}), 409)
    assert vault.api.get(f"/objects/{vault.store()}").json()["relatedId"] is None


# --- deletes (§3, §4, §5) ---------------------------------------------------------------


def _blob_exists(rt, object_id: str) -> bool:
    row = rt.db.query_one("SELECT blob FROM objects WHERE id = ?", (object_id,))
    return row is not None and blob_exists(rt, row["blob"])


def test_delete_detaches_children_and_leaves_the_parents_list(vault, live_rt):
    key = vault.new_key()
    store = vault.store("tasks")
    parent = vault.put(key, b"parent" * 4000, related=store)["id"]  # over the inline limit: a file
    kids = [vault.put(key, f"kid {i}".encode(), related=parent)["id"] for i in range(2)]
    grandchild = vault.put(key, b"grandchild", related=kids[0])["id"]
    blob = live_rt.db.query_one("SELECT blob FROM objects WHERE id = ?", (parent,))["blob"]

    assert vault.api.delete(f"/objects/{parent}").status_code == 204
    assert_error(vault.api.get(f"/objects/{parent}"), 404)
    assert_error(vault.api.get(f"/objects/{parent}/related"), 404)
    assert_error(vault.api.delete(f"/objects/{parent}"), 404)
    assert parent not in vault.related_ids(store)
    assert not blob_exists(live_rt, blob)
    for kid in kids:
        record = vault.api.get(f"/objects/{kid}").json()
        assert record["relatedId"] is None and record["related_object_id"] is None
    assert vault.related_ids(kids[0]) == [grandchild]
    assert vault.read(key, kids[1]) == b"kid 1"


def test_cascade_delete_removes_the_whole_subtree(vault, live_rt):
    key = vault.new_key()
    store = vault.store("tasks")
    keep = vault.put(key, b"sibling", related=store)["id"]
    big = b"x" * 20_000  # over the inline limit: each one a file
    root = vault.put(key, big, related=store)["id"]
    level1 = [vault.put(key, big, related=root)["id"] for _ in range(2)]
    level2 = [vault.put(key, big, related=level1[0])["id"] for _ in range(2)]
    subtree = [root, *level1, *level2]
    blobs = [live_rt.db.query_one("SELECT blob FROM objects WHERE id = ?", (i,))["blob"] for i in subtree]
    before = counts(live_rt, vault.user["id"])

    assert vault.api.delete(f"/objects/{root}", params={"cascade": "true"}).status_code == 204
    for object_id in subtree:
        assert_error(vault.api.get(f"/objects/{object_id}"), 404)
    assert not any(blob_exists(live_rt, b) for b in blobs)
    assert vault.related_ids(store) == [keep] and vault.read(key, keep) == b"sibling"
    assert counts(live_rt, vault.user["id"])["objects"] == before["objects"] - len(subtree)


def test_deleting_a_published_object_removes_its_publications(vault):
    key = vault.new_key()
    item = vault.put(key, b"item")["id"]
    copies = [vault.put(key, b"copy")["id"] for _ in range(2)]
    assert vault.api.put(f"/objects/publish/campaigns/{item}", json={"objectId": copies[0]}).status_code == 200
    replaced = vault.api.put(f"/objects/publish/campaigns/{item}", json={"objectId": copies[1]})
    assert replaced.status_code == 200 and replaced.json()["object_id"] == copies[1]
    assert [p["object_id"] for p in vault.api.get("/objects/publish/campaigns").json()] == [copies[1]]
    assert vault.api.delete(f"/objects/{copies[1]}").status_code == 204
    assert vault.api.get("/objects/publish/campaigns").json() == []
    assert_error(vault.api.delete(f"/objects/publish/campaigns/{item}"), 404)


def test_store_objects_and_their_default_keys_cannot_be_deleted(vault, live_rt):
    before = counts(live_rt, vault.user["id"])
    for store in STORES:
        assert_error(vault.api.delete(f"/objects/{vault.store(store)}"), 409)
        assert_error(vault.api.delete(f"/objects/{vault.store(store)}", params={"cascade": "true"}), 409)
        assert_error(vault.api.delete(f"/keys/{vault.default_key(store)}"), 409)
    assert counts(live_rt, vault.user["id"]) == before
    assert vault.api.get("/root").json() == vault.root


def test_deleting_a_key_leaves_its_objects_readable(vault, live_rt):
    key = vault.new_key()
    record = vault.put(key, b"outlives its key", related=vault.store())
    assert vault.api.delete(f"/keys/{key.id}").status_code == 204
    assert_error(vault.api.get(f"/keys/{key.id}"), 404)
    assert_error(vault.api.delete(f"/keys/{key.id}"), 404)
    assert_error(vault.api.patch(f"/keys/{key.id}", json={"metadata": {}}), 404)
    fetched = vault.api.get(f"/objects/{record['id']}").json()
    assert fetched == record and fetched["key_id"] == key.id
    assert vault.read(key, record["id"]) == b"outlives its key"
    assert record["id"] in vault.related_ids(vault.store())
    # The dangling key cannot be used for new writes.
    ciphertext, tag = encrypt(key.aes, key.iv, b"new")
    assert_error(
        vault.api.put("/objects", json={"keyId": key.id, "content": b64(ciphertext), "authTag": b64(tag)}), 404
    )


def test_paging_survives_deleting_the_page_just_read(vault):
    key = vault.new_key()
    parent = vault.put(key, b"inbox")["id"]
    items = [vault.put(key, f"job {i}".encode(), related=parent)["id"] for i in range(4)]
    seen, after = [], None
    while True:  # process and delete, page by page: the common work-queue pattern
        resp = vault.api.get(f"/objects/{parent}/related", params={"limit": 2} | ({"after": after} if after else {}))
        assert resp.status_code == 200, resp.text
        for record in resp.json():
            seen.append(record["id"])
            assert vault.api.delete(f"/objects/{record['id']}").status_code == 204
        after = resp.headers.get("X-Next-Cursor")
        if after is None:
            break
    assert seen == items


def test_reads_racing_patches_and_deletes_never_fail(vault, live_server):
    """A reader may fetch a row just before a patch commits and removes the old file: it must re-read."""
    key = vault.new_key()
    parent = vault.put(key, b"parent")["id"]
    target = vault.put(key, b"target", related=parent)["id"]
    stop, failures, done = threading.Event(), [], []

    def patch_forever() -> None:
        with closing(Api(live_server.url, vault.user["api_key"])) as api:
            while not stop.is_set():
                ciphertext, tag = encrypt(key.aes, key.iv, os.urandom(64))
                api.patch(f"/objects/{target}", json={"content": ciphertext.hex(), "authTag": tag.hex()})
                doomed = api.post(
                    "/objects", json={"keyId": key.id, "content": "00", "authTag": "00" * 16, "relatedId": parent}
                ).json()["id"]
                api.delete(f"/objects/{doomed}")

    def read(path: str) -> None:
        with closing(Api(live_server.url, vault.user["api_key"])) as api:
            for _ in range(120):
                try:
                    resp = api.get(path)
                    resp.json()
                    if resp.status_code != 200:
                        failures.append((path, resp.status_code, resp.text[:200]))
                except Exception as exc:  # a stream cut short by a failed read
                    failures.append((path, repr(exc)))
            done.append(path)

    writers = [threading.Thread(target=patch_forever) for _ in range(4)]
    readers = [
        threading.Thread(target=read, args=(path,))
        for path in (f"/objects/{target}", f"/objects/{parent}/related", f"/objects/{parent}/related?limit=1")
    ]
    for thread in writers + readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=60)
    stop.set()
    for thread in writers:
        thread.join(timeout=60)
    assert failures == [] and len(done) == len(readers)


# --- the root (§2) ----------------------------------------------------------------------


def test_root_is_stable_and_has_exactly_the_eight_stores(vault, live_rt):
    again = vault.api.get("/root").json()
    assert again == vault.root
    assert list(again["stores"]) == list(STORES)
    assert set(again["servers"]) == {"default"}
    default = again["servers"]["default"]
    assert set(default) == {"publicKey", "privateKey", "deprecated"} and default["deprecated"] is False
    for store in STORES:
        record = vault.api.get(f"/objects/{vault.store(store)}").json()
        key = vault.api.get(f"/keys/{vault.default_key(store)}").json()
        assert record["relatedId"] is None and record["key_id"] == key["id"] and key["server"] == "default"
    assert len({s["id"] for s in again["stores"].values()}) == 8
    assert len({s["defaultKey"] for s in again["stores"].values()}) == 8
    assert {k: v for k, v in counts(live_rt, vault.user["id"]).items() if k not in ("events", "orphan_files")} == {
        "objects": 8,
        "keys": 8,
        "publications": 0,
        "servers": 1,
        "stores": 8,
    }


def test_concurrent_first_requests_create_exactly_one_root(new_live_user, live_server, live_rt):
    user, _ = new_live_user()
    orphans = orphan_files(live_rt)
    clients = [Api(live_server.url, user["api_key"]) for _ in range(10)]
    barrier, answers = threading.Barrier(len(clients)), [None] * len(clients)

    def first_request(index: int) -> None:
        barrier.wait()
        resp = clients[index].get("/root")
        answers[index] = (resp.status_code, resp.json())

    threads = [threading.Thread(target=first_request, args=(i,)) for i in range(len(clients))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for client in clients:
            client.close()
    assert all(a is not None and a[0] == 200 for a in answers), answers
    assert all(a[1] == answers[0][1] for a in answers)
    row_counts = counts(live_rt, user["id"])
    assert (row_counts["stores"], row_counts["servers"], row_counts["keys"], row_counts["objects"]) == (8, 1, 8, 8)
    assert live_rt.db.query_one("SELECT name FROM servers WHERE user_id = ?", (user["id"],))["name"] == "default"
    assert [e["type"] for e in events_after(live_rt, user["id"])].count("object_created") == 8
    assert orphan_files(live_rt) <= orphans  # the losers' store files were removed


# --- the outbox (§6) --------------------------------------------------------------------


def test_root_creation_appended_its_events(vault, live_rt):
    events = events_after(live_rt, vault.user["id"])
    assert [e["type"] for e in events].count("key_created") == 8
    created = {e["payload"]["id"]: e["payload"] for e in events if e["type"] == "object_created"}
    assert set(created) == {s["id"] for s in vault.root["stores"].values()}
    assert {e["payload"]["key_id"] for e in events if e["type"] == "key_created"} == {
        s["defaultKey"] for s in vault.root["stores"].values()
    }


def test_every_change_appends_its_event_with_the_spec_payload(vault, live_rt):
    uid, since = vault.user["id"], last_event_id(live_rt, vault.user["id"])
    key_id = vault.api.put("/keys", json={"server": "default"}).json()
    key = LocalKey(
        key_id,
        unwrap(vault.private_key, bytes.fromhex(vault.api.get(f"/keys/{key_id}").json()["key"])),
        bytes.fromhex(vault.api.get(f"/keys/{key_id}").json()["iv"]),
    )
    parent = vault.put(key, b"parent", related=vault.store(), metadata={"m": 1})
    child = vault.put(key, b"child", related=parent["id"])
    ciphertext, tag = encrypt(key.aes, key.iv, b"parent v2")
    patched = vault.api.patch(
        f"/objects/{parent['id']}", json={"content": ciphertext.hex(), "authTag": tag.hex()}
    ).json()
    published = vault.api.put(f"/objects/publish/campaigns/{parent['id']}", json={"objectId": child["id"]}).json()
    assert vault.api.delete(f"/objects/publish/campaigns/{parent['id']}").status_code == 204
    assert vault.api.delete(f"/objects/{parent['id']}").status_code == 204
    assert vault.api.delete(f"/keys/{key_id}").status_code == 204
    assert vault.api.get(f"/objects/{child['id']}").status_code == 200  # reads append nothing

    events = events_after(live_rt, uid, since)
    assert [e["type"] for e in events] == [
        "key_created",
        "object_created",
        "object_created",
        "object_updated",
        "publish",
        "unpublish",
        "object_updated",
        "object_deleted",
        "key_deleted",
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > since
    for event in events:
        assert set(event["payload"]) == PAYLOAD_FIELDS[event["type"]], event
        assert event["payload"]["user_id"] == uid
    p = [e["payload"] for e in events]
    assert p[0]["key_id"] == key_id and p[8]["key_id"] == key_id
    assert p[1] == {k: parent[k] for k in PAYLOAD_FIELDS["object_created"]}
    assert p[2] == {k: child[k] for k in PAYLOAD_FIELDS["object_created"]}
    assert p[3] == {"object_id": parent["id"], "key_id": key_id, "user_id": uid, "updated_at": patched["updated_at"]}
    assert p[4] == {
        "user_id": uid,
        "type": "campaigns",
        "related_id": parent["id"],
        "object_id": child["id"],
        "timestamp": published["created_at"],
    }
    assert (p[5]["type"], p[5]["related_id"]) == ("campaigns", parent["id"])
    assert p[6]["object_id"] == child["id"]  # the detached child changed too
    assert p[7]["object_id"] == parent["id"]
    assert events[1]["channel"] == f"object_created:{uid}:{parent['id']}:{vault.store()}"
    assert events[4]["channel"] == f"publish:{uid}:campaigns:{parent['id']}:{child['id']}"


def test_refused_writes_append_no_events(vault, live_rt):
    since = last_event_id(live_rt, vault.user["id"])
    assert_error(
        vault.api.put("/objects", json={"keyId": vault.default_key(), "content": "00", "authTag": "00" * 17}), 400
    )
    assert_error(vault.api.delete(f"/objects/{vault.store()}"), 409)
    assert_error(vault.api.put("/keys", json={"server": "nowhere"}), 400)
    assert events_after(live_rt, vault.user["id"], since) == []


def test_decrypting_a_store_item_needs_only_the_root(vault):
    """The SDK's promise: with nothing but an API key, the root's private key opens every store item."""
    key_id = vault.default_key("contacts")
    record = vault.api.get(f"/keys/{key_id}").json()
    aes = unwrap(vault.private_key, bytes.fromhex(record["key"]))
    iv = bytes.fromhex(record["iv"])
    ciphertext, tag = encrypt(aes, iv, json.dumps({"name": "Grace"}).encode())
    item = vault.api.put(
        "/objects",
        json={"keyId": key_id, "content": b64(ciphertext), "authTag": b64(tag), "relatedId": vault.store("contacts")},
    ).json()
    listed = vault.api.get(f"/objects/{vault.store('contacts')}/related").json()
    assert [r["id"] for r in listed] == [item["id"]]
    assert json.loads(decrypt(aes, iv, bytes.fromhex(listed[0]["content"]), bytes.fromhex(listed[0]["auth_tag"]))) == {
        "name": "Grace"
    }
