"""daemon.notify against real unix datagram sockets, as systemd would bind them."""

from __future__ import annotations

import logging
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.notify import Notifier


def _receive(sock: socket.socket) -> str:
    sock.settimeout(5.0)  # a missing datagram fails the test instead of hanging it
    return sock.recv(4096).decode("utf-8")


@pytest.fixture
def fs_socket() -> Iterator[tuple[str, socket.socket]]:
    # A short directory: unix socket paths are limited to 107 bytes, and pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="vlmw-") as folder:
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            yield path, sock


def test_messages_arrive_on_a_filesystem_socket(fs_socket):
    path, server = fs_socket
    with Notifier(path) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert _receive(server) == "READY=1"
        assert notifier.watchdog()
        assert _receive(server) == "WATCHDOG=1"
        assert notifier.status("analysing 3 cameras\nqueue 1")
        assert _receive(server) == "STATUS=analysing 3 cameras queue 1"
        assert notifier.stopping("shutting down")
        assert _receive(server) == "STOPPING=1\nSTATUS=shutting down"
        assert notifier.extend_timeout(12.5)
        assert _receive(server) == "EXTEND_TIMEOUT_USEC=12500000"


def test_address_is_read_from_notify_socket(fs_socket):
    path, server = fs_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    assert notifier.address == path
    assert notifier.ready("up")
    assert _receive(server) == "READY=1\nSTATUS=up"
    notifier.close()


def test_abstract_socket():
    name = f"vlmwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        with Notifier(environ={"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
            assert _receive(server) == "READY=1"
            assert notifier.watchdog()
            assert _receive(server) == "WATCHDOG=1"


def test_no_socket_is_a_no_op():
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None
    notifier.close()
    # An explicit "" disables even when the environment names a socket.
    assert not Notifier("", environ={"NOTIFY_SOCKET": "/nonexistent"}).ready()


def test_send_failure_never_raises_and_is_logged_once(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="daemon.service.notify"):
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(tmp_path / "gone") in warnings[0].getMessage()
    notifier.close()


def test_unsupported_address_is_a_logged_failure(caplog):
    with caplog.at_level(logging.WARNING, logger="daemon.service.notify"):
        assert not Notifier("vsock:2:1234").ready()
    assert "unsupported NOTIFY_SOCKET address 'vsock:2:1234'" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    assert Notifier(environ=environ, pid=4242).watchdog_interval() == expected
