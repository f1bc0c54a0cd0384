"""Text that is not text gets a JSON 400 and changes nothing (docs/protocol.md §1.1).

Lone surrogates, NUL and invalid UTF-8, in JSON bodies, query strings and headers, against
the real server (gunicorn). Each of these inputs answered 500 before; an id in a path keeps
its 404 whatever its bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime

from ..conftest import make_user
from ..support import FIXED_MASTER_KEY, Api, ServerProcess, assert_error

SURROGATE = b'"\\ud800"'  # a JSON escape of a lone surrogate: valid JSON syntax, not text
NUL = b'"a\\u0000b"'
RAW_SURROGATE = b'"\xed\xa0\x80"'  # the UTF-8 encoding of U+D800, which strict UTF-8 refuses
NOT_TEXT = {"escaped-surrogate": SURROGATE, "nul": NUL, "encoded-surrogate": RAW_SURROGATE}

User = Callable[[], tuple[dict[str, Any], Api]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server, sign-up open (TELENTIR_SIGNUP, where the setting exists)."""
    data_dir = tmp_path_factory.mktemp("encoding") / "data"
    srv = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_SIGNUP": "open"}).start()
    yield srv
    srv.discard()


@pytest.fixture
def new_user(server: ServerProcess, server_rt: Runtime) -> Iterator[User]:
    """Factory: a verified user with an API key, and a client authenticated as them."""
    clients: list[Api] = []

    def factory() -> tuple[dict[str, Any], Api]:
        user = make_user(server_rt)
        clients.append(Api(server.url, user["api_key"]))
        return user, clients[-1]

    yield factory
    for api in clients:
        api.close()


def post_raw(api: Api, method: str, path: str, body: bytes) -> requests.Response:
    """Send `body` byte for byte as JSON."""
    return api.request(method, path, data=body, headers={"Content-Type": "application/json"})


def signup(email: bytes = b'"ada@example.com"', first_name: bytes = b'"Ada"') -> bytes:
    """A sign-up body with these JSON-encoded fields and valid other fields."""
    return (
        b'{"email": ' + email + b', "firstName": ' + first_name + b', "phone": "+15555550123", '
        b'"password": "correct horse", "confirmPassword": "correct horse"}'
    )


# --- JSON bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_TEXT.values(), ids=NOT_TEXT.keys())
def test_login_without_a_credential(server: ServerProcess, value: bytes) -> None:
    api = Api(server.url)
    resp = post_raw(api, "POST", "/auth/login", b'{"email": ' + value + b', "password": "correct horse"}')
    assert "email" in assert_error(resp, 400, "invalid_request")["message"]


@pytest.mark.parametrize("value", NOT_TEXT.values(), ids=NOT_TEXT.keys())
@pytest.mark.parametrize("field", ["email", "firstName"])
def test_register_creates_nobody(server: ServerProcess, server_rt: Runtime, value: bytes, field: str) -> None:
    """Inside an otherwise valid sign-up, where it would reach the database."""
    users = server_rt.db.query_value("SELECT COUNT(*) FROM users")
    inner = value[1:-1]  # the bad character, without the JSON quotes
    body = signup(email=b'"ada' + inner + b'@example.com"') if field == "email" else signup(first_name=value)
    resp = post_raw(Api(server.url), "POST", "/auth/register", body)
    assert field in assert_error(resp, 400, "invalid_request")["message"]
    assert server_rt.db.query_value("SELECT COUNT(*) FROM users") == users


@pytest.mark.parametrize(
    "method, path, body, field",
    [
        ("PUT", "/keys", b'{"server": ' + SURROGATE + b"}", "server"),
        ("POST", "/keys", b'{"server": "default", "metadata": {"note": ' + NUL + b"}}", "metadata.note"),
        ("PUT", "/api-keys", b'{"name": ' + SURROGATE + b"}", "name"),
        ("POST", "/connect", b'{"repository": "contacts", "path": ' + SURROGATE + b"}", "path"),
        (
            "POST",
            "/connect",
            b'{"repository": "contacts", "path": "/x", "params": {"q": [1, ' + NUL + b"]}}",
            "params.q[1]",
        ),
        ("POST", "/servers", b'{"name": "laptop", "mode": "generate", ' + SURROGATE + b": 1}", "field name"),
        ("POST", "/auth/phone/verify", b'{"code": ' + RAW_SURROGATE + b"}", "code"),
    ],
)
def test_authenticated_bodies(new_user: User, method: str, path: str, body: bytes, field: str) -> None:
    _, api = new_user()
    message = assert_error(post_raw(api, method, path, body), 400, "invalid_request")["message"]
    assert field in message


