"""Deployment windows: which are open and when the next one opens or closes.

The example site's batches, read in its zone Asia/Tokyo (+09:00, no DST):
- sales-2026-12-07: 2026-12-07T09:00 .. 12:00 (the site's zone);
- accounting-2026-12-08-acc07: 2026-12-08T13:00 .. 15:00 (timezone: Asia/Tokyo written out).
A window includes its start and excludes its end.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.clock import FixedClock
from reconciler.controller import Controller, PassOutcome
from reconciler.settings import Settings
from reconciler.status import Window

from .siterepo import TOKYO, SiteRepo, controller, settings, status_json, wait_until

SALES = Window("sales-2026-12-07", "2026-12-07T09:00:00+09:00", "2026-12-07T12:00:00+09:00")
ACCOUNTING = Window(
    "accounting-2026-12-08-acc07", "2026-12-08T13:00:00+09:00", "2026-12-08T15:00:00+09:00"
)


def tokyo(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=TOKYO)


def test_windows_and_their_edges(site: SiteRepo, root: Path, clock: FixedClock) -> None:
    ctl = controller(site, root, clock)
    assert ctl.next_window_edge(clock.now()) is None  # nothing applied: no schedule yet
    assert ctl.open_windows(clock.now()) == []
    ctl.pass_once()

    assert ctl.next_window_edge(tokyo(1, 8)) == tokyo(7, 9)
    assert ctl.open_windows(tokyo(7, 8, 59, 59)) == []
    assert ctl.open_windows(tokyo(7, 9)) == [SALES]
    assert ctl.next_window_edge(tokyo(7, 9)) == tokyo(7, 12)
    # the same instants seen from UTC: 00:00Z is 09:00 in Tokyo
    assert ctl.open_windows(datetime(2026, 12, 7, 0, 0, tzinfo=UTC)) == [SALES]
    noon = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert ctl.open_windows(noon) == []
    assert ctl.next_window_edge(noon) == tokyo(8, 13)
    assert ctl.open_windows(tokyo(8, 14)) == [ACCOUNTING]
    assert ctl.next_window_edge(tokyo(8, 14)) == tokyo(8, 15)
    assert ctl.open_windows(tokyo(8, 15)) == []
    assert ctl.next_window_edge(tokyo(8, 15)) is None

    clock.set(tokyo(8, 13, 30))
    ctl.pass_once("window", converge=True)
    assert status_json(root)["open_windows"] == [
        {
            "batch": "accounting-2026-12-08-acc07",
            "start": "2026-12-08T13:00:00+09:00",
            "end": "2026-12-08T15:00:00+09:00",
        }
    ]


class ShiftedClock:
    """The real clock moved to another moment: it runs, so the loop's waits are real."""

    def __init__(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)

    def now(self) -> datetime:
        return (datetime.now(UTC) + self.offset).astimezone(TOKYO)


def test_the_loop_wakes_when_a_window_opens(site: SiteRepo, root: Path, clock: FixedClock) -> None:
    controller(site, root, clock).pass_once()  # applied before, so the loop's first pass is short
    shifted = ShiftedClock(tokyo(7, 8, 59, 57))
    loop = controller(site, root, shifted, interval=3600, drift_interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        # the next pass is the window's start, not the hour-long poll or drift timer
        wait_until(lambda: status_json(root).get("next_pass") != "", 10, "first pass done")
        first = status_json(root)
        assert first["next_pass"] == "2026-12-07T09:00:00+09:00"
        assert first["open_windows"] == []
        # The window's pass converges at 09:00:00.x, so the loop then schedules the hour-long
        # drift timer (10:00:00.x), which comes before the window's end at 12:00.
        wait_until(
            lambda: status_json(root).get("next_pass", "").startswith("2026-12-07T10:00:0"),
            10,
            "the window's pass",
        )
        status = status_json(root)
        assert status["last_drift_check"] >= "2026-12-07T09:00:00"
        assert status["open_windows"][0]["batch"] == "sales-2026-12-07"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert shifted.now() - tokyo(7, 9) < timedelta(seconds=30)


class SlowPassController(Controller):
    """Its first pass starts at 08:59:59 and ends at 09:00:01, across the window's start."""

    def __init__(self, settings: Settings, clock: FixedClock) -> None:
        super().__init__(settings, clock=clock)
        self.fixed = clock
        self.passes: list[tuple[str, bool]] = []

    def pass_once(self, trigger: str = "manual", *, converge: bool = False) -> PassOutcome:
        self.passes.append((trigger, converge))
        if len(self.passes) == 1:
            self.fixed.set(tokyo(7, 9, 0, 1))
        return super().pass_once(trigger, converge=converge)


def test_an_edge_passed_during_a_pass_gets_a_pass_of_its_own(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    controller(site, root, clock).pass_once()
    clock.set(tokyo(7, 8, 59, 59))
    slow = SlowPassController(settings(site, root, interval=3600, drift_interval=3600), clock)
    stop = threading.Event()
    thread = threading.Thread(target=slow.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(slow.passes) >= 2, 5, "a second pass")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    # the clock stands still afterwards, so nothing else is due for an hour
    assert slow.passes == [("start", True), ("window", True)]
