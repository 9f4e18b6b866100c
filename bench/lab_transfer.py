"""Multicast against unicast in the lab: wall time and bytes the server sends, for 1, 2, 4
and 8 PCs, in one run (issue 6, "Measure"). Root only; not part of `make bench`
(`make bench-lab` runs it).

It builds a lab network of its own (reconciler.lab.netns: a switch namespace, the server
`srv` at 192.168.100.1 and PCs `pc1`... at .11, ...; veth pairs on a bridge), copies the
image (default: the tests' cached real Clonezilla image) under /var/lib/kitting-lab, serves
it from the server namespace with nfs-ganesha (through the lab's service manager), and
restores the same image, no network, as the reference. Then, for each number of PCs and
each repetition, one trial per mode:

- multicast: the reconciler's own sender path. The udp-sender runs of
  `deployment_session.multicast_runs` with the settings a default batch gets (the site's
  default group, port and TTL, no bitrate cap, `--min-receivers N`, `--max-wait` the
  batch default), started by `sessions.SessionRunner` as the controller starts them: the
  feeder process (`reconciler.session_feed`) inside the server namespace, writing the
  chunk files unmodified into each udp-sender. Each PC runs the lab client's restore
  (`imaging.restore_multicast`: udp-receiver | gzip -dc | partclone onto a disk file).
- unicast: each PC reads the chunks over NFS from nfs-ganesha with libnfs (`nfs-cat`) and
  restores them the same way (`imaging.restore_unicast`), as the lab's unicast path does.

The clock runs from just before the sender (or the first PC) starts until the last PC's
partclone has finished. The image's metadata is read from its directory beforehand, so
the figures are the partitions' transfer and restore only (a PC reads a few KB more over
NFS in a real kitting day, in both modes). Bytes sent are the server's tx_bytes (every
interface but lo, /sys/class/net inside its namespace) before and after the trial, with
the feeder finished. Each restored disk is then verified (partition table, byte for byte
against the reference, and for the fixture its known files): a trial that restored
anything else stops the run with exit status 2. Exit status 1: the targets were missed.

    .venv/bin/python bench/lab_transfer.py [--pcs 1,2,4,8] [--repeat 3] [--image DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType

from loguru import logger

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: tests.fixtures holds the image recipe

from reconciler import session_feed  # noqa: E402
from reconciler.clock import SystemClock  # noqa: E402
from reconciler.deployment_facts import SessionStarted  # noqa: E402
from reconciler.deployment_machine import StartSession  # noqa: E402
from reconciler.deployment_session import (  # noqa: E402
    PartitionStream,
    SessionSpec,
    multicast_runs,
)
from reconciler.desired import Batch, Multicast  # noqa: E402
from reconciler.lab import imaging, measure, probes  # noqa: E402
from reconciler.lab.measure import Counter, Mode, Trial  # noqa: E402
from reconciler.lab.netns import Host, NicSpec, VirtualNetwork  # noqa: E402
from reconciler.lab.ocs_image import Image  # noqa: E402
from reconciler.lab.ocs_job import Job  # noqa: E402
from reconciler.lab.procs import ProcessRegistry, netns_argv  # noqa: E402
from reconciler.lab.services import LabServices  # noqa: E402
from reconciler.lab.workspace import LAB_BASE  # noqa: E402
from reconciler.layout import Layout  # noqa: E402
from reconciler.rendered import Service  # noqa: E402
from reconciler.sessions import SessionRunner, directory_name  # noqa: E402
from tests.fixtures import clonezilla  # noqa: E402

RESULTS = HERE / "results"
SERVER = IPv4Address("192.168.100.1")
FIRST_PC = 11  # pc1 is 192.168.100.11
PROGRAMS = (
    "udp-sender", "udp-receiver", "partclone.vfat", "partclone.ntfs", "gzip", "sfdisk",
    "nfs-ls", "nfs-cat", "mtype", "ntfscat", "rpcbind", "ganesha.nfsd",
)  # fmt: skip
START_TIMEOUT = 120
"""udp-sender --start-timeout (the controller gives the time left in the window)."""
FEEDER_END = 60.0
"""Seconds the feeder may take to end after the last PC finished."""
TRIAL_LIMIT = 600.0
"""Seconds one trial may take in all before the run is abandoned."""
COUNTERS = (
    'for d in /sys/class/net/*; do echo "${d##*/}" "$(cat "$d/statistics/tx_bytes")" '
    '"$(cat "$d/statistics/tx_packets")"; done'
)
# The export as the reconciler renders it for nfs-ganesha (render/nfs.py), for one network.
GANESHA = """NFS_CORE_PARAM {{
    MNT_Port = 20048;
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{root}";
    Pseudo = "{root}";
    Protocols = 3, 4;
    Access_Type = None;
    Squash = root_squash;
    FSAL {{
        Name = VFS;
    }}
    CLIENT {{
        Clients = 192.168.100.0/24;
        Access_Type = RO;
    }}
}}
"""


class BenchError(RuntimeError):
    """The bench could not measure (a restore failed or was not verified)."""


class _Stopped(BaseException):
    """SIGTERM: end as Ctrl-C does, so every `finally` tears down."""


@dataclass
class Lab:
    net: VirtualNetwork
    server: Host
    pcs: list[Host]
    base: Path
    images_root: Path
    image: Image
    reference: Path
    expected_files: Mapping[int, Mapping[str, bytes]] | None

    @property
    def image_dir(self) -> Path:
        return self.images_root / self.image.name


# ---------------------------------------------------------------- the lab


def build_lab(
    net: VirtualNetwork, base: Path, source: Path, pcs: int, fixture: bool
) -> tuple[Lab, LabServices]:
    net.add_switch()
    server = net.add_host("srv", nics=[NicSpec(address=f"{SERVER}/24")])
    hosts = [
        net.add_host(f"pc{i}", nics=[NicSpec(address=f"192.168.100.{FIRST_PC + i - 1}/24")])
        for i in range(1, pcs + 1)
    ]
    images_root = base / "partimag"
    images_root.mkdir(mode=0o755)
    shutil.copytree(source, images_root / source.name)
    for path in images_root.rglob("*"):  # root-squashed NFS reads as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    layout = Layout(ganesha_conf=str(base / "ganesha-kitting.conf"))
    Path(layout.ganesha_conf).write_text(GANESHA.format(root=images_root))
    services = LabServices(net.procs, server.netns, layout, base / "private")
    services.restart(Service.nfs_ganesha)
    image = imaging.read_image_dir(images_root / source.name)
    reference = base / "reference.img"
    imaging.restore_local(net.procs, server.netns, images_root / source.name, reference)
    expected = {1: dict(clonezilla.ESP_FILES), 2: clonezilla.data_files()} if fixture else None
    lab = Lab(net, server, hosts, base, images_root, image, reference, expected)
    return lab, services


def read_counters(lab: Lab) -> dict[str, Counter]:
    done = lab.net.procs.run(
        ["sh", "-c", COUNTERS], netns=lab.server.netns, timeout=10, name="counters"
    )
    if not done.ok:
        raise BenchError(f"reading the server's counters: {done.text}")
    return measure.parse_counters(done.stdout.decode())


def sender_runs(lab: Lab, receivers: int, max_bitrate: int | None) -> SessionSpec:
    """The session a default multicast batch of `receivers` PCs gets (deployment_rules'
    session_spec with the site's and the batch's defaults)."""
    site = Multicast()
    partitions = [
        PartitionStream(part, tuple(str(lab.image_dir / c) for c in lab.image.stream(part).chunks))
        for part in lab.image.parts
    ]
    runs = multicast_runs(
        partitions,
        interface="e0",
        portbase=site.port,
        data_group=site.group,
        ttl=site.ttl,
        min_receivers=receivers,
        max_wait=int(Batch.model_fields["max_wait"].default),
        start_timeout=START_TIMEOUT,
        max_bitrate=max_bitrate if max_bitrate is not None else site.max_bitrate,
    )
    key = f"bench-{receivers}-{secrets.token_hex(4)}@{secrets.token_hex(8)}"
    return SessionSpec(key, f"bench-{receivers}", runs=runs, summary="bench")


# ---------------------------------------------------------------- one trial


@dataclass(frozen=True)
class PcResult:
    restore: imaging.DiskRestore
    finished: float  # time.monotonic()


def restore_one(lab: Lab, mode: Mode, pc: Host, disk: Path, logs: Path) -> PcResult:
    job = Job(mode=mode, image=lab.image.name, disk=lab.image.disk, mcast_port=Multicast().port)
    with ProcessRegistry(logs) as procs:
        if mode == "multicast":
            restored = imaging.restore_multicast(procs, pc, lab.image, job, disk)
        else:
            restored = imaging.restore_unicast(
                procs, pc, lab.image, job, disk, server=SERVER, images_root=str(lab.images_root)
            )
    return PcResult(restored, time.monotonic())


def trial(
    lab: Lab, mode: Mode, count: int, serial: int, *, keep: bool, max_bitrate: int | None
) -> tuple[Trial, dict[str, object]]:
    pcs = lab.pcs[:count]
    work = lab.base / f"trial-{serial:02d}-{mode}-{count}"
    work.mkdir()
    disks = [work / f"{pc.name}.img" for pc in pcs]
    runner: SessionRunner | None = None
    spec: SessionSpec | None = None
    before = read_counters(lab)
    started = time.monotonic()
    try:
        if mode == "multicast":
            runner = SessionRunner(
                work / "sessions",
                root="/",
                clock=SystemClock(),
                wrap=lambda argv: netns_argv(lab.server.netns, argv),
            )
            spec = sender_runs(lab, count, max_bitrate)
            began = runner.start(StartSession(spec.key, spec.batch, spec))
            if not isinstance(began, SessionStarted):
                raise BenchError(f"the session did not start: {began}")
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(restore_one, lab, mode, pc, disk, work / "logs" / pc.name)
                for pc, disk in zip(pcs, disks, strict=True)
            ]
            results = [f.result(timeout=TRIAL_LIMIT) for f in futures]
        seconds = max(r.finished for r in results) - started
        usage = None
        if runner is not None and spec is not None:
            wait_ended(runner, spec.key)
            usage = runner.usage(spec.key)
        after = read_counters(lab)
    finally:
        if runner is not None:
            runner.close()
    failed = [
        f"{pc.name}: {r.restore.problems() or 'incomplete'}"
        for pc, r in zip(pcs, results, strict=True)
        if not r.restore.ok or len(r.restore.partitions) != len(lab.image.parts)
    ]
    if failed:
        raise BenchError(f"{mode} to {count} PCs: restore failed: {'; '.join(failed)}")
    verified = verify_all(lab, pcs, disks, work, keep=keep)
    resent = 0
    wire = measure.sent(before, after)
    if usage is not None and spec is not None:
        bad = [p for p in usage.partitions if p.returncode != 0 or not p.transferred]
        joined = {len(p.receivers) for p in usage.partitions}
        if bad or usage.exit_code != 0 or joined != {count}:
            raise BenchError(f"the session's feeder says: {usage}")
        payload = sum(p.bytes for p in usage.partitions)
        log = (work / "sessions" / directory_name(spec.key) / session_feed.OUTPUT).read_text(
            errors="replace"
        )
        resent = sum(measure.retransmissions(log))
    else:
        payload = sum(r.restore.stream_bytes for r in results)
    if not keep:
        shutil.rmtree(work)
    extra: dict[str, object] = {
        "per_interface_before": {k: asdict(v) for k, v in before.items()},
        "per_interface_after": {k: asdict(v) for k, v in after.items()},
        "verified": verified,
        "pc_seconds": [round(r.finished - started, 3) for r in results],
    }
    if spec is not None:
        extra["sender_argv"] = [list(run.argv) for run in spec.runs]
    return Trial(mode, count, seconds, wire.tx_bytes, wire.tx_packets, payload, resent), extra


def wait_ended(runner: SessionRunner, key: str) -> None:
    deadline = time.monotonic() + FEEDER_END
    for _ in range(int(FEEDER_END / 0.05) + 1):
        if not runner.alive_pids() or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if runner.alive_pids():
        raise BenchError(f"session {key}: the feeder still runs {FEEDER_END:g} s after the PCs")


def verify_all(
    lab: Lab, pcs: Sequence[Host], disks: Sequence[Path], work: Path, *, keep: bool
) -> list[str]:
    details = []
    with ProcessRegistry(work / "logs" / "verify") as procs:
        for pc, disk in zip(pcs, disks, strict=True):
            try:
                done = imaging.verify(
                    procs,
                    pc.netns,
                    disk,
                    image=lab.image,
                    reference=lab.reference,
                    expected_files=lab.expected_files,
                )
            except imaging.ImagingError as error:
                raise BenchError(f"{pc.name}'s disk {disk} is not the image: {error}") from error
            details.append(f"{pc.name}: {done.detail}")
            if not keep:
                disk.unlink()
    return details


# ---------------------------------------------------------------- the run


def machine() -> dict[str, object]:
    try:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "udpcast"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        version = ""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "udpcast": version,
        "network": "veth pairs on a Linux bridge (no STP, no multicast snooping), namespaces",
    }


def arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcs", default="1,2,4,8", help="numbers of PCs (default 1,2,4,8)")
    parser.add_argument("--repeat", type=int, default=3, help="trials per mode and number")
    parser.add_argument(
        "--image", type=Path, help="a Clonezilla image directory (default: fixture)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "lab_transfer.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "lab_transfer.md")
    parser.add_argument(
        "--max-bitrate",
        type=int,
        help="udp-sender --max-bitrate in bits/s (default: none, as the reconciler's default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory, disks too")
    parser.add_argument("--verbose", action="store_true", help="log every program started")
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(word) for word in args.pcs.split(",")})
    except ValueError:
        parser.error(f"--pcs takes numbers separated by commas: {args.pcs!r}")
    if not args.counts or not all(1 <= n <= 32 for n in args.counts):
        parser.error("--pcs takes numbers from 1 to 32")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat takes 1 to 20")
    return args


def main(argv: Sequence[str]) -> int:
    args = arguments(argv)
    if os.geteuid() != 0:
        print("error: the lab bench builds network namespaces: run it as root", file=sys.stderr)
        return 2
    search = os.pathsep.join((os.environ.get("PATH", ""), probes.PROBE_PATH))
    missing = [p for p in PROGRAMS if shutil.which(p, path=search) is None]
    if missing:
        print(f"error: needs {', '.join(missing)} (tests/debian-packages.txt)", file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "WARNING")
    fixture = args.image is None
    source = clonezilla.build_or_reuse().image_dir if fixture else args.image.resolve()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, stop)
    LAB_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    base = LAB_BASE / f"bench-{os.getpid()}-{secrets.token_hex(3)}"
    base.mkdir(mode=0o755)
    trials: list[Trial] = []
    details: list[dict[str, object]] = []
    load_before = os.getloadavg()
    try:
        with VirtualNetwork.create(log_dir=base / "logs") as net:
            lab, services = build_lab(net, base, source, max(args.counts), fixture)
            try:
                print(
                    f"lab {net.prefix}: image {lab.image.name}, {lab.image.stream_bytes} bytes "
                    f"of streams, disk {lab.image.disk_bytes} bytes",
                    flush=True,
                )
                serial = 0
                for repeat in range(args.repeat):
                    for count in args.counts:
                        # alternate which mode goes first, so neither always meets a warm cache
                        modes = measure.MODES if repeat % 2 == 0 else measure.MODES[::-1]
                        for mode in modes:
                            serial += 1
                            done, extra = trial(
                                lab,
                                mode,
                                count,
                                serial,
                                keep=args.keep,
                                max_bitrate=args.max_bitrate,
                            )
                            trials.append(done)
                            details.append({**asdict(done), **extra})
                            print(
                                f"{mode:9} {count} PC(s)  {done.seconds:6.2f} s  "
                                f"{done.wire_bytes:>11} bytes sent  verified",
                                flush=True,
                            )
            finally:
                services.stop_all()
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        print(f"logs kept in {base}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stopped):
        print(f"stopped; logs in {base}", file=sys.stderr)
        return 130
    load_after = os.getloadavg()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    image_bytes = lab.image.stream_bytes
    rows = measure.summarize(trials)
    verdicts = measure.judge(rows, image_bytes)
    table = measure.markdown(rows, image_bytes)
    spec = sender_runs(lab, max(args.counts), args.max_bitrate)
    info = machine()
    head = (
        f"Image {lab.image.name}: {image_bytes} bytes of partition streams "
        f"({len(lab.image.parts)} partitions), disk {lab.image.disk_bytes} bytes. "
        f"Median of {args.repeat} trials. {info['cpus']} CPUs ({info['cpu_model']}), "
        f"kernel {info['kernel']}, {info['network']}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.\n\n"
        f"Sender ({max(args.counts)} PCs, first partition): `{' '.join(spec.runs[0].argv)}`\n\n"
    )
    judged = "".join(
        f"- {v.name}: {'met' if v.held else 'MISSED'} ({v.detail})\n" for v in verdicts
    )
    text = head + table + "\n" + judged
    print("\n" + text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "image": {
            "name": lab.image.name,
            "stream_bytes": image_bytes,
            "disk_bytes": lab.image.disk_bytes,
            "source": str(source),
        },
        "repeat": args.repeat,
        "max_bitrate": args.max_bitrate,
        "rows": [asdict(row) for row in rows],
        "verdicts": [asdict(v) for v in verdicts],
        "trials": details,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(v.held for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
