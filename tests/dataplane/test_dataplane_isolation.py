"""Isolation: another user's ids are indistinguishable from ids that do not exist (docs/protocol.md §1 "404 not found
or not yours"), and can never be used in a write. Against the real gunicorn server."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from ..dataplane_support import LocalKey, Vault, b64, counts, encrypt, ghost_id
from ..support import Api, assert_error


@dataclass
class Owner:
    """User A's things that user B will probe."""

    vault: Vault
    key: LocalKey
    item: str
    child: str
    copy: str

    def ids(self) -> dict[str, str]:
        return {
            "store": self.vault.store("campaigns"),
            "default_key": self.vault.default_key("campaigns"),
            "key": self.key.id,
            "item": self.item,
            "child": self.child,
            "copy": self.copy,
        }


@pytest.fixture
def owner(new_live_user) -> Owner:
    """User A with a key, an item with a child, and a publication."""
    user, api = new_live_user()
    vault = Vault(api, user)
    key = vault.new_key()
    item = vault.put(key, b"A's campaign", related=vault.store("campaigns"))["id"]
    child = vault.put(key, b"A's child", related=item)["id"]
    copy = vault.put(key, b"A's published copy")["id"]
    assert api.put(f"/objects/publish/campaigns/{item}", json={"objectId": copy}).status_code == 200
    return Owner(vault, key, item, child, copy)


@pytest.fixture
def intruder(new_live_user) -> Vault:
    """User B, with a root of their own."""
    user, api = new_live_user()
    return Vault(api, user)


def _snapshot(owner: Owner) -> dict[str, Any]:
    api = owner.vault.api
    return {
        "item": api.get(f"/objects/{owner.item}").json(),
        "child": api.get(f"/objects/{owner.child}").json(),
        "key": api.get(f"/keys/{owner.key.id}").json(),
        "related": owner.vault.related_ids(owner.item),
        "store": owner.vault.related_ids(owner.vault.store("campaigns")),
        "publications": api.get("/objects/publish/campaigns").json(),
    }


# (method, path, body) probes; {obj} / {key} are filled with A's id and with a ghost id.
OBJECT_PROBES = [
    ("GET", "/objects/{obj}", None),
    ("PATCH", "/objects/{obj}", {"metadata": {"owned": "by B"}}),
    ("PATCH", "/objects/{obj}", {"relatedId": None}),
    ("PATCH", "/objects/{obj}", {"content": "00" * 8, "authTag": "00" * 16}),
    ("DELETE", "/objects/{obj}", None),
    ("DELETE", "/objects/{obj}?cascade=true", None),
    ("GET", "/objects/{obj}/related", None),
    ("GET", "/objects/{obj}/related?limit=1", None),
    ("PUT", "/objects/publish/campaigns/{obj}", "own-object"),
    ("DELETE", "/objects/publish/campaigns/{obj}", None),
]
KEY_PROBES = [
    ("GET", "/keys/{key}", None),
    ("PATCH", "/keys/{key}", {"metadata": {"owned": "by B"}}),
    ("PATCH", "/keys/{key}", {"deprecated": True}),
    ("PATCH", "/keys/{key}", {"key": "00" * 32, "iv": "00" * 12}),
    ("DELETE", "/keys/{key}", None),
]


def _probe(api: Api, method: str, path: str, body: Any, own_object: str) -> tuple[int, Any]:
    json_body = {"objectId": own_object} if body == "own-object" else body
    resp = api.request(method, path, json=json_body) if json_body is not None else api.request(method, path)
    return resp.status_code, assert_error(resp, 404)


@pytest.mark.parametrize("which", ["store", "item", "child", "copy"])
def test_objects_of_another_user_answer_exactly_like_nonexistent_ones(owner, intruder, live_rt, which):
    before, a_counts, b_counts = (
        _snapshot(owner),
        counts(live_rt, owner.vault.user["id"]),
        counts(live_rt, intruder.user["id"]),
    )
    own = intruder.store("contacts")
    for method, template, body in OBJECT_PROBES:
        theirs = _probe(intruder.api, method, template.format(obj=owner.ids()[which]), body, own)
        nobodys = _probe(intruder.api, method, template.format(obj=ghost_id("obj")), body, own)
        assert theirs == nobodys, (method, template)
    assert _snapshot(owner) == before
    assert counts(live_rt, owner.vault.user["id"]) == a_counts
    assert counts(live_rt, intruder.user["id"]) == b_counts


@pytest.mark.parametrize("which", ["key", "default_key"])
def test_keys_of_another_user_answer_exactly_like_nonexistent_ones(owner, intruder, live_rt, which):
    before, a_counts = _snapshot(owner), counts(live_rt, owner.vault.user["id"])
    for method, template, body in KEY_PROBES:
        theirs = _probe(intruder.api, method, template.format(key=owner.ids()[which]), body, "")
        nobodys = _probe(intruder.api, method, template.format(key=ghost_id("key")), body, "")
        assert theirs == nobodys, (method, template)
    assert _snapshot(owner) == before
    assert counts(live_rt, owner.vault.user["id"]) == a_counts


def test_publications_are_listed_only_to_their_owner(owner, intruder):
    assert intruder.api.get("/objects/publish/campaigns").json() == []
    assert owner.vault.api.get("/objects/publish/campaigns").json()[0]["object_id"] == owner.copy


def _object_body(key: LocalKey, **extra: Any) -> dict[str, Any]:
    ciphertext, tag = encrypt(key.aes, key.iv, os.urandom(40))
    return {"content": b64(ciphertext), "authTag": b64(tag), **extra}


