"""The deployment state machine: one pass over every request, given the facts and `now`.

`deployments.step` is its public face; this module holds the pass and what it returns.
Order within a pass: session outcomes, then sightings and reports in time order (against
the entries that were out), then withdrawn requests, new requests, the clock (windows,
blockers, arming, session ends, retries, completion), repeated stops, pruning, and last
the per-PC files of the PCs still waiting. Purely computational.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address

from reconciler import deployment_report
from reconciler import deployment_rules as rules
from reconciler.deployment_facts import (
    Backend,
    DeploymentFacts,
    MenuFetched,
    ReceiverJoined,
    ReportOrigin,
    ReportReceived,
    SessionExited,
    SessionFailed,
    SessionStarted,
)
from reconciler.deployment_session import SessionSpec, drbl_ocs_stop_argv
from reconciler.deployment_state import (
    BatchPhase,
    BatchRecord,
    DeploymentState,
    PcPhase,
    PcRecord,
    Reported,
    SessionPhase,
    SessionRecord,
    utc,
)
from reconciler.desired import Action, Desired, Mode, Pc
from reconciler.render import pxe
from reconciler.rendered import Artifact

REFETCH_GRACE = timedelta(seconds=60)
"""Fetches of an entry this soon after the first are the same boot (GRUB tests the file,
then reads it); a later one means the PC booted the job again and is flagged."""

RETENTION = timedelta(days=1)
"""How long a request no longer in the desired state is kept after its window: late job
reports still find their PC. Its window is over, so it could never be armed again anyway."""


class EventKind(StrEnum):
    batch_blocked = "batch_blocked"
    batch_armed = "batch_armed"
    batch_finished = "batch_finished"
    batch_disarmed = "batch_disarmed"
    session_requested = "session_requested"
    session_started = "session_started"
    session_adopted = "session_adopted"
    session_stopped = "session_stopped"
    wake_requested = "wake_requested"
    pc_armed = "pc_armed"
    pc_disarmed = "pc_disarmed"
    pc_joined = "pc_joined"
    pc_imaging = "pc_imaging"
    pc_succeeded = "pc_succeeded"
    pc_failed = "pc_failed"
    pc_missed = "pc_missed"
    pc_held = "pc_held"
    report_ignored = "report_ignored"
    sighting_ignored = "sighting_ignored"


@dataclass(frozen=True)
class DeploymentEvent:
    kind: EventKind
    batch: str
    """The request key (`name@content`), or '' when none could be found."""
    pc: str
    reason: str
    message: str
    at: datetime


@dataclass(frozen=True)
class StartSession:
    key: str
    batch: str
    spec: SessionSpec


@dataclass(frozen=True)
class StopSession:
    key: str
    batch: str
    pid: int | None
    reason: str
    argv: tuple[str, ...] = ()
    """DRBL backend: the command that stops it; native: end the process group of `pid`."""


@dataclass(frozen=True)
class WakePcs:
    """Send wake-on-LAN magic packets out of `interface` to every NIC of these PCs.

    Handed out once per request, in the step that arms the batch (its window opens): that
    step's state is persisted first, and a batch is armed only from pending or blocked, so
    no later step (a restart included) hands it out again. A crash between the saving and
    the sending loses the wake, never repeats it."""

    key: str
    batch: str
    interface: str
    pcs: tuple[tuple[str, tuple[str, ...]], ...]
    """(hostname, its MACs), by hostname."""

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(mac for _, macs in self.pcs for mac in macs)


Command = StartSession | StopSession | WakePcs


@dataclass(frozen=True)
class Step:
    state: DeploymentState
    artifacts: tuple[Artifact, ...]
    """Per-PC PXE files of armed PCs, by path; every other PC gets the default menus."""
    commands: tuple[Command, ...]
    events: tuple[DeploymentEvent, ...]


class Pass:
    def __init__(
        self,
        desired: Desired,
        state: DeploymentState,
        facts: DeploymentFacts,
        now: datetime,
        backend: Backend,
    ) -> None:
        self.desired = desired
        self.facts = facts
        self.now = now
        self.backend = backend
        self.records: dict[str, BatchRecord] = dict(state.batches)
        self.requests = rules.requests(desired)
        self.events: list[DeploymentEvent] = []
        self.commands: list[Command] = []
        self.stop_sent: set[str] = set()
        self.session_news: set[str] = set()
        self.hosts: dict[str, Pc] = {ref.pc.hostname: ref.pc for ref in desired.pcs()}
        self.by_mac = {mac: pc.hostname for pc in self.hosts.values() for mac in pc.macs}
        self.by_ip = {pc.ip: pc.hostname for pc in self.hosts.values() if pc.ip is not None}
        self.artifacts: dict[str, Artifact] = {}

    # ------------------------------------------------------------------ driver

    def run(self) -> None:
        observations = sorted(self.facts.observations, key=lambda o: utc(o.at))
        for seen in observations:
            if isinstance(seen, SessionStarted | SessionFailed | SessionExited):
                self._session_news(seen)
        self._session_liveness()
        for seen in observations:
            if isinstance(seen, MenuFetched):
                self._fetched(seen)
            elif isinstance(seen, ReceiverJoined):
                self._receiver(seen)
            elif isinstance(seen, ReportReceived):
                self._report(seen)
        for key in sorted(self.records):
            if not self.records[key].withdrawn and key not in self.requests:
                self._withdraw(key)
        for key, request in self.requests.items():
            if key not in self.records:
                self.records[key] = rules.new_record(request)
        for key in sorted(self.records):
            self._advance(key)
        self._repeat_stops()
        self._prune()
        self._render()

    def result(self) -> Step:
        state = DeploymentState(batches={k: self.records[k] for k in sorted(self.records)})
        artifacts = tuple(self.artifacts[path] for path in sorted(self.artifacts))
        return Step(state, artifacts, tuple(self.commands), tuple(self.events))

    # ------------------------------------------------------------------ helpers

    def _event(
        self,
        kind: EventKind,
        key: str,
        pc: str,
        reason: str,
        message: str,
        *,
        at: datetime | None = None,
    ) -> None:
        self.events.append(DeploymentEvent(kind, key, pc, reason, message, at or self.now))

    def _pc(self, key: str, host: str, **changes: object) -> PcRecord:
        record = self.records[key]
        updated = replace(record.pcs[host], **changes)  # type: ignore[arg-type]
        self.records[key] = replace(record, pcs={**record.pcs, host: updated})
        return updated

    def _batch(self, key: str, **changes: object) -> BatchRecord:
        updated = replace(self.records[key], **changes)  # type: ignore[arg-type]
        self.records[key] = updated
        return updated

    def _session(self, key: str, **changes: object) -> SessionRecord:
        session = self.records[key].session
        assert session is not None
        updated = replace(session, **changes)  # type: ignore[arg-type]
        self._batch(key, session=updated)
        return updated

    def _finish_pc(
        self,
        key: str,
        host: str,
        phase: PcPhase,
        reason: str,
        message: str,
        *,
        at: datetime | None = None,
        **changes: object,
    ) -> None:
        at = at or self.now
        before = self.records[key].pcs[host]
        self._pc(key, host, phase=phase, reason=reason, finished_at=at, **changes)
        if before.phase is PcPhase.waiting:
            self._event(EventKind.pc_disarmed, key, host, reason, "entry withdrawn", at=at)
        kind = {
            PcPhase.succeeded: EventKind.pc_succeeded,
            PcPhase.failed: EventKind.pc_failed,
            PcPhase.missed: EventKind.pc_missed,
        }[phase]
        self._event(kind, key, host, reason, message, at=at)

    def _arm(
        self, key: str, host: str, mode: Mode, reason: str, *, attempt: int = 1, first: str = ""
    ) -> None:
        record = self.records[key]
        earlier = self._booted_before(key, host) if attempt == 1 else None
        if earlier is not None:
            self._held_for_earlier(key, host, mode, earlier)
            return
        previous = record.pcs.get(host)
        armed = PcRecord(
            phase=PcPhase.waiting,
            mode=mode,
            attempt=attempt,
            reason=reason,
            armed_at=self.now,
            first_attempt=first,
            flags=previous.flags if previous else (),
            entries=previous.entries if previous else (),
        )
        self.records[key] = replace(record, pcs={**record.pcs, host: armed})
        what = f"{record.action.value} {record.image} by {mode.value}"
        self._event(EventKind.pc_armed, key, host, reason, f"armed: {what}")

    def _booted_before(self, key: str, host: str) -> PcRecord | None:
        record = self.records[key]
        return earlier_boot(
            self.records, key, host, name=record.name, action=record.action, image=record.image
        )

    def _held_for_earlier(self, key: str, host: str, mode: Mode, earlier: PcRecord) -> None:
        record = self.records[key]
        phase = earlier.phase if earlier.phase in (PcPhase.succeeded, PcPhase.failed) else None
        held = PcRecord(
            phase=phase or PcPhase.missed,
            mode=mode,
            attempt=0,
            reason="ImagedEarlier",
            finished_at=self.now,
            report=earlier.report,
        )
        self.records[key] = replace(record, pcs={**record.pcs, host: held})
        message = (
            f"booted {record.image} under an earlier version of batch {record.name} "
            f"({earlier.phase.value}): not imaged again; a new batch name would image it"
        )
        self._event(EventKind.pc_held, key, host, "ImagedEarlier", message)

    def _never_armed(self, key: str, host: str, mode: Mode, reason: str, message: str) -> None:
        record = self.records[key]
        missed = PcRecord(
            phase=PcPhase.missed, mode=mode, attempt=0, reason=reason, finished_at=self.now
        )
        self.records[key] = replace(record, pcs={**record.pcs, host: missed})
        self._event(EventKind.pc_missed, key, host, reason, message)

    def _stop(self, key: str, reason: str) -> None:
        record = self.records[key]
        session = record.session
        if session is None or session.phase in (SessionPhase.over,):
            return
        if session.phase is SessionPhase.requested:
            # Its start outcome is due in the next facts; SessionStarted then meets `over`
            # and is stopped on sight.
            self._session(key, phase=SessionPhase.over, reason=reason, ended_at=self.now)
            self._event(EventKind.session_stopped, key, "", reason, "start withdrawn")
            return
        self._session(key, phase=SessionPhase.stopping, reason=reason)
        self._send_stop(key, session.pid, reason)

    def _send_stop(self, key: str, pid: int | None, reason: str) -> None:
        if key in self.stop_sent:
            return
        self.stop_sent.add(key)
        self.commands.append(self._stop_command(key, pid, reason))

    def _stop_command(self, key: str, pid: int | None, reason: str) -> StopSession:
        argv = drbl_ocs_stop_argv() if self.backend is Backend.drbl else ()
        return StopSession(key, key.split("@", 1)[0], pid, reason, argv)

    # ------------------------------------------------------------------ sessions

    def _session_news(self, seen: SessionStarted | SessionFailed | SessionExited) -> None:
        record = self.records.get(seen.key)
        session = record.session if record is not None else None
        at = utc(seen.at)
        if isinstance(seen, SessionStarted):
            if session is not None and session.pid == seen.pid:
                return  # reported again (the runner re-reads its PID files after a restart)
            if session is None or session.phase is not SessionPhase.requested:
                # Not ours to run (unknown, a second one, or given up): never let it serve.
                if session is None:
                    reason = "UnknownSession"
                elif session.phase is SessionPhase.over:
                    reason = "StartedAfterGivenUp"
                else:
                    reason = "SecondSender"
                self.commands.append(self._stop_command(seen.key, seen.pid, reason))
                self._event(
                    EventKind.session_stopped, seen.key, "", reason, f"pid {seen.pid}", at=at
                )
                return
            self.session_news.add(seen.key)
            self._session(seen.key, phase=SessionPhase.running, pid=seen.pid, started_at=at)
            self._event(
                EventKind.session_started, seen.key, "", "Started", f"pid {seen.pid}", at=at
            )
        elif isinstance(seen, SessionFailed):
            if session is None or session.phase is not SessionPhase.requested:
                return
            self.session_news.add(seen.key)
            self._session(seen.key, phase=SessionPhase.over, reason="StartFailed", ended_at=at)
            self._event(EventKind.session_stopped, seen.key, "", "StartFailed", seen.message, at=at)
        else:
            if session is None or session.phase not in (
                SessionPhase.running,
                SessionPhase.stopping,
            ):
                return
            if seen.pid is not None and seen.pid != session.pid:
                return  # another process of that key (one stopped on sight) ended
            self.session_news.add(seen.key)
            reason = "Stopped" if session.phase is SessionPhase.stopping else "Exited"
            self._session(
                seen.key,
                phase=SessionPhase.over,
                reason=reason,
                ended_at=at,
                returncode=seen.returncode,
            )
            self._event(
                EventKind.session_stopped,
                seen.key,
                "",
                reason,
                f"exit status {seen.returncode}",
                at=at,
            )

    def _session_liveness(self) -> None:
        for key in sorted(self.records):
            session = self.records[key].session
            if session is None:
                continue
            if session.phase is SessionPhase.requested and key not in self.session_news:
                # The start's outcome never came back (a crash in between): the sender may or
                # may not have run, so it is never started again.
                self._session(key, phase=SessionPhase.over, reason="StartLost", ended_at=self.now)
                self._event(
                    EventKind.session_stopped,
                    key,
                    "",
                    "StartLost",
                    "no outcome of the start was reported; not started again",
                )
            elif session.phase in (SessionPhase.running, SessionPhase.stopping):
                if session.pid in self.facts.alive_pids:
                    if self.facts.first_pass and session.phase is SessionPhase.running:
                        self._event(
                            EventKind.session_adopted,
                            key,
                            "",
                            "SenderAlive",
                            f"pid {session.pid} still runs",
                        )
                    continue
                reason = "Stopped" if session.phase is SessionPhase.stopping else "SenderGone"
                self._session(key, phase=SessionPhase.over, reason=reason, ended_at=self.now)
                self._event(
                    EventKind.session_stopped, key, "", reason, f"pid {session.pid} is gone"
                )

    def _repeat_stops(self) -> None:
        for key in sorted(self.records):
            session = self.records[key].session
            if (
                session is not None
                and session.phase is SessionPhase.stopping
                and session.pid in self.facts.alive_pids
            ):
                self._send_stop(key, session.pid, session.reason)

    # ------------------------------------------------------------------ sightings

    def _entry_owners(self) -> dict[str, list[tuple[str, str]]]:
        owners: dict[str, list[tuple[str, str]]] = {}
        for key in sorted(self.records):
            for host, pc in self.records[key].pcs.items():
                for path in pc.entries:
                    owners.setdefault(path, []).append((key, host))
        return owners

    def _fetched(self, seen: MenuFetched) -> None:
        at = utc(seen.at)
        owners = self._entry_owners().get(seen.path, [])
        if not owners:
            self._event(
                EventKind.sighting_ignored,
                "",
                "",
                "UnknownEntry",
                f"{seen.path} is no per-PC entry of a request",
                at=at,
            )
            return
        waiting = [
            (key, host)
            for key, host in owners
            if self.records[key].pcs[host].phase is PcPhase.waiting
        ]
        key, host = (waiting or sorted(owners, key=self._armed_order))[-1]
        pc = self.records[key].pcs[host]
        if pc.phase is PcPhase.waiting:
            if pc.armed_at is not None and at < pc.armed_at:
                self._event(
                    EventKind.sighting_ignored,
                    key,
                    host,
                    "StaleSighting",
                    "fetched before this entry was armed",
                    at=at,
                )
                return
            self._booted(key, host, PcPhase.joined, "Booted", f"fetched {seen.path}", at=at)
            self._learn(key, host, seen.client)
            return
        if pc.booted_at is not None and at - pc.booted_at <= REFETCH_GRACE:
            return  # the same boot reading its entry twice
        # The file was still served after it was withdrawn (the step before the apply).
        # The PC may run the job now: flag it, remember the boot (no retry, and its report
        # is taken), and never arm it again.
        reason = "RefetchedEntry" if pc.booted_at is not None else "FetchedWithdrawnEntry"
        flags = pc.flags if reason in pc.flags else (*pc.flags, reason)
        self._pc(key, host, flags=flags, booted_at=pc.booted_at or at)
        self._event(
            EventKind.pc_held,
            key,
            host,
            reason,
            f"fetched its restore entry after it was withdrawn ({pc.phase.value}); "
            "it stays on local boot",
            at=at,
        )

    def _armed_order(self, owner: tuple[str, str]) -> tuple[datetime, str]:
        pc = self.records[owner[0]].pcs[owner[1]]
        return (pc.armed_at or self.records[owner[0]].window_start, owner[0])

    def _booted(
        self, key: str, host: str, phase: PcPhase, reason: str, message: str, *, at: datetime
    ) -> None:
        """One-shot: the PC runs the job, so its entry is withdrawn in this very step."""
        pc = self.records[key].pcs[host]
        booted_at = pc.booted_at or at
        self._pc(key, host, phase=phase, reason=reason, booted_at=booted_at)
        if pc.phase is PcPhase.waiting:
            self._event(EventKind.pc_disarmed, key, host, reason, "entry withdrawn", at=at)
        kind = EventKind.pc_joined if phase is PcPhase.joined else EventKind.pc_imaging
        self._event(kind, key, host, reason, message, at=at)

    def _learn(self, key: str, host: str, address: str) -> None:
        """Remember the address the PC used for this request (a pool PC's receiver is known
        by it). Only a well-formed IPv4 address is kept."""
        try:
            ip = str(IPv4Address(address))
        except ValueError:
            return
        if self.records[key].pcs[host].address != ip:
            self._pc(key, host, address=ip)

    def _receiver(self, seen: ReceiverJoined) -> None:
        at = utc(seen.at)
        record = self.records.get(seen.key)
        learned = (
            {pc.address: host for host, pc in sorted(record.pcs.items()) if pc.address}
            if record is not None
            else {}
        )
        host = rules.receiver_host(seen.ip, seen.mac, self.by_mac, self.by_ip, learned)
        if record is None or host is None or host not in record.pcs:
            self._event(
                EventKind.sighting_ignored,
                seen.key if record is not None else "",
                host or "",
                "UnknownReceiver",
                f"receiver {seen.ip} is no PC of this session",
                at=at,
            )
            return
        pc = record.pcs[host]
        if pc.phase is PcPhase.waiting and pc.armed_at is not None and at < pc.armed_at:
            return
        if pc.phase in (PcPhase.waiting, PcPhase.joined):
            self._booted(seen.key, host, PcPhase.imaging, "ReceiverJoined", seen.ip, at=at)

    # ------------------------------------------------------------------ reports

    def _report(self, seen: ReportReceived) -> None:
        at = utc(seen.at)
        try:
            if seen.origin is ReportOrigin.ocsmgrd:
                report = deployment_report.parse_joblog(seen.line)
            else:
                report = deployment_report.parse(seen.line)
        except deployment_report.ReportError as error:
            self._event(EventKind.report_ignored, "", "", "UnreadableReport", str(error), at=at)
            return
        host = self.by_mac.get(report.mac)
        if host is None:
            self._event(
                EventKind.report_ignored,
                "",
                "",
                "UnknownMac",
                f"report from {report.mac} ({report.ip}), which is no PC of the site",
                at=at,
            )
            return
        awaiting = [
            key
            for key in sorted(self.records)
            if host in self.records[key].pcs and rules.awaits_report(self.records[key].pcs[host])
        ]
        if not awaiting:
            done = [
                key
                for key in sorted(self.records)
                if host in self.records[key].pcs
                and self.records[key].pcs[host].reported is not Reported.none
            ]
            reason = "DuplicateReport" if done else "NotArmed"
            self._event(
                EventKind.report_ignored,
                done[-1] if done else "",
                host,
                reason,
                report.summary(),
                at=at,
            )
            return
        matching = [
            key
            for key in awaiting
            if report.kind is None
            or (
                report.kind.restores == (self.records[key].action is Action.restore)
                and report.names(self.records[key].image)
            )
        ]
        # The job that was seen running sent it, most likely; else the armed one.
        key = sorted(
            matching or awaiting, key=lambda k: rules.report_rank(self.records[k].pcs[host])
        )[-1]
        record = self.records[key]
        pc = record.pcs[host]
        if pc.armed_at is not None and at < pc.armed_at:
            self._event(
                EventKind.report_ignored,
                key,
                host,
                "StaleReport",
                f"sent before this attempt was armed: {report.summary()}",
                at=at,
            )
            return
        expected_kind = record.action is Action.restore
        if report.kind is not None and (
            report.kind.restores != expected_kind or not report.names(record.image)
        ):
            self._event(
                EventKind.report_ignored,
                key,
                host,
                "WrongJob",
                f"expected {record.action.value} of {record.image}, got: {report.summary()}",
                at=at,
            )
            return
        outcome = report.outcome
        if outcome is deployment_report.ReportOutcome.succeeded:
            phase, reason, reported = PcPhase.succeeded, "ReportedSuccess", Reported.succeeded
        elif outcome is deployment_report.ReportOutcome.failed:
            phase, reason, reported = PcPhase.failed, "ReportedFailure", Reported.failed
        else:
            phase, reason, reported = PcPhase.failed, "UnreadableResult", Reported.unreadable
        booted_at = pc.booted_at or at
        self._finish_pc(
            key,
            host,
            phase,
            reason,
            report.summary(),
            at=at,
            reported=reported,
            report=report.summary(),
            booted_at=booted_at,
            address=pc.address or str(report.ip),
        )
        record = self.records[key]
        if record.phase in (BatchPhase.finished, BatchPhase.disarmed):
            self._batch(key, outcome=rules.batch_outcome(record.pcs))  # a late report still counts

    # ------------------------------------------------------------------ withdrawal

    def _withdraw(self, key: str) -> None:
        record = self.records[key]
        changed = any(r.batch.name == record.name for r in self.requests.values())
        reason = "BatchChanged" if changed else "BatchRemoved"
        for host in sorted(record.pcs):
            if self.records[key].pcs[host].phase is PcPhase.waiting:
                self._finish_pc(key, host, PcPhase.missed, reason, "the request was withdrawn")
        self._stop(key, reason)
        record = self._batch(key, withdrawn=True, reason=reason)
        if record.phase is not BatchPhase.disarmed:
            self._batch(
                key,
                phase=BatchPhase.disarmed,
                outcome=rules.batch_outcome(record.pcs) if record.pcs else None,
            )
            self._event(EventKind.batch_disarmed, key, "", reason, "no longer in the desired state")

    # ------------------------------------------------------------------ time

    def _advance(self, key: str) -> None:
        record = self.records[key]
        request = self.requests.get(key)
        if request is None or record.withdrawn:
            if self.now >= record.window_end:
                self._close_booted(key)
            return
        if self.now < request.start or record.phase is BatchPhase.disarmed:
            return
        if self.now >= request.end:
            self._close(key, request)
            return
        if record.phase in (BatchPhase.pending, BatchPhase.blocked):
            blocker = rules.blocker(self.desired, request, self.facts, self.backend)
            if blocker is not None:
                reason, message = blocker
                if record.phase is not BatchPhase.blocked or record.reason != reason:
                    self._batch(key, phase=BatchPhase.blocked, reason=reason, message=message)
                    self._event(EventKind.batch_blocked, key, "", reason, message)
                return
            self._open(key, request)
        self._keep(key, request)

    def _open(self, key: str, request: rules.Request) -> None:
        batch = request.batch
        self._batch(key, phase=BatchPhase.armed, reason="WindowOpen", message="")
        self._event(
            EventKind.batch_armed,
            key,
            "",
            "WindowOpen",
            f"{len(request.targets)} PCs, {batch.action.value} {batch.image} by {batch.mode.value}",
        )
        for host in request.targets:
            self._arm(key, host, batch.mode, "WindowOpen")
        # The session serves the PCs armed now: not those held for an earlier version.
        pcs = self.records[key].pcs
        armed = {h: pc for h, pc in request.targets.items() if pcs[h].phase is PcPhase.waiting}
        if armed and rules.needs_session(batch, self.backend):
            serving = replace(request, targets=armed)
            spec = rules.session_spec(self.desired, serving, self.facts, self.now, self.backend)
            self._batch(
                key,
                session=SessionRecord(
                    phase=SessionPhase.requested, requested_at=self.now, summary=spec.summary
                ),
            )
            self.commands.append(StartSession(key, batch.name, spec))
            self._event(EventKind.session_requested, key, "", "WindowOpen", spec.summary)
        if armed and batch.wake_on_lan:
            self._wake(key, {h: pc.macs for h, pc in armed.items()})

    def _wake(self, key: str, pcs: Mapping[str, list[str]]) -> None:
        """Wake-on-LAN to the PCs armed as the window opened (never to one held, never
        again for this request: `_open` runs once per request)."""
        interface = self.desired.site.server.interface
        command = WakePcs(
            key,
            self.records[key].name,
            interface,
            tuple((host, tuple(pcs[host])) for host in sorted(pcs)),
        )
        self.commands.append(command)
        self._event(
            EventKind.wake_requested,
            key,
            "",
            "WindowOpen",
            f"{len(command.pcs)} PCs, {len(command.macs)} NICs, out of {interface}",
        )

    def _keep(self, key: str, request: rules.Request) -> None:
        """An open batch: follow target changes, a session's end, retries and completion."""
        batch = request.batch
        for host in sorted(self.records[key].pcs):
            pc = self.records[key].pcs[host]
            if host not in request.targets and pc.phase is PcPhase.waiting:
                self._finish_pc(
                    key, host, PcPhase.missed, "NoLongerTargeted", "removed from the batch"
                )
        session_over = rules.session_over(self.records[key])
        if session_over and batch.mode is Mode.multicast:
            for host in sorted(self.records[key].pcs):
                pc = self.records[key].pcs[host]
                if pc.phase is PcPhase.waiting and pc.mode is Mode.multicast:
                    self._finish_pc(
                        key, host, PcPhase.missed, "SessionEnded", "the multicast session is over"
                    )
        for host in request.targets:
            if host in self.records[key].pcs:
                continue
            if batch.mode is Mode.unicast or not session_over:
                self._arm(key, host, batch.mode, "AddedToBatch")
            elif rules.retries(batch):
                self._arm(key, host, Mode.unicast, "AddedAfterSession")
            else:
                self._never_armed(
                    key, host, batch.mode, "SessionEnded", "added after the multicast session"
                )
        if rules.retries(batch):
            for host in sorted(self.records[key].pcs):
                pc = self.records[key].pcs[host]
                if host in request.targets and rules.retry_allowed(pc):
                    self._arm(
                        key,
                        host,
                        Mode.unicast,
                        "RetryUnicast",
                        attempt=pc.attempt + 1,
                        first=f"{pc.phase.value}: {pc.reason}",
                    )
        record = self.records[key]
        pcs = record.pcs.values()
        if all(pc.phase.final for pc in pcs):
            if record.session is not None and record.session.phase is not SessionPhase.over:
                self._stop(key, "AllPcsFinished")
                record = self.records[key]
            idle = record.session is None or rules.session_over(record)
            if idle and record.phase is not BatchPhase.finished:
                outcome = rules.batch_outcome(record.pcs)
                self._batch(
                    key, phase=BatchPhase.finished, outcome=outcome, reason="AllPcsFinished"
                )
                self._event(
                    EventKind.batch_finished, key, "", outcome.value, rules.pc_tally(record.pcs)
                )
            return
        busy = any(pc.booted_at is not None for pc in pcs)
        phase = BatchPhase.running if busy else BatchPhase.armed
        if record.phase is not phase:
            self._batch(key, phase=phase, outcome=None)

    def _close(self, key: str, request: rules.Request) -> None:
        """The window closed: stop the session, mark who missed it, disarm everyone."""
        record = self.records[key]
        for host in sorted(record.pcs):
            if self.records[key].pcs[host].phase is PcPhase.waiting:
                self._finish_pc(key, host, PcPhase.missed, "WindowClosed", "the window closed")
        self._close_booted(key)
        blocked = record.phase is BatchPhase.blocked
        for host in request.targets:
            if host not in self.records[key].pcs:
                reason = record.reason if blocked else "NeverArmed"
                self._never_armed(
                    key, host, request.batch.mode, reason, "never armed in the window"
                )
        self._stop(key, "WindowClosed")
        record = self.records[key]
        outcome = rules.batch_outcome(record.pcs)
        self._batch(key, phase=BatchPhase.disarmed, outcome=outcome, reason="WindowClosed")
        self._event(EventKind.batch_disarmed, key, "", "WindowClosed", rules.pc_tally(record.pcs))

    def _close_booted(self, key: str) -> None:
        for host in sorted(self.records[key].pcs):
            pc = self.records[key].pcs[host]
            if pc.phase.booted:
                self._finish_pc(
                    key,
                    host,
                    PcPhase.missed,
                    "NoReport",
                    "booted the job but sent no report before the window closed",
                )
        self._stop(key, "WindowClosed")

    # ------------------------------------------------------------------ the end

    def _prune(self) -> None:
        for key in sorted(self.records):
            record = self.records[key]
            if key not in self.requests and self.now >= record.window_end + RETENTION:
                del self.records[key]

    def _render(self) -> None:
        site = self.desired.site
        for key in sorted(self.records):
            record = self.records[key]
            request = self.requests.get(key)
            for host in sorted(record.pcs):
                pc = record.pcs[host]
                if pc.phase is not PcPhase.waiting:
                    continue
                if request is not None and not request.open_at(self.now):
                    continue  # the clock stepped back before the window: no entry outside it
                if (
                    request is None
                    or record.withdrawn
                    or record.phase not in (BatchPhase.armed, BatchPhase.running)
                    or host not in request.targets
                ):
                    raise AssertionError(f"{host} of {key} is waiting but not armed")
                target = request.targets[host]
                job = rules.boot_job(self.desired, request.batch, target, pc.mode)
                paths = []
                for mac in target.macs:
                    for artifact in pxe.armed(
                        target, job, site, mac=mac, origin=f"batches.{record.name}"
                    ):
                        if artifact.path in self.artifacts:
                            raise AssertionError(f"two armed PCs share {artifact.path}")
                        self.artifacts[artifact.path] = artifact
                        paths.append(artifact.path)
                if tuple(paths) != pc.entries:
                    self._pc(key, host, entries=tuple(paths))


def _ever_booted(pc: PcRecord) -> bool:
    """Did the PC boot a restore entry in any attempt? A retry starts a fresh record; its
    first attempt booted if it ended failed (only a reported failure, which needs a boot,
    or a never-booted miss is retried: `rules.retry_allowed`)."""
    return pc.booted_at is not None or pc.first_attempt.startswith(f"{PcPhase.failed.value}:")


def earlier_boot(
    records: Mapping[str, BatchRecord],
    key: str,
    host: str,
    *,
    name: str,
    action: Action,
    image: str,
) -> PcRecord | None:
    """The PC's record under an earlier version of batch `name` (other content, same action
    and image) in which it booted the restore entry. Editing a batch (its window, its
    clients_to_wait, a PC leaving a department) makes a new request, but a PC that already
    ran this batch's job is not imaged again by it: only a new batch name or another image
    asks for that. Records are kept a day after their window. Pure."""
    for other_key, other in sorted(records.items()):
        pc = other.pcs.get(host)
        same = (other.name, other.action, other.image) == (name, action, image)
        if other_key != key and same and pc is not None and _ever_booted(pc):
            return pc
    return None
