"""Doorbells between the processes of one box, for the in-process broker: a datagram socket per process.

The in-process broker reaches only its own process. When several gunicorn workers serve one
data folder without Redis, each worker's streams must still hear about events the other
workers commit. What crosses processes is the durable event log: a stream reads every event
from the table, in id order, whoever wrote it. The processes only need the doorbell, and a
doorbell is a few dozen bytes: after its commit, a writer sends each one as a datagram to
every serving process of the data folder, whose receiver thread publishes it on its own
in-process broker, exactly as if it had been rung locally.

Every serving process binds one Unix datagram socket, named by its pid, in the data folder's
`run/` directory (or, when that path is too long for a socket, a short folder of the system's
temporary directory named by a hash of the data folder): the folder lists the peers. A
socket left by a killed process refuses datagrams, and its file is removed by the first
sender to notice. A datagram that cannot be sent at once (the peer's buffer is full) is
dropped and counted: the peer's streams read the table at their next heartbeat anyway, so a
lost doorbell delays an event, never loses it.

A process with nothing subscribed (no stream has opened there) has nobody to wake: next to
its socket it keeps a one-byte file, `<pid>.listening`, mapped into memory, set to 1 before
its broker confirms a first subscription and back to 0 once none is left. A sender reads
the peer's byte from its own mapping before each doorbell and skips a 0: on the default
two-worker box, a write no longer wakes the other worker for nothing (bench/RESULTS.md). A
stream opens only after its subscription is confirmed, and reads the table after that, so
any write it does not see in that read commits after the byte was 1, and its sender, which
reads the byte after its commit, rings it. (Locks and system calls on both sides order the
byte against the database's own shared memory.) A peer without the file (an older version)
always gets its doorbells, and peers whose byte is 0 are sent a probe at each listing, so a
killed one is still noticed and forgotten. A worker's stream hub gives its subscription up
half a minute after its last stream ended (streaming/hub.py): from then on it is rung no more.
"""

import contextlib
import errno
import hashlib
import logging
import mmap
import os
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

from telentir.pubsub.base import Broker
from telentir.pubsub.memory import MemoryBroker

log = logging.getLogger(__name__)

# A socket path longer than this does not fit `sockaddr_un` on every platform (108 on Linux).
MAX_SOCKET_PATH = 100
# Peers are listed again at most this often (and at once when one says hello).
REFRESH_SECONDS = 1.0
DATAGRAM_LIMIT = 4096
_HELLO = b"\x00hello"
_STOP = b"\x00stop"
_PROBE = b"\x00probe"  # are you there? (asked of peers with nothing to ring; ignored by them)
FLAG_SUFFIX = ".listening"

# A peer's socket and the mapping of its "anyone subscribed" byte (None: unknown, always ring).
Peer = tuple[Path, mmap.mmap | None]


def socket_folder(data_dir: Path) -> Path:
    """Where the serving processes of `data_dir` bind their doorbell sockets."""
    preferred = data_dir.resolve() / "run"
    if len(str(preferred / "4194304.sock")) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    # The user's own runtime folder when there is one (0700 by design), else the temporary one.
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"telentir-{digest}"


