"""The lab's own kitting site: its PCs, its addresses and its site repo, from a run prefix.

Everything a real server keeps under `/` lives in one directory of the lab (`ServerTree`):
the reconciler's files (through `Settings.paths`), the TFTP root, the images root and its
state directory. The site repo names those directories, so the reconciler configures the
lab's programs exactly as it would configure a server's.

The plan (N PCs, by hand, for N = 4):

    pc1  sales-pc01       BIOS  02:..:11:00               fixed 192.168.100.101
    pc2  sales-pc02       UEFI  02:..:12:00 + 12:01 (dock) fixed 192.168.100.102
    pc3  accounting-pc03  BIOS  02:..:13:00               from the pool .10-.50
    pc4  accounting-pc04  UEFI  02:..:14:00               fixed 192.168.100.104
    stray                 UEFI  02:..:04:00               not in the site repo

Odd PCs are BIOS, even PCs UEFI; the first half is in `sales`, the rest in `accounting`.
The server is 192.168.100.1 on the kitting network. Its uplink is 198.19.0.1 on a link
to the router (198.19.0.254), which joins the production network (198.18.0.1); the
production host is 198.18.0.10, the admin terminal 192.168.100.200. The site declares
198.18.0.0/15 (uplink and production) as production: no PC may reach into it.

    kitting 192.168.100.0/24 -- srv -- uplink 198.19.0.0/24 -- rtr -- production 198.18.0.0/24

Purely computational.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import PurePosixPath

from reconciler.desired import Firmware
from reconciler.lab.netns import KITTING_NET, PRODUCTION_NET, lab_mac
from reconciler.layout import Layout

INTERFACE = "e0"
SERVER = IPv4Address("192.168.100.1")
SERVER_KITTING = IPv4Interface("192.168.100.1/24")
UPLINK_NET = IPv4Network("198.19.0.0/24")
SERVER_UPLINK = IPv4Interface("198.19.0.1/24")
"""The server's leg on the link to the router: its way out, its default route."""
SERVER_PRODUCTION = SERVER_UPLINK
"""The server's address on the production side (its uplink)."""
ROUTER_UPLINK = IPv4Interface("198.19.0.254/24")
ROUTER_PRODUCTION = IPv4Interface("198.18.0.1/24")
PRODUCTION_LINK = IPv4Network("198.18.0.0/24")
PRODUCTION_HOST = IPv4Interface("198.18.0.10/24")
ADMIN_HOST = IPv4Interface("192.168.100.200/24")
POOL_START = IPv4Address("192.168.100.10")
POOL_END = IPv4Address("192.168.100.50")
ADMIN_START = IPv4Address("192.168.100.200")
ADMIN_END = IPv4Address("192.168.100.250")
FIXED_BASE = 100
"""PC number i has the fixed address 192.168.100.(100 + i)."""
MAX_PCS = 99
"""Fixed addresses .101-.199 stay below the admin range."""
MOUNTD_PORT = 20048

POOL_PC = 3
"""The PC without a fixed address: it takes one from the pool."""
DOCKED_PC = 2
"""The PC with a second NIC (a laptop on a dock); both MACs share its reservation."""
DEPARTMENTS = ("sales", "accounting")

BIOS_LOADER = "pxelinux.0"
BIOS_SECOND_STAGE = "ldlinux.c32"
"""pxelinux fetches it from its own directory right after it starts."""
SHIM = "shimx64.efi"
UEFI_LOADER = "grubx64.efi"
"""The shim loads it from its own directory."""
GRUB_DIR = "grub"

IMAGE = "lab-image"
IMAGE_DISK = "sda"

ARCH_BIOS = 0
ARCH_UEFI = 7
ARCH_UEFI_ALT = 9
"""Some UEFI firmware sends 9; the dock NIC of the docked PC asks with it."""

# Node numbers in the MACs (lab_mac): fixed for the lab's own hosts, 0x10 + i for PC i,
# so no two NICs of a run ever share a MAC.
SERVER_NODE = 1
ADMIN_NODE = 2
PRODUCTION_NODE = 3
STRAY_NODE = 4
ROUTER_NODE = 5
PC_NODE_BASE = 0x10


