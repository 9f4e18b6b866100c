"""A small site for the deployment tests: three lab PCs, one image, batches in Berlin time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from reconciler.deployments import (
    DeploymentFacts,
    DeploymentState,
    ImageFacts,
    Observation,
    PartitionStream,
    Step,
    step,
)
from reconciler.desired import Batch, Department, Desired, Image, Site

BERLIN = ZoneInfo("Europe/Berlin")

PC01_MACS = ("02:00:00:00:01:01", "02:00:00:00:01:02")
PC02_MAC = "02:00:00:00:02:01"
PC03_MAC = "02:00:00:00:03:01"
UNKNOWN_MAC = "02:00:00:00:09:09"

PXE = "/srv/tftp/pxelinux.cfg/"
GRUB = "/srv/tftp/grub/"


def pxe_path(mac: str) -> str:
    return PXE + "01-" + mac.replace(":", "-")


def grub_path(mac: str) -> str:
    return GRUB + "grub.cfg-01-" + mac.replace(":", "-")


ALL_ENTRIES = sorted(
    f(mac) for mac in (*PC01_MACS, PC02_MAC, PC03_MAC) for f in (pxe_path, grub_path)
)


def site(**overrides: Any) -> Site:
    doc: dict[str, Any] = {
        "kind": "Site",
        "name": "berlin-lab",
        "timezone": "Europe/Berlin",
        "server": {"hostname": "kit01", "interface": "enp3s0", "address": "192.168.100.1"},
        "network": {
            "subnet": "192.168.100.0/24",
            "dhcp": {"pool": {"start": "192.168.100.100", "end": "192.168.100.150"}},
        },
    }
    doc.update(overrides)
    return Site.model_validate(doc)


def lab(*, extra: Iterable[dict[str, Any]] = (), without: Iterable[str] = ()) -> Department:
    pcs = [
        {"hostname": "pc01", "macs": list(PC01_MACS), "ip": "192.168.100.11"},
        {"hostname": "pc02", "macs": [PC02_MAC], "ip": "192.168.100.12"},
        {"hostname": "pc03", "macs": [PC03_MAC]},
        *extra,
    ]
    gone = set(without)
    return Department.model_validate(
        {
            "kind": "Department",
            "name": "lab",
            "pcs": [pc for pc in pcs if pc["hostname"] not in gone],
        }
    )


IMAGE = Image.model_validate({"kind": "Image", "name": "win11", "disk": {"device": "nvme0n1"}})


def batch(**overrides: Any) -> Batch:
    doc: dict[str, Any] = {
        "kind": "Batch",
        "name": "spring",
        "image": "win11",
        "targets": {"departments": ["lab"]},
        "window": {"start": "2026-03-02T09:00", "end": "2026-03-02T12:00"},
    }
    doc.update(overrides)
    return Batch.model_validate(doc)


def desired(
    *batches: Batch, department: Department | None = None, s: Site | None = None
) -> Desired:
    dept = department or lab()
    return Desired(
        site=s or site(),
        images={IMAGE.name: IMAGE},
        departments={dept.name: dept},
        batches={b.name: b for b in batches},
    )


WIN11 = ImageFacts(
    partitions=(
        PartitionStream("nvme0n1p1", ("/home/partimag/win11/nvme0n1p1.vfat-ptcl-img.gz.aa",)),
        PartitionStream(
            "nvme0n1p2",
            (
                "/home/partimag/win11/nvme0n1p2.ntfs-ptcl-img.gz.aa",
                "/home/partimag/win11/nvme0n1p2.ntfs-ptcl-img.gz.ab",
            ),
        ),
    )
)


def facts(*observations: Observation, alive: Iterable[int] = (), **kw: Any) -> DeploymentFacts:
    return DeploymentFacts(
        images=kw.pop("images", {"win11": WIN11}),
        observations=tuple(observations),
        alive_pids=frozenset(alive),
        **kw,
    )


def berlin(text: str, *, fold: int = 0) -> datetime:
    """A Berlin wall-clock time, e.g. '2026-03-02 09:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def success_line(mac: str, ip: str = "192.168.100.11", image: str = "win11") -> str:
    """As task_notify_job_is_done sends it for a BIOS client after a multicast restore."""
    return (
        f"{ip} {mac} Multicast restored {image}, /dev/nvme0n1p1, success, 104 MB, .050 mins, "
        "2080.0 MB/min; /dev/nvme0n1p2, success, 20.1 GB, 3.200 mins, 6.2 GB/min;"
    )


def failure_line(mac: str, ip: str = "192.168.100.12") -> str:
    return (
        f"{ip} {mac} Multicast restored win11, /dev/nvme0n1p1, success, 104 MB, .050 mins, "
        "2080.0 MB/min; /dev/nvme0n1p2, ***FAIL***, .900 mins;"
    )


class Run:
    """Steps the deployments like the controller would, keeping state between steps."""

    def __init__(self, want: Desired, state: DeploymentState | None = None) -> None:
        self.desired = want
        self.state = state or DeploymentState()
        self.last: Step | None = None

    def at(
        self,
        when: datetime,
        *observations: Observation,
        alive: Iterable[int] = (),
        **kw: Any,
    ) -> Step:
        result = step(self.desired, self.state, facts(*observations, alive=alive, **kw), when)
        self.state = result.state
        self.last = result
        return result


def paths(result: Step) -> list[str]:
    return [artifact.path for artifact in result.artifacts]


def kinds(result: Step) -> list[tuple[str, str, str]]:
    return [(e.kind.value, e.pc, e.reason) for e in result.events]
