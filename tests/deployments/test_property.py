"""Random sequences of what a kitting room can throw at the deployments (boots, stale log
lines, receivers, reports good and bad, senders that start, fail, die or never answer,
controller restarts, batches edited and removed), checked from the outside after every step:

- no per-PC restore entry outside the window of a batch the desired state asks for;
- a PC is armed at most once per request, twice only with retry-unicast after a reported
  failure or a session it never joined, and never after it reported success;
- so it boots a restore entry (is imaged) at most that often;
- a sender is started at most once per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler.checks import window_bounds
from reconciler.deployment_state import dumps, loads, utc
from reconciler.deployments import (
    DeploymentState,
    MenuFetched,
    Observation,
    ReceiverJoined,
    ReportReceived,
    SessionExited,
    SessionFailed,
    SessionStarted,
    StartSession,
    Step,
    StopSession,
    request_hash,
    step,
)
from reconciler.desired import Batch, Desired, OnFailure
from tests.deployments.deploy_cases import (
    PC01_MACS,
    PC02_MAC,
    PC03_MAC,
    UNKNOWN_MAC,
    batch,
    berlin,
    desired,
    facts,
    failure_line,
    grub_path,
    pxe_path,
    success_line,
)

VARIANTS: dict[str, Batch | None] = {
    "hold": batch(),
    "retry": batch(on_failure="retry-unicast"),
    "unicast-retry": batch(mode="unicast", on_failure="retry-unicast"),
    "later": batch(window={"start": "2026-03-02T10:00", "end": "2026-03-02T11:30"}),
    "gone": None,
}
MACS = {"pc01": PC01_MACS[1], "pc02": PC02_MAC, "pc03": PC03_MAC}
IPS = {"pc01": "192.168.100.11", "pc02": "192.168.100.12", "pc03": "192.168.100.120"}
HOST_OF_PATH = {
    f(mac): host
    for host, macs in {"pc01": PC01_MACS, "pc02": (PC02_MAC,), "pc03": (PC03_MAC,)}.items()
    for mac in macs
    for f in (pxe_path, grub_path)
}

hosts = st.sampled_from(sorted(MACS))
minutes = st.integers(min_value=0, max_value=25) | st.integers(min_value=0, max_value=3)
boot = st.tuples(st.just("boot"), hosts, st.booleans(), minutes)
report = st.tuples(
    st.just("report"),
    hosts,
    st.sampled_from(["success", "fail", "fail", "garbage", "stranger"]),
    minutes,
)
ops = st.one_of(
    st.tuples(st.just("tick"), minutes),
    boot,
    boot,
    report,
    report,
    st.tuples(st.just("join"), hosts, minutes),
    st.tuples(st.just("start"), st.sampled_from(["failed", "silent"])),
    st.tuples(st.just("exit"), minutes),
    st.tuples(st.just("restart"), st.booleans()),
    st.tuples(st.just("desire"), st.sampled_from(sorted(VARIANTS))),
)


@dataclass
class World:
    """The kitting room around the deployments: PCs, the session runner and the clock."""

    want: Desired = field(default_factory=lambda: desired(batch()))
    state: DeploymentState = field(default_factory=DeploymentState)
    now: datetime = field(default_factory=lambda: berlin("2026-03-02 08:55"))
    served: set[str] = field(default_factory=set)
    pending_starts: list[str] = field(default_factory=list)
    alive: dict[int, str] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)
    next_pid: int = 100
    # What the checks remember, per (request key, host).
    armings: dict[tuple[str, str], int] = field(default_factory=dict)
    boots: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: dict[tuple[str, str], int] = field(default_factory=dict)
    succeeded: set[tuple[str, str]] = field(default_factory=set)
    starts: dict[str, int] = field(default_factory=dict)
    armed_now: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def key(self) -> str | None:
        b = self.want.batches.get("spring")
        return f"spring@{request_hash(self.want, b)}" if b else None

    def batch(self) -> Batch | None:
        return self.want.batches.get("spring")

    def apply(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        seen: list[Observation] = []
        first_pass = False
        if kind in ("tick", "boot", "join", "report", "exit"):
            self.now += timedelta(minutes=int(op[-1]))  # type: ignore[call-overload]
        if kind == "boot":
            host, prefer_pxe = str(op[1]), bool(op[2])
            mine = sorted(p for p in self.served if HOST_OF_PATH[p] == host)
            if mine:
                path = mine[-1] if prefer_pxe else mine[0]
                key = self.key()
                if key is not None:
                    self.boots[(key, host)] = self.boots.get((key, host), 0) + 1
                    event("booted a served entry")
            else:  # a stale log line, or a replay after a restart
                path = pxe_path(MACS[host])
            seen.append(MenuFetched(path, self.now))
        elif kind == "join" and (key := self.key()) is not None:
            seen.append(ReceiverJoined(key, IPS[str(op[1])], self.now, mac=MACS[str(op[1])]))
        elif kind == "report":
            host, what = str(op[1]), str(op[2])
            line = {
                "success": success_line(MACS[host]),
                "fail": failure_line(MACS[host]),
                "garbage": f"{IPS[host]} {MACS[host]} N/A",
                "stranger": success_line(UNKNOWN_MAC),
            }[what]
            seen.append(ReportReceived(line, self.now))
        elif kind == "start":  # the runner fails to start the sender, or crashes silently
            for key in self.pending_starts:
                if op[1] == "failed":
                    seen.append(SessionFailed(key, "udp-sender: bind failed", self.now))
            self.pending_starts = []
        elif kind == "exit":
            for pid, key in sorted(self.alive.items()):
                seen.append(SessionExited(key, self.now, 0))
                del self.alive[pid]
        elif kind == "restart":
            self.state = loads(dumps(self.state))
            first_pass = True
            if not op[1]:
                self.alive.clear()  # the senders died with the controller
        elif kind == "desire":
            variant = VARIANTS[str(op[1])]
            self.want = desired(variant) if variant else desired()
        for key in self.pending_starts:  # normally the runner reports the new sender
            self.next_pid += 1
            self.alive[self.next_pid] = key
            seen.append(SessionStarted(key, self.next_pid, self.now))
        for key in self.exits:
            seen.append(SessionExited(key, self.now, -15))
        self.exits = []
        result = step(
            self.want,
            self.state,
            facts(*seen, alive=self.alive, first_pass=first_pass),
            self.now,
        )
        self.state = result.state
        self.check(result)

    def check(self, result: Step) -> None:
        now = utc(self.now)
        self.pending_starts = []
        for command in result.commands:
            if isinstance(command, StartSession):
                self.starts[command.key] = self.starts.get(command.key, 0) + 1
                assert self.starts[command.key] == 1, f"second start of {command.key}"
                self.pending_starts.append(command.key)
            elif isinstance(command, StopSession) and command.pid in self.alive:
                del self.alive[command.pid]
                self.exits.append(command.key)
        for said in result.events:  # what the deployments took from the reports
            if said.reason == "ReportedSuccess":
                self.succeeded.add((said.batch, said.pc))
            elif said.reason == "ReportedFailure":
                pair = (said.batch, said.pc)
                self.failed[pair] = self.failed.get(pair, 0) + 1
        b, key = self.batch(), self.key()
        armed: dict[tuple[str, str], bytes] = {}
        for artifact in result.artifacts:
            host = HOST_OF_PATH[artifact.path]
            assert b is not None and key is not None, f"{artifact.path} armed with no batch"
            bounds = window_bounds(self.want, b)
            assert bounds is not None
            assert utc(bounds[0]) <= now < utc(bounds[1]), f"{artifact.path} outside the window"
            if artifact.path == pxe_path(MACS[host]):
                armed[(key, host)] = artifact.content
        # A new arming: an entry appears, or its job changes (a retry swaps in unicast).
        fresh = [pair for pair, job in armed.items() if self.armed_now.get(pair) != job]
        for pair in fresh:
            self.armings[pair] = self.armings.get(pair, 0) + 1
            assert pair not in self.succeeded, f"{pair} armed again after its success"
            # every variant is batch "spring" with image win11: an edit is a new request,
            # but a PC that booted the job under any version is never armed by another
            earlier = [k for (k, h), n in self.boots.items() if h == pair[1] and k != pair[0] and n]
            assert not earlier, f"{pair} armed again by an edit after booting under {earlier}"
            count = self.armings[pair]
            retry = b is not None and b.on_failure is OnFailure.retry_unicast
            assert count <= (2 if retry else 1), f"{pair} armed {count} times"
            event(f"armed {count}x")
            if count == 2:
                # The second arming: after a reported failure, or the first never booted.
                assert self.failed.get(pair, 0) >= 1 or self.boots.get(pair, 0) == 0, pair
        for pair, count in self.boots.items():
            assert count <= self.armings.get(pair, 0), f"{pair} booted {count} times"
        self.armed_now = armed
        self.served = {a.path for a in result.artifacts}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(sorted(k for k in VARIANTS if k != "gone")),
    st.lists(ops, min_size=8, max_size=40),
)
def test_no_entry_outside_a_window_and_no_pc_imaged_twice(
    variant: str, sequence: list[tuple[object, ...]]
) -> None:
    first = VARIANTS[variant]
    assert first is not None
    world = World(want=desired(first))
    for op in sequence:
        world.apply(op)
    # Long after every window: nothing is armed, and the state still reads back.
    world.apply(("tick", 0))
    world.now = berlin("2026-03-03 09:00")
    world.apply(("tick", 0))
    assert world.served == set()
    assert loads(dumps(world.state)) == world.state
