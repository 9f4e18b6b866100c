"""Session specs: the exact command lines that serve one batch's images.

Native backend: Clonezilla SE's own multicast protocol, as `udp_send_part_img` in DRBL's
ocs-functions runs it. One udp-sender per partition, in the order of the image's `parts`
file, each fed the partition's chunk files unmodified (still compressed); the port base
grows by 2 per partition because udpcast uses the port and the next one, and the client
(`ocs-sr --mcast-port PORT multicast_restoredisk`) counts the same way. The first partition
waits for the PCs; later ones only for DRBL's PART_PREPARE_TIME.

DRBL backend: the same batch as one `drbl-ocs` command line, for servers that run full DRBL.

Every option here was checked against the installed programs: `udp-sender` (udpcast
20120424: its usage text and man page), `/usr/sbin/drbl-ocs` (its option parser) and
`/etc/drbl/drbl-ocs.conf` (MULTICAST_ALL_ADDR, PART_PREPARE_TIME). Purely computational.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from reconciler import fields
from reconciler.checks import PORT_SPAN
from reconciler.desired import AfterImaging, Mode

MULTICAST_ALL_ADDR = IPv4Address("224.0.0.1")
"""drbl-ocs.conf MULTICAST_ALL_ADDR: where sender and receivers find each other. Clonezilla's
udp-receiver on the PC uses the same address, so the sender must too."""

PART_PREPARE_TIME = 30
"""drbl-ocs.conf PART_PREPARE_TIME: how long later partitions wait after their first PC
connects ("it can not be too short; 30 secs is a good number")."""

MAX_PARTITIONS = PORT_SPAN // 2
"""Validation keeps overlapping sessions PORT_SPAN ports apart: 2 per partition."""

DRBL_LANGUAGE = "en_US.UTF-8"
"""drbl-ocs `-l`: without it the language follows the caller's environment."""

_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class PartitionStream:
    """One partition of an image as the inventory found it: the name from `parts` and its
    chunk files (`.aa`, `.ab`, ...) in order, as absolute paths on the server."""

    name: str
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class SenderRun:
    """One udp-sender run: its command line and the files to concatenate into its stdin."""

    partition: str
    portbase: int
    argv: tuple[str, ...]
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class SessionSpec:
    """Everything the session runner needs to serve one batch, and nothing to decide."""

    key: str
    """The request (`batch@content`) this session serves; echoed in the runner's facts."""
    batch: str
    runs: tuple[SenderRun, ...] = ()
    """Native multicast: run these one after another, in order."""
    drbl_argv: tuple[str, ...] = ()
    """DRBL backend: run this once instead."""
    summary: str = ""


def udp_sender_argv(
    *,
    interface: str,
    portbase: int,
    data_group: IPv4Address,
    ttl: int,
    min_receivers: int,
    max_wait: int,
    start_timeout: int | None = None,
    max_bitrate: int | None = None,
    full_duplex: bool = True,
) -> tuple[str, ...]:
    """The udp-sender command line, in the order DRBL's udp_send_part_img builds it: the
    extra options, then the hold options, then interface, keyboard, addresses, port, TTL.

    DRBL writes `--min-clients`, an alias the binary also accepts; this uses the documented
    `--min-receivers`. `--mcast-all-addr` is DRBL's spelling (getopt completes it to
    `--mcast-all-address`). `--start-timeout` also bounds the wait for `max_wait`: udpcast
    aborts unless the transfer *starts* within it.
    """
    fields.interface(interface)
    _port(portbase)
    if not data_group.is_multicast:
        raise ValueError(f"data group {data_group} is not a multicast address")
    if not 1 <= ttl <= 255:
        raise ValueError(f"TTL {ttl} must be within 1-255")
    _positive("min_receivers", min_receivers)
    _positive("max_wait", max_wait)
    words = ["udp-sender"]
    if full_duplex:
        words.append("--full-duplex")  # drbl-ocs -x: switched networks, faster
    if max_bitrate is not None:
        _positive("max_bitrate", max_bitrate)
        words += ["--max-bitrate", str(max_bitrate)]  # bits per second, no unit to misread
    words += ["--min-receivers", str(min_receivers), "--max-wait", str(max_wait)]
    if start_timeout is not None:
        _positive("start_timeout", start_timeout)
        words += ["--start-timeout", str(start_timeout)]
    words += [
        "--interface",
        interface,
        "--nokbd",
        "--mcast-all-addr",
        str(MULTICAST_ALL_ADDR),
        "--mcast-data-address",
        str(data_group),
        "--portbase",
        str(portbase),
        "--ttl",
        str(ttl),
    ]
    return tuple(words)


