"""The imaging rehearsal's batch, worked out by hand: its window and its site file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import PurePosixPath

import pytest

from reconciler import snapshot
from reconciler.lab import kitting_day, labsite


def test_the_window_opens_a_minute_ago_for_half_an_hour_with_its_offset() -> None:
    now = datetime(2026, 12, 3, 15, 40, 12, 345678, tzinfo=UTC)
    window = kitting_day.batch_window(now, "loop0")
    assert (window.start, window.end, window.disk) == (
        "2026-12-03T15:39:12+00:00",
        "2026-12-03T16:10:12+00:00",
        "loop0",
    )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError):
        kitting_day.batch_window(datetime(2026, 12, 3, 15, 40), "loop0")


def test_the_lab_site_with_a_batch_validates_and_targets_every_department() -> None:
    tree = labsite.ServerTree(PurePosixPath("/var/lib/kitting-lab/kt000001/server"))
    pcs = labsite.lab_pcs("kt0a0b0c-", 3)
    start = datetime(2026, 12, 3, 17, 0, tzinfo=timezone(timedelta(hours=2)))
    window = labsite.BatchWindow(
        start=start.isoformat(), end=(start + timedelta(minutes=30)).isoformat(), disk="loop3"
    )
    files = labsite.site_files(pcs, tree, window)
    batch = files["batches/lab-imaging.yaml"].decode()
    assert 'departments: ["accounting", "sales"]' in batch
    assert 'start: "2026-12-03T17:00:00+02:00"' in batch
    assert "clients_to_wait: 3" in batch
    assert 'device: "loop3"' in files["images.yaml"].decode()
    assert "integrity: {source: clonezilla}" in files["images.yaml"].decode()
    validation = snapshot.validate_files("kitting-lab", files)
    assert validation.desired is not None, [p.text() for p in validation.problems]
    assert "batches/lab-imaging.yaml" not in labsite.site_files(pcs, tree)
