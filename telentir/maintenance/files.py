"""Copying and hashing files durably, reading the master key without creating one, and progress."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .. import crypto
from ..config import Config
from ..storage.blobs import fsync_dir

CHUNK = 1024 * 1024

# A long loop reports through this: `progress(label, total)` opens a bar of `total` steps
# and yields the function that advances it. The CLI passes click's bar on a terminal.
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress that shows nothing."""
    del label, total
    yield lambda steps: None


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def copy_file(source: Path, target: Path) -> tuple[int, str]:
    """Copy `source` to `target` (through a temp name, mode 0600), returning (size, SHA-256) of what was copied.

    Not fsynced one by one: callers `os.sync()` once at the end, before the step that makes
    the copy count (a manifest, a rename), which costs one flush instead of one per file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(source, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write a small secret file durably, mode 0600, replacing nothing (FileExistsError if present)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def master_key_text(key: bytes) -> bytes:
    """The key file's content for a master key (hex and a newline, as the server writes it)."""
    return key.hex().encode() + b"\n"


def existing_master_key(config: Config) -> bytes | None:
    """The configured master key (TELENTIR_MASTER_KEY, else the key file) or None: never creates one."""
    if config.master_key:
        return crypto.parse_master_key(config.master_key)
    try:
        return crypto.parse_master_key(config.master_key_path.read_text())
    except FileNotFoundError:
        return None


def is_empty_folder(path: Path) -> bool:
    """True for a folder that does not exist or has nothing in it."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))
