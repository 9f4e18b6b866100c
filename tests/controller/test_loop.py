"""The loop: a commit on a local source wakes it (no polling), `kitctl reconcile --now`
(SIGHUP) asks for a pass, SIGTERM stops it cleanly, one controller per state directory.

Polls and drift checks are an hour apart in these tests, so anything that happens within
seconds was caused by the trigger under test.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.clock import FixedClock, SystemClock
from reconciler.controller import ControllerBusy
from reconciler.rendered import Service
from reconciler.services import NoServices, ServiceError

from .siterepo import (
    DNSMASQ,
    RANGE_12H,
    KitctlRun,
    SiteRepo,
    condition,
    controller,
    dhcp_range,
    events,
    kitctl,
    status_json,
    wait_until,
)

HOUR = "3600"


class LoopThread:
    """`Controller.run(stop=...)` in a thread (signals stay with the main thread)."""

    def __init__(self, run: object) -> None:
        self.stop = threading.Event()
        self.code: list[int] = []
        self.thread = threading.Thread(target=self._main, args=(run,), daemon=True)
        self.thread.start()

    def _main(self, run: object) -> None:
        assert callable(run)
        self.code.append(run(stop=self.stop))

    def close(self) -> int | None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the loop did not stop within 10 s"
        return self.code[0] if self.code else None


def test_a_commit_wakes_the_loop_without_polling(site: SiteRepo, root: Path) -> None:
    first = site.head()
    ctl = controller(site, root, SystemClock(), interval=3600, drift_interval=3600)
    loop = LoopThread(ctl.run)
    try:
        wait_until(lambda: status_json(root).get("last_applied") == first, 10, "first commit")
        assert RANGE_12H in (root / DNSMASQ).read_text()
        site.lease("8h")
        second = site.commit("Shorter leases")
        took = wait_until(
            lambda: status_json(root).get("last_applied") == second, 5, "the watched commit"
        )
        assert took < 5
        assert dhcp_range(28800) in (root / DNSMASQ).read_text()
    finally:
        code = loop.close()
    assert code == 0


def ready_message(root: Path) -> str:
    status = status_json(root)
    return next((c["message"] for c in status.get("conditions", []) if c["type"] == "Ready"), "")


class FlakyServices(NoServices):
    """The first restart fails (a reload that went wrong), later ones work."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def restart(self, service: Service) -> None:
        if self.failures:
            self.failures -= 1
            raise ServiceError(f"{service.value}.service: job failed")
        super().restart(service)


def test_a_failed_drift_repair_is_retried_with_backoff(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    controller(site, root, clock).pass_once()
    original = (root / DNSMASQ).read_bytes()
    (root / DNSMASQ).write_bytes(original + b"# edited by hand\n")
    ctl = controller(site, root, SystemClock(), interval=3600, drift_interval=3600)
    services = FlakyServices()
    ctl.seams = type(ctl.seams)(ctl.seams.host, services, ctl.seams.firewall, ctl.seams.preflight)
    loop = LoopThread(ctl.run)
    try:
        # the start pass repairs, the restart fails and the file is rolled back; 1 s later
        # the retry converges again (the drift timer is an hour away)
        # (the pass before the loop left "applied ..."; only a converge says "server matches")
        wait_until(lambda: ready_message(root).startswith("server matches"), 5, "repaired")
    finally:
        assert loop.close() == 0
    assert (root / DNSMASQ).read_bytes() == original
    assert condition(status_json(root), "Ready") == (True, "ApplySucceeded")
    assert services.failures == 0
    # the rollback asks dnsmasq again for the restored file; then the retry's restart
    assert services.calls == [("restart", "dnsmasq"), ("restart", "dnsmasq")]
    assert [e.event for e in events(root, "rollback")] == ["rollback"]


@pytest.fixture
def running(site: SiteRepo, root: Path, tmp_path: Path) -> Iterator[KitctlRun]:
    """`kitctl run` on the site, polls and drift checks an hour apart; killed at the end."""
    args = ["--config", os.devnull, "--source", str(site.path)]
    args += ["--root", str(root), "--services", "none", "--interval", HOUR]
    process = KitctlRun(tmp_path / "controller.log", *args, "--drift-interval", HOUR)
    try:
        head = site.head()
        wait_until(
            lambda: (
                status_json(root).get("last_applied") == head or process.proc.poll() is not None
            ),
            15,
            "the controller applied the site",
        )
        assert process.proc.poll() is None, process.output()
        yield process
    finally:
        process.close()


def test_nudge_busy_and_clean_stop(
    running: KitctlRun, site: SiteRepo, root: Path, tmp_path: Path
) -> None:
    status = kitctl("status", "--root", str(root), "--format", "json")
    assert '"running": true' in status.stdout
    assert (
        f"controller: running (pid {running.pid})" in kitctl("status", "--root", str(root)).stdout
    )

    # a hand edit is only found by a drift check, an hour away: the nudge asks for one now
    original = (root / DNSMASQ).read_bytes()
    (root / DNSMASQ).write_bytes(original + b"# edited by hand\n")
    nudged = kitctl("reconcile", "--now", "--root", str(root))
    assert nudged.returncode == 0, nudged.stderr
    assert nudged.stdout == f"asked controller (pid {running.pid}) for a pass\n"
    # the audit line follows the file's rename: wait for the line, then check both
    wait_until(lambda: bool(events(root, "drift_repaired")), 5, "the nudged pass")
    assert (root / DNSMASQ).read_bytes() == original
    assert [e.target for e in events(root, "drift_repaired")] == ["/etc/dnsmasq.d/kitting.conf"]

    second = kitctl(
        "run", "--config", os.devnull, "--source", str(site.path),
        "--root", str(root), "--services", "none", "--once",
    )  # fmt: skip
    assert second.returncode == 1
    with pytest.raises(ControllerBusy, match=rf"another controller \(pid {running.pid}\)"):
        controller(site, root, SystemClock()).run(once=True)
    assert second.stderr.endswith(
        f"error: another controller (pid {running.pid}) already runs for {root}/var/lib/kitting\n"
    )

    running.signal(signal.SIGTERM)
    assert running.wait(timeout=10) == 0, running.output()
    assert "| stopped" in running.output()
    assert kitctl("status", "--root", str(root)).stdout.startswith("controller: not running\n")
    gone = kitctl("reconcile", "--now", "--root", str(root))
    assert gone.returncode == 1
    assert "no controller is running for this root" in gone.stderr


def test_a_url_source_is_polled(site: SiteRepo, root: Path) -> None:
    """A URL is not watched (it could be anywhere): the loop polls it every interval."""
    first = site.head()
    url = f"file://{site.path}"
    ctl = controller(site, root, SystemClock(), source=url, interval=0.5, drift_interval=3600)
    loop = LoopThread(ctl.run)
    try:
        wait_until(lambda: status_json(root).get("last_applied") == first, 10, "first commit")
        site.lease("8h")
        second = site.commit("Shorter leases")
        # a poll comes within 0.55 s (0.5 s +- 10 % jitter); the pass itself takes < 1 s
        wait_until(lambda: status_json(root).get("last_applied") == second, 5, "a poll")
    finally:
        assert loop.close() == 0
    assert dhcp_range(28800) in (root / DNSMASQ).read_text()
