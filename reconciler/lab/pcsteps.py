"""The part of a kitting day each simulated PC plays, as a list of named steps.

A PC plays its steps in order from its own namespace, with real clients, and stops at the
first that fails (the later ones build on it). Today's steps are what a PC does while no
job is armed for it:

    dhcp        its MAC and firmware architecture (option 93) -> its reserved or pool
                address, and the boot file for its firmware (none for an unknown PC)
    dhcp-dock   a second NIC (a dock) asks too, with option 93 = 9: same address, same file
    boot-file   TFTP: the boot file, byte for byte the one in the TFTP root
    loader      TFTP: what the boot file loads next (ldlinux.c32 / grubx64.efi)
    menu        TFTP: the per-PC menu the loader looks for first, then the default; read as
                the loader would: it must boot the local disk unless a job is armed
    nfs         the images export read with libnfs: the image's file list and metadata

`steps_for` is where the imaging steps join when deployments arm PCs: read the job from
the menu (`PcSession.menu.ocs_live_run`), receive every partition with udp-receiver, restore
it with partclone onto a disk file, report to port 6461, "reboot" and find local boot again.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from loguru import logger

from reconciler.desired import Firmware
from reconciler.lab import labsite, menus, probes
from reconciler.lab.netns import Host, VirtualNetwork
from reconciler.lab.procs import ProcessRegistry
from reconciler.lab.report import StepResult
from reconciler.render.pxe import mac_file_name

DHCP_TRIES = 3
DHCP_PAUSE = 2
"""A pool address is offered only after dnsmasq's ping check (about 3 s): ask for as long
as PXE firmware does."""
TFTP_TIMEOUT = 10.0
NFS_TIMEOUT = 15.0
NOT_FOUND = 1
"""TFTP error code: file not found."""


class StepFailed(Exception):
    """What the PC saw differs from what the site says it should see."""


@dataclass(frozen=True)
class Done:
    detail: str
    bytes: int = 0


@dataclass(frozen=True)
class Bench:
    """What every PC's steps know of the lab."""

    net: VirtualNetwork
    server: IPv4Address
    tftp_root: Path
    images_root: Path
    image: str
    image_files: Mapping[str, bytes]
    armed: Mapping[str, str] = field(default_factory=dict)
    """hostname -> words its menu's Clonezilla job must contain; every other PC must get
    local boot (nothing is armed until deployments arm PCs)."""


@dataclass
class PcSession:
    """One simulated PC through its steps: what it learned so far."""

    pc: labsite.LabPc
    host: Host
    procs: ProcessRegistry
    lease: probes.DhcpLease | None = None
    menu_file: str = ""
    menu: menus.MenuVerdict | None = None


Step = Callable[[Bench, PcSession], Done]


# ---------------------------------------------------------------- judging (pure)


def lease_problems(pc: labsite.LabPc, lease: probes.DhcpLease, server: IPv4Address) -> list[str]:
    """What is wrong with the lease a PC got, by what the site says of it. Pure."""
    problems = []
    address = lease.address.ip
    if pc.fixed_ip is not None and address != pc.fixed_ip:
        problems.append(f"address {address}, expected its reservation {pc.fixed_ip}")
    if pc.fixed_ip is None and not labsite.in_pool(address):
        pool = f"{labsite.POOL_START}-{labsite.POOL_END}"
        problems.append(f"address {address} is not from the pool {pool}")
    if lease.boot_file != pc.boot_file:
        expected = pc.boot_file or "no boot file"
        problems.append(f"boot file {lease.boot_file or 'none'}, expected {expected}")
    if pc.boot_file is not None and lease.next_server != server:
        problems.append(f"next server {lease.next_server}, expected {server}")
    if pc.in_site and lease.hostname != pc.hostname:
        problems.append(f"host name {lease.hostname!r}, expected {pc.hostname!r}")
    return problems


def parse_nfs_ls(text: str) -> dict[str, int]:
    """Regular files and their sizes from `nfs-ls` lines
    ('-rw-r--r--  1     0     0            4 disk'). Pure."""
    found = {}
    for line in text.splitlines():
        words = line.split(maxsplit=5)
        if len(words) == 6 and words[0].startswith("-") and words[4].isdigit():
            found[words[5]] = int(words[4])
    return found


