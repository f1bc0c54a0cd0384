"""Start-up work done once in the master process, and gunicorn run from Python.

Order in the gunicorn master: `on_starting` (before the port is bound) checks the settings
and takes the data folder's lock, refusing a folder another server holds before touching
anything; `when_ready` (port bound, no worker forked yet) migrates, settles the jobs a crash
cut short and sweeps unreferenced files. A server that cannot bind its port therefore exits
having repaired nothing, and no two servers ever repair one folder.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from gunicorn import glogging
from gunicorn.app.base import Application

from . import logs
from .config import Config, ConfigError, load_config
from .crypto import CryptoError
from .metrics import MULTIPROC_ENV
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
    from .services import deletion, maintenance

    master_key_for(config)  # a key file missing next to sealed data refuses before anything changes
    applied = migrate(config)
    for step in applied:
        log.warning("migrated the database to schema version %d: %s", step.version, step.description)
    rt = build_runtime(config)
    try:
        # Jobs first: settling them touches no files, and the sweep then sees the final rows. No
        # stream is open before the workers start: slots left by a crash are freed. A bucket is
        # swept by the workers' periodic sweeper, not here: the master must not load botocore
        # before a gevent worker has patched `ssl` (see storage.s3.S3BlobStore.client).
        return {
            "migrations": len(applied),
            **_recover_jobs(rt),
            # Before the sweep; a bucket's deletions are finished by the workers' pruner (botocore, as below).
            "finished_deletions": 0 if config.uses_s3 else deletion.finish_pending(rt),
            "swept_blobs": 0 if config.uses_s3 else maintenance.sweep_blobs(rt),
            "freed_stream_slots": rt.stream_slots.forget_host(),
        }
    finally:
        rt.close()


def _recover_jobs(rt: Runtime) -> dict[str, int]:
    """Settle what a crash left open: every open job on one box; only expired leases on a shared database.

    On PostgreSQL the open jobs may be other live nodes' own: the folder lock proves nothing
    about them, so only a lease that ran out marks a job as orphaned.
    """
    from .services import settlement

    if not rt.config.uses_postgres:
        return settlement.recover(rt)
    return {"interrupted_jobs": settlement.sweep_expired(rt), "stripe_steps_finished": settlement.retry_pending(rt)}


class GunicornServer(Application):
    """gunicorn with the package's settings, then our command-line overrides, serving create_app()."""

    def __init__(self, overrides: dict[str, Any], on_ready: Callable[[Config], None] | None = None) -> None:
        self.overrides = overrides
        self.on_ready = on_ready  # run by the master once storage is ready (serve --demo)
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        """Unused: settings come from the file and the overrides."""

    def load_config(self) -> None:
        """The package's gunicorn settings, then GUNICORN_CMD_ARGS, then the CLI's values (gunicorn's own order)."""
        self.load_config_from_module_name_or_filename("python:telentir.gunicorn_settings")
        env_args = self.cfg.get_cmd_args_from_env()
        if env_args:
            for key, value in vars(self.cfg.parser().parse_args(env_args)).items():
                if value is not None and key != "args":
                    self.cfg.set(key.lower(), value)
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
    """Run the production server in the foreground (`worker_class`: gthread or gevent, ours of each)."""
    from .workers import WORKER_CLASSES

    worker = WORKER_CLASSES[worker_class] if worker_class is not None else None
    GunicornServer(
        {"bind": f"{host}:{port}", "workers": workers, "threads": threads, "worker_class": worker}, on_ready
    ).run()


# --- metrics across processes -------------------------------------------------------------

# "<pid> created <dir>" or "<pid> given <dir>": set up in this run, by the process `pid`.
_METRICS_DIR_SET_UP = "TELENTIR_METRICS_DIR_SET_UP"