def private_folder(folder: Path) -> bool:
    """Make `folder` (0700) if absent; whether it is ours alone (nobody else may bind or remove sockets there)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class PeerDoorbells:
    """Sends doorbells to the other serving processes of a data folder, and (when listening) receives theirs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._lock = threading.Lock()
        self._peers: list[Peer] = []
        self._listed_at = -REFRESH_SECONDS
        self._own: Path | None = None
        self._own_flag: mmap.mmap | None = None
        self._receiver: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # --- sending (every process writing to the data folder) -----------------------------------

    def ring(self, channel: str, message: str) -> int:
        """Send one doorbell to every peer; never blocks, never raises. Returns how many peers missed it."""
        data = f"{channel}\n{message}".encode()
        if len(data) > DATAGRAM_LIMIT:
            return 0  # not a doorbell of ours (they are tiny): the table read at the heartbeat covers it
        # A mapping stays valid while this list holds it, even once a new listing replaced it.
        return sum(not self._send(peer, data) for peer, flag in self._current_peers() if flag is None or flag[0])

    def _send(self, peer: Path, data: bytes) -> bool:
        """Whether the doorbell reached a live peer (a gone one is forgotten and counts as reached)."""
        try:
            self._sender.sendto(data, str(peer))
        except BlockingIOError:
            return False  # the peer is behind; its streams catch up at their heartbeat
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                self._forget(peer)  # its process is gone: nobody reads that socket any more
                return True
            log.debug("doorbell to %s failed: %s", peer, exc)
            return False
        return True

    def _current_peers(self) -> list[Peer]:
        now = time.monotonic()
        with self._lock:
            if now - self._listed_at < REFRESH_SECONDS:
                return self._peers
            self._peers = peers = self._list_peers()
            self._listed_at = now
        for peer, flag in peers:
            if flag is not None and not flag[0]:
                self._send(peer, _PROBE)  # skipped by every doorbell: a killed peer is noticed here
        return self._peers

    def _list_peers(self) -> list[Peer]:
        try:
            info = self.folder.stat()
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return []  # not ours alone: a stranger's socket there must not hear our doorbells
            sockets = [p for p in self.folder.iterdir() if p.suffix == ".sock" and p != self._own]
        except FileNotFoundError:
            return []
        return [(peer, _map_flag(peer.with_suffix(FLAG_SUFFIX))) for peer in sockets]

    def _forget(self, peer: Path) -> None:
        for path in (peer, peer.with_suffix(FLAG_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            self._peers = [p for p in self._peers if p[0] != peer]

    # --- receiving (serving processes) ---------------------------------------------------------

    def listen(self, broker: Broker) -> None:
        """Bind this process's socket and publish every doorbell received on `broker` (a daemon thread)."""
        if not private_folder(self.folder):
            # Someone else's folder (a predictable name in /tmp): their sockets would hear our
            # doorbells. Without ours, streams here still see every event at their heartbeat.
            log.error(
                "doorbell folder %s is not this user's alone: other workers' doorbells are not heard", self.folder
            )
            return
        own = self.folder / f"{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            own.unlink()  # left by an earlier process with our pid
        # The byte before the socket: a peer that lists the socket finds the byte too.
        self._own_flag = _new_flag(own.with_suffix(FLAG_SUFFIX))
        if isinstance(broker, MemoryBroker):
            broker.watch_subscribers(self._subscribed)
        else:
            self._subscribed(True)  # a broker that cannot tell: ring this process always
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(own))
        self._own, self._receiver = own, receiver
        self._thread = threading.Thread(
            target=self._receive, args=(receiver, broker), name="telentir-peer-doorbells", daemon=True
        )
        self._thread.start()
        # Say hello: peers list the folder again at once, so this process hears their next doorbell.
        with self._lock:
            self._listed_at = -REFRESH_SECONDS
        for peer, _ in self._current_peers():
            self._send(peer, _HELLO)

    def _receive(self, receiver: socket.socket, broker: Broker) -> None:
        while True:
            try:
                data = receiver.recv(DATAGRAM_LIMIT)
            except OSError:
                return  # closed by close()
            if not data or data == _STOP:
                return
            if data == _HELLO:
                with self._lock:
                    self._listed_at = -REFRESH_SECONDS
                continue
            if data == _PROBE:
                continue
            channel, _, message = data.decode(errors="replace").partition("\n")
            try:
                broker.publish(channel, message)
            except Exception:
                log.debug("publishing a peer's doorbell failed", exc_info=True)

    def close(self) -> None:
        """Stop receiving, remove this process's socket, and close the sender."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None and self._own is not None:
            with contextlib.suppress(OSError):
                self._sender.sendto(_STOP, str(self._own))  # wakes the receiver thread, which returns
            if self._thread is not None:
                self._thread.join(timeout=5)
            receiver.close()
        if self._own is not None:
            for path in (self._own, self._own.with_suffix(FLAG_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._sender.close()

    def _subscribed(self, anyone: bool) -> None:
        """The broker's watcher: set this process's byte (peers read it before each doorbell)."""
        if self._own_flag is not None:
            self._own_flag[0] = 1 if anyone else 0


def _new_flag(path: Path) -> mmap.mmap:
    """A fresh one-byte file at `path` (0: nobody subscribed), mapped for writing.

    A new file, never one truncated: a peer may still map an earlier process's file of that
    name, and reading a mapping past a truncated file's end kills the reader (SIGBUS).
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"\x00")
        return mmap.mmap(fd, 1)
    finally:
        os.close(fd)


def _map_flag(path: Path) -> mmap.mmap | None:
    """A peer's byte, mapped for reading; None if it has none (ring it always)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return mmap.mmap(fd, 1, prot=mmap.PROT_READ)
    except (OSError, ValueError):  # empty: its process died between making and writing it
        return None
    finally:
        os.close(fd)
