"""Log lines for people and journald: one line per action, with the commit and target."""

from __future__ import annotations

import sys

from loguru import logger

FORMAT = (
    "{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level:<7} "
    "commit={extra[commit]} target={extra[target]} | {message}"
)


def setup(level: str = "INFO") -> None:
    """Send log lines to stderr; lines without a bound commit or target show '-'."""
    logger.remove()
    logger.configure(extra={"commit": "-", "target": "-"})
    logger.add(
        sys.stderr, level=level, format=FORMAT, colorize=False, backtrace=False, diagnose=False
    )
