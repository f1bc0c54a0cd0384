"""One owner per data folder: an exclusive OS lock on `<data dir>/telentir.lock`.

The serving process (the gunicorn master) takes it before it binds its port and holds it
for its whole life; `init` and `migrate` take it for their run. Whatever repairs or
recovers (migrations, settling jobs a crash cut short, sweeping unreferenced files) runs
only under it, so a second server or an `init` against a live folder is refused before it
touches anything. Ordinary admin commands (`users …`, `credits …`) never take it: they
write through transactions like any request.

`fcntl.flock` locks belong to the open file description: the kernel drops the lock when
the last descriptor sharing it closes, including when its process dies by SIGKILL, so a
crash never leaves a stale lock. Forked gunicorn workers inherit the master's descriptor;
that keeps the folder owned while any process of the server lives (a worker outliving its
master still serves from the folder), and the lock ends with the last of them. Python
opens files non-inheritable across `exec`, so nothing launched from a worker holds it.
The holder writes its pid into the file, for the refusal message only: the lock itself,
never the file's content, decides who owns the folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "telentir.lock"


class FolderLocked(Exception):
    """Another process holds the data folder's lock."""

    def __init__(self, folder: Path, holder: int | None) -> None:
        self.folder, self.holder = folder, holder
        who = f"pid {holder}" if holder is not None else "another process"
        super().__init__(
            f"the data folder {folder} is in use by a running Telentir server ({who}): stop it first "
            "(`serve`, `init`, `migrate`, `restore` and `master-key rotate` need the folder to themselves)"
        )


class FolderLock:
    """The exclusive lock of one data folder, held from `acquire()` until `release()`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock without waiting, or raise FolderLocked naming the holder's pid."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderLocked(self.folder, read_holder(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with the next taker)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor of the description drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def read_holder(path: Path) -> int | None:
    """The pid the holder wrote into the lock file, if readable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
