"""The desired state: typed models of the site repo's documents.

One YAML document per object, each with a `kind`: Site (exactly one), Image, Department,
Batch. Field names are snake_case. Unknown fields are errors, so a typo never silently
turns into a default. Cross-document rules (references, duplicates, address plan) live in
`reconciler.checks`; these models only know their own fields.

Purely computational: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.fields import (
    AbsolutePath,
    Address,
    Bitrate,
    ByteSize,
    DiskDevice,
    Duration,
    Hostname,
    ImageName,
    InterfaceName,
    IpSource,
    LocalTime,
    Mac,
    Name,
    Network,
    OpenPgpFingerprint,
    Principal,
    RelativePath,
    SignerKey,
    TimeZone,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ---------------------------------------------------------------------------- Site


class Server(Model):
    hostname: Hostname
    """The kitting server's own host name."""
    interface: InterfaceName
    """The NIC on the kitting VLAN. dnsmasq and the firewall bind to it alone."""
    address: Address
    """The server's static address on the kitting network."""
    serve_dns: bool = False
    """Let dnsmasq answer DNS on the kitting interface (off: DHCP and TFTP only)."""


class IpRange(Model):
    start: Address
    end: Address


class DhcpMode(StrEnum):
    authoritative = "authoritative"
    proxy = "proxy"


class Dhcp(Model):
    mode: DhcpMode = DhcpMode.authoritative
    """authoritative: this server hands out addresses. proxy: another DHCP server does, and
    dnsmasq only adds the PXE boot answer."""
    pool: IpRange | None = None
    """Dynamic pool for PCs without a fixed address (required in authoritative mode)."""
    lease_time: Duration = 43200
    """How long a lease lasts: seconds or e.g. '12h'."""
    max_leases: int = Field(default=1000, ge=1, le=100000)
    """dnsmasq's dhcp-lease-max; its default of 1000 is too low for big fleets."""


class NetworkPlan(Model):
    subnet: Network
    """The kitting network, e.g. 192.168.100.0/24."""
    gateway: Address | None = None
    """Router handed to PCs (optional: an isolated kitting VLAN may have none)."""
    dns: list[Address] = Field(default_factory=list)
    """DNS servers handed to PCs."""
    vlan: int | None = Field(default=None, ge=1, le=4094)
    """The kitting VLAN id (documentation and checks; the switch port does the tagging)."""
    dhcp: Dhcp = Field(default_factory=Dhcp)
    admin_range: IpRange | None = None
    """Addresses kept for admin terminals; never in the pool, allowed to SSH by default."""


class ClonezillaLive(Model):
    kernel: RelativePath = "clonezilla/vmlinuz"
    """Clonezilla live kernel, relative to the TFTP root."""
    initrd: RelativePath = "clonezilla/initrd.img"
    """Clonezilla live initrd, relative to the TFTP root."""
    rootfs: RelativePath = "clonezilla/filesystem.squashfs"
    """The live root file system, fetched by the client over TFTP (relative to the TFTP root)."""


class Boot(Model):
    tftp_root: AbsolutePath = "/srv/tftp"
    bios_loader: RelativePath = "pxelinux.0"
    """Boot file for BIOS clients (DHCP option 93 = 0), relative to the TFTP root."""
    uefi_loader: RelativePath = "grubx64.efi"
    """GRUB for UEFI x86-64 clients (option 93 = 7 or 9), relative to the TFTP root."""
    secure_boot: bool = True
    """Hand UEFI clients the signed shim, which loads uefi_loader from the same directory."""
    shim: RelativePath = "shimx64.efi"
    """The signed shim, relative to the TFTP root; used when secure_boot is on."""
    grub_dir: RelativePath = "grub"
    """GRUB's network prefix directory under the TFTP root (where it looks for grub.cfg and
    grub.cfg-01-aa-bb-cc-dd-ee-ff)."""
    clonezilla: ClonezillaLive = Field(default_factory=ClonezillaLive)


class Multicast(Model):
    group: Address = IPv4Address("239.192.0.1")
    """Multicast data group (239.0.0.0/8 is the organisation-local scope)."""
    port: int = 2232
    """udpcast port base: even; udpcast uses it and the next. Each partition adds 2."""
    ttl: int = Field(default=1, ge=1, le=32)
    """1 keeps the stream on the kitting VLAN."""
    max_bitrate: Bitrate | None = None
    """Cap for the stream, e.g. '800m'; none: as fast as the slowest PC."""


class NfsBackend(StrEnum):
    kernel = "kernel"
    ganesha = "nfs-ganesha"


class Nfs(Model):
    backend: NfsBackend = NfsBackend.kernel
    mountd_port: int = Field(default=20048, ge=1024, le=65535)
    """Fixed mountd port (kernel NFSv3), so the firewall can name it."""


class Firewall(Model):
    production_networks: list[Network] = Field(default_factory=list)
    """Networks the kitting network may never reach (forwarding to them is dropped)."""
    ssh_sources: list[IpSource] | None = None
    """Who may SSH to the server: networks or 'A-B' ranges. Default: the admin range."""


class Ssh(Model):
    harden: bool = True
    """Write an sshd drop-in: public keys only, no passwords, no root login."""


class AllowedSigner(Model):
    principal: Principal
    """Who signs, e.g. an e-mail address."""
    ssh_key: SignerKey | None = None
    openpgp_fingerprint: OpenPgpFingerprint | None = None


class GitPolicy(Model):
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
    """The protected branch the server follows."""
    require_signed: bool = False
    """Apply a commit only if its head carries a valid signature of an allowed signer."""
    allowed_signers: list[AllowedSigner] = Field(default_factory=list)