@dataclass(frozen=True)
class LabPc:
    """A simulated PC: what the site repo says of it and what its firmware sends."""

    node: str
    """Its namespace node name: pc1, pc2, ... (stray: the PC nobody declared)."""
    hostname: str
    department: str | None
    """None: the PC is not in the site repo."""
    firmware: Firmware
    macs: tuple[str, ...]
    fixed_ip: IPv4Address | None
    """Its reserved address; None: it takes one from the pool."""
    arches: tuple[int, ...]
    """DHCP option 93 each NIC sends (e0 first)."""

    @property
    def in_site(self) -> bool:
        return self.department is not None

    @property
    def boot_file(self) -> str | None:
        """The boot file the server must offer: by firmware, and only to a declared PC."""
        if not self.in_site:
            return None
        return BIOS_LOADER if self.firmware is Firmware.bios else SHIM

    @property
    def second_stage(self) -> str:
        """What the boot file loads next from the TFTP server."""
        return BIOS_SECOND_STAGE if self.firmware is Firmware.bios else UEFI_LOADER


@dataclass(frozen=True)
class ServerTree:
    """Where the lab server keeps what a real server keeps under /."""

    root: PurePosixPath

    @property
    def tftp_root(self) -> PurePosixPath:
        return self.root / "srv" / "tftp"

    @property
    def images_root(self) -> PurePosixPath:
        return self.root / "home" / "partimag"

    @property
    def private(self) -> PurePosixPath:
        """Files only the lab's service manager writes: leases, PIDs, host key, the main
        files of nfs-ganesha and sshd that include the reconciler's."""
        return self.root / "run" / "lab"

    def layout_paths(self) -> dict[str, str]:
        """`Settings.paths`: every path of the server layout, moved under the tree."""
        defaults = Layout()
        return {f.name: f"{self.root}{getattr(defaults, f.name)}" for f in fields(Layout)}


def check_count(count: int) -> int:
    if not 1 <= count <= MAX_PCS:
        raise ValueError(f"the lab simulates 1 to {MAX_PCS} PCs, not {count}")
    return count


def lab_pcs(prefix: str, count: int) -> tuple[LabPc, ...]:
    """The site's PCs of a run, as the module docstring lays them out."""
    check_count(count)
    first_half = (count + 1) // 2
    pcs = []
    for number in range(1, count + 1):
        bios = number % 2 == 1
        nics = 2 if number == DOCKED_PC else 1
        department = DEPARTMENTS[0] if number <= first_half else DEPARTMENTS[1]
        node = PC_NODE_BASE + number
        arches = (ARCH_BIOS,) if bios else (ARCH_UEFI, ARCH_UEFI_ALT)[:nics]
        pcs.append(
            LabPc(
                node=f"pc{number}",
                hostname=f"{department}-pc{number:02d}",
                department=department,
                firmware=Firmware.bios if bios else Firmware.uefi,
                macs=tuple(lab_mac(prefix, node, nic) for nic in range(nics)),
                fixed_ip=None if number == POOL_PC else KITTING_NET[FIXED_BASE + number],
                arches=arches,
            )
        )
    return tuple(pcs)


def stray_pc(prefix: str) -> LabPc:
    """A UEFI PC the site repo does not know: an address, never a boot file."""
    return LabPc(
        node="stray",
        hostname="stray",
        department=None,
        firmware=Firmware.uefi,
        macs=(lab_mac(prefix, STRAY_NODE, 0),),
        fixed_ip=None,
        arches=(ARCH_UEFI,),
    )


def in_pool(address: IPv4Address) -> bool:
    return POOL_START <= address <= POOL_END


