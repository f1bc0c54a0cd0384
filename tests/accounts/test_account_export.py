"""GET /account/export against a real gunicorn server (contract §10): NDJSON lines that match the live records
and decrypt with the keys exported beside them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ..dataplane_support import Vault, decrypt, load_private, unwrap
from ..support import Api, ServerProcess, assert_error, running_server
from .test_auth_flow import fresh_addr, read_code, signup

EXPORTS_PER_HOUR = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: open sign-up, behind one proxy hop; small ciphertexts inline, larger in files."""
    settings = {
        "TELENTIR_SIGNUP": "open",
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_INLINE_MAX_BYTES": "64",
        "TELENTIR_EXPORTS_PER_USER_PER_HOUR": str(EXPORTS_PER_HOUR),
    }
    with running_server(tmp_path_factory, "export", **settings) as srv:
        yield srv


@pytest.fixture
def session(server: ServerProcess) -> Iterator[Api]:
    """A signed-up, phone-verified user's session."""
    made = signup(server.url, headers={"X-Forwarded-For": fresh_addr()})
    api = Api(server.url, made["token"])
    api.session.headers["X-Forwarded-For"] = fresh_addr()
    assert api.post("/auth/phone/send").status_code == 200
    assert api.post("/auth/phone/verify", json={"code": read_code(server, made["phone"])}).status_code == 200
    yield api
    api.close()


def _export(api: Api) -> list[dict[str, Any]]:
    resp = api.get("/account/export", stream=True)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert resp.headers["Cache-Control"] == "no-store"
    return [json.loads(line) for line in resp.iter_lines() if line]


def test_every_line_matches_its_live_record_and_decrypts(server: ServerProcess, session: Api) -> None:
    vault = Vault(session, {})
    key = vault.new_key()
    plaintexts = {b"short", b"a longer secret that goes to a file " * 20, b"third"}
    made = {vault.put(key, text, related=vault.store())["id"]: text for text in plaintexts}
    first = next(iter(made))
    assert session.put(f"/objects/publish/card/{vault.store()}", json={"objectId": first}).status_code == 200
    assert session.post("/servers", json={"name": "laptop", "mode": "generate"}).status_code == 201

    lines = _export(session)
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "account" and set(kinds) == {"account", "server", "key", "object", "publication"}
    account = lines[0]
    profile = session.get("/auth").json()["auth"]
    assert {k: account[k] for k in profile} == profile
    assert account["stores"] == session.get("/root").json()["stores"]

    keys = {line["id"]: line for line in lines if line["kind"] == "key"}
    objects = {line["id"]: line for line in lines if line["kind"] == "object"}
    for key_id, line in keys.items():
        assert {k: v for k, v in line.items() if k != "kind"} == session.get(f"/keys/{key_id}").json()
    for object_id, line in objects.items():
        assert {k: v for k, v in line.items() if k != "kind"} == session.get(f"/objects/{object_id}").json()
    assert set(made) <= set(objects)
    publications = [line for line in lines if line["kind"] == "publication"]
    live = session.get("/objects/publish/card").json()
    assert [{k: v for k, v in p.items() if k != "kind"} for p in publications] == live

    # Every object decrypts with the exported keys: each unwrapped by its server's exported private key.
    servers = {line["name"]: line for line in lines if line["kind"] == "server"}
    assert servers["laptop"]["mode"] == "generate" and "privateKey" not in servers["laptop"]
    private = load_private(servers["default"]["privateKey"])
    for object_id, line in objects.items():
        key_line = keys[line["key_id"]]
        aes = unwrap(private, bytes.fromhex(key_line["key"]))
        plain = decrypt(
            aes, bytes.fromhex(key_line["iv"]), bytes.fromhex(line["content"]), bytes.fromhex(line["auth_tag"])
        )
        if object_id in made:
            assert plain == made[object_id]


def test_export_is_audited_and_takes_any_credential(server: ServerProcess, session: Api) -> None:
    key = session.put("/api-keys", json={"name": "export"}).json()["key"]
    by_key = Api(server.url, key)
    lines = _export(by_key)
    assert lines[0]["kind"] == "account"
    audit = session.get("/audit").json()["items"]
    assert audit[0]["action"] == "account_exported" and audit[0]["credential"] == "api_key"
    assert_error(Api(server.url).get("/account/export"), 401)


def test_exports_per_user_are_limited(server: ServerProcess, session: Api) -> None:
    for _ in range(EXPORTS_PER_HOUR):
        assert _export(session)[0]["kind"] == "account"
    refused = session.get("/account/export")
    assert_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
