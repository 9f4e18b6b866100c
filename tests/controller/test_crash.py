"""A `kitctl run` process stopped in the middle of a pass: SIGKILL, then a restart converges
with an intact audit chain; SIGTERM lets the pass in flight finish first.

The site is the example plus a department of FLEET PCs (one reservation file each), so a
pass writes for a couple of seconds: the process is stopped as soon as its first file is in
the audit log, and the test proves it was mid-pass (no commit_applied line yet, files
missing).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import audit
from reconciler.host import is_temp_name

from .conftest import RequirePrograms
from .siterepo import (
    HOSTS,
    KitctlRun,
    SiteRepo,
    condition,
    entries,
    events,
    kitctl,
    status_json,
    wait_until,
)

FLEET = 600


def fleet_mac(index: int) -> str:
    return f"02:4c:00:00:{index >> 8:02x}:{index & 0xFF:02x}"


def fleet_yaml() -> str:
    lines = ["kind: Department", "name: fleet", "image: win11-base-2025", "pcs:"]
    for index in range(FLEET):
        lines += [f"  - hostname: FLEET-{index:04d}", f'    macs: ["{fleet_mac(index)}"]']
    return "\n".join(lines) + "\n"


def expected_reservations() -> dict[str, str]:
    """Every reservation file by hand: the fleet, and two of the example's PCs."""
    header = "# managed by kitctl; edits are reverted\n"
    wanted = {
        f"FLEET-{i:04d}.hosts": f"{header}{fleet_mac(i)},FLEET-{i:04d}\n" for i in range(FLEET)
    }
    wanted["ACC-PC-07.hosts"] = f"{header}02:4b:49:54:02:07,192.168.100.127,ACC-PC-07\n"
    wanted["SALES-PC-03.hosts"] = (
        f"{header}02:4b:49:54:01:03,SALES-PC-03\n02:4b:49:54:11:03,SALES-PC-03\n"
    )
    return wanted


@pytest.fixture
def big_site(tmp_path: Path, require_programs: RequirePrograms) -> SiteRepo:
    require_programs("git", "dnsmasq", "nft")
    repo = SiteRepo(tmp_path / "site")
    repo.write("departments/fleet.yaml", fleet_yaml())
    repo.commit("Example site with a fleet of 600 PCs")
    return repo


@pytest.fixture
def processes() -> Iterator[list[KitctlRun]]:
    started: list[KitctlRun] = []
    yield started
    for process in started:
        process.close()


def run_args(site: SiteRepo, root: Path, tmp_path: Path) -> list[str]:
    args = ["--config", os.devnull, "--source", str(site.path)]
    return [*args, "--root", str(root), "--services", "none", "--interval", "3600"]


def first_file_written(root: Path, process: KitctlRun) -> None:
    log = audit.log_path(root)

    def written() -> bool:
        assert process.proc.poll() is None, process.output()
        return log.exists() and b'"event":"file_written"' in log.read_bytes()

    wait_until(written, 30, "the first file_written line")


def reservations(root: Path) -> dict[str, str]:
    directory = root / HOSTS
    return {p.name: p.read_text() for p in directory.iterdir()} if directory.exists() else {}


def temp_files(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if is_temp_name(name)]


def test_sigkill_mid_pass_then_restart_converges(
    big_site: SiteRepo, root: Path, tmp_path: Path, processes: list[KitctlRun]
) -> None:
    victim = KitctlRun(tmp_path / "killed.log", *run_args(big_site, root, tmp_path))
    processes.append(victim)
    first_file_written(root, victim)
    victim.signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert events(root, "commit_applied") == []  # killed mid-pass
    assert len(reservations(root)) < FLEET

    again = kitctl("run", *run_args(big_site, root, tmp_path), "--once", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]

    head = big_site.head()
    status = status_json(root)
    assert status["last_applied"] == head
    assert condition(status, "Ready") == (True, "ApplySucceeded")
    planned = kitctl(
        "plan", "--repo", str(big_site.path), "--root", str(root), "--detailed-exitcode"
    )
    assert planned.returncode == 0, planned.stdout[-3000:]
    # FLEET + 40 reservations and the example's 7 other files (dnsmasq, exports, nfs.conf,
    # nft, sshd, two boot menus)
    assert planned.stdout.startswith(
        f"Plan: no changes: all {FLEET + 47} files match; inventory clean\n"
    )
    verified = kitctl("audit", "verify", "--root", str(root))
    assert verified.returncode == 0, verified.stdout
    assert [e.commit.sha for e in events(root, "commit_applied") if e.commit] == [head]

    found = reservations(root)
    assert len(found) == FLEET + 40  # and the example's 20 sales and 20 accounting PCs
    wanted = expected_reservations()
    assert {name: found.get(name) for name in wanted} == wanted
    assert temp_files(root) == []


def test_sigterm_mid_pass_finishes_the_pass_and_exits_cleanly(
    big_site: SiteRepo, root: Path, tmp_path: Path, processes: list[KitctlRun]
) -> None:
    controller = KitctlRun(tmp_path / "stopped.log", *run_args(big_site, root, tmp_path))
    processes.append(controller)
    first_file_written(root, controller)
    controller.signal(signal.SIGTERM)
    assert controller.wait(timeout=60) == 0, controller.output()[-3000:]

    head = big_site.head()
    assert [e.commit.sha for e in events(root, "commit_applied") if e.commit] == [head]
    assert len(reservations(root)) == FLEET + 40
    assert status_json(root)["last_applied"] == head
    assert entries(root)[-1].event == "commit_applied"  # nothing after it: it stopped
    assert controller.output().rstrip().endswith("| stopped")
