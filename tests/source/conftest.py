"""Fixtures for the Git source tests, isolated from the host's git and gpg setup."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .gitrepos import KeyMaker, RequirePrograms, Upstream, ssh_key


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No system or global git settings, no host keyring: every test starts from nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSH_COMMAND", "GNUPGHOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def upstream(tmp_path: Path, require_programs: RequirePrograms) -> Upstream:
    require_programs("git")
    return Upstream(tmp_path / "upstream")


@pytest.fixture
def ssh_keys(tmp_path: Path, require_programs: RequirePrograms) -> KeyMaker:
    """make(name) -> a fresh ed25519 key pair (private key path, public key 'TYPE BASE64')."""
    require_programs("ssh-keygen")
    return lambda name: ssh_key(tmp_path / "keys", name)


@pytest.fixture
def gnupg(tmp_path: Path, require_programs: RequirePrograms) -> Iterator[Path]:
    """A throwaway GNUPGHOME; its agent is stopped at the end, also on failure."""
    require_programs("gpg")
    gpgconf = shutil.which("gpgconf")  # now: a test may narrow PATH before teardown
    home = tmp_path / "gpg"
    home.mkdir(mode=0o700)
    yield home
    if gpgconf is not None:
        subprocess.run(
            [gpgconf, "--homedir", str(home), "--kill", "all"],
            check=False,
            capture_output=True,
            timeout=30,
        )
