"""The session runner with real processes: the feeder (reconciler.session_feed) and a
stand-in `udp-sender` first on PATH that records its argv and stdin and talks like udpcast.

What is checked: each partition's chunks reach the sender unmodified and concatenated, in
`parts` order, one sender per partition (port + 2); receivers and exits come back as facts;
a failing or unjoined partition ends the session; stop ends the whole process group; a new
runner (a restarted controller) adopts a live feeder by PID and refuses a PID it cannot
vouch for. The DRBL backend's sessions: tests/sessions/test_drbl_sessions.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler import sessions
from reconciler.batch_history import PartitionUsage, Usage
from reconciler.clock import FixedClock
from reconciler.deployment_facts import (
    ReceiverJoined,
    SessionExited,
    SessionFailed,
    SessionStarted,
)
from reconciler.deployment_machine import StartSession, StopSession
from reconciler.deployment_session import (
    PartitionStream,
    SessionSpec,
    multicast_runs,
)
from reconciler.sessions import SessionRunner
from tests.sessions.waits import gone, observe_until_exit, until

KEY = "spring@0123456789abcdef"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
IMAGE_DIR = "/home/partimag/win11"

FAKE_SENDER = """\
#!{python}
# Stand-in for udp-sender: records argv and stdin, talks like udpcast 20120424.
import os, sys, time
args = sys.argv[1:]
port = args[args.index("--portbase") + 1]
out = os.path.join(os.environ["FAKE_SENDER_DIR"], port)
with open(out + ".argv", "w") as f:
    f.write("\\n".join(args))
with open(out + ".pid", "w") as f:
    f.write(str(os.getpid()))
mode = os.environ.get("FAKE_SENDER_MODE", "ok")
say = sys.stderr.write
say("Udp-sender 20120424\\nUDP sender for (stdin) at 192.168.100.1 on e0 \\n")
sys.stderr.flush()
if mode == "hang":
    while True:
        time.sleep(1)
if mode == "nobody" or (mode == "nobody-later" and port != "2232"):
    sys.exit(0)  # --start-timeout: nobody joined, and udp-sender still exits 0
say("New connection from 192.168.100.23  (#0) 00000009\\n")
say("New connection from 192.168.100.24  (#1) 00000009\\nStarting transfer: 00000009\\n")
sys.stderr.flush()
data = sys.stdin.buffer.read()
with open(out + ".bin", "wb") as f:
    f.write(data)
