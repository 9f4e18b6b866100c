"""Real processes: two writers at once serialize; a writer killed with SIGKILL loses nothing
that `append` had returned, and the next writer repairs what a kill mid-line left."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from reconciler import audit
from reconciler.clock import SystemClock

PROJECT = Path(__file__).resolve().parents[2]

# A child process that appends COUNT lines tagged NAME, printing each seq once it returned.
CHILD = """
import sys
from reconciler import audit
from reconciler.clock import SystemClock

root, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with audit.AuditLog.at_root(root, SystemClock(), lock_timeout=20) as log:
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(count):
        entry = log.append(audit.Event.file_written, f"{name}-{i}", audit.Result.success(),
                           details={"pad": "x" * 2000})
        print(entry.seq, flush=True)
"""


class Child:
    """A writer process; its stdout is read unbuffered so `select` sees every line."""

    def __init__(self, root: Path, name: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            cwd=PROJECT,
        )
        self._pending = b""

    def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            assert ready, "the child said nothing in time"
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "the child closed its output"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def go(self) -> None:
        assert self.line(20) == "ready"
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def test_two_processes_appending_at_once_serialize(tmp_path: Path) -> None:
    count = 20
    children = [Child(tmp_path, name, count) for name in ("p", "q")]
    seqs: list[list[int]] = []
    try:
        for child in children:
            child.go()
        for child in children:
            seqs.append([int(child.line(20)) for _ in range(count)])
            assert child.wait(30) == 0
    finally:
        for child in children:
            child.reap()
    # Every append got its own seq, and each writer saw its own seqs increase.
    assert sorted(seqs[0] + seqs[1]) == list(range(1, 2 * count + 1))
    assert all(s == sorted(s) for s in seqs)
    records = [json.loads(raw) for raw in audit.log_path(tmp_path).read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 2 * count + 1))
    for name in ("p", "q"):
        mine = [r["target"] for r in records if r["target"].startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(count)]
    # Turn-taking between the writers depends on the scheduler (a loaded CI machine may run
    # one writer's whole burst before the other even starts), so it is not asserted here.
    report = audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path))
    assert report.ok, report.problems
    assert report.warnings == ()


def test_a_line_append_returned_survives_sigkill(tmp_path: Path) -> None:
    child = Child(tmp_path, "k", 1)
    try:
        child.go()
        assert child.line(20) == "1"  # append has returned
        os.kill(child.proc.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.reap()
    (raw,) = audit.log_path(tmp_path).read_bytes().splitlines()
    assert json.loads(raw)["target"] == "k-0"
    assert audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path)).ok


def test_a_writer_killed_mid_stream_leaves_a_log_the_next_writer_makes_whole(
    tmp_path: Path,
) -> None:
    child = Child(tmp_path, "m", 5000)
    returned = 0
    try:
        child.go()
        deadline = time.monotonic() + 20
        while returned < 15 and time.monotonic() < deadline:
            returned = int(child.line(20))
        os.kill(child.proc.pid, signal.SIGKILL)  # somewhere inside a later append
        child.wait(10)
    finally:
        child.reap()
    assert returned >= 15
    with audit.AuditLog.at_root(tmp_path, SystemClock()) as log:
        log.append(audit.Event.commit_applied, "after-restart", audit.Result.success())
    records = [json.loads(raw) for raw in audit.log_path(tmp_path).read_bytes().splitlines()]
    mine = [r for r in records if r["target"].startswith("m-")]
    # Everything append had returned is there, in order, with nothing lost in between.
    assert [r["target"] for r in mine[:returned]] == [f"m-{i}" for i in range(returned)]
    assert records[-1]["target"] == "after-restart"
    report = audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path))
    assert report.ok, report.problems
