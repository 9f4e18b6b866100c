"""Multicast against unicast in the lab: the figures of `bench/lab_transfer.py`, and how
they are read. Purely computational: the bench script runs the programs and hands the
numbers here.

- What the server sent is the difference of its interfaces' `tx_bytes` counters
  (/sys/class/net/IFACE/statistics, read inside the server's namespace) before and after a
  trial: everything on the wire, headers, handshakes and retransmissions included. The
  loopback interface never carries traffic to a PC and is left out.
- A trial is one mode (multicast or unicast) for N PCs; the bench repeats each and keeps
  the median of each figure (`summarize`).
- The issue's targets (`judge`): multicast sends about one image's worth of bytes whatever
  the number of PCs (at most BYTES_TOLERANCE times the image's streams), and its time for
  the most PCs stays within TIME_RATIO times its time for one PC.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["multicast", "unicast"]
MODES: tuple[Mode, ...] = ("multicast", "unicast")

BYTES_TOLERANCE = 1.25
"""'About one image's worth': what udpcast adds (UDP/IP/Ethernet headers, about 3 % at a
1500-byte MTU, its handshakes and the odd retransmission) stays well under a quarter."""
TIME_RATIO = 1.5
"""The issue's bound on multicast's time for the most PCs against one PC."""
LOOPBACK = "lo"
MB = 1_000_000
_SENDER_START = re.compile(r"^Udp-sender ", re.MULTILINE)
_REXMITS = re.compile(r"re-xmits=(\d+)")


class MeasureError(ValueError):
    """Counters or trials that cannot give a figure (a counter that went back, a gap)."""


@dataclass(frozen=True)
class Counter:
    """One interface's transmit counters."""

    tx_bytes: int
    tx_packets: int


def parse_counters(text: str) -> dict[str, Counter]:
    """Lines 'IFACE TX_BYTES TX_PACKETS' (as the bench's shell loop prints them from
    /sys/class/net) -> interface -> counters. Blank lines are skipped; anything else that
    is not three words, the last two decimal, is an error. Purely computational."""
    found: dict[str, Counter] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or not (words[1].isdecimal() and words[2].isdecimal()):
            raise MeasureError(f"line {number}: not 'IFACE TX_BYTES TX_PACKETS': {line!r}")
        if words[0] in found:
            raise MeasureError(f"line {number}: interface {words[0]} twice")
        found[words[0]] = Counter(int(words[1]), int(words[2]))
    return found


def sent(before: Mapping[str, Counter], after: Mapping[str, Counter]) -> Counter:
    """What the server sent between two readings, summed over its interfaces but the
    loopback. Both readings must name the same interfaces, and no counter may go back
    (they are 64-bit: a wrap means a reset, not traffic). Purely computational."""
    if set(before) != set(after):
        raise MeasureError(
            f"the interfaces changed between readings: {sorted(before)} then {sorted(after)}"
        )
    total_bytes = total_packets = 0
    for name in sorted(before):
        if name == LOOPBACK:
            continue
        old, new = before[name], after[name]
        if new.tx_bytes < old.tx_bytes or new.tx_packets < old.tx_packets:
            raise MeasureError(f"{name}: a transmit counter went back (reset?)")
        total_bytes += new.tx_bytes - old.tx_bytes
        total_packets += new.tx_packets - old.tx_packets
    return Counter(total_bytes, total_packets)


def retransmissions(sender_log: str) -> list[int]:
    """Per udp-sender run in a session's sender.log (each run begins with its banner
    'Udp-sender VERSION'), the blocks it sent again: the last `re-xmits=N` of its progress
    lines (udp-sender prints them cumulated, about twice a second, and once at the end).
    A run that printed none counts 0. Purely computational."""
    starts = [m.start() for m in _SENDER_START.finditer(sender_log)]
    found: list[int] = []
    for begin, end in zip(starts, [*starts[1:], len(sender_log)][: len(starts)], strict=True):
        counts = _REXMITS.findall(sender_log[begin:end])
        found.append(int(counts[-1]) if counts else 0)
    return found


@dataclass(frozen=True)
class Trial:
    """One trial: `pcs` PCs restored in `mode`, all verified."""

    mode: Mode
    pcs: int
    seconds: float
    """From starting the transfer until the last PC finished restoring."""
    wire_bytes: int
    """The server's tx_bytes (all its interfaces but lo)."""
    packets: int
    payload_bytes: int
    """The image's streams as fed to the sender (multicast) or read by the PCs (unicast)."""
    retransmitted: int = 0
    """Multicast: blocks udp-sender sent again, over all its runs."""