def menu_paths(pc: labsite.LabPc) -> tuple[tuple[str, ...], str]:
    """(files the loader reads first, the per-PC file it then looks for) for the NIC that
    boots. pxelinux: 01-<mac> then default; GRUB (Debian's): grub.cfg, which looks for
    grub.cfg-01-<mac>. Pure."""
    name = mac_file_name(pc.macs[0])
    if pc.firmware is Firmware.bios:
        directory = posixpath.join(posixpath.dirname(labsite.BIOS_LOADER), "pxelinux.cfg")
        return (), posixpath.join(directory, name)
    return (f"{labsite.GRUB_DIR}/grub.cfg",), f"{labsite.GRUB_DIR}/grub.cfg-{name}"


def default_menu(pc: labsite.LabPc) -> str:
    if pc.firmware is Firmware.bios:
        directory = posixpath.join(posixpath.dirname(labsite.BIOS_LOADER), "pxelinux.cfg")
        return posixpath.join(directory, "default")
    return f"{labsite.GRUB_DIR}/grub.cfg"


# ---------------------------------------------------------------- the steps


def dhcp(bench: Bench, session: PcSession) -> Done:
    pc = session.pc
    lease = probes.dhcp(
        session.procs,
        session.host,
        client_arch=pc.arches[0],
        tries=DHCP_TRIES,
        pause=DHCP_PAUSE,
    )
    if isinstance(lease, probes.DhcpFailed):
        raise StepFailed(f"no lease ({lease.reason}) with option 93 = {pc.arches[0]}")
    session.lease = lease
    problems = lease_problems(pc, lease, bench.server)
    if problems:
        raise StepFailed("; ".join(problems))
    bench.net.assign(session.host, str(lease.address))
    return Done(f"{lease.address.ip}, boot file {lease.boot_file or 'none'}")


def dhcp_dock(bench: Bench, session: PcSession) -> Done:
    """The dock's NIC asks as well; it shares the PC's reservation (one address, whichever
    NIC boots). Its lease is not put on the NIC: the PC keeps using e0."""
    pc = session.pc
    lease = probes.dhcp(
        session.procs,
        session.host,
        nic="e1",
        client_arch=pc.arches[1],
        tries=DHCP_TRIES,
        pause=DHCP_PAUSE,
    )
    if isinstance(lease, probes.DhcpFailed):
        raise StepFailed(f"no lease on e1 ({lease.reason}) with option 93 = {pc.arches[1]}")
    problems = lease_problems(pc, lease, bench.server)
    if problems:
        raise StepFailed("e1: " + "; ".join(problems))
    return Done(f"e1 {pc.macs[1]}: {lease.address.ip}, boot file {lease.boot_file}")


def boot_file(bench: Bench, session: PcSession) -> Done:
    lease = _lease(session)
    name = lease.boot_file
    if name is None:
        raise StepFailed("the lease named no boot file")
    return _fetch_same(bench, session, name)


def loader(bench: Bench, session: PcSession) -> Done:
    return _fetch_same(bench, session, session.pc.second_stage)


def menu(bench: Bench, session: PcSession) -> Done:
    pc = session.pc
    first, per_pc = menu_paths(pc)
    fetched = {name: _fetch(bench, session, name) for name in first}
    got = probes.tftp_get(
        session.procs, session.host, str(bench.server), per_pc, timeout=TFTP_TIMEOUT
    )
    if isinstance(got, probes.TftpFetched):
        chosen = per_pc
        fetched[chosen] = got.data
    elif got.kind == "error" and got.code == NOT_FOUND:
        chosen = default_menu(pc)
        if chosen not in fetched:
            fetched[chosen] = _fetch(bench, session, chosen)
        _same_as_served(bench, chosen, fetched[chosen])
    else:
        raise StepFailed(f"{per_pc}: {got.kind} {got.message}")
    text = fetched[chosen].decode("utf-8", "replace")
    verdict = menus.pxelinux(text) if pc.firmware is Firmware.bios else menus.grub(text)
    session.menu_file, session.menu = chosen, verdict
    wanted = bench.armed.get(pc.hostname)
    if wanted is None and not verdict.local:
        raise StepFailed(f"{chosen}: {verdict.describe()}; nothing is armed: local boot expected")
    if wanted is not None and wanted not in (verdict.ocs_live_run or ""):
        raise StepFailed(f"{chosen}: {verdict.describe()}; expected a job with {wanted!r}")
    total = sum(len(data) for data in fetched.values())
    return Done(f"{chosen}: {verdict.describe()}", total)


