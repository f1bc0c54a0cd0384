"""Bad input never gets a 5xx or an HTML page and never writes anything (docs/protocol.md §1).

Parametrized tables: every case is answered 4xx with `{"error", "message"}` and the user's
object, key, event and publication counts are unchanged afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from telentir.runtime import Runtime

from ..dataplane_support import LocalKey, Vault, b64, counts, encrypt, raw_request
from ..support import Api, ServerProcess, assert_error, make_user, running_server, runtime_over

Body = Callable[["Ctx"], Any]  # a dict/list/str (sent as JSON) or bytes (sent raw as application/json)
DROP = object()  # marks a field to leave out of a body


@dataclass
class Ctx:
    """A user with a key, an object and everything a valid request needs."""

    vault: Vault
    key: LocalKey
    obj: str
    rt: Runtime

    def object_body(self, fmt: str = "hex", tag_bytes: int = 16, **changes: Any) -> dict[str, Any]:
        """A valid create body in `fmt` (hex or base64), with `changes` applied (DROP removes a field)."""
        ciphertext, tag = encrypt(self.key.aes, self.key.iv, b"valid plaintext")
        tag = (tag * 2)[:tag_bytes]
        encode = bytes.hex if fmt == "hex" else b64
        body = {"keyId": self.key.id, "content": encode(ciphertext), "authTag": encode(tag)}
        body.update(changes)
        return {k: v for k, v in body.items() if v is not DROP}

    def key_body(self, **changes: Any) -> dict[str, Any]:
        """A valid key body (raw AES key and IV in hex) with `changes` applied."""
        body = {"server": "default", "key": os.urandom(32).hex(), "iv": os.urandom(12).hex()}
        body.update(changes)
        return {k: v for k, v in body.items() if v is not DROP}


@pytest.fixture
def ctx(new_live_user, live_rt) -> Ctx:
    user, api = new_live_user()
    vault = Vault(api, user)
    key = vault.new_key()
    return Ctx(vault, key, vault.put(key, b"existing", related=vault.store("contacts"))["id"], live_rt)


def send(api: Api, method: str, path: str, body: Any) -> Any:
    """Raw bytes go as they are (with a JSON content type); anything else as JSON."""
    if isinstance(body, bytes):
        return api.request(method, path, data=body, headers={"Content-Type": "application/json"})
    return api.request(method, path, json=body)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# --- bodies that are not a JSON object at all -------------------------------------------

NOT_AN_OBJECT: list[Any] = [
    pytest.param(b'{"keyId": ', id="truncated"),
    pytest.param(b'{"keyId": "x"} trailing', id="trailing-garbage"),
    pytest.param(b"{'keyId': 'x'}", id="single-quotes"),
    pytest.param(b"\xff\xfe\x00{", id="not-utf8"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"keyId": "x"}]', id="array-of-object"),
    pytest.param(b'"keyId"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"metadata": {"a": NaN}}', id="nan"),
    pytest.param(b"[" * 50_000 + b"]" * 50_000, id="nested-50k"),
]
WRITE_ROUTES = [
    ("PUT", "/objects"),
    ("POST", "/objects"),
    ("PATCH", "/objects/{obj}"),
    ("PUT", "/keys"),
    ("POST", "/keys"),
    ("PATCH", "/keys/{key}"),
    ("POST", "/servers"),
    ("PATCH", "/servers/default"),
    ("PUT", "/objects/publish/campaigns/{obj}"),
]


@pytest.mark.parametrize("raw", NOT_AN_OBJECT)
def test_bodies_that_are_not_json_objects_are_400_everywhere(ctx, raw):
    before = counts(ctx.rt, ctx.vault.user["id"])
    for method, template in WRITE_ROUTES:
        path = template.format(obj=ctx.obj, key=ctx.key.id)
        resp = send(ctx.vault.api, method, path, raw)
        assert resp.status_code == 400, (method, path, resp.status_code, resp.text[:200])
        assert_error(resp, 400)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


def test_a_body_that_is_not_labelled_json_is_415(ctx):
    before = counts(ctx.rt, ctx.vault.user["id"])
    for method, template in WRITE_ROUTES:
        body = json.dumps(ctx.object_body()).encode()
        path = template.format(obj=ctx.obj, key=ctx.key.id)
        resp = ctx.vault.api.request(method, path, data=body, headers={"Content-Type": "text/plain"})
        assert_error(resp, 415)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


# --- object writes ----------------------------------------------------------------------


def _b64_tag_of(size: int) -> Body:
    return lambda c: c.object_body("base64", tag_bytes=size)


OBJECT_CASES: list[Any] = [
    pytest.param(lambda c: c.object_body(content=12345), 400, id="content-number"),
    pytest.param(lambda c: c.object_body(content=["00"]), 400, id="content-list"),
    pytest.param(lambda c: c.object_body(content=None), 400, id="content-null"),
    pytest.param(lambda c: c.object_body(content=DROP), 400, id="content-missing"),
    pytest.param(lambda c: c.object_body(authTag=DROP), 400, id="tag-missing"),
    pytest.param(lambda c: c.object_body(authTag=16), 400, id="tag-number"),
    pytest.param(lambda c: c.object_body(authTag={"hex": "00"}), 400, id="tag-object"),
    pytest.param(lambda c: c.object_body(metadata=["a", "b"]), 400, id="metadata-list"),
    pytest.param(lambda c: c.object_body(metadata="{}"), 400, id="metadata-string"),
    pytest.param(lambda c: c.object_body(metadata=7), 400, id="metadata-number"),
    pytest.param(lambda c: c.object_body(keyId=12345), 400, id="keyId-number"),
    pytest.param(lambda c: c.object_body(keyId=[c.key.id]), 400, id="keyId-list"),
    pytest.param(lambda c: c.object_body(keyId=c.obj), 400, id="keyId-is-an-object-id"),
    pytest.param(lambda c: c.object_body(keyId="key_../../etc/passwd"), 400, id="keyId-path"),
    pytest.param(lambda c: c.object_body(key_id=c.vault.default_key()), 400, id="keyId-aliases-disagree"),
    pytest.param(lambda c: c.object_body(relatedId=5), 400, id="relatedId-number"),
    pytest.param(lambda c: c.object_body(relatedId="obj_short"), 400, id="relatedId-malformed"),
    pytest.param(lambda c: c.object_body(relatedId=c.key.id), 400, id="relatedId-is-a-key-id"),
    pytest.param(
        lambda c: c.object_body(relatedId=c.obj, relatedObjectId=c.vault.store()), 400, id="relatedId-aliases-disagree"
    ),
    pytest.param(lambda c: c.object_body(content="abc"), 400, id="hex-odd-length"),
    pytest.param(lambda c: c.object_body(content="zz" * 8, encoding="hex"), 400, id="hex-not-hex"),
    pytest.param(lambda c: c.object_body("base64", content="!!!!"), 400, id="base64-bad-chars"),
    pytest.param(lambda c: c.object_body("base64", content="QUJD="), 400, id="base64-bad-padding"),
    pytest.param(lambda c: c.object_body("base64", content="QUJDR"), 400, id="base64-bad-length"),
    pytest.param(lambda c: c.object_body(authTag="zz" * 16), 400, id="tag-neither-hex-nor-base64"),
    pytest.param(_b64_tag_of(11), 400, id="tag-11-bytes-base64"),
    pytest.param(_b64_tag_of(17), 400, id="tag-17-bytes-base64"),
    pytest.param(lambda c: c.object_body(tag_bytes=17), 400, id="tag-17-bytes-hex"),
    pytest.param(lambda c: c.object_body(tag_bytes=11, encoding="hex"), 400, id="tag-11-bytes-hex-explicit"),
    pytest.param(lambda c: c.object_body(authTag=""), 400, id="tag-empty"),
    pytest.param(lambda c: c.object_body(tag_bytes=32), 400, id="tag-32-bytes-hex"),
    pytest.param(lambda c: c.object_body(encoding="base64"), 400, id="explicit-base64-on-hex"),
    pytest.param(lambda c: c.object_body("base64", encoding="hex"), 400, id="explicit-hex-on-base64"),
    pytest.param(lambda c: c.object_body(encoding="utf8"), 400, id="encoding-unknown"),
    pytest.param(lambda c: c.object_body(encoding=1), 400, id="encoding-number"),
    pytest.param(lambda c: c.object_body(encoding=["hex"]), 400, id="encoding-list"),
    pytest.param(lambda c: c.object_body(metadata={"blob": "x" * 17_000}), 413, id="metadata-oversized"),
    pytest.param(lambda c: c.object_body(metadata=_deep(200)), 400, id="metadata-nested-200"),
    pytest.param(
        lambda c: (
            json.dumps(c.object_body(metadata={}))
            .replace('"metadata": {}', '"metadata": ' + '{"a": ' * 960 + "1" + "}" * 961)
            .encode()
        ),
        400,
        id="metadata-nested-960",
    ),
    pytest.param(
        lambda c: json.dumps(c.object_body(metadata={"a": "\ud800"})).encode(), 400, id="metadata-lone-surrogate"
    ),
    pytest.param(
        lambda c: json.dumps(c.object_body(metadata={"a": 1})).replace('"a": 1', '"a": 1e999').encode(),
        400,
        id="metadata-infinite-number",
    ),
]


@pytest.mark.parametrize("body,status", OBJECT_CASES)
def test_object_writes_with_bad_fields_are_refused_and_write_nothing(ctx, body, status):
    before, record = counts(ctx.rt, ctx.vault.user["id"]), ctx.vault.api.get(f"/objects/{ctx.obj}").json()
    for method, path in (("PUT", "/objects"), ("POST", "/objects"), ("PATCH", f"/objects/{ctx.obj}")):
        resp = send(ctx.vault.api, method, path, body(ctx))
        assert resp.status_code == status, (method, resp.status_code, resp.text[:300])
        assert_error(resp, status)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before
    assert ctx.vault.api.get(f"/objects/{ctx.obj}").json() == record


def test_refusals_name_the_field_at_fault(ctx):
    cases = [
        ("/objects", ctx.object_body(content="abc"), "content"),
        ("/objects", ctx.object_body("base64", content="!!!!"), "content"),
        ("/objects", ctx.object_body(tag_bytes=17), "authTag"),
        ("/objects", ctx.object_body(metadata=[1]), "metadata"),
        ("/objects", ctx.object_body(keyId=5), "keyId"),
        ("/objects", ctx.object_body(relatedId="obj_x"), "relatedId"),
        ("/keys", ctx.key_body(key="zz" * 32), "key"),
        ("/keys", ctx.key_body(iv=os.urandom(11).hex()), "iv"),
        ("/keys", ctx.key_body(server="nowhere"), "server"),
    ]
    for path, body, field in cases:
        message = assert_error(ctx.vault.api.put(path, json=body), 400)["message"]
        assert field in message, (field, message)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"content": "00" * 4}, id="content-without-tag"),
        pytest.param({"authTag": "00" * 16}, id="tag-without-content"),
        pytest.param({"keyId": None}, id="keyId-null"),
        pytest.param({"metadata": [1]}, id="metadata-list"),
        pytest.param({"relatedId": "obj_" + "A" * 21}, id="relatedId-malformed"),
        pytest.param({"unknownField": 1}, id="only-unknown-fields"),
    ],
)
def test_patch_object_needs_a_valid_change(ctx, body):
    before, record = counts(ctx.rt, ctx.vault.user["id"]), ctx.vault.api.get(f"/objects/{ctx.obj}").json()
    assert_error(ctx.vault.api.patch(f"/objects/{ctx.obj}", json=body), 400)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before
    assert ctx.vault.api.get(f"/objects/{ctx.obj}").json() == record


# --- key writes -------------------------------------------------------------------------

KEY_CASES: list[Any] = [
    pytest.param(lambda c: c.key_body(server=DROP, key=DROP, iv=DROP), 400, id="server-missing"),
    pytest.param(lambda c: c.key_body(server=1), 400, id="server-number"),
    pytest.param(lambda c: c.key_body(server=""), 400, id="server-empty"),
    pytest.param(lambda c: c.key_body(server="nowhere"), 400, id="server-unknown"),
    pytest.param(lambda c: c.key_body(server="../default"), 400, id="server-path"),
    pytest.param(lambda c: c.key_body(iv=DROP), 400, id="key-without-iv"),
    pytest.param(lambda c: c.key_body(key=DROP), 400, id="iv-without-key"),
    pytest.param(lambda c: c.key_body(key=os.urandom(20).hex()), 400, id="key-20-bytes"),
    pytest.param(lambda c: c.key_body(key=""), 400, id="key-empty"),
    pytest.param(lambda c: c.key_body(key=os.urandom(255).hex()), 400, id="key-255-bytes"),
    pytest.param(lambda c: c.key_body(key=os.urandom(257).hex()), 400, id="key-257-bytes"),
    pytest.param(lambda c: c.key_body(key=32), 400, id="key-number"),
    pytest.param(lambda c: c.key_body(iv=12), 400, id="iv-number"),
    pytest.param(lambda c: c.key_body(iv=os.urandom(11).hex()), 400, id="iv-11-bytes-hex"),
    pytest.param(lambda c: c.key_body(iv=os.urandom(13).hex()), 400, id="iv-13-bytes-hex"),
    pytest.param(lambda c: c.key_body(key=b64(os.urandom(32)), iv=b64(os.urandom(11))), 400, id="iv-11-bytes-b64"),
    pytest.param(lambda c: c.key_body(key=b64(os.urandom(32)), iv=b64(os.urandom(13))), 400, id="iv-13-bytes-b64"),
    pytest.param(lambda c: c.key_body(key="zz" * 32), 400, id="key-not-hex"),
    pytest.param(lambda c: c.key_body(key="!" * 44, iv=b64(os.urandom(12))), 400, id="key-not-base64"),
    pytest.param(lambda c: c.key_body(encoding="base64"), 400, id="explicit-base64-on-hex"),
    pytest.param(
        lambda c: c.key_body(key=b64(os.urandom(32)), iv=b64(os.urandom(12)), encoding="hex"),
        400,
        id="explicit-hex-on-base64",
    ),
    pytest.param(lambda c: c.key_body(encoding="raw"), 400, id="encoding-unknown"),
    pytest.param(lambda c: c.key_body(metadata=[1]), 400, id="metadata-list"),
    pytest.param(lambda c: c.key_body(metadata={"x": "y" * 17_000}), 413, id="metadata-oversized"),
]


@pytest.mark.parametrize("body,status", KEY_CASES)
def test_key_writes_with_bad_fields_are_refused_and_write_nothing(ctx, body, status):
    before = counts(ctx.rt, ctx.vault.user["id"])
    for method in ("PUT", "POST"):
        resp = send(ctx.vault.api, method, "/keys", body(ctx))
        assert resp.status_code == status, (method, resp.status_code, resp.text[:300])
        assert_error(resp, status)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"deprecated": "yes"}, id="deprecated-string"),
        pytest.param({"deprecated": 1}, id="deprecated-number"),
        pytest.param({"key": os.urandom(32).hex()}, id="key-without-iv"),
        pytest.param({"key": os.urandom(20).hex(), "iv": os.urandom(12).hex()}, id="key-20-bytes"),
        pytest.param({"key": os.urandom(32).hex(), "iv": os.urandom(11).hex()}, id="iv-11-bytes"),
        pytest.param({"metadata": "x"}, id="metadata-string"),
    ],
)
def test_patch_key_needs_a_valid_change(ctx, body):
    before, record = counts(ctx.rt, ctx.vault.user["id"]), ctx.vault.api.get(f"/keys/{ctx.key.id}").json()
    assert_error(ctx.vault.api.patch(f"/keys/{ctx.key.id}", json=body), 400)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before
    assert ctx.vault.api.get(f"/keys/{ctx.key.id}").json() == record


# --- publishing, servers, query strings -------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda c: ("campaigns", {}), id="objectId-missing"),
        pytest.param(lambda c: ("campaigns", {"objectId": 5}), id="objectId-number"),
        pytest.param(lambda c: ("campaigns", {"objectId": c.key.id}), id="objectId-is-a-key-id"),
        pytest.param(lambda c: ("campaigns", {"objectId": "obj_" + "x" * 23}), id="objectId-malformed"),
        pytest.param(lambda c: ("Bad Type!", {"objectId": c.obj}), id="type-bad-characters"),
        pytest.param(lambda c: ("t" * 65, {"objectId": c.obj}), id="type-too-long"),
    ],
)
def test_publish_with_bad_input_is_refused(ctx, make):
    pub_type, body = make(ctx)
    before = counts(ctx.rt, ctx.vault.user["id"])
    assert_error(ctx.vault.api.put(f"/objects/publish/{pub_type}/{ctx.obj}", json=body), 400)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


def test_patch_server_needs_a_boolean(ctx):
    assert ctx.vault.api.post("/servers", json={"name": "byok", "mode": "generate"}).status_code == 201
    for body in ({}, {"deprecated": "true"}, {"deprecated": None}, {"deprecated": 1}):
        assert_error(ctx.vault.api.patch("/servers/byok", json=body), 400)
    assert ctx.vault.api.get("/servers").json()[0]["deprecated"] is False


# Small tables checked in one test each (every row still asserted separately, with its name).
PAGING_QUERIES = [
    "limit=0",
    "limit=-1",
    "limit=abc",
    "limit=1001",
    "limit=1.5",
    "limit=",
    "limit=%C2%B2",
    "limit=%D9%A3",
    "limit=99999999999999999999999",
    "after=garbage",
    "after=obj_" + "A" * 22,
    "limit=2&after=%00",
]
CASCADE_VALUES = ["maybe", "", "yes%20please", "%00", "TRUE%00"]
WRONG_METHODS = [
    ("GET", "/objects"),
    ("DELETE", "/objects"),
    ("POST", "/objects/{obj}"),
    ("PUT", "/objects/{obj}"),
    ("POST", "/objects/{obj}/related"),
    ("GET", "/keys"),
    ("DELETE", "/keys"),
    ("POST", "/keys/{key}"),
    ("POST", "/root"),
    ("DELETE", "/servers"),
    ("GET", "/servers/default"),
    ("POST", "/objects/publish/campaigns"),
]


def test_related_paging_parameters_are_validated(ctx):
    for query in PAGING_QUERIES:
        resp = raw_request(
            ctx.vault.api.base_url,
            "GET",
            f"/api/objects/{ctx.vault.store()}/related?{query}",
            ctx.vault.user["api_key"],
        )
        assert resp.status_code == 400, (query, resp.status_code, resp.text[:200])
        assert_error(resp, 400)


def test_delete_cascade_must_be_a_boolean(ctx):
    before = counts(ctx.rt, ctx.vault.user["id"])
    for value in CASCADE_VALUES:
        resp = raw_request(
            ctx.vault.api.base_url, "DELETE", f"/api/objects/{ctx.obj}?cascade={value}", ctx.vault.user["api_key"]
        )
        assert resp.status_code == 400, (value, resp.status_code, resp.text[:200])
        assert_error(resp, 400)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


def test_wrong_methods_are_405_json(ctx):
    before = counts(ctx.rt, ctx.vault.user["id"])
    for method, template in WRONG_METHODS:
        resp = ctx.vault.api.request(method, template.format(obj=ctx.obj, key=ctx.key.id), json=ctx.object_body())
        assert resp.status_code == 405, (method, template, resp.status_code)
        assert_error(resp, 405, "method_not_allowed")
        assert resp.headers.get("Allow"), (method, template)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


# --- hostile ids in paths ---------------------------------------------------------------

PATH_ROUTES = [
    ("GET", "/api/objects/{id}", None),
    ("PATCH", "/api/objects/{id}", {"metadata": {"x": 1}}),
    ("DELETE", "/api/objects/{id}", None),
    ("DELETE", "/api/objects/{id}?cascade=true", None),
    ("GET", "/api/objects/{id}/related", None),
    ("GET", "/api/objects/{id}/related?limit=5", None),
    ("GET", "/api/keys/{id}", None),
    ("PATCH", "/api/keys/{id}", {"deprecated": True}),
    ("DELETE", "/api/keys/{id}", None),
    ("PUT", "/api/objects/publish/campaigns/{id}", "own"),
    ("DELETE", "/api/objects/publish/campaigns/{id}", None),
    ("PATCH", "/api/servers/{id}", {"deprecated": True}),
]
TYPE_ROUTES = [
    ("GET", "/api/objects/publish/{id}", None),
    ("PUT", "/api/objects/publish/{id}/{own}", "own"),
    ("DELETE", "/api/objects/publish/{id}/{own}", None),
]
HOSTILE_IDS = [
    pytest.param("", id="empty"),
    pytest.param("..", id="dotdot"),
    pytest.param("../", id="dotdot-slash"),
    pytest.param("../../../../etc/passwd", id="traversal"),
    pytest.param("..%2F..%2Fetc", id="encoded-slash-traversal"),
    pytest.param("%2e%2e", id="encoded-dotdot"),
    pytest.param("%2e%2e%2f%2e%2e%2fetc%2fpasswd", id="fully-encoded-traversal"),
    pytest.param("obj_%27%22", id="quotes"),
    pytest.param("obj_%27%20OR%20%271%27%3D%271", id="sql-injection"),
    pytest.param("%E2%98%83" * 8, id="unicode"),
    pytest.param("obj_" + "%C3%A9" * 22, id="unicode-right-length"),
    pytest.param("obj_" + "A" * 21, id="obj-too-short"),
    pytest.param("obj_" + "A" * 23, id="obj-too-long"),
    pytest.param("key_" + "A" * 22, id="wrong-prefix"),
    pytest.param("%00", id="nul"),
    pytest.param("obj_" + "A" * 21 + "%00", id="nul-at-end"),
    pytest.param("obj_" + "A" * 22 + "%0a", id="newline-at-end"),
    pytest.param("obj_" + "A" * 22 + "%20", id="space-at-end"),
    pytest.param("obj_" + "a" * 10_000, id="10kB"),
]


def _assert_all_refused(ctx: Ctx, routes: list[tuple[str, str, Any]], hostile: str, expected: int | None) -> None:
    """Every route answers `expected` (any 4xx when None) as a JSON error, and nothing is written."""
    api, before = ctx.vault.api, counts(ctx.rt, ctx.vault.user["id"])
    for method, template, body in routes:
        target = template.format(id=hostile, own=ctx.obj)
        payload = {"objectId": ctx.obj} if body == "own" else body
        raw = None if payload is None else json.dumps(payload).encode()
        resp = raw_request(
            api.base_url,
            method,
            target,
            ctx.vault.user["api_key"],
            raw,
            {"Content-Type": "application/json"} if raw else None,
        )
        status = resp.status_code if expected is None and 400 <= resp.status_code < 500 else expected
        assert resp.status_code == status, (method, target[:80], resp.status_code, resp.text[:200])
        assert_error(resp, resp.status_code)
    assert counts(ctx.rt, ctx.vault.user["id"]) == before


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_hostile_ids_in_paths_are_json_4xx_and_write_nothing(ctx, hostile):
    # Spec §1: an id that does not fit the strict pattern is a 404, like any unknown id.
    _assert_all_refused(ctx, PATH_ROUTES, hostile, 404)


def test_hostile_publication_types_are_json_4xx_and_write_nothing(ctx):
    for hostile in (
        "..",
        "%2e%2e",
        "%00",
        "camp%27aigns",
        "%E2%98%83",
        "UP%20PER",
        "a" * 65,
        "camp;aigns",
        "-campaigns",
        "%2e%2e%2fcampaigns",
    ):
        _assert_all_refused(ctx, TYPE_ROUTES, hostile, None)  # a type is a name, not an id: any 4xx


# --- bodies over TELENTIR_MAX_BODY_BYTES ------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Runtime]]:
    """A second real server that accepts bodies of at most 4096 bytes."""
    with running_server(tmp_path_factory, "small", TELENTIR_MAX_BODY_BYTES="4096") as server:
        with closing(runtime_over(server.data_dir)) as rt:
            yield server, rt


@pytest.fixture
def small_ctx(small_server) -> Iterator[Ctx]:
    server, rt = small_server
    user = make_user(rt)
    api = Api(server.url, user["api_key"])
    vault = Vault(api, user)
    key = vault.new_key()
    yield Ctx(vault, key, vault.put(key, b"existing")["id"], rt)
    api.close()


def _big(ctx: Ctx, method: str, path: str, size: int) -> dict[str, Any]:
    filler = os.urandom(size // 2).hex()
    if path == "/keys":
        return ctx.key_body(metadata={"pad": filler})
    if path.startswith("/servers"):
        return {"name": "big", "mode": "upload_public", "publicKey": filler, "deprecated": True}
    if path.startswith("/objects/publish"):
        return {"objectId": ctx.obj, "pad": filler}
    return ctx.object_body(content=filler)


BIG_ROUTES = [
    ("PUT", "/objects"),
    ("POST", "/objects"),
    ("PATCH", "/objects/{obj}"),
    ("PUT", "/keys"),
    ("POST", "/keys"),
    ("POST", "/servers"),
    ("PUT", "/objects/publish/campaigns/{obj}"),
]


@pytest.mark.parametrize("method,template", BIG_ROUTES)
def test_bodies_over_the_limit_are_413_and_write_nothing(small_ctx, method, template):
    path = template.format(obj=small_ctx.obj)
    before = counts(small_ctx.rt, small_ctx.vault.user["id"])
    body = json.dumps(_big(small_ctx, method, path, 6000)).encode()
    assert len(body) > 4096
    assert_error(send(small_ctx.vault.api, method, path, body), 413)
    # The same body streamed without a Content-Length (chunked) is refused the same way.
    chunks = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])
    resp = small_ctx.vault.api.request(method, path, data=chunks, headers={"Content-Type": "application/json"})
    assert_error(resp, 413)
    assert counts(small_ctx.rt, small_ctx.vault.user["id"]) == before


def test_a_body_just_under_the_limit_is_accepted(small_ctx):
    body = small_ctx.object_body(content=os.urandom(1500).hex())
    assert len(json.dumps(body)) < 4096
    assert small_ctx.vault.api.put("/objects", json=body).status_code == 201


def test_a_streamed_body_over_the_limit_is_413_even_when_its_prefix_is_valid(small_ctx):
    body = json.dumps(small_ctx.object_body()).encode() + b" " * 6000
    before = counts(small_ctx.rt, small_ctx.vault.user["id"])
    chunks = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])
    resp = small_ctx.vault.api.put("/objects", data=chunks, headers={"Content-Type": "application/json"})
    assert counts(small_ctx.rt, small_ctx.vault.user["id"]) == before
    assert_error(resp, 413)
