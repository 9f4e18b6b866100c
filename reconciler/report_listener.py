"""The job-report listener: Clonezilla clients say "done" on TCP port 6461, one line each.

A client's `ocs-socket` connects, writes `IP MAC [EFI...] REPORT\\n` and closes (see
reconciler.deployment_report). Each complete line is handed to `on_line(line, peer)`; the
deployments' pure parser judges it in the next step, so nothing here interprets it.

The port is open to the whole kitting network, so everything is bounded: a line longer
than deployment_report.MAX_LINE ends its connection (the text is dropped), at most
MAX_CONNECTIONS clients are served at once (more are closed at once), a client that sends
nothing for IDLE_TIMEOUT seconds is dropped, and at most MAX_LINES_PER_CONNECTION lines are
taken from one connection. One thread, one selector, no busy loop: it sleeps in select()
until a client or `close` wakes it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from reconciler.deployment_report import MAX_LINE
from reconciler.render.pxe import REPORT_PORT

MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 10.0
MAX_LINES_PER_CONNECTION = 4
BACKLOG = 64

OnLine = Callable[[str, str], None]
"""Called as on_line(line, peer address) from the listener's thread."""


@dataclass
class _Client:
    sock: socket.socket
    peer: str
    last: float
    buffer: bytearray = field(default_factory=bytearray)
    lines: int = 0


def bind(address: str, port: int = REPORT_PORT) -> socket.socket:
    """A listening TCP socket on `address`:`port` (SO_REUSEADDR, so a restart finds the
    port free at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class ReportListener:
    """Serves one listening socket in a thread of its own until `close`."""

    def __init__(self, sock: socket.socket, on_line: OnLine) -> None:
        self.sock = sock
        self.on_line = on_line
        host, port = sock.getsockname()[:2]
        self.address = f"{host}:{port}"
        self._clients: dict[int, _Client] = {}
        self._wake_read, self._wake_write = socket.socketpair()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kitting-reports", daemon=True)
        self._log = logger.bind(target=f"reports {self.address}", commit=None)

    def start(self) -> ReportListener:
        self.sock.setblocking(False)
        self._thread.start()
        self._log.info("listening for job reports")
        return self

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"!")
        self._thread.join(timeout=5)
        for client in list(self._clients.values()):
            client.sock.close()
        self._clients.clear()
        self.sock.close()
        self._wake_read.close()
        self._wake_write.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ, "listen")
            selector.register(self._wake_read, selectors.EVENT_READ, "wake")
            while not self._closing.is_set():
                timeout = IDLE_TIMEOUT if self._clients else None  # idle: sleep until woken
                for key, _ in selector.select(timeout):
                    if key.data == "listen":
                        self._accept(selector)
                    elif key.data == "client":
                        self._read(selector, key.fileobj)  # type: ignore[arg-type]
                self._expire(selector)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            sock, peer = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._log.warning(f"accept failed: {error}")
            return
        if len(self._clients) >= MAX_CONNECTIONS:
            self._log.warning(f"{peer[0]}: too many open report connections; closed")
            sock.close()
            return
        sock.setblocking(False)
        self._clients[sock.fileno()] = _Client(sock, peer[0], time.monotonic())
        selector.register(sock, selectors.EVENT_READ, "client")

    def _read(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        client = self._clients.get(sock.fileno())
        if client is None:
            return
        try:
            data = sock.recv(MAX_LINE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        client.last = time.monotonic()
        if not data:
            if client.buffer:  # the last line without its newline still counts
                self._line(client, bytes(client.buffer))
            self._drop(selector, client)
            return
        client.buffer += data
        while (end := client.buffer.find(b"\n")) >= 0:
            line = bytes(client.buffer[:end])
            del client.buffer[: end + 1]
            self._line(client, line)
            if client.lines >= MAX_LINES_PER_CONNECTION:
                self._drop(selector, client)
                return
        if len(client.buffer) > MAX_LINE:
            self._log.warning(f"{client.peer}: report line longer than {MAX_LINE} bytes; dropped")
            self._drop(selector, client)

    def _line(self, client: _Client, raw: bytes) -> None:
        client.lines += 1
        if len(raw) > MAX_LINE:
            self._log.warning(f"{client.peer}: report line longer than {MAX_LINE} bytes; dropped")
            return
        # surrogateescape, not replace: bytes that are no UTF-8 stay visible to the parser,
        # which refuses the line, instead of being laundered into U+FFFD
        text = raw.decode("utf-8", errors="surrogateescape").rstrip("\r")
        if not text.strip():
            return
        try:
            self.on_line(text, client.peer)
        except Exception:  # a bug downstream must not end the listener
            self._log.exception("handing a report on failed")

    def _expire(self, selector: selectors.BaseSelector) -> None:
        deadline = time.monotonic() - IDLE_TIMEOUT
        for client in [c for c in self._clients.values() if c.last < deadline]:
            self._log.warning(f"{client.peer}: no complete report within {IDLE_TIMEOUT:g} s")
            self._drop(selector, client)

    def _drop(self, selector: selectors.BaseSelector, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(client.sock)
        self._clients.pop(client.sock.fileno(), None)
        client.sock.close()
