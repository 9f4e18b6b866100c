"""The job report a Clonezilla client sends when its job ends: one line over TCP, port 6461.

What the client sends (`task_notify_job_is_done` in DRBL's ocs-functions, through
`ocs-socket -m "$send_info"`):

    IP MAC [EFI_OS_LABEL] [EFI_PART_NO] [EFI_BOOT_FILE] REPORT

The three EFI fields are present only when the restore updated EFI boot entries, so their
number varies (0 to 3; the boot file field may even hold several space-separated paths).
DRBL's ocsmgrd always takes words 3-5 as EFI fields, which eats the first words of a BIOS
client's report; this parser instead finds where the report begins. REPORT is built by
ocs-sr, one opening then one part per partition:

    Multicast restored IMAGE, /dev/sda1, success, 955 MB, .250 mins, 3820.0 MB/min; ...
    Unicast restored IMAGE, /dev/sda1, ***FAIL***, .100 mins; ...
    Saved IMAGE, /dev/sda1, success, 955 MB, .250 mins, 3820.0 MB/min; ...

A capture's opening names the image repository rather than the image: ocs-sr's
`image_save` opens the report with `Saved $(dirname IMAGE_DIR),`, so a real capture of
master-2026 into /home/partimag reports `Saved /home/partimag, /dev/sda1, success, ...`
(captured from Clonezilla's own ocs-sr savedisk in tests/lab/test_capture.py; only an LVM
save names the image). Such a report says which PC saved what partitions, not which image:
it is taken to be the capture that PC was armed for (`JobReport.names`).

The status is `success` when partclone (or ntfsclone, partimage, dd) exited 0, else
`***FAIL***`. Only a report whose every partition says `success` counts as success: a
udp-receiver's own words prove nothing (it can claim completion having written nothing).

The line comes from the network: it is length-limited, control characters refuse it, and
only parsed fields (never the raw text) reach messages. Purely computational.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import AddressValueError, IPv4Address

from reconciler import fields

MAX_LINE = 8192
"""Bytes. A report of 64 partitions is about 4 KB; ocsmgrd itself sets no limit."""

MAX_EFI_WORDS = 8
_REPOSITORY = re.compile(r"/[A-Za-z0-9._+@/-]{0,254}")
"""An image repository as ocs-sr names it in a capture report (e.g. /home/partimag)."""

SUCCESS = "success"
FAIL = "***FAIL***"

_OPENINGS: tuple[tuple[str, ...], ...] = (
    ("Multicast", "restored"),
    ("Unicast", "restored"),
    ("Saved",),
)


class ReportKind(StrEnum):
    multicast_restore = "Multicast restored"
    unicast_restore = "Unicast restored"
    capture = "Saved"

    @property
    def restores(self) -> bool:
        return self is not ReportKind.capture


class ReportOutcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    unreadable = "unreadable"
    """The report names no partition result: success is not proven."""


class ReportError(ValueError):
    """The line is not a Clonezilla job report."""


@dataclass(frozen=True)
class PartitionResult:
    device: str
    status: str
    details: tuple[str, ...] = ()
    """Size, minutes and speed as ocs-sr wrote them (e.g. '955 MB', '.250 mins')."""

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


@dataclass(frozen=True)
class JobReport:
    ip: IPv4Address
    mac: str
    """Normalized (lower case, colons)."""
    efi: tuple[str, ...]
    kind: ReportKind | None
    """None when the report text has none of ocs-sr's openings."""
    image: str
    partitions: tuple[PartitionResult, ...]
    opening_lost: bool = False
    """From ocsmgrd's job log, which dropped the report's first words (see parse_joblog):
    the partitions are there, which job and image they belong to is not."""
    repository: str = ""
    """A capture report that names the image repository (an absolute path) instead of
    the image; `image` is then empty."""

    def names(self, image: str) -> bool:
        """Is this a report of a job on `image`? A capture naming only the repository it
        saved into counts as one for whatever image the PC was armed to capture."""
        if self.kind is ReportKind.capture and self.repository and not self.image:
            return True
        return self.image == image

    @property
    def outcome(self) -> ReportOutcome:
        if (self.kind is None and not self.opening_lost) or not self.partitions:
            return ReportOutcome.unreadable
        if all(part.ok for part in self.partitions):
            return ReportOutcome.succeeded
        return ReportOutcome.failed

    def summary(self) -> str:
        """One line for people: what ran and each partition's status."""
        parts = ", ".join(f"{p.device} {p.status}" for p in self.partitions) or "no partition"
        if self.opening_lost:
            return f"restored (job and image not logged by ocsmgrd): {parts}"
        if self.kind is None:
            return "report without a Clonezilla result"
        if self.repository:
            return f"{self.kind.value} into {self.repository}: {parts}"
        return f"{self.kind.value} {self.image}: {parts}"


