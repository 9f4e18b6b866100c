"""Fixtures for the audit log tests: a fixed clock and a five-line sample log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from audit_fixtures import PLUS2, Sample, write_sample

from reconciler import audit
from reconciler.clock import FixedClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2024, 5, 1, 10, 0, tzinfo=PLUS2))


@pytest.fixture(scope="session")
def _sample_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    # fsync makes real appends cost milliseconds each: write the sample once per run.
    root = tmp_path_factory.mktemp("audit-sample")
    write_sample(root, FixedClock(datetime(2024, 5, 1, 10, 0, tzinfo=PLUS2)))
    return audit.log_path(root).read_bytes(), audit.head_path(root).read_bytes()


@pytest.fixture
def sample(_sample_files: tuple[bytes, bytes]) -> Sample:
    """Put the same five actions (one minute apart, from 10:00+02:00) under a root, as
    `AuditLog` wrote them with a fixed clock; return the raw lines."""

    def write(root: Path) -> list[bytes]:
        log, head = audit.log_path(root), audit.head_path(root)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(_sample_files[0])
        head.write_bytes(_sample_files[1])
        return _sample_files[0].splitlines(keepends=True)

    return write
