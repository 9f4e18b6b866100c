"""The deployments' shell: gather the facts, run the pure step, keep its state, act on it.

One `step` per controller pass that applies a desired state (a new commit, a converge pass,
a window edge, a job report, a boot-file fetch, a session's news):

1. facts: the image inventory (cheap; checksums verified only for an image with declared
   integrity whose batch is about to arm, and cached by the image's content), the server's
   prerequisites, and what happened since the last step: dnsmasq's TFTP `sent` lines for
   per-PC boot files (reconciler.tftp_log, read incrementally by reconciler.log_tail), job
   reports from the listener on port 6461, the session runner's news (started, receivers,
   exits) and which feeder PIDs are alive;
2. `deployments.step(desired, state, facts, now)` (pure);
3. the new state is written (atomically) BEFORE anything is done about it, then the log
   position and the session news are marked as consumed;
4. the session commands run (their outcomes are facts of the next step);
5. every event goes to the audit log with the commit; then the wake-on-LAN commands are
   sent (reconciler.wake; best effort, each PC's result audited as `pc_woken`, a failure
   never stops the step), and a batch that ended gets its
   history document under the images root's `logs/` (reconciler.batch_history); a
   capture that succeeded gets the SHA-256 of every file of its new image audited
   (`image_captured`), ready to be pinned as the Image's manifest by a follow-up commit;
6. the per-PC boot files go back to the controller, which plans and applies them together
   with everything else, so they are written and removed atomically and audited; so does
   the images export, writable by a capture's master PC (fixed IP) while its batch is
   armed or running (`nfs_writers`).

An unreadable state file is an error, never an empty state (that would forget who was
imaged): `step` raises DeploymentStateError and the controller arms nobody until it is fixed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from loguru import logger

from reconciler import (
    batch_history,
    deployment_state,
    deployments,
    dhcp_leases,
    drbl_files,
    image_store,
    images,
    report_listener,
    tftp_log,
    wake,
)
from reconciler import deployment_rules as rules
from reconciler.audit import AuditLog, CommitInfo, Event, Result
from reconciler.clock import Clock
from reconciler.deployment_state import BatchPhase, DeploymentState, SessionPhase
from reconciler.deployments import (
    Backend,
    DeploymentEvent,
    DeploymentFacts,
    EventKind,
    ImageFacts,
    MenuFetched,
    Observation,
    PartitionStream,
    ReceiverJoined,
    ReportOrigin,
    ReportReceived,
    Requirement,
    SessionFailed,
    StartSession,
    StopSession,
    WakePcs,
)
from reconciler.desired import Action, Desired, Image
from reconciler.host import HostPathError, LocalHost
from reconciler.layout import Layout
from reconciler.log_tail import LogTail, Position
from reconciler.render import nfs
from reconciler.render.pxe import REPORT_PORT
from reconciler.rendered import Artifact
from reconciler.sessions import SessionRunner, Sessions

STATE_FILE = "deployments.json"
LOG_POSITION_FILE = "dnsmasq-log.position"
JOB_LOG_POSITION_FILE = "drbl-jobs.position"
SESSIONS_DIR = "sessions"
MAX_QUEUED_REPORTS = 10_000
"""Reports waiting for the next step; more means the loop is stuck, and the oldest go."""

Prerequisites = Callable[[Desired], Mapping[Requirement, str]]
ImageFactsSource = Callable[[Desired, DeploymentState, datetime], Mapping[str, ImageFacts]]
Listen = Callable[[str, int], socket.socket]
Wake = Callable[[str], None]
WakeOnLan = Callable[[str, Sequence[str]], Mapping[str, str | None]]
"""Send magic packets out of an interface to MACs; each MAC's error or None (`wake.send`)."""

