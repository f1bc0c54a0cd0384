"""The client's socket under gunicorn: has the client hung up, and which worker model runs us."""

from __future__ import annotations

import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Any


def client_gone_check(environ: dict[str, Any]) -> Callable[[], bool]:
    """A check that the client closed its connection (gunicorn hands us the socket)."""
    client = environ.get("gunicorn.socket")
    if client is None:
        return lambda: False
    return lambda: peer_closed(client)


def peer_closed(client: socket.socket) -> bool:
    """Whether the peer has closed the connection, checked without blocking or consuming data."""
    # poll(), not select(): select() fails for descriptors past 1024, which a server holding
    # a thousand streams has. Under the gevent worker poll() is gone and select() is
    # gevent's, which has no such limit.
    try:
        if event_loop_worker():
            if not select.select([client], [], [], 0)[0]:
                return False
        else:
            poller = select.poll()
            poller.register(client.fileno(), select.POLLIN)
            if not poller.poll(0):
                return False
    except (OSError, ValueError):
        return True
    return peek_hangup(client) is True


def peek_hangup(client: socket.socket) -> bool | None:
    """For a socket that polled readable: True if the peer closed it, False if not, None if it sent data.

    Readable with nothing to peek means the peer closed; readable with bytes waiting means the
    client talks (an SSE client never needs to), which says nothing about a hang-up.
    """
    try:
        data = client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
    return None if data else True


def event_loop_worker() -> bool:
    """Whether gevent has patched this process (gunicorn's gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def drain(fd: int) -> None:
    """Read a non-blocking pipe (a wake-up pipe) until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
