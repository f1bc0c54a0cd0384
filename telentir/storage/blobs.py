"""Ciphertext storage: one interface (`BlobStore`), local files by default, S3 to scale out.

A blob is written and made durable *before* the row that names it commits, and removed
only *after* the commit that forgets it. A crash therefore leaves at most blobs no row
names, which `sweep` removes: at start-up for files (no request is writing then), and
only past a grace period for a bucket shared by several nodes (a blob written a moment
ago may belong to a row about to commit). `telentir.storage.s3` holds the S3 store.

The file store: sharded folders, atomic durable writes (temp file, fsync, rename, fsync
folder). A full disk (ENOSPC, or EDQUOT past a quota) is `InsufficientStorage` (507): the
temp files of the failed write are removed, so nothing is left half-written.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from ..errors import InsufficientStorage
from .health import DISK, EngineHealth

BLOB_ID = re.compile(r"[A-Za-z0-9_-]{20,64}")
_TMP_NAME = re.compile(r"[A-Za-z0-9_-]{20,64}\.[0-9a-f]{8}\.tmp")
# The errors of a full disk: no space left, or the writer's disk quota used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` is a full disk or quota (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def new_blob_id() -> str:
    """A fresh random blob id (never derived from client input)."""
    return secrets.token_urlsafe(18)


class BlobStore(Protocol):
    """Where ciphertexts too large for their row live, named by server-made ids."""

    def write(self, data: bytes) -> str:
        """Durably store `data` under a new id and return the id."""
        ...

    def write_many(self, items: list[bytes]) -> list[str]:
        """Durably store several blobs, in order; all or none (a failure removes those written)."""
        ...

    def read(self, blob_id: str) -> bytes:
        """The bytes of a blob; FileNotFoundError if there is none."""
        ...

    def delete(self, blob_id: str) -> None:
        """Remove a blob if present (called after the forgetting commit)."""
        ...

    def delete_many(self, blob_ids: Iterable[str]) -> None:
        """Remove several blobs."""
        ...

    def sweep(self, is_referenced: Callable[[str], bool], grace_seconds: float = 0.0) -> int:
        """Remove blobs older than `grace_seconds` that no row references; returns how many went."""
        ...

    def list_names(self) -> Iterator[str]:
        """The name of everything stored (blob ids, and temp files where the store has them)."""
        ...

    def describe(self) -> str:
        """Where the blobs live, for messages."""
        ...

    def ping(self) -> None:
        """Raise unless the store can be reached (for /readyz): EngineUnavailable, or OSError for a folder."""
        ...


class FileBlobStore:
    """Files under `root`, named by server-made ids, sharded by their first two characters."""

    def __init__(self, root: Path, durable: bool = True, health: EngineHealth | None = None) -> None:
        self.root = Path(root)
        self.durable = durable
        self.health = health or EngineHealth()

    @contextmanager
    def _space_checked(self) -> Iterator[None]:
        """A full disk as InsufficientStorage (reported once per episode); a write that got through ends one."""
        try:
            yield
        except OSError as exc:
            if not is_no_space(exc):
                raise
            cause = f"{os.strerror(exc.errno or errno.ENOSPC)} writing a ciphertext file under {self.root}"
            self.health.failed(DISK, cause)
            raise InsufficientStorage("writing a ciphertext file", cause) from exc
        self.health.ok(DISK)

    def describe(self) -> str:
        """The folder."""
        return str(self.root)

    def ping(self) -> None:
        """Raise PermissionError unless the folder exists (it is made if missing) and may be written."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.root} is not writable")

    def new_id(self) -> str:
        """A fresh random blob id (never derived from client input)."""
        return new_blob_id()

    def path_for(self, blob_id: str) -> Path:
        """The file of a blob id; ValueError before any path is built from a bad id."""
        if not isinstance(blob_id, str) or not BLOB_ID.fullmatch(blob_id):
            raise ValueError("invalid blob id")
        # One level of 4,096 folders: a million blobs is ~250 files a folder, and after the
        # first few thousand writes no write has to create (and fsync) a new folder.
        return self.root / blob_id[:2] / blob_id

    def write(self, data: bytes) -> str:
        """Durably store `data` under a new id and return the id (InsufficientStorage on a full disk)."""
        with self._space_checked():
            return self._write(data)

    def _write(self, data: bytes) -> str:
        blob_id = self.new_id()
        path = self.path_for(blob_id)
        self._ensure_dir(path.parent)
        tmp = path.with_name(f"{blob_id}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
            if self.durable:
                fsync_dir(path.parent)
        except BaseException:
            # A full disk must not also leave litter behind until the next start-up sweep: no
            # row names this blob yet, so it goes whole.
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise
        return blob_id

    def write_many(self, items: list[bytes]) -> list[str]:
        """Durably store several blobs; cheaper than `write` each (one fsync per folder, not per file)."""
        with self._space_checked():
            return self._write_many(items)

    def _write_many(self, items: list[bytes]) -> list[str]:
        written: list[tuple[str, Path, Path]] = []
        try:
            for data in items:
                blob_id = self.new_id()
                path = self.path_for(blob_id)
                self._ensure_dir(path.parent)
                tmp = path.with_name(f"{blob_id}.{secrets.token_hex(4)}.tmp")
                written.append((blob_id, tmp, path))
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    if self.durable:
                        fh.flush()
                        os.fsync(fh.fileno())
            for _, tmp, path in written:
                os.replace(tmp, path)
            if self.durable:
                for folder in {path.parent for _, _, path in written}:
                    fsync_dir(folder)
        except BaseException:
            for _, tmp, path in written:
                tmp.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
            raise
        return [blob_id for blob_id, _, _ in written]

    def _ensure_dir(self, directory: Path) -> None:
        if directory.is_dir():
            return
        self._ensure_dir(directory.parent)
        directory.mkdir(exist_ok=True)
        if self.durable:
            # A new folder's own name must be durable too, or a power cut can lose the file.
            fsync_dir(directory.parent)

    def read(self, blob_id: str) -> bytes:
        """The bytes of a blob."""
        return self.path_for(blob_id).read_bytes()

    def delete(self, blob_id: str) -> None:
        """Remove a blob if present (called after the forgetting commit)."""
        try:
            self.path_for(blob_id).unlink()
        except FileNotFoundError:
            pass

    def delete_many(self, blob_ids: Iterable[str]) -> None:
        """Remove several blobs."""
        for blob_id in blob_ids:
            self.delete(blob_id)

    def list_names(self) -> Iterator[str]:
        """Every file's name, temp files included."""
        return (path.name for path in self.iter_files())

    def iter_files(self) -> Iterator[Path]:
        """Every file under the root, temp files included."""
        if not self.root.exists():
            return
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                yield Path(dirpath) / name

    def sweep(self, is_referenced: Callable[[str], bool], grace_seconds: float = 0.0) -> int:
        """Remove temp files and blobs no row references; returns how many went.

        With no grace, run only while no request is writing (at start-up, before workers
        serve): a blob written but not yet committed looks unreferenced. Files that are not
        ours by name are left alone, in case the folder was pointed somewhere shared.
        """
        removed, cutoff = 0, time.time() - grace_seconds
        for path in self.iter_files():
            orphan = BLOB_ID.fullmatch(path.name) and not is_referenced(path.name)
            if (orphan or _TMP_NAME.fullmatch(path.name)) and (not grace_seconds or _mtime(path) < cutoff):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to sweep


def fsync_dir(directory: Path) -> None:
    """Make a folder's entries (a new or renamed file's name) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
