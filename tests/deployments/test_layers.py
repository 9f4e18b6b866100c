"""The deployments core stays pure: it loads no seam and reads no clock, file or process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler

FORBIDDEN_MODULES = (
    "subprocess",
    "loguru",
    "reconciler.runner",
    "reconciler.services",
    "reconciler.apply",
    "reconciler.host",
    "reconciler.clock",
)
PURE = sorted(Path(reconciler.__file__).parent.glob("deployment*.py"))
FORBIDDEN_CALLS = re.compile(
    r"\b(?:datetime\.now|datetime\.utcnow|date\.today|time\.time|time\.monotonic|open|"
    r"os\.\w+|Path)\("
)


def test_the_public_module_loads_no_seam() -> None:
    probe = (
        "import sys, reconciler.deployments\n"
        f"print(','.join(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == ""


def test_every_deployment_module_is_covered() -> None:
    assert [p.name for p in PURE] == [
        "deployment_facts.py",
        "deployment_machine.py",
        "deployment_report.py",
        "deployment_rules.py",
        "deployment_session.py",
        "deployment_state.py",
        "deployments.py",
    ]


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_no_clock_file_or_process_calls(path: Path) -> None:
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN_CALLS.search(line)
    ]
    assert found == []
