"""The deployments' shell with the DRBL backend, and pool PCs matched through the leases.

A sandbox root, the small Berlin site of tests/deployments (pc01 192.168.100.11, pc02
192.168.100.12, pc03 from the pool), a recording session runner. What is checked:

- backend drbl: the reconciler never binds port 6461 (DRBL's ocsmgrd does), so a capture
  is blocked with that reason; the job reports come from ocsmgrd's job log, a file the test
  writes as ocsmgrd does (created afresh, then appended);
- the prerequisites block a DRBL batch until DRBL is set up (drblpush's files);
- a udp-sender receiver from a pool address is pc03 through dnsmasq's lease file.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler import dhcp_leases, drbl_files
from reconciler.audit import AuditLog
from reconciler.batch_history import Usage
from reconciler.clock import FixedClock
from reconciler.deploy_shell import DeployShell
from reconciler.deployment_state import BatchPhase, DeploymentState, PcPhase
from reconciler.deployments import (
    Backend,
    ImageFacts,
    Observation,
    ReceiverJoined,
    Requirement,
    SessionStarted,
    StartSession,
    StopSession,
)
from reconciler.desired import Desired
from reconciler.layout import Layout
from tests.deployments.deploy_cases import BERLIN, PC02_MAC, PC03_MAC, WIN11, batch, desired

NINE = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)


class Recording:
    """Records the session commands; every started feeder lives."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.started: list[StartSession] = []
        self.stopped: list[StopSession] = []
        self.news: list[Observation] = []

    def start(self, command: StartSession) -> SessionStarted:
        self.started.append(command)
        return SessionStarted(command.key, 4242, self.clock.now())

    def stop(self, command: StopSession) -> None:
        self.stopped.append(command)

    def adopt(self) -> list[Observation]:
        return []

    def observe(self) -> list[Observation]:
        return list(self.news)

    def commit(self) -> None:
        self.news = []

    def alive_pids(self) -> frozenset[int]:
        return frozenset({4242}) if self.started else frozenset()

    def has_news(self) -> bool:
        return bool(self.news)

    def usage(self, key: str) -> Usage:
        return Usage()

    def forget(self, keep: Collection[str]) -> None:
        pass

    def close(self) -> None:
        pass


class Setup:
    def __init__(self, root: Path, backend: Backend, *, missing: bool = False) -> None:
        self.root = root
        self.clock = FixedClock(NINE)
        self.sessions = Recording(self.clock)
        self.binds: list[tuple[str, int]] = []

        def listen(address: str, port: int) -> object:
            self.binds.append((address, port))
            raise OSError(98, "Address already in use")

        def images(d: Desired, s: DeploymentState, now: datetime) -> dict[str, ImageFacts]:
            return {"win11": WIN11}

        kw: dict[str, Any] = {} if missing else {"prerequisites": lambda d: {}}
        self.shell = DeployShell(
            str(root),
            Layout(),
            self.clock,
            sessions=self.sessions,
            backend=backend,
            images=images,
            listen=listen,  # type: ignore[arg-type]
            localize=lambda naive: naive.replace(tzinfo=BERLIN),
            **kw,
        )
        (root / "home" / "partimag").mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(root / "audit.jsonl", root / "audit.head", self.clock)

    def step(self, want: Desired, at: datetime) -> DeploymentState:
        self.clock.set(at)
        with self.audit:
            self.shell.step(want, self.audit, None)
        assert self.shell._state is not None
        return self.shell._state

    def write(self, path: str, text: str, *, append: bool = False) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a" if append else "w") as handle:
            handle.write(text)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "root"


def test_with_drbl_nothing_binds_6461_and_ocsmgrds_job_log_gives_the_reports(root: Path) -> None:
    setup = Setup(root, Backend.drbl)
    want = desired(batch(targets={"pcs": ["pc01", "pc02"]}, clients_to_wait=2))
    state = setup.step(want, NINE)
    assert setup.binds == []  # never: drbl-ocs's ocsmgrd takes the port
    [start] = setup.sessions.started
    assert start.spec.drbl_argv[0] == "drbl-ocs"
    assert {r.phase for r in state.batches.values()} == {BatchPhase.armed}

    log = drbl_files.JOB_LOG
    # ocsmgrd removes its old log and starts a new one when drbl-ocs starts it
    setup.write(log, "2026-0302-0900, Start clonezilla logging.\n")
    setup.step(want, NINE + timedelta(seconds=2))
    setup.write(
        log,
        "2026-0302-0931, client 192.168.100.12 (02:00:00:00:02:01) finished restoring. "
        "Stats: /dev/nvme0n1p1, success, 104 MB, .050 mins, 2080.0 MB/min; /dev/nvme0n1p2, "
        "success, 20.1 GB, 3.200 mins, 6.2 GB/min;\n",
        append=True,
    )
    assert setup.shell.has_news()
    state = setup.step(want, NINE + timedelta(minutes=32))
    [record] = state.batches.values()
    pc02 = record.pcs["pc02"]
    assert (pc02.phase, pc02.reason) == (PcPhase.succeeded, "ReportedSuccess")
    # the end of 09:31, Berlin (the log's minute, read as its last instant)
    assert pc02.finished_at == datetime(2026, 3, 2, 9, 31, 59, 999999, tzinfo=BERLIN)
    assert pc02.address == "192.168.100.12"
    assert record.pcs["pc01"].phase is PcPhase.waiting
    # read once: the next step finds nothing new, the position is kept in the state dir
    assert not setup.shell.has_news()
    assert (root / "var/lib/kitting/drbl-jobs.position").is_file()


