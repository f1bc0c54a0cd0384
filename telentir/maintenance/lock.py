"""The data folder's exclusive lock, taken by commands that must not run beside a server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import Config
from ..storage.folder_lock import FolderLock


@contextmanager
def data_folder_lock(config: Config) -> Iterator[None]:
    """Hold the data folder's exclusive lock for the block; FolderLocked (naming the holder) while a server runs."""
    with FolderLock(config.data_dir):
        yield
