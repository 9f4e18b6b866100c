"""Wake-on-LAN: the magic packet, and sending it out of the kitting interface.

A magic packet is 6 bytes 0xFF and then the target's MAC 16 times (102 bytes). A NIC whose
firmware has wake-on-LAN on looks for that pattern anywhere in any frame; it is sent here
as a UDP broadcast to 255.255.255.255 port 9 (discard), the form that wake tools use and
that switches flood to every port of the VLAN.

`send` binds its socket to the site's kitting interface (SO_BINDTODEVICE), so a packet
never leaves through another NIC of the server, and is made in the caller's network
namespace (the controller's). It never raises: each MAC gets its error or None.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

PORT = 9
BROADCAST = "255.255.255.255"
PACKET_SIZE = 6 + 16 * 6


def magic_packet(mac: str) -> bytes:
    """The 102-byte magic packet for `mac` (six hex octets separated by ':' or '-').
    Purely computational; ValueError for anything else."""
    octets = mac.replace("-", ":").split(":")
    if len(octets) != 6 or not all(
        len(o) == 2 and all(c in "0123456789abcdefABCDEF" for c in o) for o in octets
    ):
        raise ValueError(f"not a MAC address: {mac!r}")
    raw = bytes(int(o, 16) for o in octets)
    return b"\xff" * 6 + raw * 16


def send(interface: str, macs: Sequence[str]) -> dict[str, str | None]:
    """One magic packet per MAC, broadcast out of `interface`: each MAC with the error
    that stopped its packet, or None when the kernel took it."""
    found = _send(interface, macs)
    return {mac: found[mac] for mac in macs}


def _send(interface: str, macs: Sequence[str]) -> dict[str, str | None]:
    outcome: dict[str, str | None] = {}
    packets: dict[str, bytes] = {}
    for mac in macs:
        try:
            packets[mac] = magic_packet(mac)
        except ValueError as error:
            outcome[mac] = str(error)
    if not packets:
        return outcome
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as error:
        return {**outcome, **dict.fromkeys(packets, _said(error, "socket"))}
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
        except OSError as error:
            return {**outcome, **dict.fromkeys(packets, _said(error, f"bind to {interface}"))}
        for mac, packet in packets.items():
            try:
                sent = sock.sendto(packet, (BROADCAST, PORT))
            except OSError as error:
                outcome[mac] = _said(error, f"send out of {interface}")
                continue
            outcome[mac] = None if sent == len(packet) else f"sent {sent} of {len(packet)} bytes"
    return outcome


def _said(error: OSError, doing: str) -> str:
    return f"{doing}: {error.strerror or error}"