_BLOCKING_KINDS = {
    images.Kind.missing: "ImageMissing",
    images.Kind.corrupt: "IntegrityMismatch",  # a checksum does not match, or is garbage
    images.Kind.incomplete: "ImageIncomplete",
    images.Kind.mismatch: "ImageMismatch",  # saved from another disk or firmware than declared
    images.Kind.unverified: "ImageUnverified",
}
"""The inventory's findings that block a batch (notes never do), worst first."""
_FAILURES = {EventKind.pc_failed, EventKind.batch_blocked}
_FAILED_SESSIONS = {"StartFailed", "StartLost"}


class DeploymentStateError(RuntimeError):
    """The deployment state file cannot be read: nobody is armed until it is fixed."""


def state_path(layout: Layout) -> str:
    return posixpath.join(layout.state_dir, STATE_FILE)


def load_state(root: str, layout: Layout) -> DeploymentState:
    """The saved deployment state (empty when there is none yet); DeploymentStateError when
    it is damaged."""
    try:
        data = LocalHost(root).read(state_path(layout))
    except (OSError, HostPathError) as error:
        raise DeploymentStateError(f"{state_path(layout)}: {error}") from None
    if data is None:
        return DeploymentState()
    try:
        return deployment_state.loads(data)
    except deployment_state.StateError as error:
        raise DeploymentStateError(f"{state_path(layout)}: {error}") from None


