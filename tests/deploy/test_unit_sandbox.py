"""The unit's sandbox does not prevent the job: systemd itself runs the unit, and the real
controller runs inside it for one pass on the example site (git clone into the state
directory; dnsmasq --test, nft -c and sshd -t checks; atomic writes; systemctl restarts; a
live nft table; the audit log), started as the unit starts it:
`kitctl run --config /etc/kitting/reconciler.yaml`, plus --once.

A throwaway container made here: new mount, PID, network, UTS, IPC and cgroup namespaces,
an overlay of / whose writes go to a tmpfs, and this machine's systemd as its PID 1. Nothing
reaches the host's files (overlay), network (a namespace with only loopback) or services.
The unit is deploy/systemd/kitting-reconciler.service with one change: ExecStart runs a
probe script, which checks what the sandbox allows and denies and then runs the unit's own
command line with --once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import unitfile
from tests.deploy.test_systemd_unit import EXPECTED_WRITABLE
from tests.deploy.unitfile import RequirePrograms

pytestmark = [pytest.mark.integration, pytest.mark.netns]

BOOT_SECONDS = 20.0
PROBE_SECONDS = 90.0
# CAP_CHOWN (0), CAP_DAC_OVERRIDE (1), CAP_FOWNER (3), CAP_NET_ADMIN (12), worked out by hand.
CAPABILITIES = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 12)
SANDBOX_ERRORS = ("Read-only file system", "Permission denied", "Operation not permitted")

BOOT = r"""#!/bin/bash
# In the new namespaces: overlay of /, fresh /proc /run /tmp, cgroups, then systemd as PID 1.
set -eu
C=$1 REPO=$2
mount -t tmpfs -o size=512m tmpfs "$C"
mkdir -p "$C/upper" "$C/work" "$C/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$C/upper,workdir=$C/work" "$C/root"
R=$C/root
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
else
  mount -t tmpfs tmpfs "$R/sys/fs/cgroup"
  mkdir -p "$R/sys/fs/cgroup/systemd" "$R/sys/fs/cgroup/unified"
  mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup/unified" || true
  mount -t cgroup -o none,name=systemd cgroup "$R/sys/fs/cgroup/systemd"
