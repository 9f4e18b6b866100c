"""Fixtures of the lab tests."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.lab import workspace


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory of this test's own that the lab's unprivileged programs can read (the
    lab's dnsmasq drops to its own user; pytest's tmp_path is private to root). Under the
    lab base, which only root may write to; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("the lab base belongs to root")
    workspace.LAB_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = workspace.LAB_BASE / f"test-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
