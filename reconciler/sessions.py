"""Sessions: carry out the deployments' StartSession/StopSession commands, report back.

The native backend starts one feeder process per session (`reconciler.session_feed`, run as
`python -m reconciler.session_feed DIR`), which runs udp-sender once per partition in
`parts` order and writes each partition's chunk files into it unmodified. The DRBL backend
runs the pure `drbl-ocs ... startdisk` command line inside the same kind of feeder process: drbl-ocs
returns once it has set DRBL up, leaving ocsmgrd and its udp-sender running in the
background (in the feeder's process group); the feeder then stands for the session until it
is stopped, and runs `drbl-ocs stop` itself. Running drbl-ocs from the controller would
block its pass for minutes, and a captured pipe would stay open as long as DRBL's sender.

Every session has a directory under the state directory (`sessions/KEY/`): the spec, the
feeder's PID record (PID, the process's start time and the boot id, so that a reused PID is
never taken for our feeder and never signalled), udp-sender's output and the feeder's
events. That is what lets a restarted controller adopt a running session (`adopt`), or stop
it, as the state machine asks: the PID in the deployment state is checked against this
record before it is reported alive or signalled.

Stopping ends the feeder's process group (it runs in a session of its own, with udp-sender
inside): SIGTERM first, SIGKILL when a later stop finds it still running after STOP_GRACE.
A DRBL feeder gets SIGTERM alone (it must live to run `drbl-ocs stop`, which ends DRBL's
processes) and DRBL_STOP_GRACE before its group is killed.
`close` (the controller exiting) stops every session it knows, so that no sender outlives a
cleanly stopped controller; under systemd, KillMode=mixed would SIGKILL them anyway once the
controller's main process is gone (deploy/systemd/kitting-reconciler.service).

`wrap` runs the feeder somewhere else than here: the lab passes `ip netns exec SERVER` so
that the sender binds inside the lab's server namespace.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from reconciler import runner, session_feed
from reconciler.batch_history import PartitionUsage, Usage
from reconciler.clock import Clock
from reconciler.deployment_facts import (
    Observation,
    ReceiverJoined,
    SessionExited,
    SessionFailed,
    SessionStarted,
)
from reconciler.deployment_machine import StartSession, StopSession
from reconciler.deployment_session import drbl_ocs_stop_argv
from reconciler.host import HostPathError, LocalHost

RECORD = "pid.json"
OFFSET = "events.offset"
FEEDER_LOG = "feeder.log"
STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL for a session's process group."""
CLOSE_WAIT = 10.0
"""Seconds `close` waits for every session to end after SIGTERM, before SIGKILL."""
DRBL_TIMEOUT = 600.0
"""`drbl-ocs stop` run by the controller (when no feeder of the session is left)."""
DRBL_STOP_GRACE = session_feed.DRBL_STOP_TIMEOUT + 15.0
"""Seconds a DRBL feeder gets after SIGTERM to run `drbl-ocs stop` before SIGKILL."""
POLL = 0.05

Wrap = Callable[[Sequence[str]], list[str]]

_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}@[0-9a-f]{1,64}$")


class Sessions(Protocol):
    """What the controller needs from a session runner (FakeSessions in tests)."""

    def start(self, command: StartSession) -> SessionStarted | SessionFailed: ...
    def stop(self, command: StopSession) -> None: ...
    def adopt(self) -> list[Observation]: ...
    def observe(self) -> list[Observation]: ...
    def commit(self) -> None: ...
    def alive_pids(self) -> frozenset[int]: ...
    def has_news(self) -> bool: ...
    def usage(self, key: str) -> Usage: ...
    def forget(self, keep: Collection[str]) -> None: ...
    def close(self) -> None: ...


@dataclass
class _Handle:
    key: str
    directory: Path
    pid: int
    ticks: int
    boot_id: str
    child: subprocess.Popen[bytes] | None = None
    offset: int = 0
    pending: int = 0
    term_sent: float | None = None
    exit_seen: bool = False
    """Its exit was reported (and committed): not reported again."""
    exit_pending: bool = False
    drbl: bool = False
    """A DRBL session: SIGTERM the feeder alone, and give it DRBL_STOP_GRACE."""

    @property
    def grace(self) -> float:
        return DRBL_STOP_GRACE if self.drbl else STOP_GRACE