@dataclass(frozen=True)
class BatchWindow:
    """A multicast batch for every lab PC of the site, open from `start` to `end` (ISO 8601
    with an explicit offset: the caller reads the clock, this module does not)."""

    start: str
    end: str
    disk: str
    """The image's disk name (its `disk` file): Clonezilla's restore needs that very name."""
    max_wait: str = "20s"
    """How long the sender waits for the last PC after the first joined."""
    start_timeout: str = "60s"
    """How long the sender waits for any PC at all."""


BATCH = "lab-imaging"


def site_files(
    pcs: tuple[LabPc, ...], tree: ServerTree, batch: BatchWindow | None = None
) -> dict[str, bytes]:
    """The lab site repo: path -> content, deterministic for the same PCs, tree and batch."""
    disk = batch.disk if batch is not None else IMAGE_DISK
    files = {
        "site.yaml": _site(tree).encode(),
        "images.yaml": _images(disk, clonezilla=batch is not None).encode(),
    }
    if batch is not None:
        files["batches/lab-imaging.yaml"] = _batch(pcs, batch).encode()
    for department in DEPARTMENTS:
        members = [pc for pc in pcs if pc.department == department]
        if members:
            files[f"departments/{department}.yaml"] = _department(department, members).encode()
    return files


def _q(value: object) -> str:
    # JSON strings are YAML double-quoted scalars: no value can start a new key or line.
    return json.dumps(str(value))


def _site(tree: ServerTree) -> str:
    return f"""\
# The kitting lab's site, generated by `kitctl lab run`.
kind: Site
name: kitting-lab
timezone: UTC
server:
  hostname: lab-server
  interface: {_q(INTERFACE)}
  address: {_q(SERVER)}
  serve_dns: false
network:
  subnet: {_q(KITTING_NET)}
  dhcp:
    mode: authoritative
    pool:
      start: {_q(POOL_START)}
      end: {_q(POOL_END)}
    lease_time: 1h
  admin_range:
    start: {_q(ADMIN_START)}
    end: {_q(ADMIN_END)}
boot:
  tftp_root: {_q(tree.tftp_root)}
  bios_loader: {_q(BIOS_LOADER)}
  secure_boot: true
  shim: {_q(SHIM)}
  uefi_loader: {_q(UEFI_LOADER)}
  grub_dir: {_q(GRUB_DIR)}
images_root: {_q(tree.images_root)}
nfs:
  backend: nfs-ganesha
  mountd_port: {MOUNTD_PORT}
firewall:
  production_networks: [{_q(PRODUCTION_NET)}]
ssh:
  harden: true
"""


def _images(disk: str, *, clonezilla: bool) -> str:
    text = f"""\
kind: Image
name: {_q(IMAGE)}
description: "A small stand-in image for the lab"
os: linux
firmware: uefi
disk:
  device: {_q(disk)}
"""
    # A real Clonezilla image carries its checksums: the server verifies them before it arms.
    return text + "integrity: {source: clonezilla}\n" if clonezilla else text


def _batch(pcs: tuple[LabPc, ...], batch: BatchWindow) -> str:
    departments = sorted({pc.department for pc in pcs if pc.department is not None})
    return f"""\
kind: Batch
name: {_q(BATCH)}
image: {_q(IMAGE)}
targets:
  departments: [{", ".join(_q(d) for d in departments)}]
mode: multicast
window:
  start: {_q(batch.start)}
  end: {_q(batch.end)}
clients_to_wait: {len(pcs)}
max_wait: {_q(batch.max_wait)}
start_timeout: {_q(batch.start_timeout)}
"""


def _department(name: str, members: list[LabPc]) -> str:
    lines = [
        "kind: Department",
        f"name: {_q(name)}",
        f"image: {_q(IMAGE)}",
        "pcs:",
    ]
    for pc in members:
        lines.append(f"  - hostname: {_q(pc.hostname)}")
        lines.append(f"    macs: [{', '.join(_q(mac) for mac in pc.macs)}]")
        lines.append(f"    firmware: {pc.firmware.value}")
        if pc.fixed_ip is not None:
            lines.append(f"    ip: {_q(pc.fixed_ip)}")
    return "\n".join(lines) + "\n"