def multicast_runs(
    partitions: Sequence[PartitionStream],
    *,
    interface: str,
    portbase: int,
    data_group: IPv4Address,
    ttl: int,
    min_receivers: int,
    max_wait: int,
    start_timeout: int | None,
    max_bitrate: int | None,
    prepare_time: int = PART_PREPARE_TIME,
) -> tuple[SenderRun, ...]:
    """One udp-sender run per partition, in `parts` order, port base + 2 per partition.

    The first waits for `min_receivers` PCs (or `max_wait` after the first one, within
    `start_timeout`); later ones keep the same count but wait only `prepare_time` after
    their first PC, as DRBL does, so one slow PC cannot hold the rest for long.
    """
    if not partitions:
        raise ValueError("an image without partitions cannot be served")
    if len(partitions) > MAX_PARTITIONS:
        raise ValueError(
            f"{len(partitions)} partitions need {2 * len(partitions)} ports; sessions are "
            f"kept {PORT_SPAN} ports apart, so at most {MAX_PARTITIONS} partitions"
        )
    _port(portbase + 2 * (len(partitions) - 1))
    runs = []
    for index, partition in enumerate(partitions):
        port = portbase + 2 * index
        first = index == 0
        argv = udp_sender_argv(
            interface=interface,
            portbase=port,
            data_group=data_group,
            ttl=ttl,
            min_receivers=min_receivers,
            max_wait=max_wait if first else prepare_time,
            start_timeout=start_timeout if first else None,
            max_bitrate=max_bitrate,
        )
        runs.append(SenderRun(partition.name, port, argv, partition.chunks))
    return tuple(runs)


def chunk_problem(images_root: str, image: str, partitions: Sequence[PartitionStream]) -> str:
    """Why these streams must not be fed to a sender ('' when they are fine): every chunk
    must be a plain file name directly inside the image's directory."""
    directory = posixpath.join(images_root, image)
    if not partitions:
        return f"image {image} has no partition streams"
    for partition in partitions:
        if _PARTITION.fullmatch(partition.name) is None:
            return f"image {image} lists a partition with an unusable name {partition.name!r}"
        if not partition.chunks:
            return f"partition {partition.name} of image {image} has no stream files"
        for chunk in partition.chunks:
            parent, base = posixpath.split(chunk)
            if (
                parent != directory
                or not base.startswith(partition.name + ".")
                or posixpath.normpath(chunk) != chunk
                or "\0" in chunk
            ):
                return (
                    f"stream file {chunk!r} of partition {partition.name} is not a file of "
                    f"{partition.name} directly in {directory}"
                )
    return ""


def drbl_ocs_argv(
    *,
    mode: Mode,
    image: str,
    disk: str,
    after: AfterImaging,
    interface: str,
    hosts: Sequence[IPv4Address],
    clients_to_wait: int | None = None,
    max_wait: int | None = None,
) -> tuple[str, ...]:
    """`drbl-ocs ... startdisk multicast_restore|restore IMAGE DISK` for the listed PCs.

    Options as Clonezilla SE restores (and as the PXE entries do): -g auto (reinstall GRUB),
    -e1 auto -e2 (NTFS geometry), -r (grow file systems), -j2 (the data between the MBR and
    the first partition), -p (after imaging). Multicast adds -x (udp-sender --full-duplex),
    --mcast-iface, --clients-to-wait and --max-time-to-wait. -h takes the PCs' addresses as
    ONE argument (drbl-ocs checks that it starts with an IP). -b is drbl-ocs's batch mode.
    """
    fields.image_name(image)
    fields.disk_device(disk)
    fields.interface(interface)
    if not hosts:
        raise ValueError("drbl-ocs -h needs at least one PC address")
    words = ["drbl-ocs", "-b", "-l", DRBL_LANGUAGE, "-g", "auto", "-e1", "auto", "-e2", "-r"]
    if mode is Mode.multicast:
        words.append("-x")
    words += ["-j2", "-p", after.value]
    if mode is Mode.multicast:
        if clients_to_wait is None or max_wait is None:
            raise ValueError("a multicast restore needs clients_to_wait and max_wait")
        _positive("clients_to_wait", clients_to_wait)
        _positive("max_wait", max_wait)
        words += ["--mcast-iface", interface]
        words += ["--clients-to-wait", str(clients_to_wait)]
        words += ["--max-time-to-wait", str(max_wait)]
    words += ["-h", " ".join(str(host) for host in hosts)]
    task = "multicast_restore" if mode is Mode.multicast else "restore"
    words += ["startdisk", task, image, disk]
    return tuple(words)


def drbl_ocs_stop_argv() -> tuple[str, ...]:
    """`drbl-ocs stop`, as its usage text says to stop the Clonezilla SE service."""
    return ("drbl-ocs", "stop")


def _port(port: int) -> None:
    if not 1024 <= port <= 65534 or port % 2:
        raise ValueError(
            f"port base {port} must be even and within 1024-65534 (udpcast uses it and the next)"
        )


def _positive(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}")
