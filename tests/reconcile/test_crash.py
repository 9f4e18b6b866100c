"""Crash safety: an apply SIGKILLed between any two durable steps leaves every file with
its old or its new content, and the next apply completes the job with the right inventory.

The apply runs in a forked child on a real filesystem (LocalHost on a tmp root); the host's
step hook kills the child at step k, for every k of a full apply.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import inventory
from reconciler.host import LocalHost, is_temp_name
from reconciler.inventory import Entry
from reconciler.rendered import Effect, Rendered, Service

from .helpers import (
    BOOT,
    HOSTS,
    LAYOUT,
    MAIN,
    apply_once,
    boot_menu,
    main_conf,
    rendered,
    reservation,
)

L1, L1_NEW = "aa:bb:cc:dd:ee:01,pc-1", "aa:bb:cc:dd:ee:01,192.168.100.11,pc-1"
L2, L3, L4 = "aa:bb:cc:dd:ee:02,pc-2", "aa:bb:cc:dd:ee:03,pc-3", "aa:bb:cc:dd:ee:04,pc-4"
MAIN_OLD, MAIN_NEW = "port=0\n", "port=0\ndhcp-lease-max=5000\n"
BOOT_OLD, BOOT_NEW = "DEFAULT local\n", "DEFAULT clonezilla\n"

OLD = rendered(
    reservation("pc-1", L1),
    reservation("pc-2", L2),
    reservation("pc-3", L3),
    main_conf(MAIN_OLD),
    boot_menu(BOOT_OLD),
)
NEW = rendered(
    reservation("pc-1", L1_NEW),  # changed
    reservation("pc-3", L3),  # unchanged
    reservation("pc-4", L4),  # new; pc-2 is pruned
    main_conf(MAIN_NEW),
    boot_menu(BOOT_NEW),
)
ALLOWED: dict[str, set[str | None]] = {
    f"{HOSTS}/pc-1": {L1 + "\n", L1_NEW + "\n"},
    f"{HOSTS}/pc-2": {L2 + "\n", None},
    f"{HOSTS}/pc-3": {L3 + "\n"},
    f"{HOSTS}/pc-4": {None, L4 + "\n"},
    MAIN: {MAIN_OLD, MAIN_NEW},
    BOOT: {BOOT_OLD, BOOT_NEW},
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EXPECTED_INVENTORY = {
    f"{HOSTS}/pc-1": Entry(sha(L1_NEW + "\n"), 0o644, Service.dnsmasq, Effect.reload),
    f"{HOSTS}/pc-3": Entry(sha(L3 + "\n"), 0o644, Service.dnsmasq, Effect.reload),
    f"{HOSTS}/pc-4": Entry(sha(L4 + "\n"), 0o644, Service.dnsmasq, Effect.reload),
    MAIN: Entry(sha(MAIN_NEW), 0o644, Service.dnsmasq, Effect.restart),
    BOOT: Entry(sha(BOOT_NEW), 0o644, None, Effect.reload),
}


def server_at_old(root: Path) -> None:
    _, report = apply_once(LocalHost(root), OLD)
    assert report.ok


def steps_of_a_full_apply(root: Path) -> list[tuple[str, str]]:
    server_at_old(root)
    steps: list[tuple[str, str]] = []
    _, report = apply_once(LocalHost(root, on_step=lambda s, p: steps.append((s, p))), NEW)
    assert report.ok
    return steps


def apply_killed_at(root: Path, kill_at: int, wanted: Rendered) -> int:
    """Fork a child that applies `wanted` and SIGKILLs itself at step `kill_at`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            count = 0

            def hook(step: str, path: str) -> None:
                nonlocal count
                count += 1
                if count == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            _, report = apply_once(LocalHost(root, on_step=hook), wanted)
            code = 0 if report.ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def temp_files(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if is_temp_name(name)]


@pytest.fixture
def crash_root(tmp_path: Path) -> Iterator[Path]:
    """A root on tmpfs where there is one: same rename semantics, no disk flush to wait for
    (fsync on a real disk made this loop take seconds)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="kitting-crash-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_every_kill_point_leaves_old_or_new_and_the_next_apply_completes(crash_root: Path) -> None:
    steps = steps_of_a_full_apply(crash_root / "count")
    # intent (2 steps), boot (2), settle (2), pc-4 (2), pc-1 (2), main (2), rm pc-2 (1),
    # settle (2); the commit is the same as before, so no last inventory write
    assert len(steps) == 15
    left_temps = 0
    for kill_at in range(1, len(steps) + 1):
        root = crash_root / f"kill-{kill_at}"
        server_at_old(root)
        status = apply_killed_at(root, kill_at, NEW)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, kill_at

        host = LocalHost(root)
        for path, allowed in ALLOWED.items():
            content = host.read(path)
            assert (None if content is None else content.decode()) in allowed, (kill_at, path)
        inventory.load(host, LAYOUT)  # always readable: it is replaced atomically too
        left_temps += len(temp_files(root))

        _, report = apply_once(host, NEW)
        assert report.ok, (kill_at, report.results)
        for path, artifact in NEW.artifacts.items():
            assert host.read(path) == artifact.content, (kill_at, path)
        assert host.read(f"{HOSTS}/pc-2") is None
        assert temp_files(root) == [], kill_at
        assert inventory.load(host, LAYOUT).files == EXPECTED_INVENTORY, kill_at
        again, _ = apply_once(host, NEW)
        assert not again.changes, (kill_at, again.summary)
    # Kill points right after "temp-written" leave a temp file; prove they were exercised.
    assert left_temps == sum(1 for step, _ in steps if step == "temp-written")


@pytest.mark.parametrize("kill_at", [1, 4, 9])
def test_a_crash_during_the_very_first_apply_keeps_ownership(
    crash_root: Path, kill_at: int
) -> None:
    status = apply_killed_at(crash_root, kill_at, NEW)
    assert os.WIFSIGNALED(status)
    host = LocalHost(crash_root)
    owned = inventory.load(host, LAYOUT)
    # Every file that exists was recorded (as pending) before it was written.
    for path in NEW.artifacts:
        if host.read(path) is not None:
            assert owned.owns(path), (kill_at, path)
    built, report = apply_once(host, NEW)
    assert not built.blocked and report.ok
    assert inventory.load(host, LAYOUT).files == EXPECTED_INVENTORY
