"""Deployments through the controller: a merged batch is armed in its window, each PC's
entry is withdrawn when it boots or reports, and after the window no per-PC entry is left.

Sandbox root, the example site repo, and seams where the pure state is what matters: a
FakeSessions (records session commands, says which PIDs live), image facts handed in, no
prerequisite missing, and the report listener on a loopback port. The example's batch
`sales-2026-12-07` restores win11-sales-2025 by multicast to the 20 sales PCs (21 NICs:
SALES-PC-03 is a laptop with a dock) from 2026-12-07 09:00 to 12:00 Tokyo time.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.batch_history import Usage
from reconciler.clock import Clock, FixedClock
from reconciler.controller import Controller
from reconciler.deploy_shell import DeployShell
from reconciler.deployment_state import DeploymentState
from reconciler.deployments import (
    ImageFacts,
    Observation,
    PartitionStream,
    Requirement,
    SessionStarted,
    StartSession,
    StopSession,
)
from reconciler.desired import Desired
from reconciler.layout import Layout

from .siterepo import TOKYO, SiteRepo, events, settings, wait_until

IMAGE = "/home/partimag/win11-sales-2025"
WIN11_SALES = ImageFacts(
    partitions=(
        PartitionStream("nvme0n1p1", (f"{IMAGE}/nvme0n1p1.vfat-ptcl-img.gz.aa",)),
        PartitionStream(
            "nvme0n1p2",
            (f"{IMAGE}/nvme0n1p2.ntfs-ptcl-img.gz.aa", f"{IMAGE}/nvme0n1p2.ntfs-ptcl-img.gz.ab"),
        ),
    )
)
PXE = "srv/tftp/pxelinux.cfg"
GRUB = "srv/tftp/grub"
PC01_MAC = "02:4b:49:54:01:01"
PC02_MAC = "02:4b:49:54:01:02"
SALES_MACS = 21
LOG = "var/log/kitting/dnsmasq.log"


def tokyo(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=TOKYO)


def entry_names(mac: str) -> tuple[str, str]:
    name = "01-" + mac.replace(":", "-")
    return f"{PXE}/{name}", f"{GRUB}/grub.cfg-{name}"


class FakeSessions:
    """Records what the controller asks; says which feeders live."""

    def __init__(self, clock: Clock, *, adopt: list[Observation] | None = None) -> None:
        self.clock = clock
        self.started: list[StartSession] = []
        self.stopped: list[StopSession] = []
        self.alive: set[int] = set()
        self.adopted = adopt or []
        self.news: list[Observation] = []
        self.closed = False

    def start(self, command: StartSession) -> SessionStarted:
        self.started.append(command)
        pid = 4242 + len(self.started) - 1
        self.alive.add(pid)
        return SessionStarted(command.key, pid, self.clock.now())

    def stop(self, command: StopSession) -> None:
        self.stopped.append(command)
        if command.pid is not None:
            self.alive.discard(command.pid)

    def adopt(self) -> list[Observation]:
        found, self.adopted = self.adopted, []
        return found

    def observe(self) -> list[Observation]:
        return list(self.news)

    def commit(self) -> None:
        self.news = []

    def alive_pids(self) -> frozenset[int]:
        return frozenset(self.alive)

    def has_news(self) -> bool:
        return bool(self.news)

    def usage(self, key: str) -> Usage:
        return Usage()

    def forget(self, keep: Collection[str]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def loopback(address: str, port: int) -> socket.socket:
    """The site says 192.168.100.1:6461; the test listens on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def images(desired: Desired, state: DeploymentState, now: datetime) -> Mapping[str, ImageFacts]:
    return {"win11-sales-2025": WIN11_SALES}


def nothing_missing(desired: Desired) -> Mapping[Requirement, str]:
    return {}


def shell(root: Path, clock: Clock, sessions: FakeSessions) -> DeployShell:
    return DeployShell(
        str(root),
        Layout(),
        clock,
        sessions=sessions,
        images=images,
        prerequisites=nothing_missing,
        listen=loopback,
        localize=lambda naive: naive.replace(tzinfo=TOKYO),
    )


