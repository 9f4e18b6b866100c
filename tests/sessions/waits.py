"""Bounded waits of the session tests: for a condition, for the feeder's exit, for a PID."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from reconciler.deployment_facts import Observation, SessionExited
from reconciler.sessions import SessionRunner


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def observe_until_exit(runner: SessionRunner, timeout: float = 15.0) -> list[Observation]:
    """What the runner observed up to and including the feeder's exit."""
    seen: list[Observation] = []

    def exited() -> bool:
        seen.extend(runner.observe())
        runner.commit()
        return any(isinstance(o, SessionExited) for o in seen)

    until(exited, "the feeder's exit", timeout)
    return seen


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] in "ZX"
