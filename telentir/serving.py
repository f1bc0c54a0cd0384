"""Start-up work done once in the master process, and gunicorn run from Python.

Order in the gunicorn master: `on_starting` (before the port is bound) checks the settings
and takes the data folder's lock, refusing a folder another server holds before touching
anything; `when_ready` (port bound, no worker forked yet) migrates, settles the jobs a crash
cut short and sweeps unreferenced files. A server that cannot bind its port therefore exits
having repaired nothing, and no two servers ever repair one folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from gunicorn.app.base import Application

from .config import Config, ConfigError, load_config
from .crypto import CryptoError
from .runtime import Runtime
from .storage.folder_lock import FolderLock, FolderLocked
from .storage.schema import SchemaError
from .wiring import build_runtime, master_key_for, migrate

log = logging.getLogger(__name__)

STARTUP_ERRORS = (ConfigError, CryptoError, SchemaError, FolderLocked)  # CryptoError: an unreadable master key


def prepare(config: Config, lock: FolderLock | None = None) -> dict[str, int]:
    """Create what must exist and repair what a crash left, under the data folder's lock.

    The caller may hold the lock already (the gunicorn master); otherwise it is taken for
    the duration, and FolderLocked is raised if a server holds the folder.
    """
    if lock is not None and lock.held:
        return _prepare_locked(config)
    with FolderLock(config.data_dir):
        return _prepare_locked(config)


def _prepare_locked(config: Config) -> dict[str, int]:
    from .services import settlement

    master_key_for(config)  # a key file missing next to sealed data refuses before anything changes
    applied = migrate(config)
    for step in applied:
        log.warning("migrated the database to schema version %d: %s", step.version, step.description)
    rt = build_runtime(config)
    try:
        # Jobs first: settling them touches no files, and the sweep then sees the final rows.
        return {"migrations": len(applied), **settlement.recover(rt), "swept_blobs": sweep_blobs(rt)}
    finally:
        rt.close()


def sweep_blobs(rt: Runtime) -> int:
    """Remove ciphertext files that no object row names (left by a crash mid-write)."""
    referenced = {row["blob"] for row in rt.db.query("SELECT blob FROM objects WHERE blob IS NOT NULL")}
    removed = rt.blobs.sweep(referenced.__contains__)
    if removed:
        log.warning("start-up sweep removed %d unreferenced blob file(s)", removed)
    return removed


def check_workers(config: Config, workers: int) -> None:
    """The in-memory broker cannot cross processes: refuse more than one worker with it."""
    if workers > 1 and config.broker_url.startswith("memory://"):
        raise ConfigError(
            f"{workers} workers need a shared broker: set TELENTIR_BROKER_URL=redis://… "
            "(the in-memory broker only reaches subscribers in its own process)."
        )


class GunicornServer(Application):
    """gunicorn with the package's settings, then our command-line overrides, serving create_app()."""

    def __init__(self, overrides: dict[str, Any], on_ready: Callable[[Config], None] | None = None) -> None:
        self.overrides = overrides
        self.on_ready = on_ready  # run by the master once storage is ready (serve --demo)
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        """Unused: settings come from the file and the overrides."""

    def load_config(self) -> None:
        """Read the package's gunicorn settings, then apply the CLI's values."""
        self.load_config_from_module_name_or_filename("python:telentir.gunicorn_settings")
        for key, value in self.overrides.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        """Each worker builds its own app (connections and threads are per process)."""
        from . import create_app

        return create_app()


def serve(
    host: str,
    port: int,
    workers: int | None,
    threads: int | None,
    worker_class: str | None = None,
    on_ready: Callable[[Config], None] | None = None,
) -> None:
    """Run the production server in the foreground."""
    GunicornServer(
        {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": worker_class}, on_ready
    ).run()


@dataclass
class MasterState:
    """What the gunicorn master keeps from `on_starting` to its end: the settings and the folder's lock."""

    config: Config
    lock: FolderLock


def on_starting(server: Any) -> None:
    """gunicorn master hook, before binding: validate settings, take the data folder or refuse."""
    try:
        config = load_config()
        check_workers(config, server.cfg.workers)
        # Held for the master's life; forked workers share the descriptor (see storage/folder_lock.py).
        server.telentir_master = MasterState(config, FolderLock(config.data_dir).acquire())
    except STARTUP_ERRORS as exc:
        _refuse(exc)


def when_ready(server: Any) -> None:
    """gunicorn master hook, port bound and no worker forked yet: migrate, recover, sweep."""
    state: MasterState = server.telentir_master
    try:
        report = prepare(state.config, state.lock)
    except STARTUP_ERRORS as exc:
        _refuse(exc)
    log.info("storage ready: %s", report)
    on_ready = getattr(server.app, "on_ready", None)  # absent when gunicorn is run directly
    if on_ready is not None:
        on_ready(state.config)


def _refuse(exc: Exception) -> NoReturn:
    log.error("cannot start: %s", exc)
    raise SystemExit(f"telentir: {exc}") from None