def _foreign_key_writes(owner: Owner, intruder: Vault, target: str) -> list[tuple[str, Callable[[str], Any]]]:
    """Writes by B that name a key id where B's own key belongs (A's, or a ghost for the baseline)."""
    return [
        ("PUT keyId", lambda key: intruder.api.put("/objects", json=_object_body(owner.key, keyId=key))),
        ("POST key_id", lambda key: intruder.api.post("/objects", json=_object_body(owner.key, key_id=key))),
        ("PATCH keyId", lambda key: intruder.api.patch(f"/objects/{target}", json={"keyId": key})),
        (
            "PATCH content under keyId",
            lambda key: intruder.api.patch(f"/objects/{target}", json=_object_body(owner.key, keyId=key)),
        ),
    ]


def test_another_users_key_cannot_be_used_in_a_write(owner, intruder, live_rt):
    key = intruder.new_key()
    target = intruder.put(key, b"B's own object", related=intruder.store("contacts"))["id"]
    before, b_counts, a_counts = (
        intruder.api.get(f"/objects/{target}").json(),
        counts(live_rt, intruder.user["id"]),
        counts(live_rt, owner.vault.user["id"]),
    )
    for name, write in _foreign_key_writes(owner, intruder, target):
        theirs, nobodys = write(owner.key.id), write(ghost_id("key"))
        assert assert_error(theirs, 404) == assert_error(nobodys, 404), name
        theirs, nobodys = write(owner.vault.default_key()), write(ghost_id("key"))
        assert assert_error(theirs, 404) == assert_error(nobodys, 404), name
    assert intruder.api.get(f"/objects/{target}").json() == before
    assert counts(live_rt, intruder.user["id"]) == b_counts
    assert counts(live_rt, owner.vault.user["id"]) == a_counts


def test_another_users_object_cannot_be_a_parent_or_a_publication(owner, intruder, live_rt):
    key = intruder.new_key()
    target = intruder.put(key, b"B's own object")["id"]
    before, b_counts, a_counts = (
        intruder.api.get(f"/objects/{target}").json(),
        counts(live_rt, intruder.user["id"]),
        counts(live_rt, owner.vault.user["id"]),
    )
    a_related = {p: owner.vault.related_ids(p) for p in (owner.item, owner.vault.store("campaigns"))}
    writes: list[tuple[str, Callable[[str], Any]]] = [
        (
            "PUT relatedId",
            lambda obj: intruder.api.put("/objects", json=_object_body(key, keyId=key.id, relatedId=obj)),
        ),
        (
            "POST related_object_id",
            lambda obj: intruder.api.post("/objects", json=_object_body(key, key_id=key.id, related_object_id=obj)),
        ),
        ("PATCH relatedId", lambda obj: intruder.api.patch(f"/objects/{target}", json={"relatedId": obj})),
        (
            "publish objectId",
            lambda obj: intruder.api.put(f"/objects/publish/campaigns/{target}", json={"objectId": obj}),
        ),
        (
            "publish relatedId",
            lambda obj: intruder.api.put(f"/objects/publish/campaigns/{obj}", json={"objectId": target}),
        ),
    ]
    for name, write in writes:
        for theirs_id in (owner.item, owner.vault.store("campaigns"), owner.copy):
            theirs, nobodys = write(theirs_id), write(ghost_id("obj"))
            assert assert_error(theirs, 404) == assert_error(nobodys, 404), name
    assert intruder.api.get(f"/objects/{target}").json() == before
    assert intruder.api.get("/objects/publish/campaigns").json() == []
    assert counts(live_rt, intruder.user["id"]) == b_counts
    assert counts(live_rt, owner.vault.user["id"]) == a_counts
    assert {p: owner.vault.related_ids(p) for p in a_related} == a_related


def test_another_users_object_is_no_paging_cursor(owner, intruder):
    key = intruder.new_key()
    parent = intruder.put(key, b"B's parent")["id"]
    intruder.put(key, b"B's child", related=parent)
    path = f"/objects/{parent}/related"
    theirs = intruder.api.get(path, params={"limit": 1, "after": owner.child})
    nobodys = intruder.api.get(path, params={"limit": 1, "after": ghost_id("obj")})
    assert assert_error(theirs, 400) == assert_error(nobodys, 400)


def test_a_user_without_a_verified_phone_reaches_nothing(owner, new_live_user):
    _, api = new_live_user(verified=False)
    for method, template, _ in OBJECT_PROBES + KEY_PROBES:
        path = template.format(obj=owner.item, key=owner.key.id)
        assert_error(api.request(method, path, json={}), 403, "phone_not_verified")


def test_without_a_valid_credential_everything_is_401(owner, live_server, live_rt):
    before = counts(live_rt, owner.vault.user["id"])
    routes = OBJECT_PROBES + KEY_PROBES + [("GET", "/root", None), ("PUT", "/keys", None), ("PUT", "/objects", None)]
    for credential in (None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-real-key", "Bearer ak_" + "A" * 40):
        with closing(Api(live_server.url)) as api:
            if credential is not None:
                api.session.headers["Authorization"] = credential
            for method, template, _ in routes:
                resp = api.request(
                    method, template.format(obj=owner.item, key=owner.key.id), json={"server": "default"}
                )
                assert resp.status_code == 401, (credential, method, template, resp.status_code)
                assert_error(resp, 401)
    assert counts(live_rt, owner.vault.user["id"]) == before
