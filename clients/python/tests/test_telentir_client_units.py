"""Pieces of the client that need no server: the SSE parser, key loading, the envelope, errors without an answer."""

from __future__ import annotations

import base64
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from telentir_client import Telentir, TelentirError, crypto
from telentir_client.events import SSEParser
from telentir_client.stores import item_of, payload_of


def frames(parser: SSEParser, *pieces: str) -> list[tuple[str | None, str, list[str]]]:
    found = []
    for piece in pieces:
        found += [(frame.id, frame.event, frame.data) for frame in parser.feed(piece)]
    return found


def test_the_parser_reads_frames_split_anywhere_with_any_line_ending() -> None:
    text = (
        'retry: 3000\r\n\r\n: keep-alive\n\nid: 7\nevent: object_created\ndata: {"a":\ndata: 1}\n\nid: 8\rdata: x\r\r\n'
    )
    whole = frames(SSEParser(), text)
    assert whole == [("7", "object_created", ['{"a":', "1}"]), ("8", "", ["x"])]
    for size in (1, 2, 3, 5):
        parser = SSEParser()
        assert frames(parser, *(text[i : i + size] for i in range(0, len(text), size))) == whole
        assert parser.retry_ms == 3000


def test_the_parser_keeps_a_trailing_cr_until_it_knows_what_follows() -> None:
    parser = SSEParser()
    assert frames(parser, "data: a\r") == []
    assert frames(parser, "\n") == []  # \r\n is one line end: no blank line yet
    assert frames(parser, "\r\n") == [(None, "", ["a"])]


def test_the_parser_skips_comments_unknown_fields_and_blocks_without_data() -> None:
    parser = SSEParser()
    assert frames(parser, ": hello\nevent: resync\nfoo: bar\n\ndata\n\n") == [(None, "", [""])]


def test_private_keys_load_from_pem_pkcs1_and_base64_der() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none = serialization.NoEncryption()
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, none)
    forms = [
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, none),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, none).decode(),
        base64.urlsafe_b64encode(pkcs8).rstrip(b"=").decode(),
        base64.b64encode(pkcs8).decode(),
        key,
    ]
    for form in forms:
        assert crypto.same_key_pair(key.public_key(), crypto.load_private_key(form))
    with pytest.raises(ValueError):
        crypto.load_private_key("not a key")


def test_sealing_uses_a_fresh_key_and_iv_every_time_and_opens_back() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    value = {"name": "Zoë", "n": [1, 2.5, None]}
    first, second = crypto.seal(key.public_key(), value), crypto.seal(key.public_key(), value)
    assert first.iv != second.iv and first.wrapped_key != second.wrapped_key and first.content != second.content
    assert len(first.iv) == 12 and len(first.tag) == 16 and len(first.wrapped_key) == 256
    aes = crypto.unwrap(key, first.wrapped_key)
    assert len(aes) == 32 and crypto.open_sealed(aes, first.iv, first.content, first.tag) == value
    assert crypto.encode(value) == '{"name":"Zoë","n":[1,2.5,null]}'.encode()  # as JSON.stringify writes it
    with pytest.raises(TelentirError) as caught:
        crypto.open_sealed(aes, second.iv, first.content, first.tag)
    assert caught.value.code == "cannot_decrypt" and caught.value.status == 0
    with pytest.raises(ValueError):
        crypto.seal(key.public_key(), {"x": float("nan")})


def test_items_and_payloads() -> None:
    assert item_of("obj_1", {"a": 1, "id": "stale"}) == {"a": 1, "id": "obj_1"}
    assert item_of("obj_1", [1, 2]) == {"value": [1, 2], "id": "obj_1"}
    assert payload_of({"a": 1, "id": "obj_1"}) == {"a": 1}
    with pytest.raises(TypeError):
        payload_of([("a", 1)])  # type: ignore[arg-type]


def test_an_unreachable_server_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TelentirError) as caught:
            Telentir.connect(api_key="tlk_x", api=f"http://127.0.0.1:{port}/api", timeout=5)
    assert caught.value.status == 0 and caught.value.code == "network"