def nfs(bench: Bench, session: PcSession) -> Done:
    url = f"nfs://{bench.server}{bench.images_root}/{bench.image}"
    listed = session.procs.run(
        ["nfs-ls", url],
        netns=session.host.netns,
        timeout=NFS_TIMEOUT,
        name=f"nfsls-{session.host.name}",
        env={"PATH": probes.PROBE_PATH},
    )
    if not listed.ok:
        raise StepFailed(f"nfs-ls {url}: {listed.text or listed.returncode}")
    seen = parse_nfs_ls(listed.stdout.decode(errors="replace"))
    expected = {name: len(content) for name, content in bench.image_files.items()}
    if seen != expected:
        raise StepFailed(
            f"the export lists {sorted(seen.items())}, expected {sorted(expected.items())}"
        )
    read = 0
    metadata = [name for name in ("disk", "parts") if name in bench.image_files]
    for name in metadata:
        local = session.procs.scratch(f"nfs-{session.host.name}") / name
        copied = session.procs.run(
            ["nfs-cp", f"{url}/{name}", str(local)],
            netns=session.host.netns,
            timeout=NFS_TIMEOUT,
            name=f"nfscp-{session.host.name}",
            env={"PATH": probes.PROBE_PATH},
        )
        data = local.read_bytes() if local.exists() else b""
        if not copied.ok or data != bench.image_files[name]:
            raise StepFailed(f"nfs-cp {name}: {copied.text or 'content differs from the image'}")
        read += len(data)
    return Done(f"{len(seen)} image files listed, {', '.join(metadata)} read", read)


BASE_STEPS: tuple[tuple[str, Step], ...] = (
    ("dhcp", dhcp),
    ("boot-file", boot_file),
    ("loader", loader),
    ("menu", menu),
    ("nfs", nfs),
)
UNKNOWN_PC_STEPS: tuple[tuple[str, Step], ...] = (("dhcp", dhcp),)
"""A PC not in the site repo: an address from the pool and no boot file, nothing more."""


def steps_for(pc: labsite.LabPc) -> tuple[tuple[str, Step], ...]:
    """The steps one PC plays, in order."""
    if not pc.in_site:
        return UNKNOWN_PC_STEPS
    steps = list(BASE_STEPS)
    if len(pc.macs) > 1:
        steps.insert(1, ("dhcp-dock", dhcp_dock))
    return tuple(steps)


def play(
    bench: Bench,
    session: PcSession,
    steps: tuple[tuple[str, Step], ...],
    on_step: Callable[[StepResult], None],
) -> tuple[StepResult, ...]:
    """Play the steps in order; stop at the first that fails. A step that raises is a
    failed step (with the error); the run goes on with the other PCs."""
    results: list[StepResult] = []
    log = logger.bind(target=session.host.netns, commit=None)
    for name, step in steps:
        started = time.monotonic()
        try:
            done = step(bench, session)
            result = StepResult(name, True, done.detail, time.monotonic() - started, done.bytes)
        except StepFailed as failure:
            result = StepResult(name, False, str(failure), time.monotonic() - started)
        except Exception as error:  # a broken probe must not end the other PCs' runs
            log.exception(f"step {name} of {session.pc.node} raised")
            detail = f"error: {type(error).__name__}: {error}"
            result = StepResult(name, False, detail, time.monotonic() - started)
        results.append(result)
        on_step(result)
        if not result.ok:
            break
    return tuple(results)


# ---------------------------------------------------------------- helpers


def _lease(session: PcSession) -> probes.DhcpLease:
    if session.lease is None:
        raise StepFailed("no lease yet")
    return session.lease


def _fetch(bench: Bench, session: PcSession, name: str) -> bytes:
    got = probes.tftp_get(
        session.procs, session.host, str(bench.server), name, timeout=TFTP_TIMEOUT
    )
    if isinstance(got, probes.TftpFailed):
        code = f" {got.code}" if got.code is not None else ""
        raise StepFailed(f"TFTP {name}: {got.kind}{code} {got.message}")
    return got.data


def _same_as_served(bench: Bench, name: str, data: bytes) -> None:
    if data != (bench.tftp_root / name).read_bytes():
        raise StepFailed(f"TFTP {name}: {len(data)} bytes differ from the file in the TFTP root")


def _fetch_same(bench: Bench, session: PcSession, name: str) -> Done:
    data = _fetch(bench, session, name)
    _same_as_served(bench, name, data)
    return Done(f"{name}: {len(data)} bytes, as in the TFTP root", len(data))
