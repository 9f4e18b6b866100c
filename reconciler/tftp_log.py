"""Which boot files dnsmasq sent: its TFTP lines, as written to its log file.

dnsmasq 2.90 with `log-facility=FILE` writes (captured from a real transfer in a network
namespace; the time is the server's local time, without a year):

    Dec  3 14:43:06 dnsmasq-tftp[3317]: sent /srv/tftp/pxelinux.cfg/01-02-00-00-00-01-01 to 192.168.100.23
    Dec  3 14:43:06 dnsmasq-tftp[3317]: file /srv/tftp/pxelinux.cfg/missing not found for 192.168.100.23

Only `sent` means the client got the whole file; that is what one-shot arming counts as a
PC booting its restore entry. Every other line (DHCP, errors, aborted transfers) is no fetch.

Purely computational: the caller says what "now" is and how a local wall-clock time becomes
an instant (the server's time zone, which dnsmasq used to write the line).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import AddressValueError, IPv4Address

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_SENT = re.compile(
    r"^(?P<month>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) "
    r"dnsmasq-tftp\[\d+\]: sent (?P<path>/\S+) to (?P<client>\S+)$"
)
LATEST_IN_SECOND = timedelta(seconds=1) - timedelta(microseconds=1)
FUTURE_SLACK = timedelta(days=1)
"""A stamp more than this ahead of now was written last year (the log has no year)."""

Localize = Callable[[datetime], datetime]
"""Turns a naive local wall-clock time into an aware instant."""


@dataclass(frozen=True)
class Sent:
    path: str
    """Absolute, as dnsmasq opened it (tftp-root joined with the requested name)."""
    client: str
    at: datetime


def parse(line: str, *, now: datetime, localize: Localize) -> Sent | None:
    """A `sent` line, or None. `at` is the last instant of the logged second, never after
    `now`: the log counts whole seconds, and a fetch in the very second its entry was armed
    must not look older than the arming (it would be dismissed as a replayed line)."""
    found = _SENT.match(line.rstrip("\r\n"))
    if found is None:
        return None
    try:
        client = str(IPv4Address(found["client"]))
    except AddressValueError:
        return None
    stamp = _stamp(found, now, localize)
    if stamp is None:
        return None
    return Sent(found["path"], client, min(stamp + LATEST_IN_SECOND, now))


def _stamp(found: re.Match[str], now: datetime, localize: Localize) -> datetime | None:
    month = _MONTHS.get(found["month"])
    if month is None:
        return None
    for year in (now.year, now.year - 1):
        try:
            naive = datetime(
                year, month, int(found["day"]), int(found["h"]), int(found["m"]), int(found["s"])
            )
        except ValueError:  # 29 Feb of a year without one, or an impossible time
            continue
        moment = localize(naive)
        if moment <= now + FUTURE_SLACK:
            return moment
    return None
