"""PXE menus: the default menus (local disk) and the per-PC "armed" pair for one job.

BIOS clients run pxelinux, which reads `pxelinux.cfg/01-<mac>` and falls back to
`pxelinux.cfg/default`, both in the directory of the pxelinux binary. UEFI clients run
Debian's signed netboot GRUB (`grubnetx64.efi.signed`, served as the uefi_loader behind the
shim): its prefix is fixed at `/grub` on the TFTP server and its embedded memdisk config
sources `$prefix/grub.cfg` directly, so it never looks for `grub.cfg-01-<mac>` by itself.
The default grub.cfg therefore does that lookup and hands over with `configfile`.

Unarmed PCs always boot their local disk. An armed PC's pair runs the same Clonezilla live
job on BIOS and UEFI: the kernel command line is built once and written into both files.

Purely computational.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from reconciler import fields
from reconciler.desired import Action, AfterImaging, Mode, Pc, Site
from reconciler.render._lines import Lines, join
from reconciler.rendered import Artifact, Effect

DEBIAN_GRUB_PREFIX = "grub"
"""Prefix directory compiled into Debian's grubnetx64.efi.signed (found with `strings`)."""

CLONEZILLA_IMAGES = "/home/partimag"
"""Where Clonezilla live expects its image repository; the server's images root is
mounted there over NFS."""

REPORT_PORT = 6461
"""Where a Clonezilla client reports its finished job (`ocs_server`, as ocsmgrd listens)."""

KERNEL_CMDLINE_MAX = 2048
"""COMMAND_LINE_SIZE of x86 Linux: a longer line is cut off silently."""

GRUB_TIMEOUT = 3
PXELINUX_TIMEOUT = GRUB_TIMEOUT * 10  # pxelinux counts tenths of a second

# Tokens that may follow ocs-sr as extra options: no quote, '$', ';', '|', '&', '<', '>',
# '#', '\\', brace or blank can reach the kernel line, pxelinux or the GRUB shell.
_OPTION = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_.,:=+/-]{0,63}$")
# Options that would stop an unattended run or fight the ones the job sets itself.
_FORBIDDEN_OPTIONS = frozenset(
    {
        "-b",  # must be -batch on a kernel line: init takes '-b' for itself
        "-batch",
        "--batch",
        "-x",
        "--interactive",
        "-c",
        "--confirm",
        "-d",
        "--debug-mode",
        "-p",
        "--postaction",
        "-u",
        "--select-img-in-client",
        "-k2",
        "-enc",
        "--enc-ocs-img",
        "-fsck",
        "-fsck-src-part",
        "--fsck-src-part",
        "--mcast-port",
    }
)

# Clonezilla live: live-boot options (the live system as Clonezilla's own PXE setup boots
# it: overlay root, autologin user that runs the job, no swap use on the target disk, no
# locale/keyboard questions) then Clonezilla's own options. No 'quiet': a failing boot
# must be readable on the PC's screen.
_LIVE_OPTIONS = (
    "boot=live",
    "union=overlay",
    "username=user",
    "config",
    "components",
    "noswap",
    "noeject",
    "edd=on",
    "nomodeset",
    "locales=en_US.UTF-8",
    "keyboard-layouts=NONE",
    "net.ifnames=0",
)

_RESTORE_OPTIONS = ("-g", "auto", "-e1", "auto", "-e2", "-r", "-j2")
"""As Clonezilla SE restores: reinstall GRUB if any, fix NTFS geometry, grow file systems."""
_CAPTURE_OPTIONS = ("-q2", "-j2", "-z9p", "-sfsck", "-senc", "-noabo", "-gb")
"""partclone, zstd (fast to decompress on the clients), no fsck or passphrase questions,
world-readable image files (root is squashed on NFS) and BLAKE2 checksums (B2SUMS)."""


