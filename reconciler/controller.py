"""The controller: make one server follow one branch of the site repo.

Each pass: fetch -> verify -> validate -> render/plan/apply, with every action in the audit
log. A commit that is invalid, unsigned or rewrites history is refused once (Stalled, with
the reason and the commit) and not tried again until the branch moves; the server keeps
the last applied good commit, which drift checks converge to again.

Triggers: the local repo changing (watchfiles), a remote polled at an interval with jitter,
a nudge (SIGHUP / `kitctl reconcile --now`), a drift timer, deployment windows opening
or closing, and deployment news (a job report, a boot-file fetch, a session's output; see
reconciler.deploy_shell and docs/deployment-shell.md). SIGTERM lets the pass in flight
finish, then stops the sessions. One controller per state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

import watchfiles
from loguru import logger

from reconciler import apply, deploy_shell, journal, reconcile, snapshot
from reconciler import status as status_file
from reconciler.audit import AuditLog, CommitInfo, Event, Result
from reconciler.checks import window_bounds
from reconciler.clock import Clock
from reconciler.commits import TrustPolicy, trust_policy
from reconciler.deployment_facts import Backend
from reconciler.desired import Desired
from reconciler.host import LocalHost
from reconciler.layout import Layout
from reconciler.live_firewall import NftReader, NoFirewall
from reconciler.problems import errors
from reconciler.render import nfs
from reconciler.rendered import Artifact
from reconciler.services import NoServices, OwnsPrograms, ServiceManager, SystemdServices
from reconciler.settings import Settings
from reconciler.source import (
    GitSource,
    HistoryRewritten,
    PermanentSourceError,
    SourceError,
    TransientSourceError,
)
from reconciler.status import READY, RECONCILING, STALLED, Status, Window

LOCK_NAME = "controller.lock"
SOURCE_DIR = "source"
DIRECT_DIR = "direct"
"""`services: direct`: the programs' private files (leases, PID files, host key) and logs."""
MAX_BACKOFF = 300.0
PROBLEM_LINES = 20
DEPLOYMENT_TICK = 0.5
"""Seconds between looks for deployment news (boot-file fetches, sender output) while a PC
is armed or a session runs; never while nothing is armed."""
DEPLOYMENT_TRIGGERS = frozenset({"report", "session", "deployment"})
"""Wake reasons that need a deployment step, hence a converging pass."""


class ControllerBusy(RuntimeError):
    """Another controller holds this state directory."""


def state_path(root: str, layout: Layout, name: str) -> Path:
    return Path(root) / layout.state_dir.lstrip("/") / name


