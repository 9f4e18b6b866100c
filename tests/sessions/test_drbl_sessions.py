"""The DRBL backend's sessions with real processes: the feeder runs drbl-ocs.

The real drbl-ocs cannot run here: `drbl-ocs ... startdisk` needs a server that drblpush
has set up (/etc/drbl/drbl_deploy.conf, DRBL's client trees and boot files under
/tftpboot, its DHCP server) and it restarts the NFS server of the machine it runs on. So
these tests put a stand-in `drbl-ocs` first on PATH that behaves as the real one does in
the ways that matter to the runner (read from /usr/sbin/drbl-ocs and ocs-functions):
`startdisk` leaves a long-lived background process (ocsmgrd, udp-sender) holding its
stdout and returns; `stop` ends that process with SIGKILL (`killall -9`). The stand-in
records every argv, and its background process records a SIGTERM if one reaches it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler import session_feed, sessions
from reconciler.clock import FixedClock
from reconciler.deployment_facts import SessionExited, SessionStarted
from reconciler.deployment_machine import StartSession, StopSession
from reconciler.deployment_session import SessionSpec, drbl_ocs_argv, drbl_ocs_stop_argv
from reconciler.desired import AfterImaging, Mode
from reconciler.runner import Completed
from reconciler.sessions import SessionRunner
from tests.sessions.waits import gone, observe_until_exit, until

KEY = "spring@0123456789abcdef"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

FAKE_DRBL_OCS = """\
#!{python}
# Stand-in for drbl-ocs: records argv; startdisk leaves a background "ocsmgrd" behind.
import os, signal, subprocess, sys, time
state = os.environ["FAKE_DRBL_DIR"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as f:
    f.write("\\t".join(args) + "\\n")
if args == ["stop"]:
    try:
        pid = int(open(os.path.join(state, "mgrd.pid")).read())
        os.kill(pid, signal.SIGKILL)  # drbl-ocs stop: killall -9 ocsmgrd udp-sender
    except (OSError, ValueError):
        pass
    sys.exit(0)
if os.environ.get("FAKE_DRBL_MODE") == "fail":
    print("You must setup DRBL first.")
    sys.exit(1)
daemon = '''
import os, signal, sys, time
state = sys.argv[1]
def term(signum, frame):
    open(os.path.join(state, "mgrd.term"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(os.path.join(state, "mgrd.pid"), "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(1)
'''
# nohup ... &: inherits stdout and stderr, as ocsmgrd and the multicast feed do
subprocess.Popen([sys.executable, "-c", daemon, state])
while not os.path.exists(os.path.join(state, "mgrd.pid")):
    time.sleep(0.01)
print("Clonezilla SE is ready.")
sys.exit(0)
"""


def make_runner(tmp_path: Path, mode: str = "ok") -> SessionRunner:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "drbl-ocs"
    script.write_text(FAKE_DRBL_OCS.format(python=sys.executable))
    script.chmod(0o755)
    (tmp_path / "drbl").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_DRBL_DIR": str(tmp_path / "drbl"),
        "FAKE_DRBL_MODE": mode,
    }

    def never(argv: object, *, timeout: float = 60.0) -> Completed:
        raise AssertionError(f"the controller ran {argv} itself")

    return SessionRunner(
        tmp_path / "state" / "sessions",
        root=str(tmp_path / "root"),
        clock=FixedClock(NOW),
        env=env,
        run=never,
    )


def command() -> StartSession:
    argv = drbl_ocs_argv(
        mode=Mode.multicast,
        image="win11",
        disk="nvme0n1",
        after=AfterImaging.reboot,
        interface="enp3s0",
        hosts=[IPv4Address("192.168.100.11"), IPv4Address("192.168.100.12")],
        clients_to_wait=2,
        max_wait=600,
    )
    return StartSession(KEY, "spring", SessionSpec(KEY, "spring", drbl_argv=argv))


START = (
    "drbl-ocs -b -l en_US.UTF-8 -g auto -e1 auto -e2 -r -x -j2 -p reboot --mcast-iface enp3s0 "
    "--clients-to-wait 2 --max-time-to-wait 600 -h"
)


def calls(tmp_path: Path) -> list[list[str]]:
    try:
        text = (tmp_path / "drbl" / "calls").read_text()
    except FileNotFoundError:
        return []
    return [["drbl-ocs", *line.split("\t")] for line in text.splitlines()]


def mgrd_pid(tmp_path: Path) -> int:
    return int((tmp_path / "drbl" / "mgrd.pid").read_text())


def exits(runner: SessionRunner, timeout: float = 15.0) -> list[SessionExited]:
    return [o for o in observe_until_exit(runner, timeout) if isinstance(o, SessionExited)]


@pytest.fixture
def runners() -> Iterator[list[SessionRunner]]:
    made: list[SessionRunner] = []
    yield made
    for runner in made:
        runner.close()


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever happens, the stand-in's background process does not outlive the test."""
    yield
    path = tmp_path / "drbl" / "mgrd.pid"
    if path.exists():
        pid = int(path.read_text())
        if not gone(pid):
            os.kill(pid, 9)


@pytest.mark.usefixtures("leftovers")
def test_the_feeder_runs_drbl_ocs_and_stands_for_the_session_until_stopped(
    tmp_path: Path, runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path)
    runners.append(runner)
    began = time.monotonic()
    started = runner.start(command())
    # the controller's pass is not held up by drbl-ocs (nor by its background processes)
    assert time.monotonic() - began < 2.0
    assert isinstance(started, SessionStarted)
    until((tmp_path / "drbl" / "mgrd.pid").exists, "drbl-ocs started its ocsmgrd")
    assert calls(tmp_path) == [
        [*START.split(), "192.168.100.11 192.168.100.12", "startdisk", "multicast_restore",
         "win11", "nvme0n1"],
    ]  # fmt: skip
    log = runner.directory / KEY / session_feed.DRBL_OUTPUT
    until(lambda: "Clonezilla SE is ready." in log.read_text(), "drbl-ocs's output in drbl.log")
    # drbl-ocs has returned; its background process runs on, and so does the session
    time.sleep(0.3)
    assert runner.alive_pids() == {started.pid}
    assert not gone(mgrd_pid(tmp_path))

    stop = StopSession(KEY, "spring", started.pid, "WindowClosed", drbl_ocs_stop_argv())
    runner.stop(stop)
    (ended,) = exits(runner)
    assert ended.returncode == 143
    assert calls(tmp_path)[-1] == ["drbl-ocs", "stop"]
    until(lambda: gone(mgrd_pid(tmp_path)), "drbl-ocs stop ended DRBL's background process")
    # SIGTERM went to the feeder alone: DRBL's processes were ended by drbl-ocs stop
    assert not (tmp_path / "drbl" / "mgrd.term").exists()
    # its exit event is written just before it ends
    until(lambda: runner.alive_pids() == frozenset(), "the feeder ended")


@pytest.mark.usefixtures("leftovers")
def test_a_failing_drbl_ocs_ends_the_session_with_its_status_and_is_stopped(
    tmp_path: Path, runners: list[SessionRunner]
) -> None:
    runner = make_runner(tmp_path, mode="fail")
    runners.append(runner)
    started = runner.start(command())
    assert isinstance(started, SessionStarted)
    (ended,) = exits(runner)
    assert ended.returncode == 1
    assert ended.pid == started.pid
    # a start that failed may have started ocsmgrd already: drbl-ocs stop runs anyway
    assert [call[1] for call in calls(tmp_path)] == ["-b", "stop"]
    log = (runner.directory / KEY / session_feed.DRBL_OUTPUT).read_text()
    assert "You must setup DRBL first." in log


@pytest.mark.usefixtures("leftovers")
def test_a_restarted_controller_adopts_a_drbl_session_and_close_stops_drbl(
    tmp_path: Path, runners: list[SessionRunner]
) -> None:
    first = make_runner(tmp_path)
    runners.append(first)  # closed last: by then the session is over, nothing to stop
    started = first.start(command())
    assert isinstance(started, SessionStarted)
    until((tmp_path / "drbl" / "mgrd.pid").exists, "drbl-ocs started its ocsmgrd")

    # the controller restarts: a new runner over the same directory
    second = make_runner(tmp_path)
    runners.append(second)
    adopted = second.adopt()
    assert [(o.key, o.pid) for o in adopted if isinstance(o, SessionStarted)] == [
        (KEY, started.pid)
    ]
    assert second.alive_pids() == {started.pid}
    second.close()  # the controller exits: the DRBL session is stopped the DRBL way
    assert gone(started.pid)  # close waits for it
    assert calls(tmp_path)[-1] == ["drbl-ocs", "stop"]
    assert gone(mgrd_pid(tmp_path))
    assert not (tmp_path / "drbl" / "mgrd.term").exists()


def test_a_drbl_feeder_gets_longer_to_stop_than_a_sender() -> None:
    # drbl-ocs stop restarts the NFS server: the feeder must have time for it
    assert sessions.DRBL_STOP_GRACE > session_feed.DRBL_STOP_TIMEOUT > sessions.STOP_GRACE