say("bytes=  %d  re-xmits=0000000 (  0.0%%) slice=0112 -   0\\r" % len(data))
say("Transfer complete.\\a\\nDisconnecting #0 (192.168.100.23)\\n")
sys.exit(3 if mode == "fail-second" and port == "2234" else 0)
"""


@pytest.fixture
def fake_path(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "udp-sender"
    script.write_text(FAKE_SENDER.format(python=sys.executable))
    script.chmod(0o755)
    (tmp_path / "sent").mkdir()
    return bin_dir


def make_runner(tmp_path: Path, fake_path: Path, mode: str = "ok", **kw: object) -> SessionRunner:
    env = {
        **os.environ,
        "PATH": f"{fake_path}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_SENDER_DIR": str(tmp_path / "sent"),
        "FAKE_SENDER_MODE": mode,
    }
    return SessionRunner(
        tmp_path / "state" / "sessions",
        root=str(tmp_path / "root"),
        clock=FixedClock(NOW),
        env=env,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def image(tmp_path: Path) -> dict[str, bytes]:
    """Chunk files of two partitions, with content that tells them apart."""
    files = {
        "sda1.vfat-ptcl-img.gz.aa": b"\x1f\x8b" + b"A" * 3000,
        "sda2.ntfs-ptcl-img.gz.aa": b"\x1f\x8b" + bytes(range(256)) * 4000,  # 1,024,002
        "sda2.ntfs-ptcl-img.gz.ab": b"tail of sda2" * 100,
    }
    directory = tmp_path / "root" / IMAGE_DIR.lstrip("/")
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def start_command(min_receivers: int = 2) -> StartSession:
    runs = multicast_runs(
        [
            PartitionStream("sda1", (f"{IMAGE_DIR}/sda1.vfat-ptcl-img.gz.aa",)),
            PartitionStream(
                "sda2",
                (f"{IMAGE_DIR}/sda2.ntfs-ptcl-img.gz.aa", f"{IMAGE_DIR}/sda2.ntfs-ptcl-img.gz.ab"),
            ),
        ],
        interface="e0",
        portbase=2232,
        data_group=IPv4Address("239.192.0.1"),
        ttl=1,
        min_receivers=min_receivers,
        max_wait=60,
        start_timeout=600,
        max_bitrate=None,
    )
    return StartSession(KEY, "spring", SessionSpec(KEY, "spring", runs=runs, summary="test"))


@pytest.fixture
def runners() -> Iterator[list[SessionRunner]]:
    made: list[SessionRunner] = []
    yield made
    for runner in made:
        runner.close()


def test_each_partition_streams_its_chunks_unmodified_in_parts_order(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, fake_path)
    runners.append(runner)
    command = start_command()
    started = runner.start(command)
    assert isinstance(started, SessionStarted)
    assert (started.key, started.at) == (KEY, NOW)
    seen = observe_until_exit(runner)

    sent = tmp_path / "sent"
    assert (sent / "2232.bin").read_bytes() == image["sda1.vfat-ptcl-img.gz.aa"]
    assert (sent / "2234.bin").read_bytes() == (
        image["sda2.ntfs-ptcl-img.gz.aa"] + image["sda2.ntfs-ptcl-img.gz.ab"]
    )
    for run in command.spec.runs:
        assert (sent / f"{run.portbase}.argv").read_text().split("\n") == list(run.argv[1:])
    receivers = [o for o in seen if isinstance(o, ReceiverJoined)]
    assert [(o.key, o.ip) for o in receivers] == [
        (KEY, "192.168.100.23"),
        (KEY, "192.168.100.24"),
    ] * 2
    (exit_fact,) = [o for o in seen if isinstance(o, SessionExited)]
    assert (exit_fact.key, exit_fact.returncode, exit_fact.pid) == (KEY, 0, started.pid)
    # the exit event is written just before the feeder ends
    until(lambda: runner.alive_pids() == frozenset(), "the feeder gone")
    usage = runner.usage(KEY)
    assert [
        (p.partition, p.portbase, p.bytes, p.returncode, p.transferred) for p in usage.partitions
    ] == [
        ("sda1", 2232, 3002, 0, True),
        ("sda2", 2234, 1_024_002 + 1200, 0, True),
    ]
    assert usage.partitions[0].receivers == ("192.168.100.23", "192.168.100.24")
    assert usage.exit_code == 0
    # committed: nothing is reported twice
    assert runner.observe() == []


def test_a_failed_sender_ends_the_session_with_its_status(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, fake_path, "fail-second")
    runners.append(runner)
    runner.start(start_command())
    seen = observe_until_exit(runner)
    (exit_fact,) = [o for o in seen if isinstance(o, SessionExited)]
    assert exit_fact.returncode == 3


def test_a_partition_nobody_joined_ends_the_session(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, fake_path, "nobody")
    runners.append(runner)
    runner.start(start_command())
    seen = observe_until_exit(runner)
    assert [o.returncode for o in seen if isinstance(o, SessionExited)] == [0]
    assert not (tmp_path / "sent" / "2234.argv").exists()  # the second sender never ran
    usage = runner.usage(KEY)
    assert [(p.partition, p.transferred) for p in usage.partitions] == [("sda1", False)]


def test_stop_ends_the_feeder_and_its_sender(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, fake_path, "hang")
    runners.append(runner)
    started = runner.start(start_command())
    assert isinstance(started, SessionStarted)
    pid_file = tmp_path / "sent" / "2232.pid"
    until(pid_file.exists, "the sender started")
    sender = int(pid_file.read_text())
    assert runner.alive_pids() == {started.pid}
    runner.stop(StopSession(KEY, "spring", started.pid, "WindowClosed"))
    until(lambda: gone(started.pid) and gone(sender), "feeder and sender gone", 10)
    seen = observe_until_exit(runner)
    assert [o.returncode for o in seen if isinstance(o, SessionExited)] == [143]
    assert runner.alive_pids() == frozenset()


def test_a_restarted_controller_adopts_a_live_feeder(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    first = make_runner(tmp_path, fake_path, "hang")
    runners.append(first)
    started = first.start(start_command())
    assert isinstance(started, SessionStarted)
    until((tmp_path / "sent" / "2232.pid").exists, "the sender started")
    # the controller restarts: a new runner over the same directory
    second = make_runner(tmp_path, fake_path, "hang")
    runners.append(second)
    assert second.adopt() == [SessionStarted(KEY, started.pid, NOW)]
    assert second.alive_pids() == {started.pid}
    assert second.has_news()  # the feeder's events so far are unread
    second.observe()
    second.commit()
    assert not second.has_news()
    second.stop(StopSession(KEY, "spring", started.pid, "WindowClosed"))
    until(lambda: gone(started.pid), "the adopted feeder stopped")
    assert second.alive_pids() == frozenset()


def test_a_pid_that_is_not_our_feeder_is_never_signalled(
    tmp_path: Path, fake_path: Path, runners: list[SessionRunner]
) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        directory = tmp_path / "state" / "sessions" / KEY
        directory.mkdir(parents=True)
        # a record whose PID is now another process (reused after a reboot or a crash)
        (directory / sessions.RECORD).write_text(
            f'{{"key": "{KEY}", "pid": {stranger.pid}, "ticks": 1, "boot_id": "x", '
            f'"started_at": "{NOW.isoformat()}"}}'
        )
        runner = make_runner(tmp_path, fake_path)
        runners.append(runner)
        assert runner.adopt() == []
        assert runner.alive_pids() == frozenset()
        runner.stop(StopSession(KEY, "spring", stranger.pid, "SecondSender"))
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=5)


def test_close_stops_every_session(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes]
) -> None:
    runner = make_runner(tmp_path, fake_path, "hang")
    started = runner.start(start_command())
    assert isinstance(started, SessionStarted)
    until((tmp_path / "sent" / "2232.pid").exists, "the sender started")
    sender = int((tmp_path / "sent" / "2232.pid").read_text())
    runner.close()
    assert gone(started.pid) and gone(sender)


def test_a_chunk_outside_the_root_is_refused(
    tmp_path: Path, fake_path: Path, runners: list[SessionRunner]
) -> None:
    (tmp_path / "root" / "home").mkdir(parents=True)
    (tmp_path / "root" / "home" / "partimag").symlink_to("/etc")
    runner = make_runner(tmp_path, fake_path)
    runners.append(runner)
    failed = runner.start(start_command())
    assert isinstance(failed, SessionFailed)
    assert "outside the root" in failed.message
    assert runner.alive_pids() == frozenset()


def test_forget_removes_sessions_the_state_no_longer_keeps(
    tmp_path: Path, fake_path: Path, image: dict[str, bytes], runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, fake_path)
    runners.append(runner)
    runner.start(start_command())
    observe_until_exit(runner)
    directory = tmp_path / "state" / "sessions" / KEY
    assert directory.is_dir()
    runner.forget([KEY])
    assert directory.is_dir()

    # SessionExited comes from the feeder's last event, written just before its process
    # ends: until the process is gone, forget keeps its directory.
    def forgotten() -> bool:
        runner.forget([])
        return not directory.exists()

    until(forgotten, "the ended session's directory removed", 10.0)


def test_usage_of_a_session_without_events_is_empty(tmp_path: Path, fake_path: Path) -> None:
    runner = make_runner(tmp_path, fake_path)
    assert runner.usage("other@00") == Usage()
    assert PartitionUsage("p", 2232).receivers == ()


def test_the_feeder_refuses_to_run_without_its_directory() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.session_feed"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "usage" in done.stderr
