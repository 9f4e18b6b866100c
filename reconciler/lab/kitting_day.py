"""The server's side of an imaging rehearsal: the deployments shell inside the lab server's
namespace, and the controller's passes while the PCs image.

`deployments(...)` gives the controller a `DeployShell` whose sessions (feeder and
udp-sender) run in the server's namespace and whose report listener is bound there.
`ServerLoop` runs the controller's passes in a thread while the PCs play: on news (a report,
a session outcome) or every `PAUSE` seconds, bounded in time; after each pass it keeps each
PC's phase, so that a PC's reboot step can wait until the server has taken its report.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from loguru import logger

from reconciler import report_listener, wake
from reconciler.audit import AuditLog, CommitInfo
from reconciler.clock import Clock
from reconciler.controller import Controller
from reconciler.deploy_shell import DeployShell, Listen, load_state
from reconciler.desired import Desired
from reconciler.lab import labsite
from reconciler.lab.nsthread import in_netns
from reconciler.lab.procs import netns_argv
from reconciler.layout import Layout
from reconciler.rendered import Artifact
from reconciler.sessions import SessionRunner

PAUSE = 0.3
MAX_SECONDS = 180.0
SETTLED = "succeeded"
WINDOW_BEFORE = timedelta(minutes=1)
WINDOW_AFTER = timedelta(minutes=30)


class KittingDayError(RuntimeError):
    """The server side of the imaging rehearsal could not be set up."""


def batch_window(now: datetime, disk: str, *, slow_client: bool = False) -> labsite.BatchWindow:
    """The lab batch's window: open from a minute ago for half an hour (`now` is aware, so
    the times carry their offset). With a slow client (Clonezilla's own ocs-sr takes about
    12 s to its first udp-receiver, more on a busy machine) the sender waits longer for the
    last PC and for the first. Pure."""
    if now.tzinfo is None:
        raise ValueError("the batch window needs an aware time")
    now = now.replace(microsecond=0)
    window = labsite.BatchWindow(
        start=(now - WINDOW_BEFORE).isoformat(), end=(now + WINDOW_AFTER).isoformat(), disk=disk
    )
    return replace(window, max_wait="60s", start_timeout="120s") if slow_client else window


def listen_in(netns: str) -> Listen:
    """Bind the report listener inside a namespace (`nsthread`); it then serves from anywhere."""

    def listen(address: str, port: int) -> socket.socket:
        return in_netns(netns, lambda: report_listener.bind(address, port))

    return listen


class LabDeployShell(DeployShell):
    """The deployments shell, keeping the per-PC files of its last step: the plan right
    after a pass must count them as desired too (the controller does the same)."""

    last_artifacts: tuple[Artifact, ...] = ()

    def step(
        self,
        desired: Desired,
        audit: AuditLog,
        commit: CommitInfo | None,
        *,
        hold: bool = False,
    ) -> tuple[Artifact, ...]:
        self.last_artifacts = super().step(desired, audit, commit, hold=hold)
        return self.last_artifacts


def deployments(layout: Layout, clock: Clock, netns: str) -> LabDeployShell:
    """The deployments shell of the lab server: root `/` (every path is in the layout)."""
    runner = SessionRunner(
        Path(layout.state_dir) / "sessions",
        root="/",
        clock=clock,
        wrap=lambda argv: netns_argv(netns, argv),
    )
    return LabDeployShell(
        "/",
        layout,
        clock,
        sessions=runner,
        listen=listen_in(netns),
        wake_on_lan=lambda interface, macs: in_netns(netns, lambda: wake.send(interface, macs)),
    )


class ServerLoop:
    """The controller's passes in a thread while the PCs image."""

    def __init__(self, controller: Controller, shell: DeployShell, layout: Layout) -> None:
        self.controller, self.shell, self.layout = controller, shell, layout
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-server", daemon=True)
        self.passes = 0
        self.error = ""

    def __enter__(self) -> ServerLoop:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=MAX_SECONDS)

    def settled(self, hostname: str) -> bool:
        with self._lock:
            return self._phases.get(hostname) == SETTLED

    def phases(self) -> dict[str, str]:
        with self._lock:
            return dict(self._phases)

    def _run(self) -> None:
        log = logger.bind(target="lab-server", commit=None)
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            waited = time.monotonic() + PAUSE
            while not self.shell.has_news() and time.monotonic() < waited:
                if self._stop.wait(0.05):
                    return
            try:
                self.controller.pass_once("deployment", converge=True)
                self.passes += 1
                self._read()
            except Exception as error:  # the PCs' steps say what went wrong for them
                log.exception("controller pass raised")
                self.error = f"{type(error).__name__}: {error}"
                return

    def _read(self) -> None:
        state = load_state("/", self.layout)
        phases = {
            host: pc.phase.value
            for record in state.batches.values()
            for host, pc in record.pcs.items()
        }
        with self._lock:
            self._phases = phases