def test_a_refused_key_body_writes_nothing(new_user: User, server_rt: Runtime) -> None:
    user, api = new_user()
    assert api.get("/root").status_code == 200
    keys = server_rt.db.query_value("SELECT COUNT(*) FROM keys WHERE user_id = ?", (user["id"],))
    body = b'{"server": "default", "metadata": {"a": {"b": ["ok", ' + SURROGATE + b"]}}}"
    assert_error(post_raw(api, "PUT", "/keys", body), 400, "invalid_request")
    assert server_rt.db.query_value("SELECT COUNT(*) FROM keys WHERE user_id = ?", (user["id"],)) == keys


def test_a_surrogate_pair_is_text(new_user: User) -> None:
    """Escaped pairs decode to one character outside the BMP: fine."""
    _, api = new_user()
    resp = post_raw(api, "PUT", "/api-keys", b'{"name": "rocket \\ud83d\\ude80"}')
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "rocket \U0001f680"


# --- query strings --------------------------------------------------------------------


@pytest.mark.parametrize("escaped", ["%FF", "%00", "%ED%A0%80", "%C3"], ids=["ff", "nul", "surrogate", "cut"])
@pytest.mark.parametrize(
    "path",
    [
        "/auth?x={}",
        "/objects/obj_0000000000000000000000/related?after={}",
        "/events/key_created?keyId={}",
        "/auth?{}=1",
    ],
)
def test_query_strings(new_user: User, path: str, escaped: str) -> None:
    _, api = new_user()
    # stream=True: were the parameter accepted, an event stream would never end.
    with api.get(path.format(escaped), stream=True) as resp:
        assert resp.status_code == 400, resp.status_code  # before reading the body
        assert_error(resp, 400, "invalid_request")


def test_a_query_string_of_text_is_fine(new_user: User) -> None:
    _, api = new_user()
    assert api.get("/auth?note=%C3%A9t%C3%A9+%E2%9C%93").status_code == 200


# --- headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, name, value",
    [
        ("/events/key_created", "Last-Event-ID", b"\xff"),
        ("/events/key_created", "Last-Event-ID", b"\xed\xa0\x80"),
        ("/auth", "X-Anything", b"caf\xe9"),
        ("/auth", "Authorization", b"Bearer tlk_\xff"),
        ("/auth", "Cookie", b"token=\xff\xfe"),
    ],
)
def test_headers(server: ServerProcess, new_user: User, path: str, name: str, value: bytes) -> None:
    user, _ = new_user()
    headers: dict[str, str | bytes] = {"Authorization": f"Bearer {user['api_key']}", name: value}
    # stream=True: were the header accepted, an event stream would never end.
    with requests.get(server.url + "/api" + path, headers=headers, stream=True, timeout=10) as resp:
        assert resp.status_code == 400, resp.status_code  # before reading: a stream's body never ends
        assert_error(resp, 400, "invalid_request")
        message = resp.json()["message"].lower()
        assert name.lower() in message or "token cookie" in message


def test_other_cookies_are_not_ours_to_judge(server: ServerProcess, new_user: User) -> None:
    """A browser sends every cookie of the host; another application's bytes are not our input."""
    user, _ = new_user()
    headers = {"Authorization": f"Bearer {user['api_key']}", "Cookie": b"theirs=caf\xe9; lang=fr"}
    resp = requests.get(server.url + "/api/auth", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text


# --- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("escaped", ["%FF", "%00", "%ED%A0%80", "obj_%00%00"])
@pytest.mark.parametrize("route", ["/objects/{}", "/keys/{}", "/connect/jobs/{}", "/objects/{}/related"])
def test_an_id_in_a_path_keeps_its_404(new_user: User, route: str, escaped: str) -> None:
    _, api = new_user()
    assert_error(api.get(route.format(escaped)), 404)
