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

A PC whose menu is armed (`steps_for(pc, armed=True)`) then plays the imaging steps
(`reconciler.lab.imaging`; they need `Bench.imaging`):

    job         the Clonezilla job of the menu's default entry (`ocs_live_run`)
    image       the image's metadata read over NFS with libnfs (disk, parts, table, streams)
    restore     every partition received (udp-receiver, port +2 each) or read over NFS,
                decompressed and restored with partclone onto the PC's disk file; or, for
                the PCs named in `ImagingBench.clonezilla_clients`, Clonezilla's own ocs-sr
    verify      the disk by its content: partition table, byte for byte against the
                reference, known files read back
    report      the job report line to the server's port 6461 (ocs-sr sends its own)

    reboot      once the server has taken the report (`ImagingBench.settled`), the per-PC
                menu fetched again as after a reboot: it must boot the local disk
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path

from loguru import logger

from reconciler.desired import Firmware
from reconciler.lab import imaging, labsite, menus, ocs_client, probes
from reconciler.lab.netns import Host, VirtualNetwork
from reconciler.lab.ocs_image import Image, ImageError
from reconciler.lab.ocs_job import REPORT_PORT, Job, JobError, parse_job, report_line
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
class ImagingBench:
    """What the imaging steps need besides the network: the proof and who runs ocs-sr."""

    reference: Path
    """The served image restored with no network (`imaging.restore_local`)."""
    expected_files: Mapping[int, Mapping[str, bytes]] = field(default_factory=dict)
    """Partition number -> file path -> content every restored disk must hold."""
    clonezilla_clients: frozenset[str] = frozenset()
    """Host names of the PCs that run Clonezilla's own client instead of the lab's."""
    report_port: int = REPORT_PORT
    start_timeout: int = imaging.START_TIMEOUT
    settled: Callable[[str], bool] | None = None
    """hostname -> has the server turned this PC's report into its result (and disarmed
    it)? None: the reboot step does not wait."""
    settle_timeout: float = 45.0


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
    imaging: ImagingBench | None = None


@dataclass
class PcSession:
    """One simulated PC through its steps: what it learned so far."""

    pc: labsite.LabPc
    host: Host
    procs: ProcessRegistry
    lease: probes.DhcpLease | None = None
    menu_file: str = ""
    menu: menus.MenuVerdict | None = None
    job: Job | None = None
    image: Image | None = None
    disk: Path | None = None
    restore: imaging.DiskRestore | None = None
    """The lab client's restore (None for a PC that ran ocs-sr)."""
    clonezilla: ocs_client.ClonezillaRun | None = None
    """What Clonezilla's own client did, for a PC that ran it."""


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


parse_nfs_ls = imaging.parse_nfs_ls
"""Regular files and their sizes from `nfs-ls` lines (kept here for its callers)."""


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


def read_job(bench: Bench, session: PcSession) -> Done:
    verdict = session.menu
    if verdict is None or not verdict.ocs_live_run:
        raise StepFailed("the menu runs no Clonezilla job")
    try:
        job = parse_job(verdict.ocs_live_run)
    except JobError as error:
        raise StepFailed(f"{session.menu_file}: {error}") from None
    if job.image != bench.image:
        raise StepFailed(f"the job restores {job.image}; the lab serves {bench.image}")
    session.job = job
    return Done(job.describe())


def read_image(bench: Bench, session: PcSession) -> Done:
    job = _job(session)
    try:
        image, read = imaging.read_image_nfs(
            session.procs, session.host, bench.server, str(bench.images_root), job.image
        )
    except (ImageError, imaging.ImagingError) as error:
        raise StepFailed(str(error)) from None
    session.image = image
    kinds = ", ".join(f"{s.part} {s.fs} {s.compression.value}" for s in image.streams)
    return Done(f"disk {image.disk}, {image.disk_bytes} bytes; {kinds}", read)


