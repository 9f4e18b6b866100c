"""Run real programs inside lab namespaces, and make sure none outlives its registry.

Each program runs as `ip netns exec NS PROG ...` (ip execs PROG in place, so the PID we hold
is the program's own) in a new session, so that stopping it also reaches the children it
forked (its process group). Output goes to files in the registry's log directory, never to
pipes that could fill up and stall a chatty daemon.

`ProcessRegistry` is a context manager: when its block ends, also by an exception or
KeyboardInterrupt, every program it started and that still runs gets SIGTERM, then SIGKILL
after a bounded grace, and is reaped. Every wait here is bounded in time and in count.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loguru import logger

POLL_INTERVAL = 0.02
"""Seconds between two looks at a running program (bounded loops divide by it)."""

DEFAULT_GRACE = 3.0
"""Seconds a program gets to end after SIGTERM before SIGKILL."""

KILL_WAIT = 5.0
"""Seconds to wait for the kernel to end a program after SIGKILL."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


class ProcError(Exception):
    """A lab program could not be started, waited for or stopped."""


class ProcTimeout(ProcError):
    """A lab program did not end (or say what was awaited) within its time."""


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argument list that runs `argv` inside the network namespace `netns`.

    Purely computational.
    """
    if not netns or "/" in netns or netns.startswith("-"):
        raise ValueError(f"not a network namespace name: {netns!r}")
    if not argv:
        raise ValueError("empty argument list")
    return ["ip", "netns", "exec", netns, *argv]


def poll_count(timeout: float, interval: float = POLL_INTERVAL) -> int:
    """How many looks a bounded wait of `timeout` seconds may take (at least one).

    Purely computational.
    """
    if timeout < 0 or not math.isfinite(timeout):
        raise ValueError(f"timeout must be a finite number >= 0, got {timeout!r}")
    return max(1, math.ceil(timeout / interval) + 1)


@dataclass(frozen=True)
class Finished:
    """What a program that ran to its end (or was stopped at its timeout) left behind."""

    argv: tuple[str, ...]
    netns: str
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def text(self) -> str:
        """stderr then stdout, decoded: the tools we run complain on either."""
        parts = (self.stderr.decode(errors="replace"), self.stdout.decode(errors="replace"))
        return "\n".join(part.strip() for part in parts if part.strip())


class Proc:
    """One program started in a namespace, tracked by its PID."""

    def __init__(
        self,
        *,
        name: str,
        netns: str,
        argv: tuple[str, ...],
        popen: subprocess.Popen[bytes],
        stdout_path: Path,
        stderr_path: Path,
    ) -> None:
        self.name = name
        self.netns = netns
        self.argv = argv
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self._popen.returncode

    def running(self) -> bool:
        """True while the program has not exited (a zombie we have not reaped has exited)."""
        return self._popen.returncode is None and not self._exited()

    def stdout(self) -> bytes:
        return _read(self.stdout_path)

    def stderr(self) -> bytes:
        return _read(self.stderr_path)

    def output(self) -> str:
        """stderr and stdout so far, decoded (for messages and readiness checks)."""
        return (self.stderr() + b"\n" + self.stdout()).decode(errors="replace")

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the program itself (e.g. SIGHUP to make dnsmasq re-read its hosts files)."""
        if self._popen.returncode is None:
            self._popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` s for the program to end; reap it and return its status.

        Raises ProcTimeout (the program keeps running) when it has not ended in time.
        """
        if self._popen.returncode is not None:
            return self._popen.returncode
        if not self._wait_exited(timeout):
            raise ProcTimeout(f"{self.name} (pid {self.pid}) still runs after {timeout:g} s")
        return self._reap()

    def wait_for_output(self, needle: str, *, timeout: float) -> bool:
        """Wait until `needle` appears in the program's output; False when it did not in time
        or the program ended without printing it."""
        for _ in range(poll_count(timeout)):
            if needle in self.output():
                return True
            if not self.running():
                return needle in self.output()
            time.sleep(POLL_INTERVAL)
        return needle in self.output()

    def stop(self, grace: float = DEFAULT_GRACE) -> int:
        """End the program and the children it forked: SIGTERM, then SIGKILL after `grace` s.

        Returns the exit status (negative for a signal). Idempotent.
        """
        if self._popen.returncode is not None:
            return self._popen.returncode
        log = logger.bind(target=self.netns, commit=None)
        # The leader is not reaped before the group is signalled, so its PID (which is also
        # the group's id) cannot have been reused by an unrelated process.
        if not self._exited():
            self._signal_group(signal.SIGTERM)
            if not self._wait_exited(grace):
                log.warning(
                    f"{self.name} (pid {self.pid}) ignored SIGTERM for {grace:g} s: SIGKILL"
                )
        self._signal_group(signal.SIGKILL)  # stragglers of the group, and a leader that hung
        if not self._wait_exited(KILL_WAIT):
            raise ProcError(f"{self.name} (pid {self.pid}) survived SIGKILL for {KILL_WAIT:g} s")
        status = self._reap()
        log.debug(f"stopped {self.name} (pid {self.pid}): status {status}")
        return status

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def _exited(self) -> bool:
        # WNOWAIT: look without reaping, so the PID stays ours until `_reap`.
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_exited(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for _ in range(poll_count(timeout)):
            if self._exited():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        return self._exited()

    def _reap(self) -> int:
        return self._popen.wait(timeout=KILL_WAIT)


class ProcessRegistry:
    """Starts programs in namespaces and stops all of them when its block ends."""

    def __init__(self, log_dir: Path, *, grace: float = DEFAULT_GRACE) -> None:
        self.log_dir = log_dir
        self.grace = grace
        self._procs: list[Proc] = []
        self._serial = 0

    @property
    def procs(self) -> tuple[Proc, ...]:
        return tuple(self._procs)

    def __enter__(self) -> ProcessRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop_all()
        except Exception:
            if exc is None:
                raise
            # The block's own exception says more; the cleanup failure is logged.
            logger.bind(target=str(self.log_dir), commit=None).exception(
                "stopping lab programs failed"
            )

    def scratch(self, name: str) -> Path:
        """A fresh directory under the log directory for one probe's files."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        label = f"{self._next_serial():03d}-{_checked_name(name)}-"
        return Path(tempfile.mkdtemp(prefix=label, dir=self.log_dir))

    def start(
        self,
        argv: Sequence[str],
        *,
        netns: str | None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start `argv` inside `netns` (None: this process's own namespace, as `kitctl run`
        with `services: direct` does); its output goes to files named after `name`."""
        full = tuple(netns_argv(netns, argv) if netns is not None else argv)
        if not full:
            raise ValueError("empty argument list")
        label = _checked_name(name or Path(argv[0]).name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = self.log_dir / f"{self._next_serial():03d}-{label}"
        stdout_path, stderr_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            try:
                popen = subprocess.Popen(
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=None if env is None else dict(env),
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcError(
                    f"cannot start {argv[0]} in {netns or 'this namespace'}: {exc}"
                ) from exc
        proc = Proc(
            name=label,
            netns=netns or "",
            argv=full,
            popen=popen,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
        )
        self._procs.append(proc)
        logger.bind(target=netns or label, commit=None).debug(f"started {label} (pid {proc.pid})")
        return proc

    def run(
        self,
        argv: Sequence[str],
        *,
        netns: str,
        timeout: float,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Finished:
        """Run `argv` inside `netns` to its end; stop it when it takes more than `timeout` s."""
        proc = self.start(argv, netns=netns, name=name, env=env, cwd=cwd)
        try:
            status = proc.wait(timeout)
            timed_out = False
        except ProcTimeout:
            status = proc.stop(self.grace)
            timed_out = True
        return Finished(
            argv=proc.argv,
            netns=netns,
            returncode=status,
            stdout=proc.stdout(),
            stderr=proc.stderr(),
            timed_out=timed_out,
        )

    def stop_all(self) -> None:
        """Stop every program still running, newest first; keep going when one fails."""
        errors: list[BaseException] = []
        for proc in reversed(self._procs):
            try:
                proc.stop(self.grace)
            except BaseException as exc:  # a second Ctrl-C must not leave the others running
                errors.append(exc)
        if errors:
            raise errors[0]

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a usable program label: {name!r}")
    return name


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