class Server:
    """A controller over a sandbox root, its fake sessions, and the way to reach it."""

    def __init__(self, site: SiteRepo, root: Path, clock: Clock, **kw: Any) -> None:
        self.site = site
        self.root = root
        self.sessions = FakeSessions(clock, **kw)
        self.shell = shell(root, clock, self.sessions)
        self.controller = Controller(settings(site, root), clock=clock, deployments=self.shell)

    def entries(self) -> list[str]:
        """The per-PC boot files under the TFTP root."""
        tftp = self.root / "srv" / "tftp"
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in tftp.rglob("*")
            if p.is_file() and ("/01-" in p.as_posix() or "grub.cfg-01-" in p.name)
        )

    def restore_jobs(self) -> list[str]:
        """Every file under the TFTP root that runs a Clonezilla job."""
        tftp = self.root / "srv" / "tftp"
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in tftp.rglob("*")
            if p.is_file() and b"ocs_live_run" in p.read_bytes()
        )

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.root / "var/lib/kitting/deployments.json").read_bytes()
        )
        return data

    def batch(self, name: str = "sales-2026-12-07") -> dict[str, Any]:
        (record,) = [r for r in self.state()["batches"].values() if r["name"] == name]
        result: dict[str, Any] = record
        return result

    def send_report(self, line: str) -> None:
        listener = self.shell._listener
        assert listener is not None, "the report listener is not running"
        host, port = listener.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(line.encode() + b"\n")

    def tftp_sent(self, at: datetime, mac: str, client: str) -> None:
        """A line as dnsmasq writes it when it sent the PC's BIOS entry."""
        log = self.root / LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        stamp = f"{at:%b} {at.day:2d} {at:%H:%M:%S}"
        path = "/" + entry_names(mac)[0]
        with log.open("a") as handle:
            handle.write(f"{stamp} dnsmasq-tftp[77]: sent {path} to {client}\n")

    def close(self) -> None:
        self.shell.close()


def report(mac: str, ip: str, status: str = "success") -> str:
    return (
        f"{ip} {mac} Multicast restored win11-sales-2025, /dev/nvme0n1p1, {status}, 104 MB, "
        ".050 mins, 2080.0 MB/min; /dev/nvme0n1p2, success, 20.1 GB, 3.200 mins, 6.2 GB/min;"
    )


@pytest.fixture
def server(site: SiteRepo, root: Path, clock: FixedClock) -> Iterator[Server]:
    (root / "home" / "partimag").mkdir(parents=True)
    made = Server(site, root, clock)
    try:
        made.controller.pass_once()  # the commit is applied a week before the window
        yield made
    finally:
        made.close()


def test_the_window_arms_every_target_and_starts_one_session(
    server: Server, clock: FixedClock, root: Path
) -> None:
    assert server.entries() == []
    clock.set(tokyo(7, 8, 59, 59))
    server.controller.pass_once("poll", converge=True)
    assert server.entries() == []
    assert server.batch()["phase"] == "pending"

    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    assert len(server.entries()) == 2 * SALES_MACS
    pxe_file, grub_file = (root / name for name in entry_names(PC01_MAC))
    for text in (pxe_file.read_text(), grub_file.read_text()):
        assert (
            'ocs_live_run="ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot '
            '--mcast-port 2232 multicast_restoredisk win11-sales-2025 nvme0n1"'
        ) in text
    (command,) = server.sessions.started
    assert command.batch == "sales-2026-12-07"
    assert [(run.partition, run.portbase) for run in command.spec.runs] == [
        ("nvme0n1p1", 2232),
        ("nvme0n1p2", 2234),
    ]
    # 20 PCs wanted, an hour's start timeout (the batch says 1h; 3 h of window are left),
    # the site's 800m cap in bits per second
    assert command.spec.runs[0].argv == (
        "udp-sender", "--full-duplex", "--max-bitrate", "800000000",
        "--min-receivers", "20", "--max-wait", "600", "--start-timeout", "3600",
        "--interface", "enp1s0", "--nokbd", "--mcast-all-addr", "224.0.0.1",
        "--mcast-data-address", "239.192.0.1", "--portbase", "2232", "--ttl", "1",
    )  # fmt: skip
    assert server.batch()["phase"] == "armed"
    assert len(events(root, "pc_armed")) == 20
    assert [e.target for e in events(root, "session_requested")] == [
        f"sales-2026-12-07@{server.batch()['content']}"
    ]
    # the files went through apply: audited, with the commit
    written = {e.target for e in events(root, "file_written")}
    assert "/" + entry_names(PC01_MAC)[1] in written

    # the next pass records the session's start; nothing is started twice
    server.controller.pass_once("poll", converge=True)
    assert len(server.sessions.started) == 1
    assert server.batch()["session"]["pid"] == 4242
    assert server.batch()["session"]["phase"] == "running"


