"""A Clonezilla job as an armed menu runs it, and the report its client sends at the end.

The menu's `ocs_live_run` is the ocs-sr command Clonezilla live runs:

    ocs-sr ... --mcast-port PORT multicast_restoredisk IMAGE DISK     (multicast)
    ocs-sr ... restoredisk IMAGE DISK                                  (unicast over NFS)

When the job ends, the client sends one line to the server's port 6461 (DRBL's
`task_notify_job_is_done`, with the message `multicast_restore_by_partclone` and its
unicast twin build):

    IP MAC Multicast restored IMAGE, /dev/sda1, success, 600.1 KB = 1172 Blocks, .075 mins; ...

Purely computational.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from reconciler import fields

Mode = Literal["multicast", "unicast"]

DEFAULT_MCAST_PORT = 2232
"""ocs-sr's port when the job names none (MULTICAST_PORT in drbl-ocs.conf)."""
REPORT_PORT = 6461
"""Where ocsmgrd listens for job reports (OCSMGRD_PORT)."""
SUCCESS = "success"
FAIL = "***FAIL***"

_MODES: Mapping[str, Mode] = {"multicast_restoredisk": "multicast", "restoredisk": "unicast"}
_OTHER_MODES = frozenset(
    {"savedisk", "saveparts", "restoreparts", "multicast_restoreparts", "bt_restoredisk"}
)


class JobError(ValueError):
    """The menu's job is not one restore of one disk the lab can play."""


@dataclass(frozen=True)
class Job:
    """One Clonezilla restore job, as the armed menu runs it."""

    mode: Mode
    image: str
    disk: str
    mcast_port: int = DEFAULT_MCAST_PORT
    """The first partition's udpcast port; the next partitions use +2 each."""
    options: tuple[str, ...] = ()
    """The ocs-sr options before the mode, as the menu gives them."""

    def describe(self) -> str:
        where = f", port {self.mcast_port}" if self.mode == "multicast" else ""
        return f"{self.mode} restore of {self.image} to {self.disk}{where}"


def parse_job(ocs_live_run: str) -> Job:
    """The job of an `ocs_live_run` value: `ocs-sr [OPTIONS] MODE IMAGE DISK`.

    ocs-sr takes its options first, then the mode, the image and the disk(s); only
    `multicast_restoredisk` and `restoredisk` of one disk are jobs the lab plays. The
    last `--mcast-port` wins, as in ocs-sr's option loop; without one, multicast uses
    DRBL's default port. Image and disk names are checked like the site's (they reach
    paths and command lines). Purely computational.
    """
    try:
        words = shlex.split(ocs_live_run)
    except ValueError as error:
        raise JobError(f"the job is not a readable command line: {error}") from None
    if not words or posixpath.basename(words[0]) != "ocs-sr":
        raise JobError(f"the job does not run ocs-sr: {ocs_live_run[:80]!r}")
    if len(words) < 4:
        raise JobError("an ocs-sr job ends with MODE IMAGE DISK")
    mode_word, image, disk = words[-3:]
    if mode_word not in _MODES:
        named = next((w for w in words[1:] if w in _MODES or w in _OTHER_MODES), None)
        if named in _OTHER_MODES:
            raise JobError(f"{named}: the lab plays restoredisk and multicast_restoredisk only")
        if named is not None:
            raise JobError(f"{named}: the lab restores one disk, the job names more")
        raise JobError(f"no restore mode in the job: {ocs_live_run[:80]!r}")
    options = tuple(words[1:-3])
    port = DEFAULT_MCAST_PORT
    for index, word in enumerate(options):
        if word == "--mcast-port":
            if index + 1 >= len(options):
                raise JobError("--mcast-port without a port")
            port = _port(options[index + 1])
    try:
        fields.image_name(image)
        fields.disk_device(disk)
    except ValueError as error:
        raise JobError(str(error)) from None
    return Job(_MODES[mode_word], image, disk, port, options)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65534:
        raise JobError(f"--mcast-port {text!r}: a udpcast port is 1-65534 (it uses the next too)")
    return int(text)


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class PartitionRestore:
    """One partition's restore: what ocs-sr puts in its report, and what went wrong."""

    device: str
    ok: bool
    space_used: str
    nanoseconds: int
    stream_bytes: int
    problem: str = ""


def space_in_use(partclone_log: str) -> str:
    """The 'Space in use' of partclone's log as ocs-sr reports it: the text after the
    colon, a '(...)' part removed, leading blanks removed ('600.1 KB = 1172 Blocks' with
    partclone 0.3). Purely computational."""
    for line in partclone_log.splitlines():
        if line.startswith("Space in use"):
            value = line.split(":")[1] if ":" in line else ""
            value = re.sub(r"\s*\(\d*.*\)\s*", "", value)
            return value.lstrip()
    return ""


def minutes_text(nanoseconds: int) -> str:
    """Elapsed time as ocs-sr writes it: seconds cut to 2 decimals, then minutes cut to 3,
    printed by bc ('.117', '1.500', and '0' for nothing). Purely computational."""
    if nanoseconds < 0:
        raise ValueError("elapsed time cannot be negative")
    thousandths = (nanoseconds // 10_000_000) // 6  # centiseconds / 6000 * 1000
    if thousandths == 0:
        return "0"
    whole, fraction = divmod(thousandths, 1000)
    return f"{whole or ''}.{fraction:03d}"


def report_line(
    ip: IPv4Address, mac: str, mode: Mode, image: str, partitions: Sequence[PartitionRestore]
) -> str:
    """The line a Clonezilla client sends to port 6461 when its restore ends:
    `IP MAC Multicast restored IMAGE, DEV, success, SPACE, MIN mins; ...` (no EFI fields:
    the lab updates no EFI boot entries). Purely computational."""
    opening = "Multicast restored" if mode == "multicast" else "Unicast restored"
    message = f"{opening} {fields.image_name(image)},"
    for part in partitions:
        status = SUCCESS if part.ok else FAIL
        minutes = minutes_text(part.nanoseconds)
        message += f" {part.device}, {status}, {part.space_used}, {minutes} mins;"
    return f"{ip} {fields.mac(mac)} {message}"
