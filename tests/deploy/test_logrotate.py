"""deploy/logrotate/kitting: logrotate accepts it, and the controller's TFTP log tail follows
dnsmasq's log through a real rotation.

- `logrotate -d` (debug: reads and checks the file, changes nothing) on the shipped file.
- A real dnsmasq in a network namespace of this test serves TFTP and logs to a file; a
  client namespace fetches a file, the shipped rule (its path and PID file moved under the
  test's directory) is forced with the real logrotate, dnsmasq gets SIGUSR2 from its
  postrotate and reopens the new file, a second fetch is logged there; the LogTail that the
  controller uses reads both `sent` lines, each once.
- copytruncate (another rule an operator might write) with the real logrotate: the tail
  starts the file over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.lab.netns import NicSpec, VirtualNetwork
from reconciler.lab.probes import TftpFetched, tftp_get
from reconciler.layout import Layout
from reconciler.log_tail import LogTail, Position
from tests.conftest import RequirePrograms

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "logrotate" / "kitting"
PID_FILE = "/run/dnsmasq/dnsmasq.pid"


def logrotate(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("logrotate", path="/usr/sbin:/sbin:/usr/bin") is None:
        pytest.skip("logrotate is not installed (deploy/debian-packages.txt)")
    return subprocess.run(
        ["logrotate", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_shipped_rule_rotates_dnsmasqs_log(tmp_path: Path) -> None:
    done = logrotate("-d", "-s", str(tmp_path / "state"), str(SHIPPED))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"rotating pattern: {Layout().dnsmasq_log}" in output
    assert "error" not in output.lower()
    text = SHIPPED.read_text()
    assert "copytruncate" not in text.split("#", 1)[0]  # renamed, see the file's comment
    assert "delaycompress" in text and PID_FILE in text


def _moved_rule(log: Path, pid: Path, *, extra: str = "") -> str:
    text = SHIPPED.read_text()
    assert Layout().dnsmasq_log in text and PID_FILE in text
    text = text.replace(Layout().dnsmasq_log, str(log)).replace(PID_FILE, str(pid))
    return text.replace("    weekly\n", f"    weekly\n{extra}")


def _sent(lines: list[str]) -> list[str]:
    return [line.split(": ", 1)[1] for line in lines if "dnsmasq-tftp" in line and " sent " in line]


@pytest.mark.integration
@pytest.mark.netns
def test_the_tftp_tail_follows_dnsmasqs_log_through_a_real_rotation(
    vnet: VirtualNetwork, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq", "tftp", "logrotate")
    tftp_root = tmp_path / "tftp"
    tftp_root.mkdir()
    (tftp_root / "first").write_bytes(b"one\n")
    (tftp_root / "second").write_bytes(b"two\n")
    log_dir = tmp_path / "kitting"
    log_dir.mkdir()
    log = log_dir / "dnsmasq.log"
    pid = tmp_path / "dnsmasq.pid"
    rule = tmp_path / "rule"
    rule.write_text(_moved_rule(log, pid))
    rule.chmod(0o644)

    vnet.add_switch()
    srv = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    pc = vnet.add_host("pc1", nics=[NicSpec(address="192.168.100.23/24")])
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        "--interface=e0", "--bind-interfaces", "--enable-tftp", f"--tftp-root={tftp_root}",
        "--user=root", f"--log-facility={log}", f"--pid-file={pid}",
    ]  # fmt: skip
    dnsmasq = vnet.procs.start(argv, netns=srv.netns, name="dnsmasq")
    for _ in range(100):
        if log.exists() and "TFTP root is" in log.read_text():
            break
        dnsmasq.wait_for_output("never printed", timeout=0.05)
    assert "TFTP root is" in log.read_text(), dnsmasq.output()
    tail = LogTail(log, Position(log.stat().st_ino, log.stat().st_size))

    assert isinstance(tftp_get(vnet.procs, pc, "192.168.100.1", "first"), TftpFetched)
    lines, position = tail.read()
    tail.commit(position)
    assert _sent(lines) == [f"sent {tftp_root}/first to 192.168.100.23"]

    done = logrotate("-f", "-s", str(tmp_path / "state"), str(rule))
    assert done.returncode == 0, done.stdout + done.stderr
    rotated = log_dir / "dnsmasq.log.1"
    assert rotated.exists() and log.exists()  # renamed, and a new one made for dnsmasq
    assert log.stat().st_ino != rotated.stat().st_ino

    assert isinstance(tftp_get(vnet.procs, pc, "192.168.100.1", "second"), TftpFetched)
    lines, position = tail.read()
    tail.commit(position)
    assert _sent(lines) == [f"sent {tftp_root}/second to 192.168.100.23"]
    # dnsmasq reopened its log on the postrotate's SIGUSR2: the new line is in the new file
    assert "second" in log.read_text() and "second" not in rotated.read_text()
    assert "first" in rotated.read_text()
    assert os.path.exists(f"/proc/{pid.read_text().strip()}")  # SIGUSR2 did not end it


def test_the_tail_starts_over_after_a_real_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("Dec  3 14:43:06 dnsmasq-tftp[1]: sent /srv/tftp/a to 192.168.100.23\n" * 3)
    tail = LogTail(log, Position(log.stat().st_ino, 0))
    lines, position = tail.read()
    tail.commit(position)
    assert len(lines) == 3
    rule = tmp_path / "rule"
    rule.write_text(f"{log} {{\n    rotate 2\n    copytruncate\n    nocompress\n}}\n")
    rule.chmod(0o644)
    done = logrotate("-f", "-s", str(tmp_path / "state"), str(rule))
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.stat().st_size == 0 and (tmp_path / "dnsmasq.log.1").stat().st_size > 0
    with log.open("a") as handle:
        handle.write("Dec  3 14:44:00 dnsmasq-tftp[1]: sent /srv/tftp/b to 192.168.100.24\n")
    lines, position = tail.read()
    assert lines == ["Dec  3 14:44:00 dnsmasq-tftp[1]: sent /srv/tftp/b to 192.168.100.24"]
