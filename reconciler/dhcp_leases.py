"""dnsmasq's DHCP lease file: which MAC holds which IPv4 address now.

dnsmasq rewrites the file (Debian's default `/var/lib/misc/dnsmasq.leases`, or
`--dhcp-leasefile`) on every change, one DHCPv4 lease a line:

    EXPIRY MAC IP HOSTNAME CLIENT-ID
    1764770000 52:54:00:12:34:56 192.168.100.150 pc-a 01:52:54:00:12:34:56

EXPIRY is seconds since the epoch, 0 for a lease that never expires; HOSTNAME and CLIENT-ID
are `*` when unknown. A hardware type other than Ethernet is written as `TYPE-xx:xx:...`,
and DHCPv6 leases follow a `duid ...` line: neither is a NIC address of a PC here, so
neither is read. Used to tell which PC a udp-sender receiver from a pool address is.
Purely computational.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import AddressValueError, IPv4Address

from reconciler import fields

DEFAULT_PATH = "/var/lib/misc/dnsmasq.leases"
"""dnsmasq's compiled-in lease file on Debian/Ubuntu, and `Layout.dhcp_leases` by default:
the reconciler's drop-in names it (`dhcp-leasefile=`), so the controller reads the file
dnsmasq writes wherever the layout puts it (the lab's is under its run directory)."""

MAX_LINES = 200_000
"""More lines than any kitting network has leases: the rest is not read."""


def parse(text: str, *, now: datetime) -> dict[str, str]:
    """IPv4 address -> MAC (normalized) of every lease not expired at `now`. A later line
    for the same address wins (dnsmasq writes each address once)."""
    found: dict[str, str] = {}
    epoch = now.timestamp()
    for number, line in enumerate(text.splitlines()):
        if number >= MAX_LINES:
            break
        words = line.split()
        if len(words) < 3 or words[0] == "duid":
            continue
        expiry, mac, address = words[:3]
        if not expiry.isdigit() or (int(expiry) != 0 and int(expiry) < epoch):
            continue
        try:
            ip = str(IPv4Address(address))
            found[ip] = fields.mac(mac)
        except (AddressValueError, ValueError):
            continue
    return found