class DeployShell:
    def __init__(
        self,
        root: str,
        layout: Layout,
        clock: Clock,
        *,
        sessions: Sessions | None = None,
        backend: Backend = Backend.native,
        images: ImageFactsSource | None = None,
        prerequisites: Prerequisites | None = None,
        listen: Listen = report_listener.bind,
        localize: tftp_log.Localize = datetime.astimezone,
        leases: str | None = None,
        job_log: str = drbl_files.JOB_LOG,
        wake_on_lan: WakeOnLan = wake.send,
        live: bool = True,
    ) -> None:
        self.root = root
        self.live = live
        """False for a sandbox (services none, a root other than /): the state machine runs
        and the per-PC files are written under the root, but no sender is started, no
        magic packet is sent and no port is bound: nothing reaches the kitting network."""
        self.layout = layout
        self.clock = clock
        self.host = LocalHost(root)
        self.backend = backend
        self.sessions: Sessions = sessions or SessionRunner(
            Path(self.host.local_path(posixpath.join(layout.state_dir, SESSIONS_DIR))),
            root=root,
            clock=clock,
        )
        self.images = images or self._inventory
        self.prerequisites = prerequisites or self._prerequisites
        self.listen = listen
        self.localize = localize
        self.leases = leases or layout.dhcp_leases
        """dnsmasq's lease file (as the programs see it; read under the root)."""
        self.job_log = job_log
        """ocsmgrd's job log, read with the DRBL backend."""
        self.wake_on_lan = wake_on_lan
        """Sends the magic packets, in this process's network namespace (the controller's)."""
        self.wake: Wake = lambda reason: None
        """Set by the controller's loop: wakes it (a report arrived)."""
        self._lock = threading.Lock()
        self._reports: list[ReportReceived] = []
        self._outcomes: list[Observation] = []
        self._first = True
        self._state: DeploymentState | None = None
        self._tail: LogTail | None = None
        self._jobs: LogTail | None = None
        self._listener: report_listener.ReportListener | None = None
        self._listener_address = ""
        self._listener_error = "the report listener has not been started"
        self._verdicts: dict[str, ImageFacts] = {}
        self._said: set[str] = set()
        self._held: list[tuple[StartSession | WakePcs, AuditLog, CommitInfo | None]] = []
        self._log = logger.bind(target="deployments", commit=None)

    # ------------------------------------------------------------------ the step

    def step(
        self,
        desired: Desired,
        audit: AuditLog,
        commit: CommitInfo | None,
        *,
        hold: bool = False,
    ) -> tuple[Artifact, ...]:
        """One deployment step for `desired` (the state being applied); the per-PC files.

        With `hold`, the step's session starts and wakes wait for `settle`: the controller
        steps a commit before applying it (its per-PC files are part of the apply), and a
        sender must not start, nor a PC wake, for a commit whose apply then fails."""
        log = self._log.bind(commit=commit.sha[:12] if commit else None)
        self._held = []
        self._ensure_listener(desired)
        tail = self._tail_reader()
        state = self._load()
        now = self.clock.now()
        lines, position = tail.read()
        known = self._entries()
        fetches: list[Observation] = []
        for line in lines:
            sent = tftp_log.parse(line, now=now, localize=self.localize)
            if sent is not None and sent.path in known:
                fetches.append(MenuFetched(sent.path, sent.at, sent.client))
        with self._lock:
            reports: list[Observation] = list(self._reports)
        jobs = self._job_reader()
        job_lines, job_position = jobs.read() if jobs is not None else ([], None)
        logged = self._job_reports(job_lines, now)
        adopted = self.sessions.adopt() if self._first else []
        news = self._with_macs(self.sessions.observe(), now)
        observations = (*self._outcomes, *adopted, *news, *fetches, *reports, *logged)
        facts = DeploymentFacts(
            images=self.images(desired, state, now),
            missing=self.prerequisites(desired),
            observations=observations,
            alive_pids=self.sessions.alive_pids(),
            first_pass=self._first,
            drbl_port=self._drbl_port() if self.backend is Backend.drbl else None,
        )
        result = deployments.step(desired, state, facts, now, backend=self.backend)
        # The record first: a crash after this line loses at most an action, never a record.
        self._save(result.state)
        if position != tail.position:
            tail.commit(position)
            if position is not None:
                self._write(
                    posixpath.join(self.layout.state_dir, LOG_POSITION_FILE), position.to_json()
                )
        if jobs is not None and job_position != jobs.position:
            jobs.commit(job_position)
            if job_position is not None:
                self._write(
                    posixpath.join(self.layout.state_dir, JOB_LOG_POSITION_FILE),
                    job_position.to_json(),
                )
        self.sessions.commit()
        with self._lock:
            del self._reports[: len(reports)]
        self._outcomes = []
        self._first = False
        for command in result.commands:
            if isinstance(command, StopSession):  # stopping is always safe: at once
                self.sessions.stop(command)
        for event in result.events:
            self._record(audit, event, commit)
            log.bind(target=event.pc or event.batch or "deployments").info(
                f"{event.kind.value} ({event.reason}): {event.message}"
            )
        self._held = [
            (command, audit, commit)
            for command in result.commands
            if isinstance(command, StartSession | WakePcs)
        ]
        if not hold:
            self.settle(applied=True)
        self._captured(result, desired, audit, commit)
        self._history(state, result.state, desired, audit, commit)
        self.sessions.forget(result.state.batches.keys())
        return result.artifacts

    def settle(self, *, applied: bool, why: str = "") -> None:
        """Carry out the held session starts and wakes of the last step once its files are
        applied; when the apply failed, start nothing: each held session is reported failed
        (its multicast PCs are then missed, never imaged later by a sender nobody expects)
        and no PC is woken."""
        held, self._held = self._held, []
        now = self.clock.now()
        for command, audit, commit in held:
            log = self._log.bind(commit=commit.sha[:12] if commit else None, target=command.key)
            if not applied or not self.live:
                reason = (
                    f"the apply of this commit failed: {why or 'see the audit log'}"
                    if not applied
                    else "a sandbox (services none or a root other than /) starts no sender "
                    "and sends no packet"
                )
                if isinstance(command, StartSession):
                    self._outcomes.append(SessionFailed(command.key, f"not started: {reason}", now))
                else:
                    for host, _macs in command.pcs:
                        audit.append(
                            Event.pc_woken,
                            host,
                            Result.failure(f"not sent: {reason}"),
                            details={"batch": command.key, "interface": command.interface},
                            commit=commit,
                        )
                log.warning(f"{type(command).__name__} not carried out: {reason}")
            elif isinstance(command, StartSession):
                self._outcomes.append(self.sessions.start(command))
            else:
                self._wake(command, audit, commit)
        if self._outcomes:
            self.wake("session")

    def nfs_writers(self, desired: Desired) -> tuple[nfs.Writer, ...]:
        """The master PCs of capture batches that are armed or running and not done: each
        may write the images export as root until its job ends. A PC without a fixed IP
        cannot be named in an export, so its capture cannot write (said once)."""
        state = self._state
        if state is None:
            return ()
        hosts = {ref.pc.hostname: ref.pc for ref in desired.pcs()}
        found = []
        for record in state.batches.values():
            if (
                record.action is not Action.capture
                or record.withdrawn
                or record.phase not in (BatchPhase.armed, BatchPhase.running)
            ):
                continue
            for host, pc in sorted(record.pcs.items()):
                target = hosts.get(host)
                if pc.phase.final or target is None:
                    continue
                if target.ip is None:
                    message = (
                        f"capture {record.key}: {host} has no fixed IP, so the images export "
                        "cannot name it; it stays read-only and the capture cannot write"
                    )
                    if message not in self._said:
                        self._said.add(message)
                        self._log.error(message)
                    continue
                found.append(nfs.Writer(target.ip, f"batches.{record.name}"))
        return tuple(found)

    def active(self) -> bool:
        """Is a PC armed or a session running (then the loop looks for news often)?"""
        state = self._state
        if state is None:
            return False
        for record in state.batches.values():
            if record.phase in (BatchPhase.armed, BatchPhase.running):
                return True
            session = record.session
            if session is not None and session.phase is not SessionPhase.over:
                return True
        return False

    def has_news(self) -> bool:
        """Anything for a step: a report, a session outcome or news, a TFTP log line."""
        with self._lock:
            if self._reports:
                return True
        if self._outcomes or self.sessions.has_news():
            return True
        if self._jobs is not None and self._jobs.has_news():
            return True
        return self._tftp_news()

    def _tftp_news(self) -> bool:
        """Did dnsmasq send a per-PC entry? Its log also gets every DHCP exchange, which is
        no reason for a pass: lines without a fetch of an entry are skipped here (a skipped
        line can never matter later, since an entry is in the saved state before it is
        written)."""
        tail = self._tail
        if tail is None or not tail.has_news():
            return False
        known = self._entries()
        now = self.clock.now()
        lines, position = tail.read()
        for line in lines:
            sent = tftp_log.parse(line, now=now, localize=self.localize)
            if sent is not None and sent.path in known:
                return True
        tail.commit(position)
        return False

    def _entries(self) -> set[str]:
        state = self._state
        if state is None:
            return set()
        return {
            path
            for record in state.batches.values()
            for pc in record.pcs.values()
            for path in pc.entries
        }

    def report(self, line: str, peer: str) -> None:
        """A job report line (from the listener's thread); wakes the loop."""
        with self._lock:
            if len(self._reports) >= MAX_QUEUED_REPORTS:
                del self._reports[0]
                self._log.warning("too many job reports waiting; the oldest was dropped")
            self._reports.append(ReportReceived(line, self.clock.now(), peer))
        self.wake("report")

    def close(self) -> None:
        """The controller exits: stop the listener and every session (no orphaned sender)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.sessions.close()

    # ------------------------------------------------------------------ state

    def _load(self) -> DeploymentState:
        if self._state is None:
            self._state = load_state(self.root, self.layout)
        return self._state

    def _save(self, state: DeploymentState) -> None:
        self._write(state_path(self.layout), deployment_state.dumps(state))
        self._state = state

    def _write(self, path: str, data: bytes) -> None:
        self.host.write_atomic(path, data, 0o644)

    # ------------------------------------------------------------------ facts

    def _tail_reader(self) -> LogTail:
        if self._tail is not None:
            return self._tail
        log_path = Path(self.host.local_path(self.layout.dnsmasq_log))
        if not log_path.parent.is_dir():
            try:  # dnsmasq does not start when its log directory is missing
                log_path.parent.mkdir(parents=True, mode=0o755)
            except OSError as error:
                self._log.error(f"cannot create {log_path.parent}: {error}")
        self._tail = self._tail_of(self.layout.dnsmasq_log, LOG_POSITION_FILE)
        return self._tail

    def _tail_of(self, path: str, position_file: str) -> LogTail:
        log_path = Path(self.host.local_path(path))
        saved = self.host.read(posixpath.join(self.layout.state_dir, position_file))
        position = Position.from_json(saved) if saved is not None else None
        if position is None:
            # No saved place: what is in the log now is history; a log that does not exist
            # yet will be read from its start when dnsmasq creates it.
            try:
                position = Position(log_path.stat().st_ino, log_path.stat().st_size)
            except OSError:
                position = Position(0, 0)
        return LogTail(log_path, position)

    def _ensure_listener(self, desired: Desired) -> None:
        if not self.live:
            self._listener_error = "a sandbox binds no port: job reports are not taken"
            return
        if self.backend is Backend.drbl:
            # Port 6461 is DRBL's: drbl-ocs kills any ocsmgrd and starts its own for every
            # session, and ocsmgrd binds the port on every address. Binding it here would make
            # that ocsmgrd fail and lose every report; the reports come from its job log.
            self._listener_error = (
                f"with the DRBL backend, port {REPORT_PORT} belongs to DRBL's ocsmgrd, which "
                "runs only during a drbl-ocs session; the reconciler does not listen"
            )
            return
        address = str(desired.site.server.address)
        if (
            self._listener is not None
            and self._listener_address == address
            and self._listener.running
        ):
            return
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            sock = self.listen(address, REPORT_PORT)
        except OSError as error:
            message = f"cannot listen on {address}:{REPORT_PORT}: {error.strerror or error}"
            if message != self._listener_error:
                self._log.error(message)
            self._listener_error = message
            return
        self._listener = report_listener.ReportListener(sock, self.report).start()
        self._listener_address = address
        self._listener_error = ""

    def _prerequisites(self, desired: Desired) -> dict[Requirement, str]:
        site = desired.site
        missing: dict[Requirement, str] = {}
        live = site.boot.clonezilla
        absent = [
            name
            for name in (live.kernel, live.initrd, live.rootfs)
            if not self._is_file(posixpath.join(site.boot.tftp_root, name))
        ]
        if absent:
            missing[Requirement.clonezilla_live] = (
                f"not under {site.boot.tftp_root}: {', '.join(absent)}"
            )
        if not self._is_dir(site.images_root):
            missing[Requirement.nfs_export] = f"the images root {site.images_root} does not exist"
        if self._listener_error:
            missing[Requirement.report_listener] = self._listener_error
        search = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
        if shutil.which("udp-sender", path=search) is None:
            missing[Requirement.udp_sender] = "udp-sender is not installed (package udpcast)"
        if shutil.which("drbl-ocs", path=search) is None:
            missing[Requirement.drbl_ocs] = "drbl-ocs is not installed (package drbl)"
        elif self.backend is Backend.drbl:
            problem = self._drbl_problem(site.boot.tftp_root)
            if problem:
                missing[Requirement.drbl_ocs] = problem
        return missing

    def _drbl_problem(self, tftp_root: str) -> str:
        """Why DRBL cannot run a session here ('' when it can): drbl-ocs needs a server that
        drblpush has set up, and DRBL's boot files must not be the ones dnsmasq serves."""
        if not self._is_file(drbl_files.DRBL_DEPLOY_CONF):
            return (
                f"DRBL is not set up ({drbl_files.DRBL_DEPLOY_CONF} is missing): run drblpush "
                "first, or use backend: native"
            )
        if not self._is_file(drbl_files.DRBL_PXE_DEFAULT):
            return (
                f"DRBL is not set up ({drbl_files.DRBL_PXE_DEFAULT} is missing): run drblpush "
                "first, or use backend: native"
            )
        if self._drbl_port() is None:
            return f"no MULTICAST_PORT in {drbl_files.DRBL_OCS_CONF}"
        root = posixpath.normpath(tftp_root)
        if root == drbl_files.DRBL_TFTP_ROOT or root.startswith(drbl_files.DRBL_TFTP_ROOT + "/"):
            return (
                f"the site's tftp_root {tftp_root} is inside DRBL's {drbl_files.DRBL_TFTP_ROOT}, "
                "whose files drbl-ocs and ocsmgrd rewrite: give dnsmasq a directory of its own"
            )
        return ""

    def _drbl_port(self) -> int | None:
        try:
            data = self.host.read(drbl_files.DRBL_OCS_CONF)
        except (OSError, HostPathError):
            return None
        if data is None:
            return None
        return drbl_files.multicast_port(data.decode(errors="replace"))

    def _job_reader(self) -> LogTail | None:
        """ocsmgrd's job log, with the DRBL backend (its reports); None otherwise."""
        if self.backend is not Backend.drbl:
            return None
        if self._jobs is None:
            self._jobs = self._tail_of(self.job_log, JOB_LOG_POSITION_FILE)
        return self._jobs

    def _job_reports(self, lines: list[str], now: datetime) -> list[Observation]:
        found: list[Observation] = []
        for line in lines:
            job = drbl_files.job_line(line, now=now, localize=self.localize)
            if job is not None:
                found.append(ReportReceived(job.text, job.at, "ocsmgrd", ReportOrigin.ocsmgrd))
        return found

    def _with_macs(self, news: list[Observation], now: datetime) -> list[Observation]:
        """Receivers get the MAC that holds their address in dnsmasq's leases (a PC with a
        pool address is known by it); the lease file is read only when a receiver came."""
        if not any(isinstance(seen, ReceiverJoined) and not seen.mac for seen in news):
            return news
        try:
            data = self.host.read(self.leases)
        except (OSError, HostPathError) as error:
            self._log.warning(f"cannot read the DHCP leases {self.leases}: {error}")
            return news
        leases = dhcp_leases.parse(data.decode(errors="replace"), now=now) if data else {}
        return [
            replace(seen, mac=leases[seen.ip])
            if isinstance(seen, ReceiverJoined) and not seen.mac and seen.ip in leases
            else seen
            for seen in news
        ]

    def _is_file(self, path: str) -> bool:
        try:
            return os.path.isfile(self.host.local_path(path))
        except HostPathError:
            return False

    def _is_dir(self, path: str) -> bool:
        try:
            return os.path.isdir(self.host.local_path(path))
        except HostPathError:
            return False

    def _inventory(
        self, desired: Desired, state: DeploymentState, now: datetime
    ) -> dict[str, ImageFacts]:
        """Every image as the inventory judges it without reading the streams, except the
        images with declared integrity that a batch is about to arm: those are verified
        (every byte read) once per content."""
        images_root = desired.site.images_root
        try:
            found = image_store.inventory(self.root, images_root, declared=desired.images)
        except (OSError, HostPathError) as error:
            self._log.error(f"image inventory of {images_root} failed: {error}")
            return {}
        facts = {
            report.name: _facts(report, images_root, ignore_unverified=True)
            for report in found.reports
            if report.present
        }
        for name in sorted(self._about_to_arm(desired, state, now)):
            image = desired.images[name]
            if name in facts and image.integrity is not None:
                facts[name] = self._verified(images_root, image)
        return facts

    def _about_to_arm(self, desired: Desired, state: DeploymentState, now: datetime) -> set[str]:
        names = set()
        for key, request in rules.requests(desired).items():
            record = state.batches.get(key)
            waiting = record is None or record.phase in (BatchPhase.pending, BatchPhase.blocked)
            if (
                waiting
                and request.open_at(now)
                and request.batch.action is Action.restore
                and request.batch.image in desired.images
            ):
                names.add(request.batch.image)
        return names

    def _verified(self, images_root: str, image: Image) -> ImageFacts:
        base = image_store.images_dir(self.root, images_root)
        fingerprint = _fingerprint(os.path.join(base, image.name), image)
        cached = self._verdicts.get(fingerprint)
        if cached is not None:
            return cached
        listing = image_store.read_listing(base, image.name)
        if listing is None:
            return ImageFacts(
                problem=f"image {image.name} is not in {images_root}", reason="ImageMissing"
            )
        report = images.judge(listing)
        if listing.readable:
            wanted, found = images.expectations(listing, image.integrity)
            digests = image_store.hash_files(listing.path, images.digest_plan(wanted), within=base)
            report = images.verify(report, wanted, digests, image.integrity, found)
        report = images.compare([report], {image.name: image})[0]
        verdict = _facts(report, images_root, ignore_unverified=False)
        self._log.info(
            f"image {image.name} verified: {verdict.reason or 'ok'}"
            + (f" ({verdict.problem})" if verdict.problem else "")
        )
        self._verdicts[fingerprint] = verdict
        return verdict

    # ------------------------------------------------------------------ records

    def _record(self, audit: AuditLog, event: DeploymentEvent, commit: CommitInfo | None) -> None:
        failed = event.kind in _FAILURES or (
            event.kind is EventKind.session_stopped and event.reason in _FAILED_SESSIONS
        )
        result = (
            Result.failure(f"{event.reason}: {event.message}")
            if failed
            else Result.success(event.message)
        )
        details: dict[str, str] = {
            "batch": event.batch,
            "reason": event.reason,
            "at": event.at.isoformat(),
        }
        if event.pc:
            details["pc"] = event.pc
        audit.append(
            Event(event.kind.value),
            event.pc or event.batch or "deployments",
            result,
            details=dict(details),
            commit=commit,
        )

    def _wake(self, command: WakePcs, audit: AuditLog, commit: CommitInfo | None) -> None:
        """Send the magic packets; audit each PC's result. Never raises: waking is a help,
        the PCs can still be switched on by hand while the window is open."""
        log = self._log.bind(commit=commit.sha[:12] if commit else None)
        try:
            sent = dict(self.wake_on_lan(command.interface, command.macs))
        except Exception as error:  # a sender must not stop the step; say why, per PC
            log.bind(target=command.key).error(f"wake-on-LAN failed: {error}")
            sent = dict.fromkeys(command.macs, f"wake-on-LAN failed: {error}")
        for host, macs in command.pcs:
            errors = [f"{mac}: {sent[mac]}" for mac in macs if sent.get(mac, "not sent")]
            if errors:
                outcome = Result.failure("; ".join(errors))
            else:
                outcome = Result.success(
                    f"magic packet to {len(macs)} NICs out of {command.interface}"
                )
            audit.append(
                Event.pc_woken,
                host,
                outcome,
                details={
                    "batch": command.key,
                    "interface": command.interface,
                    "macs": list(macs),
                    "port": wake.PORT,
                },
                commit=commit,
            )
            line = f"pc_woken: {outcome.status.value}: {outcome.message}"
            log.bind(target=host).info(line)

    def _captured(
        self,
        result: deployments.Step,
        desired: Desired,
        audit: AuditLog,
        commit: CommitInfo | None,
    ) -> None:
        """A capture that reported success: the SHA-256 of every file of the new image, in
        the audit log (reads the whole image once)."""
        for event in result.events:
            record = result.state.batches.get(event.batch)
            if (
                event.kind is not EventKind.pc_succeeded
                or record is None
                or record.action is not Action.capture
            ):
                continue
            manifest, problem = self._manifest(desired.site.images_root, record.image)
            outcome = (
                Result.failure(problem)
                if problem
                else Result.success(f"{len(manifest)} files of {record.image} by {event.pc}")
            )
            audit.append(
                Event.image_captured,
                record.image,
                outcome,
                details={"batch": event.batch, "pc": event.pc, "manifest": dict(manifest)},
                commit=commit,
            )

    def _manifest(self, images_root: str, name: str) -> tuple[dict[str, str], str]:
        base = image_store.images_dir(self.root, images_root)
        listing = image_store.read_listing(base, name)
        if listing is None or not listing.readable:
            return {}, f"image {name} is not readable under {images_root}"
        plan = {entry.name: frozenset({"sha256"}) for entry in listing.files}
        digests = image_store.hash_files(listing.path, plan, within=base)
        unreadable = sorted(file for file, digest in digests.items() if digest is None)
        if unreadable:
            return {}, f"image {name}: cannot read {', '.join(unreadable[:5])}"
        return {file: d["sha256"] for file, d in sorted(digests.items()) if d is not None}, ""

    def _history(
        self,
        before: DeploymentState,
        after: DeploymentState,
        desired: Desired,
        audit: AuditLog,
        commit: CommitInfo | None,
    ) -> None:
        fixed = {ref.pc.hostname: str(ref.pc.ip) for ref in desired.pcs() if ref.pc.ip}
        for key, record in after.batches.items():
            if not batch_history.ended(record) or before.batches.get(key) == record:
                continue
            # a PC from the pool is known by the address it was seen with for this request
            addresses = {
                host: fixed.get(host) or pc.address
                for host, pc in record.pcs.items()
                if fixed.get(host) or pc.address
            }
            path = batch_history.path(desired.site.images_root, record)
            body = batch_history.document(
                record,
                self.sessions.usage(key),
                commit=commit.sha if commit else "",
                addresses=addresses,
            )
            outcome = record.outcome.value if record.outcome else "no outcome"
            try:
                if not self._is_dir(desired.site.images_root):  # never create the images root
                    raise FileNotFoundError(
                        f"the images root {desired.site.images_root} does not exist"
                    )
                self._write(path, body)
            except (OSError, HostPathError) as error:
                self._log.error(f"history of {key} not written to {path}: {error}")
                audit.append(
                    Event.deployment_recorded,
                    key,
                    Result.failure(f"{path}: {error}"),
                    details={"path": path, "outcome": outcome},
                    commit=commit,
                )
                continue
            audit.append(
                Event.deployment_recorded,
                key,
                Result.success(f"{outcome}: {rules.pc_tally(record.pcs)}"),
                details={"path": path, "outcome": outcome},
                commit=commit,
            )


