"""The clock seam: the one place that reads wall-clock time.

Pure code never calls `datetime.now()`; it is handed a time. The shell passes a `Clock`:
`SystemClock` on servers, `FixedClock` in tests (so every timestamp a test sees is known).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, always timezone-aware."""
        ...


class SystemClock:
    """The server's wall clock, in the server's local offset (what an operator reads)."""

    def now(self) -> datetime:
        return datetime.now().astimezone()


class FixedClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = _aware(at)

    def advance(self, by: timedelta) -> None:
        self._at = self._at + by


def _aware(at: datetime) -> datetime:
    # A naive time would be read in whatever zone the reader happens to be in.
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"clock times must carry an offset, got naive {at.isoformat()}")
    return at
