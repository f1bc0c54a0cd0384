"""Noticing a client that hung up, for any descriptor number (a busy server has thousands)."""

import os
import resource
import socket

import pytest

from telentir.streaming.sockets import client_gone_check


@pytest.fixture
def high_fd_pair():
    """A connected socket pair whose server end has a descriptor above 1024 (select()'s limit)."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 1500:
        pytest.skip("the open-files limit is below 1500")
    server, client = socket.socketpair()
    high = os.dup2(server.fileno(), 1500)
    server.close()
    server = socket.socket(fileno=high)
    yield server, client
    server.close()
    client.close()


def test_open_idle_client_is_not_gone_even_past_fd_1024(high_fd_pair):
    server, client = high_fd_pair
    gone = client_gone_check({"gunicorn.socket": server})
    assert server.fileno() > 1024
    assert gone() is False
    client.sendall(b"pipelined bytes")  # data waiting is still a live client
    assert gone() is False


def test_closed_client_is_gone_past_fd_1024(high_fd_pair):
    server, client = high_fd_pair
    client.close()
    assert client_gone_check({"gunicorn.socket": server})() is True


def test_without_a_socket_nothing_is_ever_gone():
    assert client_gone_check({})() is False
