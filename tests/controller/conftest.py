"""Fixtures for the controller tests: real git repositories, isolated from the host's git
setup, and sandbox roots (no service is signalled, the kernel's firewall is not looked at)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from reconciler.clock import FixedClock

from .siterepo import TOKYO, SiteRepo

RequirePrograms = Callable[..., None]


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No system or global git settings, no host keyring: every test starts from nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("KITCTL_LOG_LEVEL", "INFO")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSH_COMMAND", "GNUPGHOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def site(tmp_path: Path, require_programs: RequirePrograms) -> SiteRepo:
    """The example site repo with one commit on main."""
    # git for the repo; the preflight refuses what dnsmasq and nft cannot check
    require_programs("git", "dnsmasq", "nft")
    repo = SiteRepo(tmp_path / "site")
    repo.commit("Example site: tokyo-hq")
    return repo


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A sandbox server root."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> FixedClock:
    """Monday 2026-11-30 08:00 in Tokyo: a week before the example's first batch window."""
    return FixedClock(datetime(2026, 11, 30, 8, 0, tzinfo=TOKYO))
