"""What udp-sender says about its receivers, read from its output (stderr).

udpcast 20120424 writes, for one transfer (captured from a real run in a network namespace):

    Udp-sender 20120424
    Using full duplex mode
    UDP sender for (stdin) at 192.168.100.1 on e0
    Broadcasting control to 224.0.0.1
    New connection from 192.168.100.24  (#0) 00000009
    Starting transfer: 00000009
    bytes=  3 000 000  re-xmits=0000236 ( 11.4%) slice=0112 -   0     (redrawn with '\\r')
    Transfer complete.<BEL>
    Disconnecting #0 (192.168.100.24)

and, when a receiver stops answering, `Dropping client #N because of timeout`. Nothing here
proves a PC's success (a receiver can say "complete" having written nothing): these lines
only tell who joined the stream, which the deployments take as "this PC started imaging".

Purely computational.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import AddressValueError, IPv4Address

MAX_LINE = 4096
"""Longer output lines are cut: udp-sender's own are under 200 characters."""


class SenderEvent(StrEnum):
    connected = "connected"
    """A receiver joined: `ip` and `number` are set."""
    started = "started"
    """The transfer began (every waited-for receiver is there, or max-wait passed)."""
    progress = "progress"
    """`bytes` sent so far."""
    complete = "complete"
    disconnected = "disconnected"
    """A receiver left at the end: `ip` and `number` are set."""
    dropped = "dropped"
    """A receiver stopped answering and was dropped: `number` is set."""


@dataclass(frozen=True)
class SenderLine:
    event: SenderEvent
    ip: str = ""
    number: int | None = None
    bytes: int | None = None


_CONNECTED = re.compile(r"^New connection from (\S+)\s+\(#(\d+)\)")
_DISCONNECTED = re.compile(r"^Disconnecting #(\d+) \((\S+)\)")
_DROPPED = re.compile(r"^Dropping client #(\d+) because of timeout")
_PROGRESS = re.compile(r"^bytes=\s*([\d ]+?)\s{2}")


def parse(line: str) -> SenderLine | None:
    """One output line (without its line end), or None when it says nothing we use."""
    text = line.strip("\x07 \t")
    if found := _CONNECTED.match(text):
        ip = _address(found[1])
        return SenderLine(SenderEvent.connected, ip, int(found[2])) if ip else None
    if text.startswith("Starting transfer"):
        return SenderLine(SenderEvent.started)
    if text.startswith("Transfer complete"):
        return SenderLine(SenderEvent.complete)
    if found := _DISCONNECTED.match(text):
        ip = _address(found[2])
        return SenderLine(SenderEvent.disconnected, ip, int(found[1])) if ip else None
    if found := _DROPPED.match(text):
        return SenderLine(SenderEvent.dropped, number=int(found[1]))
    if found := _PROGRESS.match(text + "  "):
        return SenderLine(SenderEvent.progress, bytes=int(found[1].replace(" ", "")))
    return None


def split(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines of `buffer` (ended by '\\n' or by the '\\r' of a progress redraw) and
    the incomplete rest. An overlong line is cut to MAX_LINE characters."""
    lines = []
    start = 0
    for index, byte in enumerate(buffer):
        if byte in b"\r\n":
            if index > start:
                lines.append(buffer[start : min(index, start + MAX_LINE)].decode(errors="replace"))
            start = index + 1
    rest = buffer[start:]
    if len(rest) > MAX_LINE:
        lines.append(rest[:MAX_LINE].decode(errors="replace"))
        rest = b""
    return lines, rest


def _address(text: str) -> str:
    try:
        return str(IPv4Address(text))
    except AddressValueError:
        return ""