@contextlib.contextmanager
def state_lock(root: str, layout: Layout) -> Iterator[None]:
    """One controller per state directory: an flock held for the process's life; the lock
    file holds the PID so `kitctl reconcile --now` can find it."""
    lock_path = state_path(root, layout, LOCK_NAME)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ControllerBusy(
                f"another controller (pid {holder}) already runs for {lock_path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        yield
    finally:
        os.close(fd)


def running_pid(root: str, layout: Layout) -> int | None:
    """The PID of the controller holding the lock, or None when none runs."""
    lock_path = state_path(root, layout, LOCK_NAME)
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PassOutcome:
    status: Status
    applied: bool = False
    """Did this pass apply a new commit?"""
    transient: bool = False
    """Did it hit a failure worth retrying with backoff?"""


class Controller:
    """One server, one branch. `pass_once` is one reconcile; `run` is the loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        layout: Layout | None = None,
        seams: reconcile.Seams | None = None,
        source: GitSource | None = None,
        deployments: deploy_shell.DeployShell | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.layout = layout or settings.layout()  # `paths` in the settings move the files
        self.root = settings.root
        self.seams = seams or _seams(settings, self.layout)
        self.state_host = LocalHost(self.root)
        self.source = source or GitSource(
            settings.source,
            state_path(self.root, self.layout, SOURCE_DIR),
            settings.branch,
            push_notes=settings.notes.push,
        )
        self.status = status_file.load(self.state_host, self.layout)
        # a sandbox (services none, or auto with a root other than /) reaches no network
        live = settings.services in ("systemd", "direct") or (
            settings.services == "auto" and settings.root == "/"
        )
        self.deployments = deployments or deploy_shell.DeployShell(
            self.root, self.layout, clock, backend=Backend(settings.backend), live=live
        )
        self._applied: Desired | None = None
        self._applied_loaded = False
        # A refused head is judged once more by a new process: the operator may have
        # changed the settings (allow_rewrite, signers) and restarted to let it through.
        # The same refusal is not reported again.
        self._recheck_refused = True

    # ------------------------------------------------------------------ one pass

    def pass_once(self, trigger: str = "manual", *, converge: bool = False) -> PassOutcome:
        """Fetch, and apply a new head if there is one; with `converge`, also bring the
        server back to the last applied commit (drift checks, window edges)."""
        now = self.clock.now()
        self.status = replace(self.status, pid=os.getpid()).with_condition(
            RECONCILING, True, "Progressing", f"pass started ({trigger})", now
        )
        log = logger.bind(commit=self.status.last_applied[:12] or None, target=self.settings.branch)
        outcome = PassOutcome(self.status)
        try:
            # on disk now, so that `kitctl status` shows a long pass as Reconciling
            status_file.save(self.state_host, self.layout, self.status)
            with AuditLog.at_root(self.root, self.clock, layout=self.layout) as audit:
                outcome = self._pass(audit, trigger, converge)
        except Exception as error:  # a bug or an unexpected OS error: say so, keep the loop
            log.exception(f"pass failed: {error}")
            self.status = self.status.with_condition(
                READY, False, "ReconcileError", str(error), self.clock.now()
            )
            outcome = PassOutcome(self.status, transient=True)
        finally:
            self.status = self._finish(self.status)
            status_file.save(self.state_host, self.layout, self.status)
        return replace(outcome, status=self.status)

    def _pass(self, audit: AuditLog, trigger: str, converge: bool) -> PassOutcome:
        applied = False
        transient = False
        try:
            fetched = self.source.fetch(
                since=self.status.last_applied or None, allow_rewrite=self.settings.allow_rewrite
            )
        except HistoryRewritten as error:
            self._recheck_refused = False
            self.status = replace(self.status, last_attempted=error.new_sha)
            info = self._info(error.new_sha)
            self._refuse(audit, error.new_sha, info, error.reason, str(error))
        except TransientSourceError as error:
            transient = True
            self._source_failed(error.reason, f"{error}; retrying with backoff", stalled=False)
        except SourceError as error:  # permanent: the branch is gone, objects refused...
            self._source_failed(error.reason, str(error), stalled=True)
        else:
            head = fetched.new_sha
            self._source_recovered()
            if head == self.status.last_applied:
                if self.status.refused:  # the refused head left the branch (reverted push)
                    self._withdraw_refusal(head)
            elif head != self.status.refused or self._recheck_refused:
                applied, transient = self._try(audit, head)
            self._recheck_refused = False
        if converge and not applied:
            transient = self._converge(audit, trigger) or transient
        return PassOutcome(self.status, applied=applied, transient=transient)

    def _try(self, audit: AuditLog, head: str) -> tuple[bool, bool]:
        """Verify, validate and apply one new head. Returns (applied, transient failure)."""
        self.status = replace(self.status, last_attempted=head)
        info = self._info(head)
        log = logger.bind(commit=head[:12], target=self.settings.branch)
        policy = self._trust()
        if policy.require_signed:
            verdict = self.source.verify(head, policy)
            if not verdict.ok:
                self._refuse(audit, head, info, str(verdict.reason), verdict.message)
                return False, False
            log.info(f"signature verified: {verdict.signer}")
        try:
            files = self.source.files_at(head)
        except PermanentSourceError as error:  # an unsafe path, a tree too large
            self._refuse(audit, head, info, error.reason, str(error))
            return False, False
        validation = snapshot.validate_files(f"{head[:12]}", files)
        if validation.desired is None:
            problems = [p.text() for p in errors(validation.problems)]
            shown = "\n".join(problems[:PROBLEM_LINES])
            more = (
                f"\n(+{len(problems) - PROBLEM_LINES} more)"
                if len(problems) > PROBLEM_LINES
                else ""
            )
            self._refuse(audit, head, info, "ValidationFailed", shown + more)
            return False, False
        extra, writers = self._deploy(audit, validation.desired, info)
        built, report = reconcile.apply_for(
            validation.desired,
            self.root,
            self.layout,
            commit=head,
            seams=self.seams,
            on_result=journal.recorder(audit, info),
            extra=extra,
            nfs_writers=writers,
        )
        self.deployments.settle(applied=report.ok, why=_failures(report))
        if report.ok:
            self._applied, self._applied_loaded = validation.desired, True
            self.source.mark_applied(head)
            audit.append(
                Event.commit_applied,
                self.settings.branch,
                Result.success(built.summary),
                details={"summary": built.summary},
                commit=info,
            )
            self._note(head, built.summary)
            self.status = replace(self.status, last_applied=head, refused="", refused_reason="")
            self._set(READY, True, "ApplySucceeded", f"applied {head[:12]}: {built.summary}")
            self._set(STALLED, False, "ApplySucceeded", "")
            log.info(f"applied: {built.summary}")
            return True, False
        reasons = {r.reason for r in report.results if r.status.value != "ok"}
        message = "; ".join(
            f"{r.target}: {r.reason}: {r.message}" for r in report.results if r.status.value != "ok"
        )
        if "PreflightRejected" in reasons:
            # The real programs reject what this commit renders: permanent for this commit.
            self._refuse(audit, head, info, "PreflightRejected", message)
            return False, False
        if "PlanBlocked" in reasons:
            self._set(READY, False, "PlanBlocked", message)
            self._set(STALLED, True, "PlanBlocked", message)
            return False, False
        self._set(READY, False, "ApplyFailed", f"{message}; retrying with backoff")
        return False, True

    def _converge(self, audit: AuditLog, trigger: str) -> bool:
        """Bring the server back to the last applied commit. Returns True on a transient failure."""
        desired = self._last_applied_desired()
        if desired is None:
            return False
        info = self.source.commit_info(self.status.last_applied)
        extra, writers = self._deploy(audit, desired, info)
        _built, report = reconcile.apply_for(
            desired,
            self.root,
            self.layout,
            commit=self.status.last_applied,
            seams=self.seams,
            on_result=journal.recorder(audit, info),
            extra=extra,
            nfs_writers=writers,
        )
        self.deployments.settle(applied=report.ok, why=_failures(report))
        repaired = tuple(r.target for r in report.results if r.reason == "DriftRepaired")
        firewall = tuple(
            "firewall" for r in report.results if r.action == "firewall" and r.status.value == "ok"
        )
        self.status = replace(
            self.status,
            drift=repaired + firewall,
            last_drift_check=self.clock.now().isoformat(),
        )
        if repaired or firewall:
            logger.bind(commit=self.status.last_applied[:12], target="drift").warning(
                f"drift repaired ({trigger}): {', '.join(repaired + firewall)}"
            )
        if not report.ok:
            message = "; ".join(r.message for r in report.results if r.status.value != "ok")
            self._set(READY, False, "ApplyFailed", message)
            return True
        # a refused head or a failing fetch keeps Ready false: the server matches an older
        # commit than the branch's, or one that may be old by now
        if not (self.status.refused or self.status.source_error):
            self._set(
                READY, True, "ApplySucceeded", f"server matches {self.status.last_applied[:12]}"
            )
        return False

    # ------------------------------------------------------------------ helpers

    def _deploy(
        self, audit: AuditLog, desired: Desired, info: CommitInfo
    ) -> tuple[tuple[Artifact, ...], tuple[nfs.Writer, ...]]:
        """The deployment step for the state about to be applied: its per-PC boot files,
        and the capturing PCs that may write the images export.

        A new commit is stepped before its apply. If the apply is then refused (preflight),
        the requests it changed or removed stay withdrawn: a changed batch is a new request
        either way, and the refused one is never armed.
        """
        log = logger.bind(commit=info.sha[:12], target="deployments")
        try:
            artifacts = self.deployments.step(desired, audit, info, hold=True)
            return artifacts, self.deployments.nfs_writers(desired)
        except deploy_shell.DeploymentStateError as error:
            log.error(f"deployments paused, nobody is armed: {error}")
        except Exception as error:  # a bug: arm nobody rather than act on a half-done step
            log.exception(f"deployment step failed, nobody is armed: {error}")
        self.deployments.settle(applied=False, why="the deployment step failed")
        return (), ()

    def _last_applied_desired(self) -> Desired | None:
        if not self._applied_loaded and self.status.last_applied:
            self._applied_loaded = True
            try:
                files = self.source.files_at(self.status.last_applied)
            except SourceError:
                return None
            self._applied = snapshot.validate_files(self.status.last_applied[:12], files).desired
        return self._applied

    def _trust(self) -> TrustPolicy:
        applied = self._last_applied_desired()
        return trust_policy(
            self.settings.signers,
            operator_require_signed=self.settings.require_signed,
            last_applied=applied.site.git if applied is not None else None,
            last_applied_sha=self.status.last_applied or None,
        )

    def _info(self, sha: str) -> CommitInfo:
        """The commit's metadata for the audit; bare (SHA only) if the clone cannot tell."""
        try:
            return self.source.commit_info(sha)
        except SourceError:
            return CommitInfo(sha=sha, author="", committer="", date="", subject="")

    def _refuse(
        self, audit: AuditLog, head: str, info: CommitInfo, reason: str, message: str
    ) -> None:
        """Report a refused head once; the server keeps the last applied commit."""
        if (head, reason) != (self.status.refused, self.status.refused_reason):
            audit.append(
                Event.commit_refused,
                self.settings.branch,
                Result.failure(f"{reason}: {message}"),
                details={"reason": reason, "head": head},
                commit=info,
            )
            logger.bind(commit=head[:12], target=self.settings.branch).error(
                f"commit refused ({reason}): {message.splitlines()[0] if message else ''}"
            )
        keeps = (
            f"; the server keeps {self.status.last_applied[:12]}"
            if self.status.last_applied
            else ""
        )
        self.status = replace(self.status, refused=head, refused_reason=reason)
        self._set(READY, False, reason, f"{head[:12]} refused{keeps}: {message}")
        self._set(STALLED, True, reason, f"{head[:12]}: {message}")

    def _withdraw_refusal(self, head: str) -> None:
        """The branch is back at the applied commit: the refused head no longer blocks."""
        refused = self.status.refused
        self.status = replace(self.status, refused="", refused_reason="")
        message = f"branch back at {head[:12]}; {refused[:12]} is no longer its head"
        self._set(READY, True, "UpToDate", message)
        self._set(STALLED, False, "UpToDate", message)

    def _source_failed(self, reason: str, message: str, *, stalled: bool) -> None:
        self.status = replace(self.status, source_error=reason)
        self._set(READY, False, reason, message)
        if stalled:
            self._set(STALLED, True, reason, message)

    def _source_recovered(self) -> None:
        """A fetch worked again: lift the conditions the failed fetches had set."""
        failed = self.status.source_error
        if not failed:
            return
        self.status = replace(self.status, source_error="")
        ready, stalled = self.status.condition(READY), self.status.condition(STALLED)
        refused, why = self.status.refused, self.status.refused_reason
        if stalled is not None and stalled.reason == failed:
            if refused:
                self._set(STALLED, True, why, f"{refused[:12]} refused ({why})")
            else:
                self._set(STALLED, False, "UpToDate", "the site repo can be fetched again")
        if ready is not None and ready.reason == failed:
            if refused:
                self._set(READY, False, why, f"{refused[:12]} refused ({why})")
            elif self.status.last_applied:
                self._set(
                    READY, True, "UpToDate", f"the server runs {self.status.last_applied[:12]}"
                )

    def _note(self, head: str, summary: str) -> None:
        if not self.settings.notes.enabled:
            return
        try:
            # GitSource pushes the notes too when the settings ask for it (push_notes)
            self.source.add_note(head, f"kitting: applied on this server: {summary}")
        except SourceError as error:  # notes are a courtesy; never fail a pass for them
            logger.bind(commit=head[:12], target="notes").warning(f"git note not recorded: {error}")

    def _set(self, kind: str, value: bool, reason: str, message: str) -> None:
        self.status = self.status.with_condition(kind, value, reason, message, self.clock.now())

    def _finish(self, current: Status) -> Status:
        now = self.clock.now()
        done = current.with_condition(RECONCILING, False, "Idle", "", now)
        return replace(done, open_windows=tuple(self.open_windows(now)), updated=now.isoformat())

    # ------------------------------------------------------------------ schedule

    def open_windows(self, now: datetime) -> list[Window]:
        desired = self._last_applied_desired()
        if desired is None:
            return []
        found = []
        for name in sorted(desired.batches):
            bounds = window_bounds(desired, desired.batches[name])
            if bounds and bounds[0] <= now < bounds[1]:
                found.append(Window(name, bounds[0].isoformat(), bounds[1].isoformat()))
        return found

    def next_window_edge(self, now: datetime) -> datetime | None:
        """The next moment a deployment window of the applied state opens or closes."""
        desired = self._last_applied_desired()
        if desired is None:
            return None
        edges = [
            edge
            for batch in desired.batches.values()
            for edge in (window_bounds(desired, batch) or ())
            if edge > now
        ]
        return min(edges, default=None)

    # ------------------------------------------------------------------ loop

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> int:
        """The loop. Returns 0 after a clean stop (SIGTERM/SIGINT, or `stop` set)."""
        with state_lock(self.root, self.layout), _Wakeup() as wakeup:
            # what the previous controller left, now that nobody else can write it
            self.status = status_file.load(self.state_host, self.layout)
            stop = stop or threading.Event()
            wakeup.on_signals(stop)
            watcher = _watch_local(self.settings.source, wakeup, stop)
            stopper = _poke_on_stop(wakeup, stop)
            self.deployments.wake = wakeup.poke
            services = self.seams.services
            if isinstance(services, OwnsPrograms):
                for failure in services.start_existing():
                    logger.bind(commit=None, target="services").error(f"not started: {failure}")
            try:
                return self._loop(wakeup, stop, once=once)
            finally:
                stop.set()
                wakeup.poke()
                stopper.join(timeout=5)
                if watcher is not None:
                    watcher.join(timeout=5)
                # No sender outlives a clean stop (deploy/systemd: KillMode=mixed).
                self.deployments.close()
                self.source.close()
                if isinstance(services, OwnsPrograms):
                    services.stop_all()  # its children end with it

    def _loop(self, wakeup: _Wakeup, stop: threading.Event, *, once: bool) -> int:
        local = _local_git_dir(self.settings.source) is not None
        rng = random.Random()  # noqa: S311 - jitter, not secrets
        backoff = 0.0
        next_drift = self.clock.now()
        trigger = "start"
        retrying = False
        edge: datetime | None = None
        while not stop.is_set():
            started = self.clock.now()
            # An edge that passed since the last pass began gets a converging pass, also
            # when it passed while that pass ran or when a commit was what woke us.
            edge_passed = edge is not None and started >= edge
            converge = (
                retrying
                or edge_passed
                or started >= next_drift
                or trigger in ("nudge", "start")
                or trigger in DEPLOYMENT_TRIGGERS
            )
            outcome = self.pass_once(trigger, converge=converge)
            if once:
                ready = outcome.status.condition(READY)
                return 0 if ready is not None and ready.status and not outcome.transient else 1
            now = self.clock.now()
            if converge:
                next_drift = now + timedelta(seconds=self.settings.drift_interval)
            retrying = outcome.transient
            backoff = min(max(1.0, backoff * 2), MAX_BACKOFF) if retrying else 0.0
            poll = self.settings.interval * (1 + rng.uniform(-0.1, 0.1))
            next_poll = now + timedelta(
                seconds=backoff or (poll if not local else self.settings.interval * 10)
            )
            edge = self.next_window_edge(started)  # may lie in the past: then no wait
            deadline = min(d for d in (next_poll, next_drift, edge) if d is not None)
            self.status = replace(self.status, next_pass=deadline.isoformat())
            status_file.save(self.state_host, self.layout, self.status)
            reason = self._wait(wakeup, stop, deadline)
            now = self.clock.now()
            if reason:
                trigger = reason
            elif edge is not None and now >= edge:
                trigger = "window"
            elif now >= next_drift:
                trigger = "drift"
            else:
                trigger = "poll"
        logger.bind(commit=self.status.last_applied[:12] or None, target="controller").info(
            "stopped"
        )
        return 0

    def _wait(self, wakeup: _Wakeup, stop: threading.Event, deadline: datetime) -> str:
        """Sleep until `deadline` or a wake-up. While a PC is armed or a session runs, look
        for deployment news every DEPLOYMENT_TICK seconds and end the wait when there is
        some ("deployment"); otherwise sleep in one piece. Returns the wake reason, "" when
        the deadline came."""
        left = max(0.0, (deadline - self.clock.now()).total_seconds())
        end = time.monotonic() + left
        while True:
            active = self.deployments.active()
            reason = wakeup.wait(min(left, DEPLOYMENT_TICK) if active else left)
            if reason or stop.is_set():
                return reason
            if active and self.deployments.has_news():
                return "deployment"
            left = end - time.monotonic()
            if left <= 0:
                return ""


def _seams(settings: Settings, layout: Layout) -> reconcile.Seams:
    seams = reconcile.seams_for(settings.root, layout)
    if settings.services == "none":
        return reconcile.Seams(seams.host, NoServices(), NoFirewall(), seams.preflight)
    if settings.services == "systemd":
        return reconcile.Seams(seams.host, SystemdServices(), NftReader(), seams.preflight)
    if settings.services == "direct":
        return reconcile.Seams(
            seams.host, _direct_services(settings, layout), NftReader(), seams.preflight
        )
    return seams


def _direct_services(settings: Settings, layout: Layout) -> ServiceManager:
    """`services: direct`: the programs run as the controller's children, in its network
    namespace (the lab runs `kitctl run` inside its server namespace this way)."""
    from reconciler.lab.procs import ProcessRegistry  # noqa: PLC0415 - only this mode needs it
    from reconciler.lab.services import LabServices  # noqa: PLC0415

    private = state_path(settings.root, layout, DIRECT_DIR)
    return LabServices(ProcessRegistry(private / "logs"), None, layout, private)


# ---------------------------------------------------------------------- waking up


class _Wakeup:
    """A self-pipe: signals, the file watcher and `poke` wake the loop's select()."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._reasons: list[str] = []
        self._old: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        self._old_fd = -1

    def __enter__(self) -> _Wakeup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old:
            signal.set_wakeup_fd(self._old_fd)
            for signum, handler in self._old.items():
                signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def on_signals(self, stop: threading.Event) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests run the loop in a thread; they stop it through `stop`

        def finish(signum: int, frame: FrameType | None) -> None:
            stop.set()  # the pass in flight completes; the loop then exits

        def nudge(signum: int, frame: FrameType | None) -> None:
            self._reasons.append("nudge")

        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum, handler in (
            (signal.SIGTERM, finish),
            (signal.SIGINT, finish),
            (signal.SIGHUP, nudge),
            (signal.SIGUSR1, nudge),
        ):
            self._old[signum] = signal.signal(signum, handler)

    def poke(self, reason: str = "") -> None:
        if reason:
            self._reasons.append(reason)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"!")

    def wait(self, timeout: float) -> str:
        """Wait up to `timeout` seconds; the reason that woke us, or "" on timeout."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 4096):
                    pass
        reasons, self._reasons = self._reasons, []
        if reasons:
            return "nudge" if "nudge" in reasons else reasons[0]
        return "signal" if ready else ""


def _poke_on_stop(wakeup: _Wakeup, stop: threading.Event) -> threading.Thread:
    """Wake the loop's select() when `stop` is set from another thread (a signal handler
    sets it in the loop's own thread, whose select the signal wakes anyway). Blocks in
    Event.wait: no polling, no CPU while idle."""

    def wait_then_poke() -> None:
        stop.wait()
        wakeup.poke()

    thread = threading.Thread(target=wait_then_poke, name="kitting-stop", daemon=True)
    thread.start()
    return thread


def _local_git_dir(source: str) -> Path | None:
    """The git directory of a local source (work tree or bare), or None for a URL."""
    path = Path(source)
    if "://" in source or not path.exists():
        return None
    if (path / ".git").is_dir():
        return path / ".git"
    if (path / "HEAD").is_file() and (path / "refs").is_dir():
        return path
    return None


def _watch_local(source: str, wakeup: _Wakeup, stop: threading.Event) -> threading.Thread | None:
    """For a local source, wake the loop when its refs move (no polling)."""
    git_dir = _local_git_dir(source)
    if git_dir is None:
        return None

    def refs_only(change: watchfiles.Change, path: str) -> bool:
        return "/refs/" in path or path.endswith(("packed-refs", "HEAD"))

    def watch() -> None:
        for _changes in watchfiles.watch(
            git_dir,
            watch_filter=refs_only,
            stop_event=stop,
            debounce=50,
            # watchfiles wakes every `step` ms even when nothing changes (to look at
            # stop_event): 50 ms costs ~0.13 % of a CPU idle, 20 ms ~0.4 %, and adds ~35 ms
            # to a commit's latency (bench/controller_latency.py, docs/performance.md)
            step=50,
            rust_timeout=1000,
            yield_on_timeout=False,
            raise_interrupt=False,
        ):
            wakeup.poke("commit")

    thread = threading.Thread(target=watch, name="kitting-watch", daemon=True)
    thread.start()
    return thread


def _failures(report: apply.Report) -> str:
    return "; ".join(f"{r.target}: {r.reason}" for r in report.results if r.status.value != "ok")
