"""Crypto primitives: key serialization, JWK export, wrapping, AES-GCM, sealing, master key."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from telentir import crypto
from telentir.crypto import CryptoError


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return crypto.generate_rsa_key()


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return crypto.generate_rsa_key()


def _spki_der(public_key: object) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER,  # type: ignore[attr-defined]
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- RSA keys -------------------------------------------------------------------------


def test_generated_key_is_rsa_2048_with_exponent_65537(rsa_key):
    assert rsa_key.key_size == 2048
    assert rsa_key.public_key().public_numbers().e == 65537


def test_public_key_round_trips_through_base64url_spki(rsa_key):
    text = crypto.public_key_to_b64(rsa_key.public_key())
    assert "=" not in text and "+" not in text and "/" not in text
    assert base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == _spki_der(rsa_key.public_key())
    loaded = crypto.load_public_key(text)
    assert loaded.public_numbers() == rsa_key.public_key().public_numbers()


def test_private_key_round_trips_through_base64url_pkcs8(rsa_key):
    text = crypto.private_key_to_b64(rsa_key)
    assert "=" not in text
    loaded = crypto.load_private_key(text)
    assert loaded.private_numbers() == rsa_key.private_numbers()


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(_std_b64, id="standard-padded"),
        pytest.param(lambda der: _std_b64(der).rstrip("="), id="standard-unpadded"),
        pytest.param(lambda der: base64.urlsafe_b64encode(der).decode(), id="urlsafe-padded"),
    ],
)
def test_public_key_input_accepts_every_base64_flavour(rsa_key, encode):
    text = encode(_spki_der(rsa_key.public_key()))
    assert crypto.load_public_key(text).public_numbers() == rsa_key.public_key().public_numbers()


def test_private_key_input_accepts_standard_padded_base64(rsa_key):
    der = rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert crypto.load_private_key(_std_b64(der)).private_numbers() == rsa_key.private_numbers()


def test_load_public_key_refuses_a_1024_bit_key():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(CryptoError, match="2048"):
        crypto.load_public_key(crypto.b64url(_spki_der(weak)))


def test_load_public_key_refuses_an_ec_key():
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(CryptoError, match="not an RSA key"):
        crypto.load_public_key(crypto.b64url(_spki_der(ec_public)))


def test_load_public_key_refuses_an_unknown_algorithm():
    der = _spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
    ec_oid, bogus_oid = bytes.fromhex("2a8648ce3d0201"), bytes.fromhex("2a8648ce3d0209")
    assert ec_oid in der
    with pytest.raises(CryptoError):
        crypto.load_public_key(crypto.b64url(der.replace(ec_oid, bogus_oid)))


def test_load_private_key_refuses_an_ec_key():
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CryptoError, match="not an RSA key"):
        crypto.load_private_key(crypto.b64url(der))


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA", crypto.b64url(b"\x30\x03\x02\x01\x00")])
def test_load_keys_refuse_garbage(text):
    with pytest.raises(CryptoError):
        crypto.load_public_key(text)
    with pytest.raises(CryptoError):
        crypto.load_private_key(text)


def test_private_key_does_not_load_as_public_key(rsa_key):
    with pytest.raises(CryptoError):
        crypto.load_public_key(crypto.private_key_to_b64(rsa_key))


# --- JWK ------------------------------------------------------------------------------


def _b64url_int(text: str) -> int:
    assert "=" not in text
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_public_jwk_rebuilds_the_same_public_key(rsa_key):
    jwk = crypto.public_jwk(rsa_key.public_key())
    assert jwk == {"kty": "RSA", "n": jwk["n"], "e": "AQAB", "alg": "RS256", "key_ops": ["verify"], "ext": True}
    rebuilt = rsa.RSAPublicNumbers(_b64url_int(jwk["e"]), _b64url_int(jwk["n"])).public_key()
    assert rebuilt.public_numbers() == rsa_key.public_key().public_numbers()
    assert _spki_der(rebuilt) == _spki_der(rsa_key.public_key())


def test_public_jwk_n_has_no_leading_zero_byte(rsa_key):
    n = crypto.public_jwk(rsa_key.public_key())["n"]
    raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    assert len(raw) == 256 and raw[0] != 0


# --- wrapping -------------------------------------------------------------------------


@pytest.mark.parametrize("size", crypto.AES_KEY_SIZES)
def test_wrap_unwrap_round_trip(rsa_key, size):
    raw = os.urandom(size)
    wrapped = crypto.wrap_key(rsa_key.public_key(), raw)
    assert len(wrapped) == 256 and raw not in wrapped
    assert crypto.unwrap_key(rsa_key, wrapped) == raw


def test_wrapping_is_randomized(rsa_key):
    raw = crypto.new_aes_key()
    assert crypto.wrap_key(rsa_key.public_key(), raw) != crypto.wrap_key(rsa_key.public_key(), raw)


def test_unwrap_with_the_wrong_private_key_fails(rsa_key, other_rsa_key):
    wrapped = crypto.wrap_key(rsa_key.public_key(), crypto.new_aes_key())
    with pytest.raises(CryptoError):
        crypto.unwrap_key(other_rsa_key, wrapped)


def test_unwrap_of_garbage_fails(rsa_key):
    with pytest.raises(CryptoError):
        crypto.unwrap_key(rsa_key, b"\x00" * 256)


# --- AES-GCM --------------------------------------------------------------------------


def test_fresh_key_and_iv_sizes():
    assert len(crypto.new_aes_key()) == 32 and len(crypto.new_iv()) == 12
    assert crypto.new_aes_key() != crypto.new_aes_key()
    assert crypto.new_iv() != crypto.new_iv()


def test_aes_gcm_round_trip_with_separate_16_byte_tag():
    key, iv, plaintext = crypto.new_aes_key(), crypto.new_iv(), b'{"name": "contacts"}'
    ciphertext, tag = crypto.aes_gcm_encrypt(key, iv, plaintext)
    assert len(tag) == 16 and len(ciphertext) == len(plaintext) and ciphertext != plaintext
    assert crypto.aes_gcm_decrypt(key, iv, ciphertext, tag) == plaintext


def test_aes_gcm_matches_the_combined_cryptography_format():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv = crypto.new_aes_key(), crypto.new_iv()
    ciphertext, tag = crypto.aes_gcm_encrypt(key, iv, b"hello")
    assert AESGCM(key).decrypt(iv, ciphertext + tag, None) == b"hello"


def test_aes_gcm_empty_plaintext():
    key, iv = crypto.new_aes_key(), crypto.new_iv()
    ciphertext, tag = crypto.aes_gcm_encrypt(key, iv, b"")
    assert ciphertext == b"" and len(tag) == 16
    assert crypto.aes_gcm_decrypt(key, iv, ciphertext, tag) == b""


@pytest.mark.parametrize("part", ["ciphertext", "tag", "iv", "key"])
def test_aes_gcm_tampering_fails(part):
    values = {"key": crypto.new_aes_key(), "iv": crypto.new_iv()}
    values["ciphertext"], values["tag"] = crypto.aes_gcm_encrypt(values["key"], values["iv"], b"secret data")
    values[part] = bytes([values[part][0] ^ 1]) + values[part][1:]
    with pytest.raises(CryptoError):
        crypto.aes_gcm_decrypt(values["key"], values["iv"], values["ciphertext"], values["tag"])


def test_aes_gcm_truncated_tag_fails():
    key, iv = crypto.new_aes_key(), crypto.new_iv()
    ciphertext, tag = crypto.aes_gcm_encrypt(key, iv, b"secret data")
    with pytest.raises(CryptoError):
        crypto.aes_gcm_decrypt(key, iv, ciphertext, tag[:12])


# --- sealing --------------------------------------------------------------------------

MASTER = bytes(range(32))


def test_seal_unseal_round_trip_with_fresh_nonce():
    first = crypto.seal(MASTER, b"private key", b"ctx")
    second = crypto.seal(MASTER, b"private key", b"ctx")
    assert first != second and b"private key" not in first
    assert crypto.unseal(MASTER, first, b"ctx") == b"private key"
    assert crypto.unseal(MASTER, second, b"ctx") == b"private key"


def test_unseal_with_the_wrong_context_fails():
    sealed = crypto.seal(MASTER, b"secret", b"server:alice")
    with pytest.raises(CryptoError):
        crypto.unseal(MASTER, sealed, b"server:bob")


def test_unseal_with_the_wrong_master_key_fails():
    sealed = crypto.seal(MASTER, b"secret", b"ctx")
    with pytest.raises(CryptoError):
        crypto.unseal(bytes(32), sealed, b"ctx")


@pytest.mark.parametrize("sealed", [b"", b"\x01", b"\x02" + bytes(40), b"\x01" + bytes(20)])
def test_unseal_of_garbage_fails(sealed):
    with pytest.raises(CryptoError):
        crypto.unseal(MASTER, sealed, b"ctx")


def test_unseal_of_tampered_secret_fails():
    sealed = bytearray(crypto.seal(MASTER, b"secret", b"ctx"))
    sealed[-1] ^= 1
    with pytest.raises(CryptoError):
        crypto.unseal(MASTER, bytes(sealed), b"ctx")


# --- master key -----------------------------------------------------------------------


def test_master_key_file_is_created_0600_and_stable(tmp_path):
    path = tmp_path / "nested" / "master.key"
    key = crypto.load_or_create_master_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.parse_master_key(path.read_text()) == key
    assert crypto.load_or_create_master_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left


def test_master_key_files_differ_between_data_dirs(tmp_path):
    assert crypto.load_or_create_master_key(tmp_path / "a.key") != crypto.load_or_create_master_key(tmp_path / "b.key")


def test_corrupt_master_key_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "master.key"
    path.write_text("not a key\n")
    with pytest.raises(CryptoError):
        crypto.load_or_create_master_key(path)
    assert path.read_text() == "not a key\n"


@pytest.mark.parametrize(
    "text", ["11" * 32, "11" * 32 + "\n", "AA" * 32, base64.b64encode(bytes(32)).decode(), crypto.b64url(bytes(32))]
)
def test_parse_master_key_accepts_hex_and_base64(text):
    assert len(crypto.parse_master_key(text)) == 32


@pytest.mark.parametrize("text", ["", "11" * 31, "11" * 33, "zz" * 32, base64.b64encode(bytes(16)).decode()])
def test_parse_master_key_refuses_other_sizes_and_garbage(text):
    with pytest.raises(CryptoError):
        crypto.parse_master_key(text)


# --- encodings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", b""),
        ("AA", b"\x00"),
        ("AA==", b"\x00"),
        ("_-8", b"\xff\xef"),
        ("/+8", b"\xff\xef"),
        ("/+8=", b"\xff\xef"),
        ("aGVsbG8", b"hello"),
        ("aGVsbG8=", b"hello"),
    ],
)
def test_b64decode_any_accepts_both_alphabets_padded_or_not(text, expected):
    assert crypto.b64decode_any(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A",
        "AAAAA",
        "AA=A",
        "====",
        "AA===",
        "AAAA=",
        "aGVsbG8==",
        "AAAA\n",
        "\nAAAA",
        "AA AA",
        "AA\tAA",
        "AA%3D",
        "é",
        "AA==\n",
        None,
        b"AAAA",
        1234,
    ],
)
def test_b64decode_any_rejects_garbage(text):
    with pytest.raises(CryptoError):
        crypto.b64decode_any(text)


@pytest.mark.parametrize("text, expected", [("", b""), ("00ff", b"\x00\xff"), ("ABcd", b"\xab\xcd")])
def test_hexdecode_accepts_hex_of_either_case(text, expected):
    assert crypto.hexdecode(text) == expected


@pytest.mark.parametrize(
    "text", ["0", "abc", "0g", "00\n", "\n00", " 00", "00 ", "00 11", "00\t11", "0x00", "00:11", "٠٠", None, b"00"]
)
def test_hexdecode_rejects_garbage(text):
    with pytest.raises(CryptoError):
        crypto.hexdecode(text)


def test_b64url_has_no_padding_and_uses_the_url_alphabet():
    assert crypto.b64url(b"\xff\xef") == "_-8"
    assert crypto.b64url(b"\x00") == "AA"
