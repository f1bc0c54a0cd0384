"""Text a request carries must be text: UTF-8, no lone surrogates, no NUL (docs/protocol.md §1.1).

Such input otherwise travels until something downstream refuses it (SQLite cannot store a
lone surrogate, JSON encoders and HTTP headers choke on it) and the request fails as a 500.
One check per way in: the JSON body (`check_json_text`, called by `json_body`), and the
query string and headers (`check_query_and_headers`, run before every request). Paths are
left alone: an id in a path that is not an id is a 404, whatever its bytes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from ..errors import BadRequest

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
TEXT_RULE = "must be UTF-8 text without NUL characters or lone surrogates"
# Browsers send every cookie of the host, other applications' included: only ours is checked.
_COOKIE = "HTTP_COOKIE"
_OWN_COOKIE = b"token"


def check_json_text(body: Any) -> None:
    """400 naming the field if any key or string of a parsed JSON body is not text."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:  # iteratively: the body may nest as deep as the parser allowed
        value, where = stack.pop()
        if isinstance(value, str):
            if not _is_clean_text(value):
                raise BadRequest(f"{where or 'The body'} {TEXT_RULE}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if not _is_clean_text(key):
                    raise BadRequest(f"A field name in {where or 'the body'} {TEXT_RULE}.")
                stack.append((item, path))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value))


def _is_clean_text(value: str) -> bool:
    # ASCII (the common case, a ciphertext's hex say) cannot hold a surrogate: only NUL is
    # left to look for, and both checks run in C at memory speed, a tenth of the regex.
    if value.isascii():
        return "\x00" not in value
    return _NOT_TEXT.search(value) is None


def check_query_and_headers(environ: dict[str, Any]) -> None:
    """Run before every request: 400 if a query parameter or header value is not text."""
    query = environ.get("QUERY_STRING", "")
    # The common case, checked cheaply: ASCII with no NUL and no %-escape is text as it stands.
    if not (query.isascii() and "%" not in query and "\x00" not in query):
        _check_query(query)
    for key, value in environ.items():
        is_header = key.startswith("HTTP_") or key == "CONTENT_TYPE"
        if is_header and key != _COOKIE and not _plain_ascii(value) and not _is_text(_wsgi_bytes(value)):
            raise BadRequest(f"The {_header_name(key)} header {TEXT_RULE}.")
    if not all(_is_text(value) for value in _own_cookie_values(environ.get(_COOKIE, ""))):
        raise BadRequest(f"The token cookie {TEXT_RULE}.")


def _plain_ascii(value: str) -> bool:
    return value.isascii() and "\x00" not in value


def _check_query(query: str) -> None:
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if not (_is_text(_wsgi_bytes(name, query=True)) and _is_text(_wsgi_bytes(value, query=True))):
            shown = unquote_to_bytes(_wsgi_bytes(name)).decode("utf-8", "replace")
            raise BadRequest(f"The query parameter {shown!r} {TEXT_RULE}.")


def _wsgi_bytes(text: str, query: bool = False) -> bytes:
    """The bytes a WSGI string stands for (PEP 3333: latin-1), percent-decoded for a query part."""
    raw = text.encode("latin-1", "replace")  # anything else is no WSGI string: '?' fails nothing
    return unquote_to_bytes(raw.replace(b"+", b" ")) if query else raw


def _is_text(raw: bytes) -> bool:
    try:
        return _NOT_TEXT.search(raw.decode("utf-8")) is None
    except UnicodeDecodeError:  # strict UTF-8 also refuses encoded surrogates (ED A0 80)
        return False


def _own_cookie_values(header: str) -> list[bytes]:
    values = []
    for pair in _wsgi_bytes(header).split(b";"):
        name, _, value = pair.partition(b"=")
        if name.strip() == _OWN_COOKIE:
            values.append(value.strip())
    return values


def _header_name(environ_key: str) -> str:
    return "-".join(word.capitalize() for word in environ_key.removeprefix("HTTP_").split("_"))