def test_a_report_disarms_its_pc_in_the_same_pass(
    server: Server, clock: FixedClock, root: Path
) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    clock.set(tokyo(7, 9, 40))
    server.send_report(report(PC01_MAC, "192.168.100.55"))
    wait_until(server.shell.has_news, 5, "the report queued")

    server.controller.pass_once("report", converge=True)
    left = server.entries()
    assert len(left) == 2 * SALES_MACS - 2
    assert not set(entry_names(PC01_MAC)) & set(left)
    pc = server.batch()["pcs"]["SALES-PC-01"]
    assert (pc["phase"], pc["reason"], pc["reported"]) == (
        "succeeded",
        "ReportedSuccess",
        "succeeded",
    )
    (succeeded,) = events(root, "pc_succeeded")
    assert succeeded.target == "SALES-PC-01"
    assert succeeded.commit is not None
    removed = {e.target for e in events(root, "file_removed")}
    assert {"/" + name for name in entry_names(PC01_MAC)} <= removed
    # the same report again changes nothing
    server.send_report(report(PC01_MAC, "192.168.100.55"))
    wait_until(server.shell.has_news, 5, "the report queued")
    server.controller.pass_once("report", converge=True)
    assert [e.details["reason"] for e in events(root, "report_ignored")] == ["DuplicateReport"]
    assert len(server.entries()) == 2 * SALES_MACS - 2


def test_a_pc_that_fetches_its_entry_again_is_held(
    server: Server, clock: FixedClock, root: Path
) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    assert server.shell.has_news()  # the session's start, for the next step
    server.controller.pass_once("session", converge=True)
    log = root / LOG
    with log.open("a") as handle:  # DHCP chatter and other files are no reason for a pass
        handle.write("Dec  7 09:00:30 dnsmasq-dhcp[77]: 12 DHCPACK(e0) 192.168.100.56 x\n")
        handle.write(
            "Dec  7 09:00:31 dnsmasq-tftp[77]: sent /srv/tftp/pxelinux.0 to 192.168.100.56\n"
        )
    assert not server.shell.has_news()
    server.tftp_sent(tokyo(7, 9, 1), PC02_MAC, "192.168.100.56")
    clock.set(tokyo(7, 9, 1, 1))
    assert server.shell.has_news()
    server.controller.pass_once("deployment", converge=True)
    assert not set(entry_names(PC02_MAC)) & set(server.entries())
    pc = server.batch()["pcs"]["SALES-PC-02"]
    assert (pc["phase"], pc["reason"]) == ("joined", "Booted")

    # two minutes later the PC boots the same entry again (dnsmasq served a stale copy)
    server.tftp_sent(tokyo(7, 9, 3), PC02_MAC, "192.168.100.56")
    clock.set(tokyo(7, 9, 3, 1))
    server.controller.pass_once("deployment", converge=True)
    pc = server.batch()["pcs"]["SALES-PC-02"]
    assert pc["flags"] == ["RefetchedEntry"]
    assert pc["phase"] == "joined"
    (held,) = events(root, "pc_held")
    assert (held.target, held.details["reason"]) == ("SALES-PC-02", "RefetchedEntry")
    assert not set(entry_names(PC02_MAC)) & set(server.entries())


