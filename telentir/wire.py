"""The wire format of the data plane: field aliases, the hex/base64 rule, record shapes.

Both kinds of client must work unchanged: the documented one (camelCase, base64) and the
SDK (snake_case, hex). Requests accept both; responses carry hex and both spellings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .crypto import IV_BYTES, CryptoError, b64decode_any, hexdecode, is_hex
from .errors import BadRequest, PayloadTooLarge
from .ids import is_id

TAG_MIN, TAG_MAX = 12, 16
# Deep enough for any real envelope; far below what would exhaust the JSON encoder's stack
# when the record is serialized again for the event row and the answer.
MAX_METADATA_DEPTH = 32
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# A connector path has one spelling: a scraper framework that ignores `;…`, serves `.json`
# suffixes or decodes `%2F` would answer a path the server never recognised (so never billed).
_PLAIN_PATH_RE = re.compile(r"(?:/[A-Za-z0-9_-]+)+")
MAX_PATH_CHARS = 512


def is_plain_path(path: Any) -> bool:
    """Whether `path` is segments of `[A-Za-z0-9_-]` joined by single `/`, after a leading `/`."""
    return isinstance(path, str) and len(path) <= MAX_PATH_CHARS and _PLAIN_PATH_RE.fullmatch(path) is not None


def pick(body: Mapping[str, Any], *names: str) -> Any:
    """The value of the first alias present; 400 if two aliases disagree."""
    present = [(n, body[n]) for n in names if n in body]
    if len(present) > 1 and len({json.dumps(v, sort_keys=True) for _, v in present}) > 1:
        raise BadRequest(f"{' and '.join(n for n, _ in present)} disagree; send one of them.")
    return present[0][1] if present else None


def has_any(body: dict[str, Any], *names: str) -> bool:
    """Whether any alias is present in the body."""
    return any(n in body for n in names)


def present(fields: Any, *names: str) -> dict[str, Any]:
    """The fields among `names` a decoded body (a Struct) was sent with, for `pick`."""
    return {name: value for name in names if (value := getattr(fields, name)) is not msgspec.UNSET}


def explicit_encoding(body: Mapping[str, Any]) -> str | None:
    """`encoding` from the body: hex, base64 or absent."""
    return encoding_value(body.get("encoding"))


def encoding_value(encoding: Any) -> str | None:
    """An `encoding` field: hex, base64 or absent (None)."""
    if encoding is None or encoding is msgspec.UNSET:
        return None
    if encoding not in ("hex", "base64"):
        raise BadRequest('encoding must be "hex" or "base64".')
    return str(encoding)


def _looks_hex(text: str, sizes: range) -> bool:
    return len(text) // 2 in sizes and is_hex(text)


def decode_field(value: Any, field: str, encoding: str) -> bytes:
    """Decode one binary field in the given encoding; 400 naming the field otherwise."""
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a {encoding} string.")
    try:
        return hexdecode(value) if encoding == "hex" else b64decode_any(value)
    except CryptoError as exc:
        raise BadRequest(f"{field} is not valid {encoding}.") from exc


def decode_ciphertext(body: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """`content` and `authTag` of a body as bytes, by the spec's rule (explicit, else from the tag)."""
    return ciphertext_bytes(body.get("content"), pick(body, "authTag", "auth_tag"), body.get("encoding"))


def ciphertext_bytes(content: Any, tag: Any, encoding_field: Any) -> tuple[bytes, bytes]:
    """`content` and `authTag` as bytes: in `encoding_field`'s encoding, else hex when the tag looks it."""
    if content is None or tag is None:
        raise BadRequest("content and authTag are both required.")
    if not isinstance(tag, str):
        raise BadRequest("authTag must be a hex or base64 string.")
    explicit = encoding_value(encoding_field)
    encoding = explicit or ("hex" if _looks_hex(tag, range(TAG_MIN, TAG_MAX + 1)) else "base64")
    tag_bytes = decode_field(tag, "authTag", encoding)
    if not TAG_MIN <= len(tag_bytes) <= TAG_MAX:
        raise BadRequest(f"authTag must decode to {TAG_MIN}-{TAG_MAX} bytes, not {len(tag_bytes)}.")
    return decode_field(content, "content", encoding), tag_bytes


