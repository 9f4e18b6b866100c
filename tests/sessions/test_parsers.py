"""The parsers of what real programs print: udp-sender's output and dnsmasq's TFTP log.

The inputs in captured/ were recorded from the real programs in network namespaces:
udpcast 20120424 sending 3,000,000 bytes to two udp-receivers (192.168.100.23 and .24), and
with --start-timeout 2 and nobody joining; dnsmasq 2.90 with log-facility=FILE serving two
per-PC files to 192.168.100.23 over TFTP, refusing a missing file and a '..' path, then
answering udhcpc.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler import tftp_log, udpcast_log
from reconciler.udpcast_log import SenderEvent, SenderLine

CAPTURED = Path(__file__).parent / "captured"
TOKYO = timezone(timedelta(hours=9))


def tokyo_local(naive: datetime) -> datetime:
    return naive.replace(tzinfo=TOKYO)


# ---------------------------------------------------------------------- udp-sender


def test_two_receivers_as_udp_sender_printed_them() -> None:
    lines, rest = udpcast_log.split(
        (CAPTURED / "udp-sender-20120424-two-receivers.err").read_bytes()
    )
    assert rest == b""
    parsed = [found for line in lines if (found := udpcast_log.parse(line)) is not None]
    assert parsed == [
        SenderLine(SenderEvent.connected, "192.168.100.24", 0),
        SenderLine(SenderEvent.connected, "192.168.100.23", 1),
        SenderLine(SenderEvent.started),
        SenderLine(SenderEvent.progress, bytes=3_000_000),
        SenderLine(SenderEvent.complete),
        SenderLine(SenderEvent.disconnected, "192.168.100.24", 0),
        SenderLine(SenderEvent.disconnected, "192.168.100.23", 1),
    ]


def test_a_start_timeout_says_nothing_about_receivers() -> None:
    lines, _ = udpcast_log.split((CAPTURED / "udp-sender-20120424-start-timeout.err").read_bytes())
    assert lines == [
        "Udp-sender 20120424",
        "Using full duplex mode",
        "UDP sender for (stdin) at 192.168.100.1 on e0 ",
        "Broadcasting control to 224.0.0.1",
    ]
    assert [udpcast_log.parse(line) for line in lines] == [None, None, None, None]


def test_progress_redraws_split_on_carriage_returns_and_keep_the_rest() -> None:
    lines, rest = udpcast_log.split(b"bytes=     163 072  (849.88 Mbps)\rbytes=  1 000 000  (9")
    assert lines == ["bytes=     163 072  (849.88 Mbps)"]
    assert rest == b"bytes=  1 000 000  (9"
    assert udpcast_log.parse(lines[0]) == SenderLine(SenderEvent.progress, bytes=163_072)


@pytest.mark.parametrize(
    "line",
    [
        "New connection from 999.1.1.1  (#0) 00000009",  # not an address
        "New connection from  (#0)",
        "Disconnecting #x (192.168.100.1)",
        "connection from 192.168.100.23",
    ],
)
def test_malformed_lines_are_not_receivers(line: str) -> None:
    assert udpcast_log.parse(line) is None


def test_a_dropped_receiver_and_an_overlong_line() -> None:
    assert udpcast_log.parse("Dropping client #3 because of timeout") == SenderLine(
        SenderEvent.dropped, number=3
    )
    lines, rest = udpcast_log.split(b"x" * 5000)
    assert [len(line) for line in lines] == [udpcast_log.MAX_LINE]
    assert rest == b""


# ---------------------------------------------------------------------- dnsmasq TFTP


def test_only_sent_lines_of_the_tftp_log_are_fetches() -> None:
    now = datetime(2026, 12, 3, 14, 50, tzinfo=TOKYO)
    text = (CAPTURED / "dnsmasq-2.90-tftp.log").read_text()
    found = [
        sent
        for line in text.splitlines()
        if (sent := tftp_log.parse(line, now=now, localize=tokyo_local)) is not None
    ]
    end_of_second = timedelta(seconds=1) - timedelta(microseconds=1)
    at = datetime(2026, 12, 3, 14, 43, 6, tzinfo=TOKYO) + end_of_second
    assert found == [
        tftp_log.Sent("/tmp/exp/tftp/pxelinux.cfg/01-02-00-00-00-01-01", "192.168.100.23", at),
        tftp_log.Sent("/tmp/exp/tftp/grub/grub.cfg-01-02-00-00-00-01-01", "192.168.100.23", at),
    ]


def test_a_fetch_is_never_later_than_now() -> None:
    line = "Dec  3 14:43:06 dnsmasq-tftp[1]: sent /srv/tftp/pxelinux.cfg/01-aa to 192.168.100.9"
    now = datetime(2026, 12, 3, 14, 43, 6, 250_000, tzinfo=TOKYO)
    sent = tftp_log.parse(line, now=now, localize=tokyo_local)
    assert sent is not None and sent.at == now


def test_a_december_line_read_in_january_is_last_year() -> None:
    line = "Dec 31 23:59:59 dnsmasq-tftp[1]: sent /srv/tftp/grub/grub.cfg-01-aa to 192.168.100.9"
    now = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC)
    sent = tftp_log.parse(line, now=now, localize=lambda n: n.replace(tzinfo=UTC))
    assert sent is not None
    assert sent.at == datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    "line",
    [
        "Dec  3 14:43:06 dnsmasq-dhcp[1]: sent /srv/tftp/x to 192.168.100.9",  # not TFTP
        "Dec  3 14:43:06 dnsmasq-tftp[1]: sent relative/path to 192.168.100.9",
        "Dec  3 14:43:06 dnsmasq-tftp[1]: sent /srv/tftp/x to somebody",
        "Feb 30 14:43:06 dnsmasq-tftp[1]: sent /srv/tftp/x to 192.168.100.9",
        "Dex  3 14:43:06 dnsmasq-tftp[1]: sent /srv/tftp/x to 192.168.100.9",
        "Dec  3 14:43:06 dnsmasq-tftp[1]: failed sending /srv/tftp/x to 192.168.100.9",
    ],
)
def test_lines_that_are_not_a_whole_file_sent(line: str) -> None:
    now = datetime(2026, 12, 3, 15, 0, tzinfo=TOKYO)
    assert tftp_log.parse(line, now=now, localize=tokyo_local) is None
