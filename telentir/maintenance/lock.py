"""The data folder's exclusive lock, taken by commands that must not run beside a server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import Config


@contextmanager
def data_folder_lock(config: Config) -> Iterator[None]:
    """Hold the data folder's exclusive lock for the block; refuse (ConfigError) while a server holds it.

    TODO(trust-a): the branch `trust-a` adds the fcntl lock that `serve`, `init` and `migrate`
    take; the lead points this function at it when merging. Until then it only marks the
    places (`restore`, `master-key rotate`) that must hold it.
    """
    del config
    yield