def directory_name(key: str) -> str:
    """The session directory's name: the key itself when it is a plain request key."""
    if _KEY.fullmatch(key):
        return key
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class SessionRunner:
    """The real runner: feeder processes, PID records, udp-sender and drbl-ocs."""

    def __init__(
        self,
        directory: Path,
        *,
        root: str,
        clock: Clock,
        wrap: Wrap | None = None,
        run: runner.Runner = runner.run,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.root = root
        self.clock = clock
        self.wrap: Wrap = wrap or list
        self.run = run
        self.python = python
        self.env = env
        self._handles: dict[str, _Handle] = {}
        self._log = logger.bind(target="sessions", commit=None)

    # ------------------------------------------------------------------ commands

    def start(self, command: StartSession) -> SessionStarted | SessionFailed:
        now = self.clock.now()
        spec = command.spec
        try:
            if spec.runs:
                body: dict[str, Any] = {"key": command.key, "runs": self._runs(command)}
            elif spec.drbl_argv:
                stop = list(drbl_ocs_stop_argv())
                body = {"key": command.key, "drbl": {"start": list(spec.drbl_argv), "stop": stop}}
            else:
                return SessionFailed(command.key, "the session spec names nothing to run", now)
            handle = self._launch(command.key, body)
        except (OSError, HostPathError, ValueError) as error:
            self._log.error(f"session {command.key} not started: {error}")
            return SessionFailed(command.key, str(error), now)
        self._log.info(f"session {command.key} started: pid {handle.pid} ({spec.summary})")
        return SessionStarted(command.key, handle.pid, now)

    def stop(self, command: StopSession) -> None:
        handle = next(
            (
                h
                for h in self._handles.values()
                if command.pid is not None and h.pid == command.pid and self._alive(h)
            ),
            None,
        )
        if handle is None:
            # Not a feeder of ours (or already gone): never signal a PID we cannot vouch for.
            # A DRBL session without its feeder (killed) may have left DRBL running: stop it.
            if command.argv:
                done = self.run(command.argv, timeout=DRBL_TIMEOUT)
                if not done.ok:
                    self._log.error(f"{' '.join(command.argv)}: {done.output}")
            return
        now = time.monotonic()
        if handle.term_sent is None:
            # a DRBL feeder runs `drbl-ocs stop` itself on SIGTERM
            self._signal(handle, signal.SIGTERM, group=not handle.drbl)
            handle.term_sent = now
            self._log.info(f"session {handle.key}: pid {handle.pid} stopped ({command.reason})")
        elif now - handle.term_sent >= handle.grace:
            self._signal(handle, signal.SIGKILL)
            self._log.warning(f"session {handle.key}: pid {handle.pid} ignored SIGTERM: SIGKILL")

    # ------------------------------------------------------------------ facts

    def adopt(self) -> list[Observation]:
        """After a controller start: every session directory with a live feeder is reported
        as started again (same PID: the state machine recognizes it), the others are read
        for their events."""
        found: list[Observation] = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.iterdir()):
            record = _read_record(path / RECORD)
            if record is None or record["key"] in self._handles:
                continue
            handle = _Handle(
                key=record["key"],
                directory=path,
                pid=record["pid"],
                ticks=record["ticks"],
                boot_id=record["boot_id"],
                offset=_read_offset(path / OFFSET),
                drbl=record.get("drbl") is True,
            )
            handle.pending = handle.offset
            self._handles[handle.key] = handle
            if self._alive(handle):
                started = datetime.fromisoformat(record["started_at"])
                found.append(SessionStarted(handle.key, handle.pid, started))
                self._log.info(f"session {handle.key}: feeder pid {handle.pid} still runs")
        return found

    def observe(self) -> list[Observation]:
        """What the feeders said since the last commit: receivers that joined, and exits."""
        found: list[Observation] = []
        for handle in self._handles.values():
            # look at the exit first, so that an exit event written just before is read
            code = handle.child.poll() if handle.child is not None else None
            events, exited = self._events(handle)
            found += events
            handle.exit_pending = exited
            if code is not None and not exited and not handle.exit_seen:
                # killed before it could write its exit event (SIGKILL)
                found.append(SessionExited(handle.key, self.clock.now(), code, handle.pid))
                handle.exit_pending = True
        return found

    def commit(self) -> None:
        """What `observe` returned is recorded: do not report it again."""
        for handle in self._handles.values():
            if handle.pending != handle.offset:
                handle.offset = handle.pending
                _write_atomic(handle.directory / OFFSET, f"{handle.offset}\n".encode())
            handle.exit_seen = handle.exit_seen or handle.exit_pending

    def alive_pids(self) -> frozenset[int]:
        return frozenset(h.pid for h in self._handles.values() if self._alive(h))

    def has_news(self) -> bool:
        """New feeder events, an exit not yet reported, or a stop whose grace is over (the
        next step repeats the stop, which then kills)."""
        now = time.monotonic()
        for handle in self._handles.values():
            if (
                handle.term_sent is not None
                and now - handle.term_sent >= handle.grace
                and self._alive(handle)
            ):
                return True
            with contextlib.suppress(OSError):
                if (handle.directory / session_feed.EVENTS).stat().st_size > handle.offset:
                    return True
            if (
                handle.child is not None
                and not handle.exit_seen
                and handle.child.poll() is not None
            ):
                return True
        return False

    def usage(self, key: str) -> Usage:
        handle = self._handles.get(key)
        directory = handle.directory if handle is not None else self.directory / directory_name(key)
        return _usage(directory / session_feed.EVENTS)

    def forget(self, keep: Collection[str]) -> None:
        """Drop the directories of sessions whose request the state no longer keeps."""
        wanted = {directory_name(key) for key in keep}
        for key in [k for k in self._handles if k not in keep]:
            if not self._alive(self._handles[key]):
                del self._handles[key]
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name in wanted or not path.is_dir():
                continue
            record = _read_record(path / RECORD)
            if record is not None and record["key"] in self._handles:
                continue
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Stop every session still running: SIGTERM, then SIGKILL after CLOSE_WAIT (a DRBL
        session: after DRBL_STOP_GRACE, or as soon as its `drbl-ocs stop` is done)."""
        alive = [h for h in self._handles.values() if self._alive(h)]
        for handle in alive:
            self._signal(handle, signal.SIGTERM, group=not handle.drbl)
            self._log.info(f"session {handle.key}: pid {handle.pid} stopped (controller exits)")
        wait = max((DRBL_STOP_GRACE if h.drbl else CLOSE_WAIT) for h in alive) if alive else 0.0
        deadline = time.monotonic() + wait
        for _ in range(int(wait / POLL) + 1):
            alive = [h for h in alive if self._alive(h)]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        for handle in alive:
            self._signal(handle, signal.SIGKILL)
        for handle in self._handles.values():
            if handle.child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    handle.child.wait(timeout=STOP_GRACE)

    # ------------------------------------------------------------------ helpers

    def _runs(self, command: StartSession) -> list[dict[str, Any]]:
        host = LocalHost(self.root)
        return [
            {
                "partition": run.partition,
                "portbase": run.portbase,
                "argv": list(run.argv),
                "chunks": [host.local_path(chunk) for chunk in run.chunks],
            }
            for run in command.spec.runs
        ]

    def _launch(self, key: str, body: dict[str, Any]) -> _Handle:
        existing = self._handles.get(key)
        if existing is not None and self._alive(existing):
            raise ValueError(f"a session for {key} runs already (pid {existing.pid})")
        directory = self.directory / directory_name(key)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, mode=0o700)
        _write_atomic(directory / session_feed.SPEC, json.dumps(body, indent=2).encode())
        argv = self.wrap([self.python, "-m", "reconciler.session_feed", str(directory)])
        with (directory / FEEDER_LOG).open("ab") as log:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one signal ends it all
                env=self.env,
                close_fds=True,
            )
        ticks = _start_ticks(child.pid)
        handle = _Handle(
            key,
            directory,
            child.pid,
            -1 if ticks is None else ticks,
            _boot_id(),
            child,
            drbl="drbl" in body,
        )
        record = {
            "key": key,
            "pid": handle.pid,
            "ticks": handle.ticks,
            "boot_id": handle.boot_id,
            "started_at": self.clock.now().isoformat(),
            "drbl": handle.drbl,
        }
        _write_atomic(directory / RECORD, json.dumps(record, indent=2).encode())
        self._handles[key] = handle
        return handle

    def _alive(self, handle: _Handle) -> bool:
        if handle.child is not None:
            return handle.child.poll() is None
        if handle.boot_id != _boot_id():
            return False
        ticks = _start_ticks(handle.pid)
        return ticks is not None and ticks == handle.ticks

    def _signal(self, handle: _Handle, sig: signal.Signals, *, group: bool = True) -> None:
        if not self._alive(handle):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group and os.getpgid(handle.pid) == handle.pid:
                os.killpg(handle.pid, sig)
            else:
                os.kill(handle.pid, sig)

    def _events(self, handle: _Handle) -> tuple[list[Observation], bool]:
        """The feeder's events after the committed offset, and whether it exited."""
        path = handle.directory / session_feed.EVENTS
        try:
            with path.open("rb") as events:
                events.seek(handle.offset)
                data = events.read()
        except OSError:
            return [], False
        end = data.rfind(b"\n")
        handle.pending = handle.offset + end + 1
        exited = False
        found: list[Observation] = []
        for raw in data[: end + 1].splitlines():
            event = _json(raw)
            if event is None:
                continue
            at = _when(event.get("at"))
            if at is None:
                continue
            if event.get("event") == "receiver" and isinstance(event.get("ip"), str):
                found.append(ReceiverJoined(handle.key, event["ip"], at))
            elif event.get("event") == "exit":
                code = event.get("code")
                exited = True
                found.append(
                    SessionExited(
                        handle.key, at, code if isinstance(code, int) else None, handle.pid
                    )
                )
        return found, exited