def test_with_drbl_a_capture_is_blocked_because_the_port_is_drbls(root: Path) -> None:
    setup = Setup(root, Backend.drbl, missing=True)
    for path in ("/etc/drbl/drbl_deploy.conf", "/tftpboot/nbi_img/pxelinux.cfg/default"):
        setup.write(path, "# made by drblpush\n")
    setup.write("/etc/drbl/drbl-ocs.conf", 'MULTICAST_PORT="2232"\n')
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        setup.write(f"/srv/tftp/clonezilla/{name}", "x")
    capture = batch(name="master", action="capture", targets={"pcs": ["pc01"]}, image="new")
    state = setup.step(desired(capture), NINE)
    [record] = state.batches.values()
    assert record.phase is BatchPhase.blocked
    assert record.message == (
        "report-listener: with the DRBL backend, port 6461 belongs to DRBL's ocsmgrd, which "
        "runs only during a drbl-ocs session; the reconciler does not listen"
    )
    assert setup.binds == []


@pytest.mark.skipif(shutil.which("drbl-ocs", path="/usr/sbin:/sbin") is None, reason="no drbl")
def test_a_drbl_batch_is_blocked_until_drbl_is_set_up(root: Path) -> None:
    setup = Setup(root, Backend.drbl, missing=True)
    # the live files and the images root are there; DRBL's own set-up is not
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        setup.write(f"/srv/tftp/clonezilla/{name}", "x")
    want = desired(batch(targets={"pcs": ["pc01", "pc02"]}))
    missing = setup.shell.prerequisites(want)
    assert missing[Requirement.drbl_ocs] == (
        "DRBL is not set up (/etc/drbl/drbl_deploy.conf is missing): run drblpush first, "
        "or use backend: native"
    )
    state = setup.step(want, NINE)
    [record] = state.batches.values()
    assert (record.phase, record.reason) == (BatchPhase.blocked, "PrerequisiteMissing")
    assert setup.sessions.started == []

    setup.write("/etc/drbl/drbl_deploy.conf", "# made by drblpush\n")
    assert (
        "pxelinux.cfg/default is missing" in setup.shell.prerequisites(want)[Requirement.drbl_ocs]
    )
    setup.write("/tftpboot/nbi_img/pxelinux.cfg/default", "# made by drblpush\n")
    assert setup.shell.prerequisites(want)[Requirement.drbl_ocs] == (
        "no MULTICAST_PORT in /etc/drbl/drbl-ocs.conf"
    )
    installed = Path("/etc/drbl/drbl-ocs.conf")
    if installed.is_file():  # the real file, as the drbl package ships it
        setup.write("/etc/drbl/drbl-ocs.conf", installed.read_text())
    else:
        setup.write("/etc/drbl/drbl-ocs.conf", 'MULTICAST_PORT="2232"\n')
    assert Requirement.drbl_ocs not in setup.shell.prerequisites(want)
    state = setup.step(want, NINE + timedelta(seconds=5))
    [record] = state.batches.values()
    assert record.phase is BatchPhase.armed
    assert len(setup.sessions.started) == 1


def test_a_pool_pcs_receiver_is_found_through_dnsmasqs_leases(root: Path) -> None:
    setup = Setup(root, Backend.native)
    want = desired(batch())
    state = setup.step(want, NINE)
    [start] = setup.sessions.started
    # dnsmasq's lease file: pc03 holds 192.168.100.120 until 10:00 UTC
    expiry = int(datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN).timestamp())
    setup.write(
        dhcp_leases.DEFAULT_PATH,
        f"{expiry} {PC03_MAC} 192.168.100.120 pc03 *\n{expiry} {PC02_MAC} 192.168.100.12 * *\n",
    )
    t = NINE + timedelta(minutes=3)
    setup.sessions.news = [
        ReceiverJoined(start.key, "192.168.100.120", t),
        ReceiverJoined(start.key, "192.168.100.140", t),  # no lease, no PC
    ]
    state = setup.step(want, t)
    [record] = state.batches.values()
    assert (record.pcs["pc03"].phase, record.pcs["pc03"].reason) == (
        PcPhase.imaging,
        "ReceiverJoined",
    )
    assert record.pcs["pc02"].phase is PcPhase.waiting