fi
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# after /tmp and /run: a checkout below either must not be hidden by their fresh tmpfs
mkdir -p "$R$REPO" && mount --bind -o ro "$REPO" "$R$REPO"
cp "$C/../kitting-reconciler.service" "$C/../probe.target" "$R/etc/systemd/system/"
install -m 0755 "$C/../probe.sh" "$R/usr/local/bin/kitting-probe"
mkdir -p "$R/etc/kitting" "$R/home/partimag" "$R/root/.ssh"
echo 'source: /tmp/site' > "$R/etc/kitting/reconciler.yaml"
echo 'git.example.com ssh-ed25519 AAAA' > "$R/root/.ssh/known_hosts"
echo 0123456789abcdef0123456789abcdef > "$R/etc/machine-id"
export container=kitting-test
exec chroot "$R" /lib/systemd/systemd --system --unit=probe.target --log-target=console
"""

PROBE = r"""#!/bin/bash
# Runs as the unit's main process, inside its sandbox.
exec > /var/lib/kitting/probe.log 2>&1
set -u
ok() { local what=$1; shift; if "$@" > /dev/null 2>&1; then echo "OK $what"; else echo "FAIL $what"; fi; }
grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status
for d in $WRITABLE; do ok "write $d" sh -c "echo x > $d/.probe && rm $d/.probe"; done
for d in /etc/kitting /etc /usr/local /root /home; do ok "write $d" sh -c "echo x > $d/.probe"; done
ok "read /root/.ssh/known_hosts" cat /root/.ssh/known_hosts
ok "read /etc/kitting/reconciler.yaml" cat /etc/kitting/reconciler.yaml
ok "gpg keyring in the state directory" sh -c 'gpg --batch --list-keys && test -s /var/lib/kitting/gnupg/trustdb.gpg'
# The site repo the settings file names (source: /tmp/site; this service's private /tmp).
mkdir -p /tmp/site && cp -r "$REPO/site-repo-example/." /tmp/site
(cd /tmp/site && git init -q -b main && git add -A && git -c user.name=p -c user.email=p@x commit -qm site)
# The unit's own ExecStart, for one pass: clone, verify, validate, plan, apply, audit.
"$KITCTL" run --config /etc/kitting/reconciler.yaml --once > /var/lib/kitting/run.log 2>&1
echo "run exit $?"
ok "audit verify" "$KITCTL" audit verify
ok "clone in the state directory" git --git-dir=/var/lib/kitting/source rev-parse refs/kitting/fetched
ok "SIGHUP dnsmasq" systemctl kill --kill-whom=main --signal=SIGHUP dnsmasq.service
ok "nft list table inet kitting" nft list table inet kitting
echo DONE
"""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(word) for word in text.split()]


def _probe_unit(tmp_path: Path) -> None:
    text = unitfile.UNIT.read_text(encoding="utf-8")
    text = text.replace(
        "ExecStart=/opt/kitting/bin/kitctl run --config /etc/kitting/reconciler.yaml",
        "ExecStart=/usr/local/bin/kitting-probe",
    ).replace("Restart=on-failure", "Restart=no")
    assert "kitting-probe" in text
    writable = " ".join(sorted(EXPECTED_WRITABLE))
    kitctl = Path(sys.executable).parent / "kitctl"
    env = f'Environment="WRITABLE={writable}" "REPO={unitfile.REPO}" "KITCTL={kitctl}"\n'
    # The unit's PrivateTmp hides /tmp: a checkout there (CI clones anywhere) would take the
    # test's kitctl and site repo out of sight. The installed unit runs /opt/kitting instead.
    env += f"BindReadOnlyPaths={unitfile.REPO}\n"
    (tmp_path / "kitting-reconciler.service").write_text(
        text.replace("[Service]\n", "[Service]\n" + env)
    )
    (tmp_path / "probe.target").write_text("[Unit]\nWants=kitting-reconciler.service\n")
    (tmp_path / "probe.sh").write_text(PROBE)
    (tmp_path / "boot.sh").write_text(BOOT)
    (tmp_path / "ns").mkdir()


@pytest.fixture
def container(tmp_path: Path, require_programs: RequirePrograms) -> Iterator[Path]:
    """The container's root as seen from here (/proc/PID/root); torn down by PID."""
    require_programs("unshare", "systemd-analyze", "nft", "dnsmasq", "git", "chroot")
    if not Path("/lib/systemd/systemd").exists():
        pytest.fail("systemd is not installed (/lib/systemd/systemd)")
    _probe_unit(tmp_path)
    argv = ["unshare", "--mount", "--pid", "--fork", "--net", "--uts", "--ipc", "--cgroup"]
    argv += ["--propagation", "private", "bash", str(tmp_path / "boot.sh")]
    argv += [str(tmp_path / "ns"), str(unitfile.REPO)]
    with (tmp_path / "console.log").open("wb") as console:
        unshare = subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT)
    init = 0
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while not init and time.monotonic() < deadline and unshare.poll() is None:
            kids = _children(unshare.pid)
            if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("/systemd"):
                init = kids[0]
            else:
                time.sleep(0.05)
        if not init:
            console_text = (tmp_path / "console.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"the container's systemd did not start:\n{console_text}")
        yield Path(f"/proc/{init}/root")
    finally:
        if init:
            # SIGKILL to a PID namespace's init ends every process in it; its mounts go
            # with the mount namespace.
            os.kill(init, signal.SIGKILL)
        try:
            unshare.wait(timeout=10)
        except subprocess.TimeoutExpired:
            unshare.kill()
            unshare.wait(timeout=10)


def _probe_results(root: Path) -> tuple[str, list[dict[str, Any]]]:
    log = root / "var/lib/kitting/probe.log"
    deadline = time.monotonic() + PROBE_SECONDS
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if text.endswith("DONE\n"):
            break
        time.sleep(0.1)
    assert text.endswith("DONE\n"), f"the probe did not finish:\n{text}"
    audit = (root / "var/lib/kitting/audit.jsonl").read_text().splitlines()
    return text, [json.loads(line) for line in audit]


def test_the_controller_runs_inside_the_units_sandbox(container: Path) -> None:
    text, entries = _probe_results(container)
    lines = text.splitlines()
    assert f"CapBnd:\t{CAPABILITIES:016x}" in lines
    assert "NoNewPrivs:\t1" in lines
    for directory in sorted(EXPECTED_WRITABLE):
        assert f"OK write {directory}" in lines
    for directory in ("/etc/kitting", "/etc", "/usr/local", "/root", "/home"):
        assert f"FAIL write {directory}" in lines
    for check in (
        "read /root/.ssh/known_hosts",
        "read /etc/kitting/reconciler.yaml",
        "gpg keyring in the state directory",
        "audit verify",
        "clone in the state directory",
        "SIGHUP dnsmasq",
        "nft list table inet kitting",
    ):
        assert f"OK {check}" in lines

    assert [e for e in entries if any(m in e["result"]["message"] for m in SANDBOX_ERRORS)] == []
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_reason.setdefault(entry["details"].get("reason", ""), []).append(entry)
    assert by_reason["PreflightPassed"][0]["result"]["status"] == "ok"
    written = by_reason["FileWritten"]
    # 40 reservations + 7 server files (see docs/rendered-files.md), each at least once.
    assert len({e["target"] for e in written}) == 47
    assert {e["result"]["status"] for e in written} == {"ok"}
    services = {
        e["target"]: e["result"]["status"]
        for e in entries
        if e["target"] in ("dnsmasq", "sshd", "firewall")
    }
    assert services == {"dnsmasq": "ok", "sshd": "ok", "firewall": "ok"}
    # nfs-kernel-server is the one program this test machine may lack (or cannot run in a
    # container); whatever happened to it, the sandbox was not the cause (checked above).
    others = [
        e for e in entries if e["result"]["status"] != "ok" and e["target"] != "nfs-kernel-server"
    ]
    assert others == []