# ---------------------------------------------------------------------- files and processes


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = _json(path.read_bytes())
    except OSError:
        return None
    if record is None:
        return None
    fields = {"key": str, "pid": int, "ticks": int, "boot_id": str, "started_at": str}
    if not all(isinstance(record.get(name), kind) for name, kind in fields.items()):
        return None
    return record if _when(record["started_at"]) is not None else None


def _read_offset(path: Path) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22); None
    when it does not exist or has exited (a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold blanks and parentheses: split after the last ')'
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _usage(path: Path) -> Usage:
    runs: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    code: int | None = None
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        lines = []
    for raw in lines:
        event = _json(raw)
        if event is None:
            continue
        kind, partition = event.get("event"), str(event.get("partition", ""))
        if kind == "run_started":
            order.append(partition)
            runs[partition] = {
                "portbase": int(event.get("portbase", 0)),
                "started_at": str(event.get("at", "")),
                "receivers": [],
            }
        elif kind == "receiver" and partition in runs:
            runs[partition]["receivers"].append(str(event.get("ip", "")))
        elif kind == "run_ended" and partition in runs:
            runs[partition].update(
                bytes=int(event.get("bytes_fed", 0)),
                ended_at=str(event.get("at", "")),
                returncode=event.get("returncode"),
                transferred=bool(event.get("transferred")),
            )
        elif kind == "exit":
            code = event.get("code") if isinstance(event.get("code"), int) else None
    return Usage(
        tuple(
            PartitionUsage(
                partition=name,
                portbase=runs[name]["portbase"],
                bytes=runs[name].get("bytes", 0),
                started_at=runs[name]["started_at"],
                ended_at=runs[name].get("ended_at", ""),
                returncode=runs[name].get("returncode"),
                transferred=runs[name].get("transferred", False),
                receivers=tuple(runs[name]["receivers"]),
            )
            for name in order
        ),
        code,
    )
