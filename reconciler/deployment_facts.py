"""What the deployments observe: image inventory, prerequisites, and what happened since
the last step (boot file fetches, receivers, job reports, session outcomes).

The shell gathers these (dnsmasq's TFTP log, udp-sender's output, the report listener, the
session runner, the image inventory) and hands them to `deployments.step`. Plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from reconciler.deployment_session import PartitionStream

__all__ = [
    "Backend",
    "DeploymentFacts",
    "ImageFacts",
    "MenuFetched",
    "Observation",
    "PartitionStream",
    "ReceiverJoined",
    "ReportOrigin",
    "ReportReceived",
    "Requirement",
    "SessionExited",
    "SessionFailed",
    "SessionStarted",
]


class Requirement(StrEnum):
    """Server prerequisites the shell checks; a batch needing a missing one is blocked."""

    clonezilla_live = "clonezilla-live"
    nfs_export = "nfs-export"
    report_listener = "report-listener"
    udp_sender = "udp-sender"
    drbl_ocs = "drbl-ocs"


class Backend(StrEnum):
    native = "native"
    """The reconciler runs udp-sender itself (Clonezilla SE's protocol)."""
    drbl = "drbl"
    """A full DRBL server runs the session (`drbl-ocs`)."""


@dataclass(frozen=True)
class ImageFacts:
    """What the image inventory found for one image."""

    partitions: tuple[PartitionStream, ...] = ()
    """In the order of the image's `parts` file."""
    problem: str = ""
    """Why it cannot be restored ('' when complete and verified)."""
    reason: str = ""
    """CamelCase, e.g. ImageIncomplete, IntegrityMismatch."""


@dataclass(frozen=True)
class MenuFetched:
    """dnsmasq's TFTP log: a per-PC boot file was sent (its absolute path)."""

    path: str
    at: datetime
    client: str = ""


@dataclass(frozen=True)
class ReceiverJoined:
    """udp-sender: a receiver connected to the session of request `key`."""

    key: str
    ip: str
    at: datetime
    mac: str = ""
    """From the DHCP leases when the shell knows it; the IP alone works for fixed IPs."""


class ReportOrigin(StrEnum):
    client = "client"
    """The line a Clonezilla client sent to the reconciler's listener on port 6461."""
    ocsmgrd = "ocsmgrd"
    """A line of DRBL's ocsmgrd job log (`client IP (MAC) finished restoring. Stats: ...`),
    with the DRBL backend, where ocsmgrd owns port 6461."""


@dataclass(frozen=True)
class ReportReceived:
    """A job report: the line as received on port 6461, or as ocsmgrd logged it."""

    line: str
    at: datetime
    peer: str = ""
    origin: ReportOrigin = ReportOrigin.client


@dataclass(frozen=True)
class SessionStarted:
    key: str
    pid: int
    at: datetime


@dataclass(frozen=True)
class SessionFailed:
    key: str
    message: str
    at: datetime


@dataclass(frozen=True)
class SessionExited:
    key: str
    at: datetime
    returncode: int | None = None
    """udp-sender exits 0 even when nobody joined before --start-timeout: it proves nothing."""
    pid: int | None = None
    """Which process ended, when the runner knows; an exit of another PID is not news."""


Observation = (
    MenuFetched | ReceiverJoined | ReportReceived | SessionStarted | SessionFailed | SessionExited
)


@dataclass(frozen=True)
class DeploymentFacts:
    images: Mapping[str, ImageFacts] = field(default_factory=dict)
    missing: Mapping[Requirement, str] = field(default_factory=dict)
    """Prerequisites that are not there, each with why."""
    observations: tuple[Observation, ...] = ()
    alive_pids: frozenset[int] = frozenset()
    first_pass: bool = False
    """The controller just started: sessions found alive are adopted (and said so)."""
    drbl_port: int | None = None
    """DRBL backend: drbl-ocs.conf MULTICAST_PORT, the port drbl-ocs's udp-sender uses; a
    multicast batch whose PCs are told another port is blocked."""