def parse(line: str | bytes) -> JobReport:
    """Read one report line (with or without its newline). ReportError when it is not one."""
    text = _text(line)
    words = text.split()  # as Perl's split(" "): runs of blanks, leading blanks ignored
    if len(words) < 2:
        raise ReportError("a job report starts with the PC's IP address and MAC address")
    try:
        ip = IPv4Address(words[0])
    except AddressValueError:
        raise ReportError(f"{_shown(words[0])} is not an IPv4 address") from None
    try:
        mac = fields.mac(words[1])
    except ValueError:
        raise ReportError(f"{_shown(words[1])} is not a NIC's MAC address") from None
    start, opening = _opening(words)
    if opening is None:
        return JobReport(ip, mac, (), None, "", ())
    efi = tuple(words[2:start])
    kind = ReportKind(" ".join(opening))
    rest = words[start + len(opening) :]
    if not rest or not rest[0].endswith(","):
        return JobReport(ip, mac, efi, kind, "", ())
    image = rest[0][:-1]
    if kind is ReportKind.capture and image.startswith("/"):
        if _REPOSITORY.fullmatch(image) is None:
            raise ReportError(f"{_shown(image)} is not an image repository path")
        partitions = _partitions(" ".join(rest[1:]))
        return JobReport(ip, mac, efi, kind, "", partitions, repository=image)
    try:
        fields.image_name(image)
    except ValueError:
        raise ReportError(f"{_shown(image)} is not an image name") from None
    return JobReport(ip, mac, efi, kind, image, _partitions(" ".join(rest[1:])))


def parse_joblog(line: str) -> JobReport:
    """A line of DRBL's ocsmgrd job log (`/var/log/clonezilla/clonezilla-jobs.log`), after
    its time stamp:

        client IP (MAC) finished restoring. Stats: MESSAGE

    ocsmgrd takes the three words after IP and MAC as EFI fields whether they are or not,
    and logs only the rest as MESSAGE. A UEFI client sends three EFI words, so MESSAGE is
    its whole report. A BIOS client sends none, so its opening (`Multicast restored IMAGE,`
    or `Unicast restored IMAGE,`: three words) is lost and MESSAGE starts with the first
    partition (`/dev/sda1, success, ...`): such a report keeps its partition results and is
    marked `opening_lost`. Anything else is unreadable (no partitions). ReportError when
    the line is not a job line at all."""
    text = _text(line)
    words = text.split()
    if (
        len(words) < 6
        or words[0] != "client"
        or not (words[2].startswith("(") and words[2].endswith(")"))
        or words[3:6] != ["finished", "restoring.", "Stats:"]
    ):
        raise ReportError("not an ocsmgrd job line: client IP (MAC) finished restoring. ...")
    report = parse(" ".join([words[1], words[2][1:-1], *words[6:]]))
    if report.kind is not None:
        return report
    message = words[6:]
    if message and message[0].startswith("/dev/") and message[0].endswith(","):
        partitions = _partitions(" ".join(message))
        if partitions:
            return JobReport(report.ip, report.mac, (), None, "", partitions, opening_lost=True)
    return report


def _text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        if len(line) > MAX_LINE:
            raise ReportError(f"a job report is one line of at most {MAX_LINE} bytes")
        try:
            line = line.decode()
        except UnicodeDecodeError:
            raise ReportError("a job report is UTF-8 text") from None
    if len(line.encode()) > MAX_LINE:
        raise ReportError(f"a job report is one line of at most {MAX_LINE} bytes")
    text = line.removesuffix("\n").removesuffix("\r")
    for char in text:
        if char != "\t" and unicodedata.category(char)[0] in "CZ" and char != " ":
            raise ReportError(
                f"a job report is one line of text; it holds the character U+{ord(char):04X}"
            )
    return text


def _opening(words: list[str]) -> tuple[int, tuple[str, ...] | None]:
    """Where ocs-sr's report begins after IP, MAC and the EFI words, and its opening."""
    for start in range(2, min(len(words), 2 + MAX_EFI_WORDS + 1)):
        for opening in _OPENINGS:
            if tuple(words[start : start + len(opening)]) == opening:
                return start, opening
    return len(words), None


def _partitions(text: str) -> tuple[PartitionResult, ...]:
    results = []
    for part in text.split(";"):
        items = [item.strip() for item in part.split(",")]
        if len(items) < 2 or not items[0] or not items[1]:
            continue  # the empty tail after the last ';'
        results.append(PartitionResult(items[0], items[1], tuple(i for i in items[2:] if i)))
    return tuple(results)


def _shown(word: str) -> str:
    return repr(word[:40] + ("..." if len(word) > 40 else ""))
