"""The session feeder: `python -m reconciler.session_feed DIR` serves one batch's session.

Why a program of its own and not a thread of the controller: udp-sender reads a partition
from its stdin, and a partition is several chunk files to be concatenated. If the
controller fed that pipe and then died (or restarted), the sender would see the end of its
input and send a truncated partition to every PC. This small process outlives a controller
crash, so a restarted controller finds it by its PID and adopts it (or stops it), as the
deployments' state machine expects. It never runs a shell.

DIR holds (written by `reconciler.sessions` before it starts this):
- `spec.json`: the key, and the runs in `parts` order (udp-sender argv, chunk files as
  local paths), or `drbl: {start: ARGV, stop: ARGV}` for a DRBL session.

DRBL session: `drbl-ocs ... startdisk` runs first, its output into `drbl.log` (a file, not
a pipe: drbl-ocs leaves ocsmgrd and its udp-sender running in the background, and they
would hold a pipe open for the whole session). When it fails, the session ends with its
status. When it succeeds, this process stands for the session (DRBL's sender and ocsmgrd
run in its process group) until SIGTERM. Either way it then runs `drbl-ocs stop` (bounded
by DRBL_STOP_TIMEOUT; a start that failed may have started ocsmgrd already), which ends
them and resets DRBL's own menus, before it exits.

It writes:
- `sender.log`: udp-sender's own output, as is;
- `events.jsonl`: one JSON object per line, each with `at` (UTC) and `event`: feed_started,
  run_started, receiver, transfer_started, transfer_complete, receiver_dropped, run_ended
  (with bytes fed, exit status and whether a transfer happened), feed_error, exit.

Per run: udp-sender starts, a thread writes the chunks unmodified into its stdin, the main
thread copies its output and notes receivers. A run whose sender fails ends the session
with that status; a run in which no transfer started (nobody joined before --start-timeout,
udp-sender then exits 0) ends it too: later partitions would wait for PCs that never came.
SIGTERM stops the sender in flight and ends with status 143.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from reconciler import udpcast_log

SPEC = "spec.json"
EVENTS = "events.jsonl"
OUTPUT = "sender.log"
DRBL_OUTPUT = "drbl.log"
DRBL_STOP_TIMEOUT = 60.0
"""Seconds `drbl-ocs stop` may take (it restarts the NFS server) before it is killed."""
BLOCK = 1024 * 1024
STOP_GRACE = 5.0
"""Seconds a sender gets to end after SIGTERM before SIGKILL."""
STOPPED = 128 + signal.SIGTERM


class _Stopped(Exception):
    """SIGTERM arrived."""


class Feed:
    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.directory = directory
        self.spec = spec
        self.current: subprocess.Popen[bytes] | None = None
        self._events = (directory / EVENTS).open("a", encoding="utf-8")

    def event(self, name: str, **fields: object) -> None:
        record = {"at": datetime.now(UTC).isoformat(), "event": name, **fields}
        self._events.write(json.dumps(record, sort_keys=True) + "\n")
        self._events.flush()

    def stop(self, signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    def run(self) -> int:
        self.event("feed_started", pid=os.getpid(), key=str(self.spec.get("key", "")))
        drbl = self.spec.get("drbl")
        try:
            code = self._drbl(drbl) if drbl else self._serve()
        except _Stopped:
            self._end_current()
            code = STOPPED
        if drbl:  # also after a failed start: it may have started ocsmgrd before failing
            self._drbl_stop(drbl)
        self.event("exit", code=code)
        self._events.close()
        return code

    def _drbl(self, drbl: dict[str, Any]) -> int:
        """drbl-ocs startdisk; on success stand for the session until stopped."""
        argv = [str(word) for word in drbl["start"]]
        code = self._drbl_run(argv, "drbl_start", timeout=None)
        if code != 0:
            return code
        self.event("holding")
        while True:
            signal.pause()

    def _drbl_stop(self, drbl: dict[str, Any]) -> None:
        # SIGTERM again while `drbl-ocs stop` runs would leave DRBL half stopped: ignore it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        argv = [str(word) for word in drbl["stop"]]
        self._drbl_run(argv, "drbl_stop", timeout=DRBL_STOP_TIMEOUT)

    def _drbl_run(self, argv: list[str], name: str, *, timeout: float | None) -> int:
        with (self.directory / DRBL_OUTPUT).open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as error:
                self.event(name, argv=argv, returncode=127, message=str(error))
                return 127
            self.current = proc
            self.event(name, argv=argv, pid=proc.pid)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            self.current = None
        self.event(name + "_ended", returncode=code)
        return code

    def _serve(self) -> int:
        for run in self.spec["runs"]:
            code, transferred = self._run(run)
            if code != 0:
                return code
            if not transferred:
                return 0
        return 0

    def _run(self, run: dict[str, Any]) -> tuple[int, bool]:
        partition = str(run["partition"])
        argv = [str(word) for word in run["argv"]]
        chunks = [str(chunk) for chunk in run["chunks"]]
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except OSError as error:
            self.event("run_ended", partition=partition, returncode=127, bytes_fed=0,
                       transferred=False, complete=False, message=str(error))  # fmt: skip
            return 127, False
        self.current = proc
        self.event("run_started", partition=partition, portbase=run["portbase"], pid=proc.pid)
        fed = [0]
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(
            target=self._feed, args=(proc, proc.stdin, chunks, fed), daemon=True
        )
        feeder.start()
        started, complete = self._watch(proc.stdout, partition)
        code = proc.wait()
        feeder.join(timeout=STOP_GRACE)
        self.current = None
        self.event("run_ended", partition=partition, returncode=code, bytes_fed=fed[0],
                   transferred=started, complete=complete)  # fmt: skip
        return code, started

    def _feed(
        self, proc: subprocess.Popen[bytes], stdin: IO[bytes], chunks: Sequence[str], fed: list[int]
    ) -> None:
        """The chunks, unmodified and in order, into the sender's stdin; then end of input."""
        fd = stdin.fileno()
        chunk = ""
        try:
            for chunk in chunks:
                with open(chunk, "rb", buffering=0) as source:
                    while block := source.read(BLOCK):
                        view = memoryview(block)
                        while view:
                            written = os.write(fd, view)
                            view = view[written:]
                            fed[0] += written
        except BrokenPipeError:
            pass  # the sender ended (start timeout, stopped): nothing more to say
        except OSError as error:
            # A chunk that cannot be read must not become a silently shortened partition:
            # end the sender, so every receiver sees an aborted transfer.
            self.event("feed_error", chunk=chunk, message=str(error))
            proc.terminate()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _watch(self, output: IO[bytes], partition: str) -> tuple[bool, bool]:
        started = complete = False
        rest = b""
        with (self.directory / OUTPUT).open("ab") as log:
            while data := os.read(output.fileno(), 65536):
                log.write(data)
                log.flush()
                lines, rest = udpcast_log.split(rest + data)
                for line in lines:
                    parsed = udpcast_log.parse(line)
                    if parsed is None:
                        continue
                    event = parsed.event
                    if event is udpcast_log.SenderEvent.connected:
                        self.event("receiver", partition=partition, ip=parsed.ip,
                                   number=parsed.number)  # fmt: skip
                    elif event is udpcast_log.SenderEvent.started:
                        started = True
                        self.event("transfer_started", partition=partition)
                    elif event is udpcast_log.SenderEvent.complete:
                        complete = True
                        self.event("transfer_complete", partition=partition)
                    elif event is udpcast_log.SenderEvent.dropped:
                        self.event("receiver_dropped", partition=partition,
                                   number=parsed.number)  # fmt: skip
        return started, complete

    def _end_current(self) -> None:
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m reconciler.session_feed DIR\n")
        return 2
    directory = Path(args[0])
    spec = json.loads((directory / SPEC).read_text(encoding="utf-8"))
    feed = Feed(directory, spec)
    signal.signal(signal.SIGTERM, feed.stop)
    signal.signal(signal.SIGINT, feed.stop)
    return feed.run()


if __name__ == "__main__":
    sys.exit(main())