def test_the_window_closing_disarms_everyone_and_stops_the_session(
    server: Server, clock: FixedClock, root: Path
) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    server.send_report(report(PC01_MAC, "192.168.100.55"))
    wait_until(server.shell.has_news, 5, "the report queued")
    clock.set(tokyo(7, 10))
    server.controller.pass_once("report", converge=True)
    assert server.restore_jobs() != []

    clock.set(tokyo(7, 12))
    server.controller.pass_once("window", converge=True)
    # the invariant: after the window no per-PC entry points at a restore job
    assert server.entries() == []
    assert server.restore_jobs() == []
    batch = server.batch()
    assert (batch["phase"], batch["outcome"]) == ("disarmed", "partial")
    phases = {pc["phase"] for host, pc in batch["pcs"].items() if host != "SALES-PC-01"}
    assert phases == {"missed"}
    (stop,) = server.sessions.stopped
    assert (stop.pid, stop.reason) == (4242, "WindowClosed")
    assert events(root, "deployment_recorded") == []  # not before the sender is gone
    server.controller.pass_once("poll", converge=True)
    assert server.batch()["session"]["phase"] == "over"
    # the history, under the images root's logs/
    key = f"sales-2026-12-07@{batch['content']}"
    history = json.loads((root / f"home/partimag/logs/deployment-{key}.json").read_bytes())
    assert history["outcome"] == "partial"
    assert history["tally"] == {"missed": 19, "succeeded": 1}
    assert history["pcs"]["SALES-PC-01"]["report"] == (
        "Multicast restored win11-sales-2025: /dev/nvme0n1p1 success, /dev/nvme0n1p2 success"
    )
    (recorded,) = events(root, "deployment_recorded")
    assert recorded.target == key
    assert recorded.details["outcome"] == "partial"
    # a later pass changes nothing and writes no second history
    server.controller.pass_once("drift", converge=True)
    assert server.entries() == []
    assert len(events(root, "deployment_recorded")) == 1


def test_a_restarted_controller_adopts_the_running_session(
    site: SiteRepo, server: Server, clock: FixedClock, root: Path
) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    server.controller.pass_once("poll", converge=True)  # the start is recorded
    key = f"sales-2026-12-07@{server.batch()['content']}"
    server.close()

    # a new controller process: its runner finds the feeder alive under the same PID
    clock.set(tokyo(7, 9, 5))
    again = Server(site, root, clock, adopt=[SessionStarted(key, 4242, tokyo(7, 9))])
    again.sessions.alive = {4242}
    try:
        again.controller.pass_once("start", converge=True)
        assert again.sessions.started == []
        assert again.batch()["session"]["phase"] == "running"
        (adopted,) = events(root, "session_adopted")
        assert adopted.details["reason"] == "SenderAlive"
        assert len(again.entries()) == 2 * SALES_MACS
    finally:
        again.close()


def test_a_restart_after_the_sender_died_marks_its_waiting_pcs_missed(
    site: SiteRepo, server: Server, clock: FixedClock, root: Path
) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    server.controller.pass_once("poll", converge=True)
    server.close()
    clock.set(tokyo(7, 9, 5))
    again = Server(site, root, clock)  # nothing alive: the feeder died with the old process
    try:
        again.controller.pass_once("start", converge=True)
        assert again.sessions.started == []  # never started twice
        batch = again.batch()
        assert batch["session"]["reason"] == "SenderGone"
        assert {pc["reason"] for pc in batch["pcs"].values()} == {"SessionEnded"}
        assert again.entries() == []
    finally:
        again.close()


def test_a_damaged_state_arms_nobody(server: Server, clock: FixedClock, root: Path) -> None:
    clock.set(tokyo(7, 9))
    server.controller.pass_once("window", converge=True)
    assert server.entries() != []
    server.close()
    (root / "var/lib/kitting/deployments.json").write_text("{ not json")
    again = Server(server.site, root, clock)
    try:
        again.controller.pass_once("start", converge=True)
        assert again.entries() == []
        assert again.sessions.started == []
        # the damaged file is kept for a person to look at, never replaced by an empty state
        assert (root / "var/lib/kitting/deployments.json").read_text() == "{ not json"
    finally:
        again.close()


