"""The job-report listener on real loopback sockets: lines in, bounded in every way."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from reconciler import report_listener
from reconciler.deployment_report import MAX_LINE
from reconciler.report_listener import ReportListener

REPORT = (
    "192.168.100.11 02:00:00:00:01:01 Multicast restored win11, /dev/nvme0n1p1, success, "
    "104 MB, .050 mins, 2080.0 MB/min;"
)


class Received:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def __call__(self, line: str, peer: str) -> None:
        with self.changed:
            self.lines.append((line, peer))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.lines) >= count, timeout)
            return list(self.lines)


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def listener(received: Received) -> Iterator[ReportListener]:
    serving = ReportListener(report_listener.bind("127.0.0.1", 0), received).start()
    try:
        yield serving
    finally:
        serving.close()
    assert not serving.running


def connect(listener: ReportListener) -> socket.socket:
    host, port = listener.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_report_as_ocs_socket_sends_it(listener: ReportListener, received: Received) -> None:
    with connect(listener) as sock:
        sock.sendall(REPORT.encode() + b"\n")
    assert received.wait_for(1) == [(REPORT, "127.0.0.1")]


def test_a_last_line_without_newline_and_a_line_in_pieces(
    listener: ReportListener, received: Received
) -> None:
    with connect(listener) as sock:
        sock.sendall(b"first half ")
        time.sleep(0.05)
        sock.sendall(b"second half\r\nno newline")
    assert received.wait_for(2) == [
        ("first half second half", "127.0.0.1"),
        ("no newline", "127.0.0.1"),
    ]


def test_bytes_that_are_no_utf8_reach_the_parser_unlaundered(
    listener: ReportListener, received: Received
) -> None:
    with connect(listener) as sock:
        sock.sendall(b"192.168.100.11 \xff\xfe\n")
    ((line, _),) = received.wait_for(1)
    assert line == "192.168.100.11 \udcff\udcfe"  # the parser refuses surrogates


def test_an_overlong_line_ends_the_connection_and_is_dropped(
    listener: ReportListener, received: Received
) -> None:
    with connect(listener) as sock:
        sock.sendall(b"x" * (MAX_LINE + 1))
        assert closed_by_server(sock)
    with connect(listener) as sock:
        sock.sendall(b"after\n")
    assert received.wait_for(1) == [("after", "127.0.0.1")]


def test_lines_per_connection_are_bounded(listener: ReportListener, received: Received) -> None:
    lines = "".join(f"line {i}\n" for i in range(report_listener.MAX_LINES_PER_CONNECTION + 3))
    with connect(listener) as sock:
        sock.sendall(lines.encode())
        assert closed_by_server(sock)
    got = received.wait_for(report_listener.MAX_LINES_PER_CONNECTION)
    assert [line for line, _ in got] == [
        f"line {i}" for i in range(report_listener.MAX_LINES_PER_CONNECTION)
    ]


def test_connections_beyond_the_limit_are_closed_at_once(
    listener: ReportListener, received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_listener, "MAX_CONNECTIONS", 2)
    idle = [connect(listener), connect(listener)]
    try:
        time.sleep(0.2)  # both accepted
        with connect(listener) as third:
            assert closed_by_server(third)
        idle[0].sendall(b"still served\n")
        assert received.wait_for(1) == [("still served", "127.0.0.1")]
    finally:
        for sock in idle:
            sock.close()


def test_a_silent_client_is_dropped(
    listener: ReportListener, received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_listener, "IDLE_TIMEOUT", 0.3)
    with connect(listener) as sock:
        sock.sendall(b"half a line")
        started = time.monotonic()
        assert closed_by_server(sock, timeout=5)
        assert time.monotonic() - started < 3
    assert received.lines == []


def test_a_failing_receiver_does_not_end_the_listener() -> None:
    calls: list[str] = []

    def fails_once(line: str, peer: str) -> None:
        calls.append(line)
        if len(calls) == 1:
            raise RuntimeError("bug downstream")

    serving = ReportListener(report_listener.bind("127.0.0.1", 0), fails_once).start()
    try:
        for text in (b"one\n", b"two\n"):
            with connect(serving) as sock:
                sock.sendall(text)
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls == ["one", "two"]
        assert serving.running
    finally:
        serving.close()
