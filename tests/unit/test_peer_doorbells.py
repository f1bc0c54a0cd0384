"""Doorbells between the workers of a box: only through a folder that is the server user's alone."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from telentir.pubsub import peers as peers_module
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


def _received(sock: socket.socket) -> list[bytes]:
    """The datagrams waiting on `sock`."""
    got = []
    while True:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            return got


def test_doorbells_go_only_to_peers_with_someone_subscribed(tmp_path: Path) -> None:
    """The peer's byte is read at each doorbell: a first subscription there is heard by the very next write."""
    folder = tmp_path / "run"
    assert private_folder(folder)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a worker with no stream yet
    peer.bind(str(folder / "4242.sock"))
    peer.setblocking(False)
    byte = peers_module._new_flag(folder / "4242.listening")
    sender = PeerDoorbells(folder)
    try:
        assert sender.ring("object_created:usr_x", '{"id": 1}') == 0
        assert _received(peer) == [b"\x00probe"]  # asked at the listing whether it lives; no doorbell
        byte[0] = 1  # its first stream subscribed
        sender.ring("object_created:usr_x", '{"id": 2}')  # within the same listing
        assert _received(peer) == [b'object_created:usr_x\n{"id": 2}']
        byte[0] = 0
        sender.ring("object_created:usr_x", '{"id": 3}')
        assert _received(peer) == []
    finally:
        sender.close()
        peer.close()


def test_a_killed_peer_with_nobody_subscribed_is_still_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    assert private_folder(folder)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(str(folder / "4242.sock"))
    peers_module._new_flag(folder / "4242.listening")
    peer.close()  # killed: its socket file stays behind, refusing datagrams
    monkeypatch.setattr(peers_module, "REFRESH_SECONDS", 0.0)
    sender = PeerDoorbells(folder)
    try:
        sender.ring("object_created:usr_x", '{"id": 1}')
        assert sorted(p.name for p in folder.iterdir()) == []
    finally:
        sender.close()


def test_a_listening_process_sets_its_byte_while_anyone_is_subscribed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    broker = MemoryBroker()
    peers = PeerDoorbells(folder)
    byte = folder / f"{os.getpid()}.listening"
    try:
        peers.listen(broker)
        assert byte.read_bytes() == b"\x00"
        stream, other = broker.pubsub(), broker.pubsub()
        stream.psubscribe("object_created:usr_x:*")
        assert byte.read_bytes() == b"\x01"  # set before the confirmation was queued
        assert stream.get_message(timeout=1)["type"] == "psubscribe"
        other.subscribe("key_created:usr_y")
        stream.close()
        assert byte.read_bytes() == b"\x01"
        other.close()
        assert byte.read_bytes() == b"\x00"
    finally:
        peers.close()
        broker.close()
    assert not byte.exists() and not (folder / f"{os.getpid()}.sock").exists()
