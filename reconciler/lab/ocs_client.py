"""Clonezilla's own client, `ocs-sr`, played by a simulated PC against the lab's feed.

A real Clonezilla client mounts the server's /home/partimag over NFS and runs the menu's
`ocs-sr ... multicast_restoredisk IMAGE DISK`. Here, from the PC's network namespace:

- the PC's disk is a zeroed file attached to the loop device the image was saved from
  (`losetup --partscan /dev/loopN FILE`): ocs-sr's multicast restore needs the disk name
  of the save (FIELD_NOTES), so the job's disk must be a loop device name, and a free one;
  it is detached again whatever happens, and only if it is still ours;
- ocs-sr runs in a private mount namespace (`unshare --mount`) where the image root is
  bound read-only at /home/partimag (this kernel has no NFS client: the server's
  directory stands for the NFS mount), /tmp is private, /var/log is a directory of the
  PC's (ocs-sr's logs are kept), and /etc/drbl/drbl-ocs.conf is a copy with the two
  random waits (SLEEP_TIME_AFTER_PART_CLONED, NOTIFY_OCS_SERVER_TIME_LIMIT) at 0: ocs-sr
  still sleeps its fixed 3 s and more between steps, so a restore takes about 35 s;
- its options are the lab's, not the menu's: `-p true` (the menu's `-p reboot` would
  reboot this machine), `-iefi -ssnf` (never touch this machine's EFI NVRAM), `-irvd`
  (no ntfsfix: the restored disk must equal the reference byte for byte), and `-os
  SERVER`, the server to report to;
- ocs-sr sends its job report to port 6461 itself only when DRBL's `ocs-run` started it
  (`is_spawned_by_drbl_ocs` looks at its parent's command name): the wrapper shell names
  itself `ocs-run`, so the report on the wire is Clonezilla's own line.

Its success is not taken from its exit status: the disk is verified like the simulated
clients' (`imaging.verify`).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from loguru import logger

from reconciler.lab import probes
from reconciler.lab.imaging import ImagingError
from reconciler.lab.netns import Host
from reconciler.lab.ocs_job import Job
from reconciler.lab.procs import ProcessRegistry

DRBL_OCS_CONF = Path("/etc/drbl/drbl-ocs.conf")
OCS_TIMEOUT = 240.0
"""Seconds ocs-sr may take (about 35 s for the test image)."""
LOSETUP_TIMEOUT = 10.0
DETACH_WAIT = 10.0
"""Seconds to keep trying to detach a loop device still busy after ocs-sr's last sync."""

LAB_OPTIONS = ("-l", "en_US.UTF-8", "-batch", "-nogui", "-p", "true", "-iefi", "-ssnf", "-irvd")
"""ocs-sr options of the lab's client (see the module docstring for why each)."""
QUICK_SETTINGS = {"SLEEP_TIME_AFTER_PART_CLONED": "0", "NOTIFY_OCS_SERVER_TIME_LIMIT": "0"}
"""drbl-ocs.conf settings the lab's client changes: random waits meant to spread a
classroom of clients over time."""

_LOOP = re.compile(r"loop[0-9]{1,3}")


def wrapper(*, writable: bool = False) -> str:
    """The shell script that runs ocs-sr in a private mount namespace, argv
    "bash -c SCRIPT ocs-run IMAGES CONF LOGS OCS-SR...": IMAGES stands for the NFS-mounted
    /home/partimag (read-only for a restore, `writable` for a savedisk), /tmp private,
    /var/log the PC's LOGS, CONF for drbl-ocs.conf. Purely computational."""
    read_only = "" if writable else "mount -o remount,bind,ro /home/partimag\n"
    return f"""set -eu
images=$1 conf=$2 logs=$3
shift 3
# The working directory holds the image root: the tmpfs mounts below may hide its path.
cd "$images"
mount --bind "$conf" /etc/drbl/drbl-ocs.conf
mount --bind "$logs" /var/log
mount -t tmpfs -o mode=1777 kitting-pc-tmp /tmp
mount -t tmpfs -o mode=0755 kitting-pc-home /home
mkdir /home/partimag
mount --bind . /home/partimag
{read_only}cd /
# ocs-sr reports to the server only when started by DRBL's ocs-run.
printf ocs-run > "/proc/$$/comm"
set +e
"$@"
exit $?
"""


def ocs_sr_argv(job: Job, server: IPv4Address) -> list[str]:
    """The ocs-sr command the lab's client runs for `job`. Purely computational."""
    words = ["ocs-sr", *LAB_OPTIONS, "-os", str(server)]
    if job.mode == "multicast":
        words += ["--mcast-port", str(job.mcast_port), "multicast_restoredisk"]
    else:
        words += ["restoredisk"]
    return [*words, job.image, job.disk]