@dataclass(frozen=True)
class BootJob:
    """One Clonezilla job for one PC, as its armed PXE files run it."""

    action: Action
    mode: Mode
    image: str
    disk: str
    server: IPv4Address
    mcast_port: int = 2232
    after: AfterImaging = AfterImaging.reboot
    extra_options: tuple[str, ...] = field(default_factory=tuple)
    """More ocs-sr options, e.g. ('-k1', '-icds'); checked token by token."""

    def __post_init__(self) -> None:
        fields.image_name(self.image)
        fields.disk_device(self.disk)
        if not isinstance(self.server, IPv4Address):
            raise ValueError(f"server must be an IPv4 address, got {self.server!r}")
        if not 1024 <= self.mcast_port <= 65534 or self.mcast_port % 2:
            raise ValueError(
                f"multicast port {self.mcast_port} must be even and within 1024-65534 "
                "(udpcast uses it and the next one)"
            )
        if self.action is Action.capture and self.mode is Mode.multicast:
            raise ValueError("a capture saves one PC: it is unicast only")
        for option in self.extra_options:
            if _OPTION.match(option) is None:
                raise ValueError(
                    f"extra ocs-sr option {option!r} is not a plain token (letters, digits, "
                    "'-', '_', '.', ',', ':', '=', '+', '/'; at most 64 characters)"
                )
            if option in _FORBIDDEN_OPTIONS:
                raise ValueError(f"extra ocs-sr option {option!r} is set by the job itself")

    def ocs_sr(self) -> str:
        """The ocs-sr command line Clonezilla live runs (`ocs_live_run`)."""
        words = ["ocs-sr", "-l", "en_US.UTF-8", "-batch"]
        if self.action is Action.capture:
            words += [*_CAPTURE_OPTIONS, *self.extra_options, "-p", self.after.value]
            words += ["savedisk", self.image, self.disk]
        elif self.mode is Mode.multicast:
            words += [*_RESTORE_OPTIONS, *self.extra_options, "-p", self.after.value]
            words += ["--mcast-port", str(self.mcast_port)]
            words += ["multicast_restoredisk", self.image, self.disk]
        else:
            words += [*_RESTORE_OPTIONS, *self.extra_options, "-p", self.after.value]
            words += ["restoredisk", self.image, self.disk]
        return " ".join(words)

    def describe(self) -> str:
        if self.action is Action.capture:
            return f"capture {self.disk} into image {self.image}"
        return f"restore image {self.image} to {self.disk} ({self.mode.value})"


def kernel_options(job: BootJob, site: Site) -> str:
    """Everything after the kernel file name, identical for pxelinux and GRUB.

    Values with blanks are written `name="a b"`. pxelinux passes that to the kernel as is;
    GRUB takes it as one word and re-quotes it as `"name=a b"`. Clonezilla's own parser
    (parse_cmdline_option in drbl-functions) reads both forms.
    """
    server = job.server
    rootfs = site.boot.clonezilla.rootfs
    words = [
        *_LIVE_OPTIONS,
        f"fetch=tftp://{server}/{rootfs}",
        f"ocs_server={server}",
        f'ocs_prerun="mount -t nfs {server}:{site.images_root} {CLONEZILLA_IMAGES}"',
        f'ocs_live_run="{job.ocs_sr()}"',
        "ocs_live_batch=yes",
    ]
    line = " ".join(words)
    if len(line) > KERNEL_CMDLINE_MAX - 100:  # leave room for initrd= and BOOT_IMAGE=
        raise ValueError(
            f"kernel command line of {len(line)} characters is too long for Linux "
            f"({KERNEL_CMDLINE_MAX}); drop some extra ocs-sr options"
        )
    return line


def pxelinux_dir(site: Site) -> str:
    """pxelinux looks for pxelinux.cfg/ next to its own binary."""
    return join(
        site.boot.tftp_root,
        posixpath.join(posixpath.dirname(site.boot.bios_loader), "pxelinux.cfg"),
    )


def grub_dir(site: Site) -> str:
    return join(site.boot.tftp_root, site.boot.grub_dir)


def mac_file_name(mac: str) -> str:
    """'aa:bb:cc:dd:ee:ff' -> '01-aa-bb-cc-dd-ee-ff' (01 = Ethernet), as both loaders ask."""
    return "01-" + fields.mac(mac).replace(":", "-")


def notes(site: Site) -> list[str]:
    if site.boot.grub_dir != DEBIAN_GRUB_PREFIX:
        return [
            f"boot.grub_dir is {site.boot.grub_dir!r}, but Debian's signed netboot GRUB "
            f"(grubnetx64.efi.signed) reads /{DEBIAN_GRUB_PREFIX}/grub.cfg: UEFI clients "
            "need a GRUB built with that prefix."
        ]
    return []


def defaults(site: Site) -> list[Artifact]:
    """The menus every PC gets when no job is armed for it: boot the local disk."""
    return [_pxelinux_default(site), _grub_default(site)]


def armed(
    pc: Pc, job: BootJob, site: Site, *, mac: str, origin: str = ""
) -> tuple[Artifact, Artifact]:
    """The pxelinux and GRUB files that run `job` on the PC with NIC `mac`.

    `origin` names the desired-state field the job comes from (e.g. "batches.spring").
    """
    normalized = fields.mac(mac)
    if normalized not in pc.macs:
        raise ValueError(f"{mac} is not a MAC address of {pc.hostname}")
    name = mac_file_name(normalized)
    options = kernel_options(job, site)
    pxelinux = _pxelinux_armed(pc, job, site, name=name, options=options, origin=origin)
    grub = _grub_armed(pc, job, site, name=name, options=options, origin=origin)
    return pxelinux, grub


def _tftp_artifact(lines: Lines, path: str) -> Artifact:
    # dnsmasq serves these on request: nothing to reload, nothing to check with a program.
    return lines.artifact(
        path, None, on_add=Effect.none, on_change=Effect.none, on_remove=Effect.none
    )


