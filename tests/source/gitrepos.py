"""Helpers that build real Git repositories and keys for the Git source tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

RequirePrograms = Callable[..., None]
"""The shared `require_programs` fixture (tests/conftest.py)."""
KeyMaker = Callable[[str], tuple[Path, str]]


class Upstream:
    """A site repo as people push to it: a normal repository with a work tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tick = 0
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("config", "user.name", "Ann Author")
        self.git("config", "user.email", "ann@example.org")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        self._tick += 1
        # fixed, increasing dates: the same test builds the same history every time
        stamp = f"2024-03-01T10:{self._tick // 60:02d}:{self._tick % 60:02d}+01:00"
        full_env = {
            **os.environ,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
            **(env or {}),
        }
        done = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=full_env,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def commit(
        self,
        files: dict[str, str],
        message: str,
        *,
        sign: tuple[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Write files, commit them all; sign=(format, key) signs ("ssh", key path) or
        ("openpgp", fingerprint)."""
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        self.git("add", "--all")
        signing: list[str] = []
        if sign is not None:
            signing = ["-c", f"gpg.format={sign[0]}", "-c", f"user.signingkey={sign[1]}"]
            signing += ["commit", "--quiet", "--allow-empty", "-S"]
        else:
            signing = ["commit", "--quiet", "--allow-empty"]
        self.git(*signing, "-m", message, env=env)
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return self.git("rev-parse", rev)


def ssh_key(directory: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key path, 'ssh-ed25519 BASE64' public key)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)],
        check=True,
        timeout=30,
    )
    kind, blob, *_ = (directory / f"{name}.pub").read_text().split()
    return private, f"{kind} {blob}"
