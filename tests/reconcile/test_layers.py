"""The pure core stays pure: plan and its formatting never load a seam that runs programs
or writes files, even indirectly (what an import-linter contract would enforce)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("subprocess", "loguru", "reconciler.runner", "reconciler.services", "reconciler.apply")


@pytest.mark.parametrize(
    "module",
    ["reconciler.plan", "reconciler.plan_format", "reconciler.nftables", "reconciler.facts"],
)
def test_pure_module_imports_no_seam(module: str) -> None:
    probe = f"import sys, {module}\nprint(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == ""