def _pxelinux_path(site: Site, file: str) -> str:
    if posixpath.dirname(site.boot.bios_loader):
        # pxelinux prefixes relative names with its own directory; '::' asks for the name
        # as given, relative to the TFTP root.
        return f"::{file}"
    return file


def _pxelinux_default(site: Site) -> Artifact:
    lines = Lines()
    lines.header()
    lines.note("No job is armed for this PC: boot the local disk.")
    lines.add("DEFAULT local")
    lines.add("PROMPT 1")
    lines.add(f"TIMEOUT {PXELINUX_TIMEOUT}")
    lines.blank()
    _pxelinux_local(lines)
    return _tftp_artifact(lines, join(pxelinux_dir(site), "default"))


def _pxelinux_local(lines: Lines) -> None:
    lines.add("LABEL local")
    lines.note("Hand back to the BIOS, which boots the next device (the local disk).", "  ")
    lines.add("  LOCALBOOT 0")


def _pxelinux_armed(
    pc: Pc, job: BootJob, site: Site, *, name: str, options: str, origin: str
) -> Artifact:
    live = site.boot.clonezilla
    lines = Lines()
    lines.header()
    lines.add(f"# {pc.hostname}: {job.describe()}", origin)
    lines.add("DEFAULT kitting-job")
    lines.add("PROMPT 1")
    lines.add(f"TIMEOUT {PXELINUX_TIMEOUT}")
    lines.blank()
    lines.add("LABEL kitting-job")
    lines.add(f"  KERNEL {_pxelinux_path(site, live.kernel)}", "site.boot.clonezilla.kernel")
    lines.add(f"  INITRD {_pxelinux_path(site, live.initrd)}", "site.boot.clonezilla.initrd")
    lines.add(f"  APPEND {options}", origin)
    lines.blank()
    _pxelinux_local(lines)
    return _tftp_artifact(lines, join(pxelinux_dir(site), name))


_MAC_GROUPS = "(" + "):(".join(["[0-9a-f]{2}"] * 6) + ")"
_MAC_VARS = "-".join(f"$m{i}" for i in range(1, 7))


def _grub_default(site: Site) -> Artifact:
    lines = Lines()
    lines.header()
    lines.note("Debian's signed netboot GRUB reads this file directly and never looks for")
    lines.note("grub.cfg-01-<mac>: do that here, from the MAC of the NIC that booted.")
    sets = " ".join(f"--set={i}:m{i}" for i in range(1, 7))
    lines.add(f"if regexp {sets} '^{_MAC_GROUPS}$' \"$net_default_mac\"; then")
    lines.add(f'  if [ -s "$prefix/grub.cfg-01-{_MAC_VARS}" ]; then')
    lines.add(f'    configfile "$prefix/grub.cfg-01-{_MAC_VARS}"')
    lines.add("  fi")
    lines.add("fi")
    lines.blank()
    lines.note("No job is armed for this PC: boot the local disk.")
    lines.add("set default=local-disk")
    lines.add(f"set timeout={GRUB_TIMEOUT}")
    lines.blank()
    _grub_local(lines)
    return _tftp_artifact(lines, join(grub_dir(site), "grub.cfg"))


def _grub_local(lines: Lines) -> None:
    lines.note("Chainload the disk's own boot manager: Windows first, then the removable-media")
    lines.note("path every EFI system partition may carry. Without either, return to the")
    lines.note("firmware, which tries its next boot entry.")
    lines.add('menuentry "Local disk" --id local-disk {')
    for loader in ("/EFI/Microsoft/Boot/bootmgfw.efi", "/EFI/BOOT/BOOTX64.EFI"):
        lines.add(f"  if search --no-floppy --set=esp --file {loader}; then")
        lines.add(f'    chainloader "($esp){loader}"')
        lines.add("    boot")
        lines.add("  fi")
    lines.add("  exit")
    lines.add("}")


def _grub_armed(
    pc: Pc, job: BootJob, site: Site, *, name: str, options: str, origin: str
) -> Artifact:
    live = site.boot.clonezilla
    lines = Lines()
    lines.header()
    lines.add(f"# {pc.hostname}: {job.describe()}", origin)
    lines.add("set default=kitting-job")
    lines.add(f"set timeout={GRUB_TIMEOUT}")
    lines.blank()
    lines.add(f'menuentry "Kitting: {job.describe()}" --id kitting-job {{', origin)
    lines.add('  echo "Loading Clonezilla live..."')
    lines.add(f"  linux /{live.kernel} {options}", origin)
    lines.add(f"  initrd /{live.initrd}", "site.boot.clonezilla.initrd")
    lines.add("}")
    lines.blank()
    _grub_local(lines)
    return _tftp_artifact(lines, join(grub_dir(site), f"grub.cfg-{name}"))
