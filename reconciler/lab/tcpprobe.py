"""Socket probes run inside a lab namespace: `python -m reconciler.lab.tcpprobe COMMAND ...`.

    connect HOST PORT [--timeout S]                 does a TCP connection succeed?
    send HOST PORT --line TEXT [--timeout S]        connect and send one line (a job report)
    udp-send HOST PORT --payload TEXT               send one datagram
    udp-listen PORT [--bind A] [--count N] [--timeout S]   report datagrams received
    tcp-listen PORT [--bind A] [--count N] [--timeout S]   report what connections sent

Every command prints JSON lines on stdout: for connect/send one `{"outcome": ...,
"detail": ...}` with outcome connected, refused, timeout or unreachable; a listener first
prints `{"event": "listening", ...}`, then one line per datagram or connection, then
`{"event": "done", "reason": "count"|"timeout"}`. It refuses to run in the machine's default
network namespace: it runs only inside a namespace the lab made. Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import select
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CONNECTED = "connected"
REFUSED = "refused"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
MAX_MESSAGE = 65536
MAX_LISTEN_SECONDS = 120.0
NETNS_DIR = Path("/run/netns")
_LAB_NETNS = re.compile(r"kt[0-9a-f]{6}-[a-z][a-z0-9]{0,11}")


def classify(exc: BaseException | None) -> str:
    """The outcome of a connection attempt from the exception it raised (None: it worked).

    Purely computational.
    """
    if exc is None:
        return CONNECTED
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EACCES,  # a local firewall "reject with icmp admin-prohibited"
        errno.EPERM,
    ):
        return UNREACHABLE
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return TIMEOUT
    raise exc


def in_lab_namespace(netns_dir: Path = NETNS_DIR) -> bool:
    """True when this process runs in a namespace the lab made (one named under
    /run/netns with a lab prefix). Anything else, the machine's own namespace included,
    or a namespace that cannot be checked, is refused."""
    try:
        mine = os.stat("/proc/self/ns/net")
        names = [e for e in os.scandir(netns_dir) if _LAB_NETNS.fullmatch(e.name)]
        for entry in names:
            seen = entry.stat()
            if (seen.st_dev, seen.st_ino) == (mine.st_dev, mine.st_ino):
                return True
    except OSError:
        return False
    return False


def _emit(body: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(body, sort_keys=True) + "\n")
    sys.stdout.flush()


def _connect(host: str, port: int, timeout: float, line: str | None) -> int:
    error: BaseException | None = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if line is not None:
                sock.sendall(line.encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        error = exc
    outcome = classify(error)
    _emit({"outcome": outcome, "detail": "" if error is None else str(error)})
    return 0


def _udp_send(host: str, port: int, payload: str) -> int:
    error: OSError | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(payload.encode(), (host, port))
        except OSError as exc:
            error = exc
    outcome = "sent" if error is None else classify(error)
    _emit({"outcome": outcome, "detail": "" if error is None else str(error)})
    return 0


def _listen(kind: str, bind: str, port: int, count: int, timeout: float) -> int:
    udp = kind == "udp"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        if not udp:
            sock.listen(8)
        _emit({"event": "listening", "port": sock.getsockname()[1]})
        deadline = time.monotonic() + min(timeout, MAX_LISTEN_SECONDS)
        seen = 0
        while seen < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                _emit({"event": "done", "reason": "timeout"})
                return 0
            if udp:
                data, (source, _) = sock.recvfrom(MAX_MESSAGE)
                _emit(
                    {
                        "event": "datagram",
                        "source": source,
                        "payload": data.decode(errors="replace"),
                    }
                )
            else:
                conn, (source, _) = sock.accept()
                with conn:
                    conn.settimeout(max(0.1, deadline - time.monotonic()))
                    data = _read_all(conn)
                _emit(
                    {
                        "event": "connection",
                        "source": source,
                        "payload": data.decode(errors="replace"),
                    }
                )
            seen += 1
        _emit({"event": "done", "reason": "count"})
    return 0


def _read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_MESSAGE:  # bounded: a peer cannot make us read forever
        try:
            chunk = conn.recv(MAX_MESSAGE - size)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m reconciler.lab.tcpprobe")
    sub = top.add_subparsers(dest="command", required=True)
    for name in ("connect", "send"):
        cmd = sub.add_parser(name)
        cmd.add_argument("host")
        cmd.add_argument("port", type=int)
        cmd.add_argument("--timeout", type=float, default=2.0)
        cmd.add_argument("--line", required=name == "send")
    udp = sub.add_parser("udp-send")
    udp.add_argument("host")
    udp.add_argument("port", type=int)
    udp.add_argument("--payload", required=True)
    for name in ("udp-listen", "tcp-listen"):
        cmd = sub.add_parser(name)
        cmd.add_argument("port", type=int)
        cmd.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - inside a lab namespace only
        cmd.add_argument("--count", type=int, default=1)
        cmd.add_argument("--timeout", type=float, default=10.0)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not in_lab_namespace():
        sys.stderr.write("tcpprobe: refusing to run outside a lab network namespace\n")
        return 2
    if args.command in ("connect", "send"):
        return _connect(args.host, args.port, args.timeout, args.line)
    if args.command == "udp-send":
        return _udp_send(args.host, args.port, args.payload)
    return _listen(args.command.split("-")[0], args.bind, args.port, args.count, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
