"""Real site repositories, sandbox roots and `kitctl` processes for the controller tests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from reconciler import audit
from reconciler.clock import Clock
from reconciler.controller import Controller
from reconciler.settings import Settings

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "site-repo-example"
TOKYO = timezone(timedelta(hours=9))
STATE = "var/lib/kitting"
DNSMASQ = "etc/dnsmasq.d/kitting.conf"
HOSTS = "etc/kitting/dhcp-hosts"
# The example's pool .10-.100 on a /24 with a 12 h lease, as dnsmasq is told it.
RANGE_12H = "dhcp-range=192.168.100.10,192.168.100.100,255.255.255.0,43200\n"


class SiteRepo:
    """A site repo as people push to it: a work tree on branch main, the example site in it.

    Commit dates are fixed and increase by one minute per commit, from 2026-12-01T10:00+09:00,
    so the audit's commit dates are known in advance."""

    def __init__(self, path: Path, *, seed: Path | None = EXAMPLE) -> None:
        self.path = path
        self.commits = 0
        if seed is not None:
            shutil.copytree(seed, path)
        else:
            path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("config", "user.name", "Ann Author")
        self.git("config", "user.email", "ann@example.org")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        stamp = self.date(self.commits).isoformat()
        env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        done = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    @staticmethod
    def date(index: int) -> datetime:
        """The date of the index-th commit (0-based)."""
        return datetime(2026, 12, 1, 10, 0, tzinfo=TOKYO) + timedelta(minutes=index)

    def replace(self, name: str, old: str, new: str) -> None:
        """Edit one file: `old` must occur exactly once (so a test never edits blindly)."""
        file = self.path / name
        text = file.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {name}"
        file.write_text(text.replace(old, new), encoding="utf-8")

    def write(self, name: str, text: str) -> None:
        file = self.path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")

    def commit(self, message: str, *, sign: Path | None = None, amend: bool = False) -> str:
        """Commit everything; `sign` is an ssh private key to sign with (git's SSH format)."""
        self.git("add", "--all")
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign}"] if sign else []
        extra = ["-S"] if sign else []
        if amend:
            extra.append("--amend")
        self.git(*signing, "commit", "--quiet", "--allow-empty", *extra, "-m", message)
        self.commits += 1
        return self.head()

    def merge(self, branch: str, subject: str, body: str) -> str:
        """A merge commit of `branch` into the current branch, as a forge writes it."""
        self.git("merge", "--quiet", "--no-ff", "--no-edit", "-m", subject, "-m", body, branch)
        self.commits += 1
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return self.git("rev-parse", rev)

    def lease(self, value: str) -> None:
        """Set the DHCP lease time of the example site (12h there)."""
        current = next(
            line
            for line in (self.path / "site.yaml").read_text().splitlines()
            if line.strip().startswith("lease_time:")
        )
        self.replace("site.yaml", current, f"    lease_time: {value}")


def dhcp_range(seconds: int) -> str:
    """The dhcp-range line of the example's pool for a lease of `seconds`."""
    return f"dhcp-range=192.168.100.10,192.168.100.100,255.255.255.0,{seconds}\n"


def settings(repo: SiteRepo, root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"source": str(repo.path), "root": str(root), "services": "none"}
    values.update(overrides)
    return Settings.model_validate(values)


def controller(repo: SiteRepo, root: Path, clock: Clock, **overrides: Any) -> Controller:
    return Controller(settings(repo, root, **overrides), clock=clock)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file the reconciler serves from (the state directory left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(STATE + "/"):
            found[relative] = path.read_bytes()
    return found


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def entries(root: Path) -> list[audit.Entry]:
    found, problems = audit.read(audit.log_path(root))
    assert problems == []
    return found


def events(root: Path, event: str) -> list[audit.Entry]:
    return [e for e in entries(root) if e.event == event]


def status_json(root: Path) -> dict[str, Any]:
    """status.json as written, or {} while it does not exist (or is being replaced)."""
    try:
        data: dict[str, Any] = json.loads((root / STATE / "status.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def condition(status: dict[str, Any], kind: str) -> tuple[bool, str]:
    found = [c for c in status["conditions"] if c["type"] == kind]
    assert len(found) == 1, status["conditions"]
    return found[0]["status"], found[0]["reason"]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` every 10 ms for up to `timeout` seconds; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def kitctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`kitctl ARGS` in a process of its own (the installed entry point's module)."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class KitctlRun:
    """`kitctl run ...` as a background process, its stderr in a file; killed by PID when
    the test ends (`close`), also when it failed."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", *args],
                cwd=PROJECT,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
