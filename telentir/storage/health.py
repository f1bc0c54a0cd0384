"""Which storage engines are away now, and whether the disk is full: each episode logged once.

The storage layer reports here as it maps a driver's failure to `EngineUnavailable` or
`InsufficientStorage` (`failed`), and as operations succeed again (`ok`, a dictionary look-up
when nothing is away, so it costs nothing per statement). An episode starts with the first
failure, which is logged once as a warning naming the engine (or the disk); the failures
after it are only counted (`on_failure`, the metrics), until a success ends it with one line
saying how long it lasted. A success within QUIET_SECONDS of the last failure does not end
it: an engine that flaps, or a nearly full disk that takes small writes but not large ones,
is one episode, not a log line per request.

Each process keeps its own record: under gunicorn every worker logs an outage once. For the
same reason psycopg_pool's own warning per dead connection and reconnection goes to DEBUG
(PoolNoise).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ENGINE_TITLES

log = logging.getLogger("telentir.storage")

DISK = "disk"  # what `failed`/`ok` call a full disk (the engines are errors.ENGINES)
QUIET_SECONDS = 5.0


@dataclass
class Episode:
    """One outage (or full disk) from its first failure until the next success."""

    where: str
    started: float  # time.monotonic()
    cause: str
    failures: int = 0
    last_failure: float = 0.0


class EngineHealth:
    """The process's record of engines away and of a full disk."""

    def __init__(self, on_failure: Callable[[str], None] | None = None) -> None:
        self.on_failure = on_failure or (lambda where: None)
        self._away: dict[str, Episode] = {}
        self._lock = threading.Lock()

    def failed(self, where: str, cause: str) -> None:
        """An operation on `where` (an engine, or DISK) failed and was refused; the first of an episode is logged."""
        with self._lock:
            episode = self._away.get(where)
            first = episode is None
            if episode is None:
                episode = self._away[where] = Episode(where, time.monotonic(), cause)
            episode.failures += 1
            episode.last_failure = time.monotonic()
        if first:
            if where == DISK:
                log.warning(
                    "disk full: %s; writes answer 507 insufficient_storage until space is freed "
                    "(reads and deletes keep working)",
                    cause,
                )
            else:
                log.warning(
                    "%s is unavailable: %s; requests that need it answer 503 with Retry-After until it is back",
                    ENGINE_TITLES.get(where, where),
                    cause,
                )
        self.on_failure(where)

    def ok(self, where: str) -> None:
        """An operation on `where` succeeded: ends its episode, if one is open."""
        if where not in self._away:  # the common case, without the lock
            return
        with self._lock:
            episode = self._away.get(where)
            if episode is None or time.monotonic() - episode.last_failure < QUIET_SECONDS:
                return
            del self._away[where]
        seconds = episode.last_failure - episode.started
        what = "disk space" if where == DISK else ENGINE_TITLES.get(where, where)
        log.warning("%s is back: operations were refused for %.1f s (%d of them)", what, seconds, episode.failures)

    def is_away(self, where: str) -> bool:
        """Whether an episode of `where` is open (without the lock: a hint, read on every checkout)."""
        return where in self._away

    def away(self) -> dict[str, Episode]:
        """The episodes open now, by engine (or DISK)."""
        with self._lock:
            return dict(self._away)


class PoolNoise(logging.Filter):
    """psycopg_pool's warnings about each dead connection and failed reconnection, as DEBUG.

    The pool warns once per connection it discards and once per reconnection attempt: 26 to 33
    warnings for one 5 s outage of two workers. EngineHealth already logs the outage once, with
    the driver's words, and its end; the pool's lines stay available at DEBUG.
    """

    NOISE = ("discarding ", "error connecting in ")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(self.NOISE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # Handlers of the root logger see a propagated record whatever the root's level: ask it.
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def quiet_pool_log() -> None:
    """Install PoolNoise on psycopg_pool's logger, once per process."""
    pool_log = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, PoolNoise) for f in pool_log.filters):
        pool_log.addFilter(PoolNoise())
