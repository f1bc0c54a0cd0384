"""Doorbells between the workers of a box: only through a folder that is the server user's alone."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from telentir.pubsub.memory import MemoryBroker
from telentir.pubsub.peers import PeerDoorbells, private_folder, socket_folder


def test_a_long_data_folder_path_binds_in_a_short_private_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 90) / "data"
    folder = socket_folder(deep)
    assert len(str(folder / "4194304.sock")) <= 100 and folder != deep / "run"
    assert socket_folder(deep) == folder  # every worker of the data folder finds the same one


def test_a_folder_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not private_folder(shared)
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # someone else's socket, listening there
    stranger.bind(str(shared / "1.sock"))
    stranger.setblocking(False)
    peers = PeerDoorbells(shared)
    broker = MemoryBroker()
    try:
        peers.listen(broker)
        assert not (shared / f"{os.getpid()}.sock").exists()  # it did not bind there
        assert peers.ring("object_created:usr_x", '{"id": 1}') == 0
        try:
            stranger.recv(4096)
            raise AssertionError("a doorbell reached a socket in a folder others may write")
        except BlockingIOError:
            pass
    finally:
        peers.close()
        broker.close()
        stranger.close()


def test_a_private_folder_is_made_0700(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert private_folder(folder)
    assert folder.stat().st_mode & 0o777 == 0o700
