"""Run a piece of Python inside a lab network namespace, from this process.

`setns(CLONE_NEWNET)` changes the namespace of the calling thread only, so a short-lived
thread enters the namespace, runs the work and ends; a socket made there stays in that
namespace and serves from any thread afterwards (the report listener, a test's receiver).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
TIMEOUT = 10.0


def in_netns(netns: str, work: Callable[[], T], *, timeout: float = TIMEOUT) -> T:
    """`work()` run by a thread that entered `/run/netns/NETNS`; its result, or its error.
    Raises TimeoutError when it did not finish within `timeout` seconds."""
    libc = ctypes.CDLL(None, use_errno=True)
    done: list[T] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            failed.append(error)
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
            done.append(work())
        except BaseException as error:  # handed to the caller's thread
            failed.append(error)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout=timeout)
    if failed:
        raise failed[0]
    if not done:
        raise TimeoutError(f"nothing done in {netns} within {timeout:g} s")
    return done[0]
