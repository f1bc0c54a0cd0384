"""A body that ends before its Content-Length is refused, and nothing is written (issue 20).

Raw sockets against the real server (both worker classes): `PUT /api/keys` announcing 50
bytes and sending the 20 of `{"server":"default"}` used to make a key (the JSON parses).
Now: the client half-closes → 400 `invalid_request`; the client closes or gives up → no key.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from telentir.body import BodyCutShort, LengthCheckedInput
from telentir.runtime import Runtime

from ..events_support import Account
from ..support import ServerProcess, running_server

BODY = b'{"server":"default"}'


@pytest.fixture(scope="module", params=["gthread", "gevent"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory, f"short-{request.param}", worker_class=request.param) as srv:
        yield srv


def put_key(account: Account, length: int, body: bytes) -> bytes:
    """The raw `PUT /api/keys` request announcing `length` bytes and carrying `body`."""
    head = (
        f"PUT /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {account.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Read the response until the server closes: its status and JSON body."""
    sock.settimeout(30)
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def new_user(server: ServerProcess, new_account: Callable[[], Account]) -> Account:
    """A user whose root exists already (its stores' default keys are made on first use)."""
    user = new_account()
    resp = requests.get(server.url + "/api/root", headers={"Authorization": f"Bearer {user.key}"}, timeout=30)
    assert resp.status_code == 200
    return user


def keys_of(rt: Runtime, user_id: str) -> int:
    """How many keys the user has."""
    return int(rt.db.query_one("SELECT count(*) AS n FROM keys WHERE user_id = ?", (user_id,))["n"])


def test_the_whole_body_makes_a_key(
    server: ServerProcess, server_rt: Runtime, new_account: Callable[[], Account]
) -> None:
    """The control: the same request, complete, is served (and the count below can see a key)."""
    alice = new_user(server, new_account)
    keys = keys_of(server_rt, alice.id)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(put_key(alice, len(BODY), BODY))
        status, _ = answer(sock)
    assert status == 201
    assert keys_of(server_rt, alice.id) == keys + 1


def test_a_body_slow_but_whole_makes_a_key(
    server: ServerProcess, server_rt: Runtime, new_account: Callable[[], Account]
) -> None:
    alice = new_user(server, new_account)
    keys = keys_of(server_rt, alice.id)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(put_key(alice, len(BODY), BODY[:7]))
        time.sleep(0.5)
        sock.sendall(BODY[7:])
        status, _ = answer(sock)
    assert status == 201
    assert keys_of(server_rt, alice.id) == keys + 1


def test_a_half_closed_short_body_is_400_and_makes_no_key(
    server: ServerProcess, server_rt: Runtime, new_account: Callable[[], Account]
) -> None:
    alice = new_user(server, new_account)
    keys = keys_of(server_rt, alice.id)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(put_key(alice, 50, BODY))
        sock.shutdown(socket.SHUT_WR)
        status, body = answer(sock)
    assert status == 400 and body["error"] == "invalid_request", body
    assert "20 of its 50 bytes" in str(body["message"]), body
    assert keys_of(server_rt, alice.id) == keys


@pytest.mark.parametrize("gives_up_after", [0.0, 2.0])
def test_a_client_gone_before_its_body_is_complete_changes_nothing(
    server: ServerProcess, server_rt: Runtime, new_account: Callable[[], Account], gives_up_after: float
) -> None:
    alice = new_user(server, new_account)
    keys = keys_of(server_rt, alice.id)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(put_key(alice, 50, BODY))
    time.sleep(gives_up_after)
    sock.close()
    # The server has read the end of the connection by now; give it time to finish (or not) the request.
    time.sleep(2.0)
    assert keys_of(server_rt, alice.id) == keys
    # And the server still serves.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(put_key(alice, len(BODY), BODY))
        assert answer(sock)[0] == 201


def test_a_short_body_with_a_reset_connection_makes_no_key(
    server: ServerProcess, server_rt: Runtime, new_account: Callable[[], Account]
) -> None:
    """SO_LINGER 0: the client's close is a reset, not an end of stream."""
    alice = new_user(server, new_account)
    keys = keys_of(server_rt, alice.id)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(put_key(alice, 50, BODY))
    time.sleep(0.3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    time.sleep(2.0)
    assert keys_of(server_rt, alice.id) == keys


# --- the stream itself -------------------------------------------------------------------------


def checked(data: bytes, length: int) -> LengthCheckedInput:
    return LengthCheckedInput(io.BytesIO(data), length)


def test_reads_of_a_whole_body_give_it_and_stop_at_its_length() -> None:
    stream = checked(b"line one\nline two\nNEXT REQUEST", 18)
    assert stream.readline() == b"line one\n"
    assert stream.read(4) == b"line"
    assert stream.read() == b" two\n"
    assert stream.read() == b"" and stream.readline() == b""
    assert list(checked(b"a\nb\n", 4)) == [b"a\n", b"b\n"]


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.read(),
        lambda s: s.read(100),
        lambda s: s.readlines(),
        lambda s: [s.read(3) for _ in range(17)],
    ],
    ids=["read-all", "read-size", "readlines", "read-pieces"],
)
def test_every_read_that_meets_an_early_end_is_a_400(read: Callable[[LengthCheckedInput], object]) -> None:
    with pytest.raises(BodyCutShort) as refused:
        read(checked(b'{"server":"default"}', 50))
    assert refused.value.status == 400 and refused.value.code == "invalid_request"


def test_a_failing_connection_is_a_400_too() -> None:
    class Reset(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionResetError("reset by peer")

    with pytest.raises(BodyCutShort):
        LengthCheckedInput(Reset(), 10).read()