def decode_key_material(body: Mapping[str, Any]) -> tuple[bytes | None, bytes | None]:
    """`key` and `iv` as bytes (both None when absent), deciding the encoding from the IV."""
    key, iv = body.get("key"), body.get("iv")
    explicit = explicit_encoding(body)  # checked even with nothing to decode: a bad value is still bad input
    if key is None and iv is None:
        return None, None
    if key is None or iv is None:
        raise BadRequest("key and iv must be sent together.")
    if not isinstance(iv, str):
        raise BadRequest("iv must be a hex or base64 string.")
    encoding = explicit or ("hex" if _looks_hex(iv, range(IV_BYTES, IV_BYTES + 1)) else "base64")
    iv_bytes = decode_field(iv, "iv", encoding)
    if len(iv_bytes) != IV_BYTES:
        raise BadRequest(f"iv must decode to exactly {IV_BYTES} bytes, not {len(iv_bytes)}.")
    return decode_field(key, "key", encoding), iv_bytes


def metadata_value(value: Any, max_bytes: int) -> str:
    """Validate `metadata` (a JSON object under the size and depth limits) and return it as compact JSON."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BadRequest("metadata must be a JSON object.")
    if _nested_deeper_than(value, MAX_METADATA_DEPTH):
        raise BadRequest(f"metadata must not nest objects or arrays more than {MAX_METADATA_DEPTH} levels deep.")
    try:
        # allow_nan=False: 1e999 parses as infinity, which no JSON client could read back.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
    except ValueError as exc:  # infinities, and lone surrogates ("\ud800") that are not text
        raise BadRequest("metadata must hold only finite numbers and valid Unicode text.") from exc
    if size > max_bytes:
        raise PayloadTooLarge(f"metadata must be at most {max_bytes} bytes as JSON.")
    return text


def _nested_deeper_than(value: Any, limit: int) -> bool:
    # Level by level rather than recursively: the depth is what is being checked.
    level = [value]
    for _ in range(limit + 1):
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return False
        level = [child for v in containers for child in (v.values() if isinstance(v, dict) else v)]
    return True


def id_field(value: Any, field: str, prefix: str) -> str:
    """An id sent in a body: 400 unless it has the right shape."""
    if not is_id(value, prefix):
        raise BadRequest(f"{field} must be a {prefix}_ id.")
    return str(value)


def optional_id_field(value: Any, field: str, prefix: str) -> str | None:
    """Like id_field, but null is allowed (and means none)."""
    return None if value is None else id_field(value, field, prefix)


def is_name(value: str) -> bool:
    """Whether `value` is a name `name_value` accepts, as given (a lookup of anything else finds nothing)."""
    return bool(_NAME_RE.fullmatch(value))


def name_value(value: Any, field: str) -> str:
    """A lowercase name (servers, publication types): 1-64 of a-z 0-9 _ -."""
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string.")
    name = value.strip().lower()
    if not _NAME_RE.fullmatch(name):
        raise BadRequest(f"{field} must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit.")
    return name


def bool_value(value: Any, field: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be true or false.")
    return value


def object_record(row: Any, content: bytes) -> dict[str, Any]:
    """The object as every read and write answers it: hex, snake_case plus camelCase aliases."""
    auth_tag = bytes(row["auth_tag"]).hex()
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "key_id": row["key_id"],
        "content": content.hex(),
        "auth_tag": auth_tag,
        "related_object_id": row["related_id"],
        "metadata": json.loads(row["metadata"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "keyId": row["key_id"],
        "authTag": auth_tag,
        "relatedId": row["related_id"],
    }


def key_record(row: Any) -> dict[str, Any]:
    """The key record of GET/POST/PATCH /keys."""
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "server": row["server"],
        "key": bytes(row["wrapped"]).hex(),
        "iv": bytes(row["iv"]).hex(),
        "metadata": json.loads(row["metadata"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deprecated": bool(row["deprecated"]),
    }
