"""The envelope of the Telentir data plane (docs/protocol.md §3 and §4), as the TypeScript SDK and the console use it.

A key record holds an AES key wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256) for one server,
and a 12-byte IV. An object holds the AES-GCM ciphertext of its compact JSON (UTF-8) and the
GCM tag, kept apart (hex on the wire). Reading an object therefore needs its key record and
the private key of the server the record is wrapped for.

GCM must never see one key and IV twice (that leaks the XOR of the plaintexts and lets the
authentication key be recovered), and a key record holds a single IV: so every write here
seals under a fresh AES-256 key and IV, in a key record of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import CANNOT_DECRYPT, TelentirError

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
MIN_TAG_BYTES = 12  # the protocol admits tags of 12 to 16 bytes; this client writes 16

PrivateKeyText = str | bytes | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Sealed:
    """A value encrypted for one server: the wrapped key and IV of its key record, the ciphertext and tag."""

    wrapped_key: bytes
    iv: bytes
    content: bytes
    tag: bytes


def unb64(text: str) -> bytes:
    """Base64 in either alphabet, padded or not (the server's RSA keys are unpadded base64url)."""
    core = "".join(text.split()).replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from base64 (either alphabet) SPKI DER, as `GET /root` and `GET /server` give it."""
    key = serialization.load_der_public_key(unb64(text))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_private_key(key: PrivateKeyText) -> rsa.RSAPrivateKey:
    """An RSA private key: PEM (PKCS#8 or PKCS#1), or base64/base64url PKCS#8 DER as the server hands it out."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    data = key.encode() if isinstance(key, str) else key
    try:
        if b"-----BEGIN" in data:
            loaded = serialization.load_pem_private_key(data, password=None)
        else:
            loaded = serialization.load_der_private_key(unb64(data.decode("ascii")), password=None)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not an unencrypted RSA private key in PEM or base64 DER form") from exc
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return loaded


def same_key_pair(public_key: rsa.RSAPublicKey, private_key: rsa.RSAPrivateKey) -> bool:
    """Does `private_key` belong to `public_key`?"""
    return private_key.public_key().public_numbers() == public_key.public_numbers()


def encode(value: Any) -> bytes:
    """The plaintext of a value: compact JSON in UTF-8, as JavaScript's JSON.stringify writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def seal(public_key: rsa.RSAPublicKey, value: Any) -> Sealed:
    """Encrypt `value` (JSON) for the holder of `public_key`'s private key, under a fresh key and IV."""
    plaintext = encode(value)
    aes_key, iv = os.urandom(KEY_BYTES), os.urandom(IV_BYTES)
    encryptor = Cipher(algorithms.AES(aes_key), modes.GCM(iv)).encryptor()
    content = encryptor.update(plaintext) + encryptor.finalize()
    return Sealed(public_key.encrypt(aes_key, OAEP), iv, content, encryptor.tag)


def unwrap(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """The AES key of a key record (TelentirError `cannot_decrypt` if it was wrapped for another key)."""
    try:
        return private_key.decrypt(wrapped, OAEP)
    except ValueError as exc:
        message = "The key record does not unwrap with this server's private key."
        raise TelentirError(0, CANNOT_DECRYPT, message) from exc


def open_sealed(aes_key: bytes, iv: bytes, content: bytes, tag: bytes) -> Any:
    """The JSON value of an object's ciphertext and tag (TelentirError `cannot_decrypt` if they do not authenticate).

    A plaintext that is not JSON (a client may store any text) comes back as a string.
    """
    if not MIN_TAG_BYTES <= len(tag) <= TAG_BYTES:
        raise TelentirError(0, CANNOT_DECRYPT, f"An auth tag of {len(tag)} bytes is not a GCM tag.")
    try:
        decryptor = Cipher(algorithms.AES(aes_key), modes.GCM(iv, tag, min_tag_length=len(tag))).decryptor()
        plaintext = decryptor.update(content) + decryptor.finalize()
    except (InvalidTag, ValueError) as exc:
        raise TelentirError(0, CANNOT_DECRYPT, "The ciphertext does not authenticate under its key.") from exc
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TelentirError(0, CANNOT_DECRYPT, "The plaintext is not UTF-8 text.") from exc
    try:
        return json.loads(text)
    except ValueError:
        return text
