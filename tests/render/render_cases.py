"""Small sites for the render tests, built from the models as the loader would build them."""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from reconciler.desired import (
    Action,
    AfterImaging,
    Batch,
    Department,
    Desired,
    Image,
    Mode,
    Site,
)
from reconciler.render.pxe import BootJob
from reconciler.rendered import Rendered

CASES_DIR = Path(__file__).resolve().parent.parent / "cases" / "render"
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"


def site(**overrides: Any) -> Site:
    doc: dict[str, Any] = {
        "kind": "Site",
        "name": "tokyo-kitting",
        "timezone": "Asia/Tokyo",
        "server": {"hostname": "kit01", "interface": "enp3s0", "address": "192.168.100.1"},
        "network": {
            "subnet": "192.168.100.0/24",
            "gateway": "192.168.100.254",
            "dns": ["192.168.100.254", "192.168.100.253"],
            "dhcp": {"pool": {"start": "192.168.100.10", "end": "192.168.100.100"}},
            "admin_range": {"start": "192.168.100.200", "end": "192.168.100.250"},
        },
        "firewall": {"production_networks": ["10.0.0.0/8", "172.16.0.0/12"]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return Site.model_validate(doc)


def departments() -> list[Department]:
    sales = Department.model_validate(
        {
            "kind": "Department",
            "name": "sales",
            "image": "win11-sales-2025",
            "pcs": [
                # A docked laptop: two NICs, address from the pool.
                {"hostname": "sales-pc01", "macs": ["AA:BB:CC:00:01:01", "aa-bb-cc-00-01-02"]},
                {"hostname": "sales-pc02", "macs": ["aabb.cc00.0201"], "ip": "192.168.100.21"},
            ],
        }
    )
    accounting = Department.model_validate(
        {
            "kind": "Department",
            "name": "accounting",
            "pcs": [{"hostname": "acct-pc01", "macs": ["aabbcc000301"]}],
        }
    )
    return [sales, accounting]


def desired(s: Site, depts: list[Department], batches: list[Batch] | None = None) -> Desired:
    image = Image.model_validate(
        {"kind": "Image", "name": "win11-sales-2025", "disk": {"device": "nvme0n1"}}
    )
    return Desired(
        site=s,
        images={image.name: image},
        departments={d.name: d for d in depts},
        batches={b.name: b for b in batches or []},
    )


def batch(name: str, port: int) -> Batch:
    return Batch.model_validate(
        {
            "kind": "Batch",
            "name": name,
            "image": "win11-sales-2025",
            "targets": {"departments": ["sales"]},
            "window": {"start": "2026-12-07T09:00", "end": "2026-12-07T12:00"},
            "multicast": {"port": port},
        }
    )


def docked_laptop_with_fixed_ip() -> Department:
    return Department.model_validate(
        {
            "kind": "Department",
            "name": "field",
            "pcs": [
                {
                    "hostname": "field-lt01",
                    "macs": ["02:11:22:33:44:01", "02:11:22:33:44:02"],
                    "ip": "192.168.100.30",
                }
            ],
        }
    )


def cases() -> dict[str, Desired]:
    """Every golden case, by directory name."""
    return {
        "basic": desired(site(), departments()),
        "proxy": desired(
            site(network={"dhcp": {"mode": "proxy"}}),
            departments(),
        ),
        "ganesha": desired(
            site(
                server={
                    "hostname": "kit01",
                    "interface": "eth1.100",
                    "address": "192.168.100.1",
                    "serve_dns": True,
                },
                network={"gateway": None, "dns": [], "dhcp": {"max_leases": 3000}},
                nfs={"backend": "nfs-ganesha", "mountd_port": 20050},
                images_root="/srv/images",
                firewall={
                    "production_networks": ["10.20.0.0/16", "10.0.0.0/8"],
                    "ssh_sources": ["10.9.8.0/24", "192.168.100.200-192.168.100.215"],
                },
            ),
            [*departments(), docked_laptop_with_fixed_ip()],
            [batch("spring", 3000), batch("autumn", 2260)],
        ),
        "no-secure-boot": desired(
            site(boot={"secure_boot": False, "bios_loader": "bios/pxelinux.0"}),
            departments(),
        ),
        "ssh-off": desired(
            site(
                network={"admin_range": None},
                ssh={"harden": False},
                firewall={"production_networks": []},
            ),
            departments(),
        ),
    }


ARMED_SITE = "basic"


def armed_jobs() -> dict[str, tuple[str, str, BootJob]]:
    """name -> (hostname, mac, job), rendered against the 'basic' site."""
    server = IPv4Address("192.168.100.1")
    return {
        "multicast-restore": (
            "sales-pc01",
            "aa:bb:cc:00:01:02",
            BootJob(Action.restore, Mode.multicast, "win11-sales-2025", "nvme0n1", server),
        ),
        "unicast-restore": (
            "acct-pc01",
            "aa:bb:cc:00:03:01",
            BootJob(
                Action.restore,
                Mode.unicast,
                "win11-sales-2025",
                "sda",
                server,
                after=AfterImaging.poweroff,
                extra_options=("-k1", "-icds"),
            ),
        ),
        "capture": (
            "sales-pc02",
            "aa:bb:cc:00:02:01",
            BootJob(Action.capture, Mode.unicast, "win11-sales-2026", "nvme0n1", server),
        ),
    }


def golden_path(case: str, artifact_path: str) -> Path:
    return CASES_DIR / case / artifact_path.lstrip("/")


def summary(rendered: Rendered) -> str:
    """What each artifact is, besides its bytes: one line per file, then the notes."""
    out = []
    for path, a in rendered.artifacts.items():
        check = a.check.value if a.check else "-"
        service = a.service.value if a.service else "-"
        out.append(
            f"{path} mode={a.mode:o} service={service} check={check} "
            f"add={a.on_add.name} change={a.on_change.name} remove={a.on_remove.name}"
        )
    out += [f"note: {note}" for note in rendered.notes]
    return "\n".join(out) + "\n"
