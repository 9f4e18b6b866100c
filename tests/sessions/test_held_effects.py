"""What a deployment step does to the network waits for its commit's apply, and a sandbox
never reaches the network at all.

The controller steps a commit before applying it (the per-PC files are part of the apply).
Found by a tester: a commit whose apply was then blocked had already started a real
udp-sender and woken PCs; and `kitctl run --services none` on a sandbox root did the same.
Here the shell runs with recording stand-ins for the session runner, the Wake-on-LAN
sender and the report listener (no process, no packet), on the three-PC Berlin site of
tests/deployments: a multicast batch with Wake-on-LAN, open from 09:00.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler import audit as audit_log
from reconciler.audit import AuditLog, CommitInfo
from reconciler.batch_history import Usage
from reconciler.clock import FixedClock
from reconciler.deploy_shell import DeployShell, load_state
from reconciler.deployment_state import DeploymentState, SessionPhase
from reconciler.deployments import (
    ImageFacts,
    Observation,
    SessionStarted,
    StartSession,
    StopSession,
    request_hash,
)
from reconciler.layout import Layout
from tests.deployments.deploy_cases import BERLIN, WIN11, batch, desired

NINE = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
COMMIT = CommitInfo(sha="c0ffee" * 6 + "c0ff", author="", committer="", date="", subject="")
BATCH = batch(wake_on_lan=True)
WANT = desired(BATCH)
KEY = f"{BATCH.name}@{request_hash(WANT, BATCH)}"


class Recorder:
    """A session runner that records what it was asked and starts nothing."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, command: StartSession) -> SessionStarted:
        self.started.append(command.key)
        return SessionStarted(command.key, 4242, NINE)

    def stop(self, command: StopSession) -> None:
        pass

    def adopt(self) -> list[Observation]:
        return []

    def observe(self) -> list[Observation]:
        return []

    def commit(self) -> None:
        pass

    def alive_pids(self) -> frozenset[int]:
        return frozenset({4242}) if self.started else frozenset()

    def has_news(self) -> bool:
        return False

    def usage(self, key: str) -> Usage:
        return Usage()

    def forget(self, keep: Collection[str]) -> None:
        pass

    def close(self) -> None:
        pass


class World:
    def __init__(self, tmp_path: Path, *, live: bool = True) -> None:
        self.root = tmp_path / "root"
        (self.root / "home" / "partimag").mkdir(parents=True)
        self.clock = FixedClock(NINE)
        self.sessions = Recorder()
        self.woken: list[tuple[str, tuple[str, ...]]] = []
        self.bound: list[tuple[str, int]] = []
        self.shell = DeployShell(
            str(self.root),
            Layout(),
            self.clock,
            sessions=self.sessions,
            images=self._images,
            prerequisites=lambda d: {},
            listen=self._listen,
            wake_on_lan=self._wake,
            live=live,
        )
        self.audit = AuditLog(tmp_path / "audit.jsonl", tmp_path / "audit.head", self.clock)
        self.audit_path = tmp_path / "audit.jsonl"

    def _images(self, d: object, s: DeploymentState, now: datetime) -> dict[str, ImageFacts]:
        return {"win11": WIN11}

    def _listen(self, address: str, port: int) -> socket.socket:
        self.bound.append((address, port))
        raise OSError(99, "not bound in this test")

    def _wake(self, interface: str, macs: Sequence[str]) -> Mapping[str, str | None]:
        self.woken.append((interface, tuple(macs)))
        return dict.fromkeys(macs)

    def step(self, *, hold: bool) -> None:
        with self.audit:
            self.shell.step(WANT, self.audit, COMMIT, hold=hold)

    def session_phase(self) -> SessionPhase | None:
        record = load_state(str(self.root), Layout()).batches[KEY]
        return record.session.phase if record.session is not None else None

    def woken_entries(self) -> list[tuple[str, str, str]]:
        entries, _ = audit_log.read(self.audit_path)
        return [
            (e.target, e.result.status.value, e.result.message)
            for e in entries
            if e.event == "pc_woken"
        ]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_held_step_starts_and_wakes_only_once_its_apply_succeeded(world: World) -> None:
    world.step(hold=True)
    assert (world.sessions.started, world.woken) == ([], [])  # nothing yet: the apply runs
    world.shell.settle(applied=True)
    assert world.sessions.started == [KEY]
    # every NIC of the three armed PCs, out of the site's interface
    assert world.woken == [("enp3s0", ("02:00:00:00:01:01", "02:00:00:00:01:02",
                                       "02:00:00:00:02:01", "02:00:00:00:03:01"))]  # fmt: skip


def test_a_failed_apply_starts_no_sender_and_wakes_nobody(world: World) -> None:
    world.step(hold=True)
    world.shell.settle(applied=False, why="/etc/dnsmasq.d/kitting.conf: PlanBlocked")
    assert (world.sessions.started, world.woken) == ([], [])
    reason = "not sent: the apply of this commit failed: /etc/dnsmasq.d/kitting.conf: PlanBlocked"
    assert world.woken_entries() == [
        ("pc01", "failed", reason),
        ("pc02", "failed", reason),
        ("pc03", "failed", reason),
    ]
    # the next step learns the session never started: it is over, never started later
    world.clock.set(NINE + timedelta(seconds=30))
    world.step(hold=True)
    world.shell.settle(applied=True)
    assert world.session_phase() is SessionPhase.over
    assert world.sessions.started == []


def test_a_sandbox_binds_no_port_starts_no_sender_and_sends_no_packet(tmp_path: Path) -> None:
    world = World(tmp_path, live=False)
    world.step(hold=False)
    assert (world.sessions.started, world.woken, world.bound) == ([], [], [])
    reason = (
        "not sent: a sandbox (services none or a root other than /) starts no sender "
        "and sends no packet"
    )
    assert [status for _, status, _ in world.woken_entries()] == ["failed"] * 3
    assert {message for _, _, message in world.woken_entries()} == {reason}
    world.clock.set(NINE + timedelta(seconds=30))
    world.step(hold=False)
    assert world.session_phase() is SessionPhase.over