def test_the_loop_disarms_a_reporting_pc_within_a_second(site: SiteRepo, root: Path) -> None:
    class Running:
        """The real clock moved to the window: the loop's waits are real."""

        def __init__(self, at: datetime) -> None:
            self.offset = at - datetime.now(TOKYO)

        def now(self) -> datetime:
            return datetime.now(TOKYO) + self.offset

    (root / "home" / "partimag").mkdir(parents=True)
    before = Server(site, root, FixedClock(tokyo(1, 8)))
    before.controller.pass_once()  # applied before the loop starts
    before.close()
    clock = Running(tokyo(7, 9, 0, 5))
    live = Server(site, root, clock)
    live.controller.settings = settings(site, root, interval=3600, drift_interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=live.controller.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(live.entries()) == 2 * SALES_MACS, 10, "the batch armed")
        pc01 = set(entry_names(PC01_MAC))
        live.send_report(report(PC01_MAC, "192.168.100.55"))
        sent = time.monotonic()
        elapsed = wait_until(lambda: not pc01 & set(live.entries()), 5, "PC-01 disarmed")
        assert time.monotonic() - sent < 1.0, elapsed
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert live.sessions.closed  # a clean stop stops the sessions too


MASTER = """\
kind: Batch
name: master-2026-12-09
image: win11-master-2026
action: capture
targets: {pcs: [ACC-PC-01]}
mode: unicast
window: {start: "2026-12-09T09:00", end: "2026-12-09T12:00"}
"""
ACC01_MAC = "02:4b:49:54:02:01"
READ_ONLY = "192.168.100.0/24(ro,root_squash,sync,no_subtree_check,secure,sec=sys)"
WRITER = "192.168.100.121(rw,no_root_squash,sync,no_subtree_check,secure,sec=sys)"


def test_a_capture_opens_the_export_to_its_master_pc_until_it_reports(
    site: SiteRepo, server: Server, clock: FixedClock, root: Path
) -> None:
    site.write("batches/master.yaml", MASTER)
    site.commit("Capture the 2026 master from ACC-PC-01")
    exports = root / "etc/exports.d/kitting.exports"

    def export_line() -> str:
        (line,) = [x for x in exports.read_text().splitlines() if x.startswith("/")]
        return line

    server.controller.pass_once()
    assert export_line() == f"/home/partimag {READ_ONLY}"

    clock.set(tokyo(9, 9))
    server.controller.pass_once("window", converge=True)
    assert export_line() == f"/home/partimag {WRITER} {READ_ONLY}"
    pxe_file = root / entry_names(ACC01_MAC)[0]
    assert "savedisk win11-master-2026 nvme0n1" in pxe_file.read_text()

    # The PC boots its entry: withdrawn at once, but the export stays open for its job.
    server.tftp_sent(tokyo(9, 9, 2), ACC01_MAC, "192.168.100.121")
    clock.set(tokyo(9, 9, 2, 1))
    server.controller.pass_once("deployment", converge=True)
    assert not pxe_file.exists()
    assert export_line() == f"/home/partimag {WRITER} {READ_ONLY}"

    # ocs-sr saved the image, then reported: the export is read-only again, in that pass.
    image = root / "home/partimag/win11-master-2026"
    image.mkdir()
    (image / "disk").write_text("nvme0n1\n")
    (image / "nvme0n1p1.vfat-ptcl-img.zst.aa").write_bytes(b"\x28\xb5\x2f\xfd saved")
    server.send_report(
        "192.168.100.121 02:4b:49:54:02:01 Saved win11-master-2026, /dev/nvme0n1p1, success, "
        "100 MB, .100 mins, 1000.0 MB/min;"
    )
    wait_until(server.shell.has_news, 5, "the report queued")
    clock.set(tokyo(9, 9, 30))
    server.controller.pass_once("report", converge=True)
    assert export_line() == f"/home/partimag {READ_ONLY}"
    batch = server.batch("master-2026-12-09")
    assert (batch["phase"], batch["outcome"]) == ("finished", "succeeded")
    (captured,) = events(root, "image_captured")
    assert captured.target == "win11-master-2026"
    assert captured.details["pc"] == "ACC-PC-01"
    assert captured.details["manifest"] == {
        "disk": hashlib.sha256(b"nvme0n1\n").hexdigest(),
        "nvme0n1p1.vfat-ptcl-img.zst.aa": hashlib.sha256(b"\x28\xb5\x2f\xfd saved").hexdigest(),
    }
