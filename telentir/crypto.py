"""Cryptographic primitives, all on `cryptography`.

RSA-OAEP (SHA-256, MGF1-SHA-256) for wrapping AES keys, AES-256-GCM with a separate
16-byte tag for content, key serialization as base64url DER (SPKI / PKCS#8), JWK export
of verify keys, and sealing of secrets at rest under the master key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .storage.blobs import fsync_dir

RSA_BITS = 2048
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
AES_KEY_SIZES = (16, 24, 32)
IV_BYTES = 12
TAG_BYTES = 16
MASTER_KEY_BYTES = 32
_SEAL_VERSION = b"\x01"

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_B64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


class CryptoError(ValueError):
    """Raised for material that does not decode, verify or fit."""


# --- encodings -----------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode_any(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not; CryptoError otherwise."""
    if not isinstance(text, str) or not _B64_RE.fullmatch(text):
        raise CryptoError("not base64")
    core = text.rstrip("=").replace("-", "+").replace("_", "/")
    # Padding is optional, but when present it must be exactly what completes the last quad.
    if len(core) % 4 == 1 or ("=" in text and len(text) % 4 != 0):
        raise CryptoError("not base64")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError("not base64") from exc


def hexdecode(text: str) -> bytes:
    """Decode lowercase or uppercase hex; CryptoError otherwise."""
    if not isinstance(text, str) or not text.isascii():
        raise CryptoError("not hex")
    try:
        data = bytes.fromhex(text)
    except ValueError as exc:
        raise CryptoError("not hex") from exc
    # fromhex also skips whitespace between pairs: two digits per byte means there was none.
    # (A ciphertext's hex is checked on every write; this costs 1 µs per KiB, a regex 23.)
    if 2 * len(data) != len(text):
        raise CryptoError("not hex")
    return data


def is_hex(text: str) -> bool:
    """Whether `text` is whole hex pairs (lowercase or uppercase), nothing else."""
    try:
        hexdecode(text)
    except CryptoError:
        return False
    return True


# --- RSA ------------------------------------------------------------------------------


def generate_rsa_key(bits: int = RSA_BITS) -> rsa.RSAPrivateKey:
    """A fresh RSA private key with exponent 65537."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_to_b64(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8 DER as base64url."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return b64url(der)


def public_key_to_b64(key: rsa.RSAPublicKey) -> str:
    """SPKI DER as base64url."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64url(der)


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """Parse base64 SPKI DER of an RSA key of MIN_RSA_BITS..MAX_RSA_BITS bits."""
    try:
        key = serialization.load_der_public_key(b64decode_any(text))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError("not a base64url SPKI public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("the public key is not an RSA key")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise CryptoError(f"the RSA key must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    return key


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """Parse base64 PKCS#8 DER of an RSA private key."""
    try:
        key = serialization.load_der_private_key(b64decode_any(text), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CryptoError("not a base64url PKCS#8 private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("the private key is not an RSA key")
    return key


def public_jwk(key: rsa.RSAPublicKey) -> dict[str, object]:
    """The key as a JWK for verifying RS256 signatures."""
    numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "n": b64url(_int_bytes(numbers.n)),
        "e": b64url(_int_bytes(numbers.e)),
        "alg": "RS256",
        "key_ops": ["verify"],
        "ext": True,
    }


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def wrap_key(public_key: rsa.RSAPublicKey, raw_key: bytes) -> bytes:
    """RSA-OAEP(SHA-256) encrypt an AES key for the holder of the private key."""
    return public_key.encrypt(raw_key, _OAEP)


def unwrap_key(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Reverse of wrap_key; CryptoError when the key was wrapped for someone else."""
    try:
        return private_key.decrypt(wrapped, _OAEP)
    except ValueError as exc:
        raise CryptoError("the key cannot be unwrapped with this private key") from exc


# --- AES-GCM --------------------------------------------------------------------------


def new_aes_key() -> bytes:
    """32 random bytes."""
    return secrets.token_bytes(32)


def new_iv() -> bytes:
    """12 random bytes."""
    return secrets.token_bytes(IV_BYTES)


def aes_gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """Encrypt; returns (ciphertext, 16-byte tag) kept apart as the wire format wants."""
    sealed = AESGCM(key).encrypt(iv, plaintext, None)
    return sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]


def aes_gcm_decrypt(key: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """Decrypt and verify; CryptoError when the tag does not verify."""
    try:
        return AESGCM(key).decrypt(iv, ciphertext + tag, None)
    except InvalidTag as exc:
        raise CryptoError("authentication tag does not verify") from exc


# --- secrets at rest ------------------------------------------------------------------


def seal(master_key: bytes, plaintext: bytes, context: bytes = b"") -> bytes:
    """Encrypt a secret at rest: version || nonce || ciphertext+tag, bound to `context`."""
    nonce = secrets.token_bytes(IV_BYTES)
    return _SEAL_VERSION + nonce + AESGCM(master_key).encrypt(nonce, plaintext, context)


def unseal(master_key: bytes, sealed: bytes, context: bytes = b"") -> bytes:
    """Reverse of seal; CryptoError for a wrong master key, context or tampering."""
    if sealed[:1] != _SEAL_VERSION or len(sealed) < 1 + IV_BYTES + TAG_BYTES:
        raise CryptoError("not a sealed secret")
    nonce, body = sealed[1 : 1 + IV_BYTES], sealed[1 + IV_BYTES :]
    try:
        return AESGCM(master_key).decrypt(nonce, body, context)
    except InvalidTag as exc:
        raise CryptoError("sealed secret does not open with this master key") from exc


def parse_master_key(text: str) -> bytes:
    """A master key given as 64 hex chars or base64 of 32 bytes."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else b64decode_any(text)
    except (ValueError, CryptoError) as exc:
        raise CryptoError("the master key must be 32 bytes as hex or base64") from exc
    if len(raw) != MASTER_KEY_BYTES:
        raise CryptoError("the master key must be 32 bytes as hex or base64")
    return raw


def master_key_fingerprint(key: bytes) -> str:
    """A name for a master key that reveals nothing of it: `sha256:` + hex of a keyed hash."""
    # Hashing under a fixed label rather than the bare key: the fingerprint can never be
    # mistaken for (or reused as) a hash of the key in some other scheme.
    return "sha256:" + hashlib.sha256(b"telentir master key fingerprint\x00" + key).hexdigest()


def load_or_create_master_key(path: Path) -> bytes:
    """Read the master key file, creating it (mode 0600, durably) on first start."""
    try:
        return parse_master_key(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(MASTER_KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        # link() fails if the name exists: two processes starting at once agree on one key,
        # and nobody ever reads a half-written file.
        os.link(tmp, path)
    except FileExistsError:
        return parse_master_key(path.read_text())
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return key
