"""The program-running seam: run one real program, never through a shell.

Facts (nft listings), preflight (dnsmasq --test, nft -c, sshd -t) and the service manager
(systemctl, exportfs, nft -f) call programs through a `Runner`, so tests can swap in a
recording fake or a runner that enters a network namespace the test created.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

NOT_FOUND = 127
"""Exit status reported when the program is not installed (as a shell would say)."""


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stderr then stdout: the tools we run put their complaints on either."""
        return "\n".join(part for part in (self.stderr.strip(), self.stdout.strip()) if part)


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float = 60.0) -> Completed: ...


def run(argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
    """Run `argv` with captured output; a missing program or a timeout becomes a status."""
    args = tuple(argv)
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except FileNotFoundError:
        return Completed(args, NOT_FOUND, "", f"{args[0]}: program not found")
    except subprocess.TimeoutExpired:
        return Completed(args, 124, "", f"{args[0]}: no answer within {timeout:g} s")
    return Completed(args, done.returncode, done.stdout, done.stderr)