def restore(bench: Bench, session: PcSession) -> Done:
    job, image, setup = _job(session), _image(session), _imaging(bench)
    disk = session.procs.scratch(f"disk-{session.host.name}") / "disk.img"
    session.disk = disk
    if session.pc.hostname in setup.clonezilla_clients:
        try:
            ran = ocs_client.run_ocs_sr(
                session.procs,
                session.host,
                job,
                server=bench.server,
                images_root=bench.images_root,
                disk=disk,
                disk_bytes=image.disk_bytes,
            )
        except imaging.ImagingError as error:  # a busy loop device, a disk that is no loop
            raise StepFailed(str(error)) from None
        session.clonezilla = ran
        if not ran.ok:
            raise StepFailed(f"ocs-sr exit {ran.returncode}: {ran.output[-300:]}")
        return Done(f"ocs-sr {job.describe()}: exit 0 in {ran.seconds:.1f} s", image.stream_bytes)
    if job.mode == "multicast":
        restored = imaging.restore_multicast(
            session.procs, session.host, image, job, disk, start_timeout=setup.start_timeout
        )
    else:
        restored = imaging.restore_unicast(
            session.procs,
            session.host,
            image,
            job,
            disk,
            server=bench.server,
            images_root=str(bench.images_root),
        )
    session.restore = restored
    if not restored.ok:
        raise StepFailed(restored.problems())
    return Done(f"{len(restored.partitions)} partitions restored", restored.stream_bytes)


def verify(bench: Bench, session: PcSession) -> Done:
    image, setup = _image(session), _imaging(bench)
    if session.disk is None:
        raise StepFailed("nothing was restored")
    try:
        verified = imaging.verify(
            session.procs,
            session.host.netns,
            session.disk,
            image=image,
            reference=setup.reference,
            expected_files=setup.expected_files,
        )
    except imaging.ImagingError as error:
        raise StepFailed(str(error)) from None
    return Done(verified.detail)


def report(bench: Bench, session: PcSession) -> Done:
    """The job report, once the disk is proven (a failed step before stops the PC)."""
    job, image, setup = _job(session), _image(session), _imaging(bench)
    if session.restore is None:
        return Done("sent by ocs-sr itself")
    address = session.lease.address.ip if session.lease is not None else session.host.address
    if address is None:
        raise StepFailed("the PC has no address to report from")
    line = report_line(address, session.host.mac, job.mode, image.name, session.restore.partitions)
    try:
        imaging.send_report(session.procs, session.host, bench.server, line, port=setup.report_port)
    except imaging.ImagingError as error:
        raise StepFailed(str(error)) from None
    return Done(line, len(line) + 1)


def reboot(bench: Bench, session: PcSession) -> Done:
    """After the report the PC restarts and PXE-boots again: its menu must now boot the
    local disk. The server disarms it in a pass after the report: wait for that, bounded."""
    setup = _imaging(bench)
    if setup.settled is not None:
        deadline = time.monotonic() + setup.settle_timeout
        while not setup.settled(session.pc.hostname):
            if time.monotonic() > deadline:
                raise StepFailed(f"the server did not settle the PC in {setup.settle_timeout} s")
            time.sleep(0.2)
    return menu(replace(bench, armed={}), session)


BASE_STEPS: tuple[tuple[str, Step], ...] = (
    ("dhcp", dhcp),
    ("boot-file", boot_file),
    ("loader", loader),
    ("menu", menu),
    ("nfs", nfs),
)
UNKNOWN_PC_STEPS: tuple[tuple[str, Step], ...] = (("dhcp", dhcp),)
"""A PC not in the site repo: an address from the pool and no boot file, nothing more."""


IMAGING_STEPS: tuple[tuple[str, Step], ...] = (
    ("job", read_job),
    ("image", read_image),
    ("restore", restore),
    ("verify", verify),
    ("report", report),
)
"""What a PC whose menu is armed does after the base steps (needs `Bench.imaging`)."""
REBOOT_STEPS: tuple[tuple[str, Step], ...] = (("reboot", reboot),)
"""After the report, when a server takes reports (the rehearsal's controller does)."""


def steps_for(
    pc: labsite.LabPc, *, armed: bool = False, reboot: bool = False
) -> tuple[tuple[str, Step], ...]:
    """The steps one PC plays, in order; the imaging steps only when its menu is armed,
    then the reboot to local boot when asked for."""
    if not pc.in_site:
        return UNKNOWN_PC_STEPS
    steps = list(BASE_STEPS)
    if len(pc.macs) > 1:
        steps.insert(1, ("dhcp-dock", dhcp_dock))
    if armed:
        steps += IMAGING_STEPS
        if reboot:
            steps += REBOOT_STEPS
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


def _job(session: PcSession) -> Job:
    if session.job is None:
        raise StepFailed("no job read yet")
    return session.job


def _image(session: PcSession) -> Image:
    if session.image is None:
        raise StepFailed("no image read yet")
    return session.image


def _imaging(bench: Bench) -> ImagingBench:
    if bench.imaging is None:
        raise StepFailed("the lab set up no imaging (no reference restore to verify against)")
    return bench.imaging


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