def _facts(report: images.ImageReport, images_root: str, *, ignore_unverified: bool) -> ImageFacts:
    partitions = tuple(
        PartitionStream(
            part.name,
            tuple(posixpath.join(images_root, report.name, chunk) for chunk in part.chunks),
        )
        for part in report.partitions
    )
    blocking = [
        finding
        for finding in report.findings
        if finding.kind in _BLOCKING_KINDS
        and not (ignore_unverified and finding.kind is images.Kind.unverified)
    ]
    if not blocking:
        return ImageFacts(partitions=partitions)
    worst = min(blocking, key=lambda f: list(_BLOCKING_KINDS).index(f.kind))
    problem = "; ".join(f.message for f in blocking[:3])
    if len(blocking) > 3:
        problem += f" (+{len(blocking) - 3} more)"
    return ImageFacts(partitions=partitions, problem=problem, reason=_BLOCKING_KINDS[worst.kind])


def _fingerprint(directory: str, image: Image) -> str:
    """What the image is made of (names, sizes, modification times) and what it must match:
    an unchanged fingerprint means an unchanged verdict, without reading the streams."""
    digest = hashlib.sha256(image.model_dump_json().encode())
    try:
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                info = entry.stat(follow_symlinks=False)
                digest.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    except OSError as error:
        digest.update(f"unreadable: {error}".encode())
    return digest.hexdigest()