class Site(Model):
    kind: Literal["Site"]
    name: Name
    timezone: TimeZone
    """IANA time zone of the kitting room; batch windows default to it."""
    server: Server
    network: NetworkPlan
    boot: Boot = Field(default_factory=Boot)
    images_root: AbsolutePath = "/home/partimag"
    multicast: Multicast = Field(default_factory=Multicast)
    nfs: Nfs = Field(default_factory=Nfs)
    firewall: Firewall = Field(default_factory=Firewall)
    ssh: Ssh = Field(default_factory=Ssh)
    git: GitPolicy = Field(default_factory=GitPolicy)


# ---------------------------------------------------------------------------- Image


class Firmware(StrEnum):
    uefi = "uefi"
    bios = "bios"


class OperatingSystem(StrEnum):
    windows10 = "windows10"
    windows11 = "windows11"
    windows_server = "windows-server"
    linux = "linux"
    other = "other"

    @property
    def is_windows(self) -> bool:
        return self.value.startswith("windows")


class Disk(Model):
    device: DiskDevice
    """Whole-disk device name as Clonezilla sees it, e.g. nvme0n1 or sda."""
    size: ByteSize | None = None
    """Disk size, e.g. '256GB'; a restore needs a target at least this big."""


class IntegritySource(StrEnum):
    clonezilla = "clonezilla"
    manifest = "manifest"


class Integrity(Model):
    source: IntegritySource
    """clonezilla: check Clonezilla's own checksum files. manifest: check the SHA-256 below."""
    manifest: dict[RelativePath, str] = Field(default_factory=dict)
    """File in the image directory -> expected SHA-256 (64 hex digits)."""


class Image(Model):
    kind: Literal["Image"]
    name: ImageName
    """The image's directory under the images root."""
    description: str = ""
    """Free text for people; never written into any server file."""
    os: OperatingSystem = OperatingSystem.windows11
    firmware: Firmware = Firmware.uefi
    disk: Disk
    """The disk the image was saved from."""
    integrity: Integrity | None = None


# ---------------------------------------------------------------------------- Department


class Pc(Model):
    hostname: Hostname
    macs: list[Mac] = Field(min_length=1, max_length=8)
    """Every NIC that may PXE-boot (a docked laptop has two)."""
    ip: Address | None = None
    """Fixed address; otherwise the PC gets one from the pool."""
    disk: Disk | None = None
    """Target disk when it differs from the image's."""
    firmware: Firmware | None = None
    """The PC's firmware, when it differs from the image's."""


class Department(Model):
    kind: Literal["Department"]
    name: Name
    image: ImageName | None = None
    """Default image for this department's PCs."""
    description: str = ""
    pcs: list[Pc] = Field(default_factory=list)


# ---------------------------------------------------------------------------- Batch


class Mode(StrEnum):
    multicast = "multicast"
    unicast = "unicast"


class Action(StrEnum):
    restore = "restore"
    capture = "capture"


class AfterImaging(StrEnum):
    reboot = "reboot"
    poweroff = "poweroff"


class OnFailure(StrEnum):
    hold = "hold"
    retry_unicast = "retry-unicast"


class Targets(Model):
    departments: list[Name] = Field(default_factory=list)
    pcs: list[Hostname] = Field(default_factory=list)
    """Individual PCs by hostname."""


class Window(Model):
    start: LocalTime
    end: LocalTime
    timezone: TimeZone | None = None
    """Defaults to the site's time zone; times with an explicit offset ignore it."""


class BatchMulticast(Model):
    group: Address | None = None
    """Defaults to the site's multicast group."""
    port: int | None = None
    """Defaults to the site's multicast port."""
    max_bitrate: Bitrate | None = None


class Batch(Model):
    kind: Literal["Batch"]
    name: Name
    image: ImageName
    action: Action = Action.restore
    """restore: image the targets. capture: save one master PC into a new image."""
    overwrite: bool = False
    """capture only: allow replacing an existing image of that name."""
    targets: Targets
    mode: Mode = Mode.multicast
    window: Window
    clients_to_wait: int | None = Field(default=None, ge=1)
    """Multicast starts when this many PCs joined (default: every target)."""
    max_wait: Duration = 600
    """After the first PC joins, start anyway after this long."""
    start_timeout: Duration | None = None
    """End the session if no PC joined by then (default: until the window closes)."""
    multicast: BatchMulticast = Field(default_factory=BatchMulticast)
    after_imaging: AfterImaging = AfterImaging.reboot
    on_failure: OnFailure = OnFailure.hold
    """hold: a PC that failed or missed the session boots locally and is flagged.
    retry-unicast: it is offered a unicast restore in the same window."""
    wake_on_lan: bool = Field(default=False, strict=True)
    """When the window opens, send a wake-on-LAN magic packet to every NIC of each PC armed
    then (UDP broadcast to port 9 out of the kitting interface), once. The PCs' firmware
    must have wake-on-LAN enabled."""


KINDS: dict[str, type[Model]] = {
    "Site": Site,
    "Image": Image,
    "Department": Department,
    "Batch": Batch,
}


# ---------------------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class PcRef:
    """A PC with the department it belongs to."""

    department: str
    pc: Pc


@dataclass(frozen=True)
class Desired:
    """The whole desired state of one commit, after validation."""

    site: Site
    images: dict[str, Image] = field(default_factory=dict)
    departments: dict[str, Department] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)

    def pcs(self) -> list[PcRef]:
        """Every PC, in department order then file order."""
        return [
            PcRef(dept.name, pc)
            for dept in sorted(self.departments.values(), key=lambda d: d.name)
            for pc in dept.pcs
        ]