def quick_conf(text: str) -> str:
    """drbl-ocs.conf with QUICK_SETTINGS in place of the package's values (appended when
    missing). Purely computational."""
    for name, value in QUICK_SETTINGS.items():
        line = f'{name}="{value}"'
        pattern = re.compile(rf"^{name}=.*$", re.MULTILINE)
        text, count = pattern.subn(line, text)
        if count == 0:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


def check_loop_name(disk: str) -> str:
    """Refuse any disk but a loop device: ocs-sr writes to /dev/DISK of this machine.

    Purely computational."""
    if not _LOOP.fullmatch(disk):
        raise ImagingError(
            f"Clonezilla's own client restores onto a loop device only; the job's disk is "
            f"{disk!r} (the image must be saved from a loop device, as the test image is)"
        )
    return disk


@dataclass(frozen=True)
class ClonezillaRun:
    """What ocs-sr did: its exit status, its output's end, where its logs are."""

    returncode: int
    timed_out: bool
    output: str
    seconds: float
    logs: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_ocs_sr(
    procs: ProcessRegistry,
    host: Host,
    job: Job,
    *,
    server: IPv4Address,
    images_root: Path,
    disk: Path,
    disk_bytes: int,
    timeout: float = OCS_TIMEOUT,
) -> ClonezillaRun:
    """Run ocs-sr for `job` from `host` onto a fresh disk file `disk` of `disk_bytes`."""
    name = check_loop_name(job.disk)
    work = procs.scratch("ocs-sr")
    conf = work / "drbl-ocs.conf"
    conf.write_text(quick_conf(DRBL_OCS_CONF.read_text()))
    logs = work / "var-log"
    logs.mkdir()
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as handle:
        handle.truncate(disk_bytes)
    argv = ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", wrapper()]
    argv += ["ocs-run", str(images_root), str(conf), str(logs), *ocs_sr_argv(job, server)]
    with loop_device(procs, host.netns, name, disk):
        started = time.monotonic()
        done = procs.run(
            argv,
            netns=host.netns,
            timeout=timeout,
            name="ocs-sr",
            env={"PATH": probes.PROBE_PATH, "LC_ALL": "C", "TERM": "dumb"},
        )
        seconds = time.monotonic() - started
    logger.bind(target=host.netns, commit=None).info(
        f"ocs-sr {job.describe()}: exit {done.returncode} after {seconds:.1f} s"
    )
    return ClonezillaRun(done.returncode, done.timed_out, done.text[-2000:], seconds, logs)


@contextlib.contextmanager
def loop_device(procs: ProcessRegistry, netns: str, name: str, backing: Path) -> Iterator[str]:
    """Attach `backing` to /dev/NAME (with partition scanning) for the block; detach it
    after, and only if it is still backed by our file. Refuses a device in use: the
    kernel attaches a busy loop device to nobody else."""
    check_loop_name(name)
    device = f"/dev/{name}"
    strays_before = _stray_partition_files(name)
    if strays_before:
        raise ImagingError(f"{', '.join(map(str, strays_before))}: not block devices; remove them")
    attached = procs.run(
        ["losetup", "--partscan", device, str(backing)],
        netns=netns,
        timeout=LOSETUP_TIMEOUT,
        name="losetup",
        env={"PATH": probes.PROBE_PATH},
    )
    if not attached.ok:
        raise ImagingError(f"cannot attach {backing.name} to {device} (in use?): {attached.text}")
    try:
        yield device
    finally:
        _detach(procs, netns, name, backing)
        for stray in _stray_partition_files(name):
            # Written by a tool that found no partition node: never leave it in /dev.
            stray.unlink(missing_ok=True)
            logger.bind(target=netns, commit=None).warning(f"removed stray file {stray}")


def backing_file(name: str) -> str | None:
    """The file behind loop device NAME, or None when it is free."""
    try:
        text = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None
    return text.removesuffix(" (deleted)")


def _detach(procs: ProcessRegistry, netns: str, name: str, backing: Path) -> None:
    deadline = time.monotonic() + DETACH_WAIT
    while backing_file(name) == str(backing.resolve()):
        done = procs.run(
            ["losetup", "--detach", f"/dev/{name}"],
            netns=netns,
            timeout=LOSETUP_TIMEOUT,
            name="losetup-detach",
            env={"PATH": probes.PROBE_PATH},
        )
        if done.ok:
            return
        if time.monotonic() > deadline:
            raise ImagingError(f"/dev/{name} stays attached to {backing}: {done.text}")
        time.sleep(0.5)  # busy for a moment after the last sync


def _stray_partition_files(name: str) -> list[Path]:
    """Files named like NAME's partitions in /dev that are not block devices."""
    return sorted(
        path
        for path in Path("/dev").glob(f"{name}p*")
        if re.fullmatch(rf"{name}p[0-9]+", path.name) and not path.is_block_device()
    )
