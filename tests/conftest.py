"""Fixtures shared by every test directory.

Integration tests (marker `integration`) run real programs in network namespaces and need
root. Without root they are skipped, with the reason; when KITTING_REQUIRE_INTEGRATION=1
(CI) they fail instead, so that a green CI run means they really ran. The same rule holds
for a missing program (`require_programs`), which also fails when running as root: a root
machine is one that `make setup` has provisioned.

Tests marked `netns` enter network or mount namespaces; on a machine that cannot (a
chroot) they are skipped with the reason, except under KITTING_REQUIRE_INTEGRATION=1.

`vnet` yields a `VirtualNetwork` (reconciler.lab.netns) and always tears it down.
`clonezilla_image` is a real image saved by Clonezilla (tests/fixtures/clonezilla.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.lab import netns
from reconciler.lab.probes import PROBE_PATH
from tests.fixtures import clonezilla

REQUIRE_ENV = "KITTING_REQUIRE_INTEGRATION"

RequirePrograms = Callable[..., None]


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def _skip_or_fail(reason: str, *, fail_because: str | None) -> None:
    if fail_because is not None:
        pytest.fail(f"{reason} (not skipped: {fail_because})", pytrace=False)
    pytest.skip(reason)


def _strictness(*, root_too: bool) -> str | None:
    if _required():
        return f"{REQUIRE_ENV}=1"
    if root_too and os.geteuid() == 0:
        return "running as root"
    return None


def require_programs(*names: str) -> None:
    """Skip the test when a program is missing, or fail it when skipping is not allowed."""
    search = os.pathsep.join((os.environ.get("PATH", ""), PROBE_PATH))
    missing = [name for name in names if shutil.which(name, path=search) is None]
    if missing:
        reason = f"needs {', '.join(missing)} (see tests/debian-packages.txt)"
        _skip_or_fail(reason, fail_because=_strictness(root_too=True))


_namespace_problem: str | None = None
_namespace_probed = False


def namespace_problem() -> str | None:
    """Why this machine cannot enter network and mount namespaces, or None when it can.

    A chroot (such as the fresh-machine check) has no mount point at /, so neither
    `ip netns exec` / `ip -n` nor `unshare --mount` can set mount propagation there. That
    is the machine, not a missing install step: such tests are skipped with this reason,
    unless KITTING_REQUIRE_INTEGRATION=1 (CI on a real machine), where they fail.
    """
    global _namespace_problem, _namespace_probed
    if not _namespace_probed:
        _namespace_probed = True
        name = f"kt-probe-{os.getpid()}"
        try:
            steps = (
                ["ip", "netns", "add", name],
                ["ip", "-n", name, "link", "set", "lo", "up"],
                ["unshare", "--mount", "true"],
            )
            for argv in steps:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
                if done.returncode != 0:
                    _namespace_problem = (
                        f"this machine cannot enter namespaces ({' '.join(argv[:3])}: "
                        f"{done.stderr.strip()}); a chroot has no mount point at /"
                    )
                    break
        except (OSError, subprocess.TimeoutExpired) as error:
            _namespace_problem = f"this machine cannot enter namespaces: {error}"
        finally:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=10, check=False
            )
    return _namespace_problem


def require_namespaces() -> None:
    problem = namespace_problem()
    if problem is not None:
        _skip_or_fail(problem, fail_because=_strictness(root_too=False))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is not None and os.geteuid() != 0:
        _skip_or_fail(
            "integration test: needs root for network namespaces",
            fail_because=_strictness(root_too=False),
        )
    if item.get_closest_marker("netns") is not None:
        require_namespaces()


@pytest.fixture(name="require_programs")
def require_programs_fixture() -> RequirePrograms:
    """`require_programs("dnsmasq", "busybox")` inside a test."""
    return require_programs


_stale_swept = False


@pytest.fixture
def vnet(tmp_path: Path) -> Iterator[netns.VirtualNetwork]:
    """An empty virtual network of this test's own (add switches and hosts to it); its
    programs and namespaces are removed at the end, also when the test fails."""
    global _stale_swept
    if os.geteuid() != 0:
        _skip_or_fail("the lab network needs root", fail_because=_strictness(root_too=False))
    require_programs("ip")
    require_namespaces()
    if not _stale_swept:  # leftovers of crashed runs, once per session
        netns.cleanup_stale()
        _stale_swept = True
    net = netns.VirtualNetwork.create(log_dir=tmp_path / "lab")
    try:
        yield net
    finally:
        net.teardown()


@pytest.fixture(scope="session")
def clonezilla_image() -> clonezilla.ClonezillaImage:
    """A real image saved by ocs-sr, built once per machine and cached (read only: copy it
    with `clonezilla.copy_image` before breaking it)."""
    if os.geteuid() != 0:
        _skip_or_fail("the Clonezilla image needs root", fail_because=_strictness(root_too=False))
    require_programs(*clonezilla.PROGRAMS)
    try:
        return clonezilla.build_or_reuse()
    except clonezilla.FixtureUnavailable as error:
        _skip_or_fail(str(error), fail_because=_strictness(root_too=True))
        raise
