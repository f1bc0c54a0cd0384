"""Parsers of single settings: each takes the environment's text or an override's typed value.

A parser returns the typed value or raises ValueError/TypeError saying what the value must be;
the environment and overrides go through the same parser, so both refuse the same values.
The first line of a parser's docstring is the setting's type in docs/configuration.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..crypto import CryptoError, parse_master_key
from ..wire import is_plain_path

Parser = Callable[[Any], Any]


def _integer(value: object, must: str) -> int:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(must) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(must)
    return value


def positive_int(value: object) -> int:
    """integer ≥ 1"""
    number = _integer(value, "must be a positive integer")
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def non_negative_int(value: object) -> int:
    """integer ≥ 0"""
    number = _integer(value, "must be zero or a positive integer")
    if number < 0:
        raise ValueError("must be zero or a positive integer")
    return number


def positive_float(value: object) -> float:
    """number > 0"""
    must = "must be a positive number"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(must) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(must)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(must)
    return float(value)


def boolean(value: object) -> bool:
    """`true` or `false` (also 1/0, yes/no, on/off)"""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower() if isinstance(value, str) else None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def text(value: object) -> str:
    """text"""
    if not isinstance(value, str):
        raise TypeError("must be text")
    return value


def path(value: object) -> Path:
    """path"""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError("must be a path")
    return Path(value)


def _choice(value: object, choices: tuple[str, ...], fold: Callable[[str], str]) -> str:
    folded = fold(text(value).strip())
    if folded not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return folded


def synchronous(value: object) -> str:
    """`NORMAL` or `FULL`"""
    return _choice(value, ("NORMAL", "FULL"), str.upper)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(value: object) -> str:
    """`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`"""
    return _choice(value, LOG_LEVELS, str.upper)


def log_format(value: object) -> str:
    """`auto`, `json` or `text`"""
    return _choice(value, ("auto", "json", "text"), str.lower)


def sms_backend(value: object) -> str:
    """`log` or `twilio`"""
    return _choice(value, ("log", "twilio"), str.lower)


SIGNUP_MODES = ("closed", "invite", "open")


def signup(value: object) -> str:
    """`closed`, `invite` or `open`"""
    return _choice(value, SIGNUP_MODES, str.lower)


_SERVER_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")


def server_name(value: object) -> str:
    """1 to 64 of `a-z 0-9 - _`"""
    # ASCII only: str.isalnum() would let "café" or "ß" through.
    name = text(value).strip()
    if not _SERVER_NAME_RE.fullmatch(name):
        raise ValueError("must be 1-64 lowercase letters, digits, '-' or '_'")
    return name


def master_key(value: object) -> str:
    """32 bytes as 64 hex characters or base64"""
    key = text(value)
    try:
        parse_master_key(key)
    except CryptoError as exc:
        raise ValueError("must be 32 bytes as 64 hex characters or base64") from exc
    return key


def metrics_token(value: object) -> str:
    """text of ≥ 16 characters, no spaces"""
    token = text(value).strip()
    # Compared with the whole Authorization header's value: a short token is guessable.
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError("must be at least 16 characters without spaces")
    return token


def connector_paths(value: object) -> tuple[str, ...]:
    """comma-separated paths such as `/get-leads`"""
    parts = text(value).split(",") if isinstance(value, str) else _texts(value)
    paths = tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))
    bad = [item for item in paths if not is_plain_path(item)]
    if not paths or bad:
        raise ValueError("must be comma-separated paths such as /get-leads (segments of A-Z a-z 0-9 - _)")
    return paths


def _texts(value: object) -> list[str]:
    """The items of a list or tuple of strings (an override's typed form of a comma-separated list)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise TypeError("must be comma-separated text or a list of strings")
    return list(value)


def broker_url(value: object) -> str:
    """URL: `memory://`, `redis://`, `rediss://` or `unix://`"""
    url = text(value)
    if not url.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise ValueError("must start with memory://, redis://, rediss:// or unix://")
    return url


def database_url(value: object) -> str:
    """URL: `sqlite:///path` or `postgresql://…`"""
    url = text(value)
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError("must start with sqlite:/// (a file path follows) or postgresql://")
    if url == "sqlite:///":
        raise ValueError("sqlite:/// needs a file path")
    return url


_S3_URL_RE = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[A-Za-z0-9!_.*'()/-]*)?")


def blob_url(value: object) -> str:
    """URL: `file:///path` or `s3://bucket/prefix`"""
    url = text(value)
    if not (url.startswith("file://") and len(url) > len("file://")) and not _S3_URL_RE.fullmatch(url):
        raise ValueError("must be file:///path or s3://bucket/prefix (a valid bucket name)")
    return url


def http_url(value: object) -> str:
    """URL: `http://…` or `https://…`"""
    url = text(value)
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url
