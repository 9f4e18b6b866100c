"""The real-image fixture's own safety: clear refusals, bounded commands, nothing left over.
(Its product is checked in test_image_real.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.lab import fixture_image
from tests.fixtures import clonezilla


def test_no_loop_devices_is_a_clear_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fixture_image, "missing_programs", list)
    monkeypatch.setattr(fixture_image, "LOOP_CONTROL", tmp_path / "no-loop-control")
    with pytest.raises(clonezilla.FixtureUnavailable, match="loop devices are unavailable"):
        clonezilla.build_or_reuse(tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"clonezilla-v{clonezilla.RECIPE_VERSION}.lock"
    ]


def test_missing_programs_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixture_image, "missing_programs", lambda: ["ocs-sr", "mcopy"])
    with pytest.raises(clonezilla.FixtureUnavailable, match="needs ocs-sr, mcopy"):
        clonezilla.build_or_reuse(tmp_path)


def test_an_overrunning_command_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(clonezilla.FixtureBuildError, match="ran longer than 1 s"):
        fixture_image._run(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"], timeout=1)
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed; the kernel may take a moment to reap it
    assert not Path(f"/proc/{child}").exists() or _is_zombie(child)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_failing_command_says_what_it_printed() -> None:
    with pytest.raises(clonezilla.FixtureBuildError, match="exited 3: oops"):
        fixture_image._run(["sh", "-c", "echo oops; exit 3"])


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clonezilla.CACHE_ENV, "/tmp/somewhere")
    assert clonezilla.cache_dir() == Path("/tmp/somewhere")
    monkeypatch.delenv(clonezilla.CACHE_ENV)
    assert clonezilla.cache_dir() == Path("/var/cache/kitting-tests")


def test_the_lab_and_the_tests_keep_the_same_recipe_in_their_own_caches() -> None:
    assert Path("/var/cache/kitting-lab") == fixture_image.LAB_CACHE
    assert fixture_image.home_dir(Path("/var/cache/kitting-tests")) == Path(
        f"/var/cache/kitting-tests/clonezilla-v{clonezilla.RECIPE_VERSION}"
    )


def test_noise_is_deterministic_and_incompressible() -> None:
    import zlib

    first = clonezilla.noise(100_000)
    assert first == clonezilla.noise(100_000)
    assert len(first) == 100_000
    assert len(zlib.compress(first, 9)) > 100_000