@dataclass(frozen=True)
class Row:
    """The median of a mode's trials for one number of PCs."""

    mode: Mode
    pcs: int
    trials: int
    seconds: float
    wire_bytes: int
    packets: int
    payload_bytes: int
    seconds_range: tuple[float, float]
    retransmitted: int = 0


def summarize(trials: Iterable[Trial]) -> list[Row]:
    """One row per (mode, PCs), the median of each figure over its trials (the low median
    for the integer ones, so a row's bytes are bytes that one trial really sent), sorted
    by mode as in MODES, then by PCs. Purely computational."""
    groups: dict[tuple[Mode, int], list[Trial]] = {}
    for trial in trials:
        groups.setdefault((trial.mode, trial.pcs), []).append(trial)
    rows = []
    for (mode, pcs), group in groups.items():
        times = [t.seconds for t in group]
        rows.append(
            Row(
                mode=mode,
                pcs=pcs,
                trials=len(group),
                seconds=statistics.median(times),
                wire_bytes=statistics.median_low(t.wire_bytes for t in group),
                packets=statistics.median_low(t.packets for t in group),
                payload_bytes=statistics.median_low(t.payload_bytes for t in group),
                seconds_range=(min(times), max(times)),
                retransmitted=statistics.median_low(t.retransmitted for t in group),
            )
        )
    return sorted(rows, key=lambda row: (MODES.index(row.mode), row.pcs))


@dataclass(frozen=True)
class Verdict:
    name: str
    held: bool
    detail: str


def judge(
    rows: Sequence[Row],
    image_bytes: int,
    *,
    bytes_tolerance: float = BYTES_TOLERANCE,
    time_ratio: float = TIME_RATIO,
) -> list[Verdict]:
    """The issue's two targets for multicast, read from the rows. Purely computational."""
    if image_bytes <= 0:
        raise MeasureError(f"the image's streams must have a size, got {image_bytes}")
    multicast = sorted((r for r in rows if r.mode == "multicast"), key=lambda r: r.pcs)
    if not multicast:
        raise MeasureError("no multicast rows to judge")
    worst = max(multicast, key=lambda r: r.wire_bytes)
    limit = bytes_tolerance * image_bytes
    bytes_detail = (
        f"at most {worst.wire_bytes / image_bytes:.2f}x the image's {image_bytes} bytes "
        f"({worst.pcs} PCs), bound {bytes_tolerance:g}x"
    )
    verdicts = [Verdict("multicast-bytes", worst.wire_bytes <= limit, bytes_detail)]
    first, last = multicast[0], multicast[-1]
    if first.pcs == last.pcs:
        verdicts.append(Verdict("multicast-time", False, "needs two numbers of PCs"))
        return verdicts
    if first.seconds <= 0:
        raise MeasureError(f"{first.pcs} PC(s) took {first.seconds} s")
    ratio = last.seconds / first.seconds
    detail = (
        f"{last.pcs} PCs {last.seconds:.2f} s / {first.pcs} PC(s) {first.seconds:.2f} s "
        f"= {ratio:.2f}, bound {time_ratio:g}"
    )
    verdicts.append(Verdict("multicast-time", ratio <= time_ratio, detail))
    return verdicts


def markdown(rows: Sequence[Row], image_bytes: int) -> str:
    """The table: per number of PCs, each mode's median time, MB the server sent (10^6
    bytes) and that as a multiple of the image's streams; for multicast also the blocks
    udp-sender sent again. Purely computational."""
    by = {(r.mode, r.pcs): r for r in rows}
    head = (
        "| PCs | multicast time | multicast sent | x image | re-sent blocks "
        "| unicast time | unicast sent | x image |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for count in sorted({r.pcs for r in rows}):
        cells = [str(count)]
        for mode in MODES:
            row = by.get((mode, count))
            width = 4 if mode == "multicast" else 3
            if row is None:
                cells += ["-"] * width
                continue
            cells += [
                f"{row.seconds:.2f} s",
                f"{row.wire_bytes / MB:.2f} MB",
                f"{row.wire_bytes / image_bytes:.2f}",
            ]
            if mode == "multicast":
                cells.append(str(row.retransmitted))
        lines.append("| " + " | ".join(cells) + " |\n")
    return head + "".join(lines)