def use_multiprocess_metrics() -> Path:
    """Give this process and the workers it forks one metrics folder (idempotent within a run).

    A fresh temporary folder of our own, unless PROMETHEUS_MULTIPROC_DIR names one already;
    that one is emptied, as prometheus-client requires between runs. The environment carries
    the choice to the workers, which gunicorn forks from this process.
    """
    given = os.environ.get(MULTIPROC_ENV)
    owner, how, folder_name = _metrics_setup()
    if given and folder_name == given and owner == os.getpid():
        return Path(given)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        how = "given"
    else:
        folder, how = Path(tempfile.mkdtemp(prefix="telentir-metrics-")), "created"
        os.environ[MULTIPROC_ENV] = str(folder)
    os.environ[_METRICS_DIR_SET_UP] = f"{os.getpid()} {how} {folder}"
    _reselect_value_store()
    return folder


def stop_multiprocess_metrics() -> None:
    """The run is over (in the process that set it up): remove the folder if made here, forget the setting.

    Workers unwind through the same code when they exit (gunicorn forks them inside `serve`):
    only the process that set the folder up may remove it.
    """
    owner, how, folder = _metrics_setup()
    if owner != os.getpid():
        return
    del os.environ[_METRICS_DIR_SET_UP]
    if how == "created":
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
        _reselect_value_store()


def _metrics_setup() -> tuple[int, str, str]:
    pid, _, rest = os.environ.get(_METRICS_DIR_SET_UP, "").partition(" ")
    how, _, folder = rest.partition(" ")
    return (int(pid) if pid.isdigit() else 0), how, folder


def _reselect_value_store() -> None:
    # prometheus-client picks where values live (memory or the folder) when first imported,
    # from the environment. The CLI normally sets the folder before that import; when some
    # code of the same process imported it earlier (a test calling `serve` in-process), ask
    # it again with its own function, so the metrics made from now on follow the setting.
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()


def worker_gone(pid: int) -> None:
    """gunicorn master hook: drop a dead worker's live gauges (its open streams are gone with it)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, folder)


# --- one log format -----------------------------------------------------------------------


class GunicornLogger(glogging.Logger):
    """gunicorn's logger writing the house format; requests are logged by the app instead.

    The app's request line (`telentir.request_log`) names the route, request id and user,
    which gunicorn's access line cannot, and never the query string, which may hold a
    token. gunicorn's `accesslog` setting (`--access-logfile`) still says where request
    lines go: unset, with the rest of the log on stderr; `-`, stdout; a path, that file.
    """

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup, then our formatter on its handlers and the request log's destination."""
        super().setup(cfg)
        log_format = _log_format()
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.LogFormatter(logs.use_json(log_format, getattr(handler, "stream", sys.stderr))))
        _route_request_log(cfg.accesslog, log_format)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Nothing: the app writes each request's line."""


def _log_format() -> str:
    try:
        return load_config().log_format
    except ConfigError:
        return "auto"  # the master's start-up check reports the bad setting


def _route_request_log(accesslog: str | None, log_format: str) -> None:
    request_log = logging.getLogger(logs.REQUEST_LOGGER)
    for old in [h for h in request_log.handlers if getattr(h, "_telentir", False)]:
        request_log.removeHandler(old)
        old.close()
    request_log.propagate = accesslog is None
    if accesslog is None:
        return
    handler: logging.Handler
    if accesslog == "-":
        handler = logs.make_handler(log_format, sys.stdout)
    else:
        handler = logging.FileHandler(accesslog)
        handler.setFormatter(logs.LogFormatter(log_format != "text"))  # a file is never a terminal
    handler._telentir = True  # type: ignore[attr-defined]
    request_log.addHandler(handler)


@dataclass
class MasterState:
    """What the gunicorn master keeps from `on_starting` to its end: the settings and the folder's lock."""

    config: Config
    lock: FolderLock


OPEN_FILES_WANTED = 65536  # gunicorn's worker_connections (10000) per worker, with room for the rest


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise the soft limit on open files toward the hard one (the workers inherit it); the limit now.

    Many distributions start a process with a soft limit of 1024: a worker past it cannot
    accept (gunicorn then restarts it), so a few hundred idle or slow connections per worker
    would take the server down. The hard limit is the operator's, never exceeded.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft
        return target
    return soft


def on_starting(server: Any) -> None:
    """gunicorn master hook, before binding: validate settings, take the data folder or refuse."""
    use_multiprocess_metrics()
    raise_open_files_limit()
    try:
        config = load_config()
        logs.configure(config.log_level, config.log_format)
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
