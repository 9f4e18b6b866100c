"""Read a growing log file line by line, from where the last read stopped.

The position (the file's inode and a byte offset) is handed back to the caller, who keeps
it (in the state directory) and passes it in again, also after a restart: nothing is read
twice and nothing is skipped. `read` never moves the position by itself: the caller
`commit`s it once it has recorded what the lines meant, so a crash in between re-reads them.

- Rotation (the file renamed to `NAME.1` and a new one created): the rest of the old file is
  read first, if it is still there under that name, then the new file from its start.
- Truncation in place (copytruncate): the file is read again from its start.
- An incomplete last line (no newline yet) is left for the next read.
- No saved position: start at the file's end. Lines written before the first look are not
  news (a controller installed today does not act on last week's boots).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

READ_LIMIT = 4 * 1024 * 1024
"""Bytes read per call at most, so one pass stays short; the rest comes next time."""
MAX_LINE = 64 * 1024
"""A longer run without a newline is skipped: no line of dnsmasq's is that long."""


@dataclass(frozen=True)
class Position:
    inode: int
    offset: int

    def to_json(self) -> bytes:
        return json.dumps({"inode": self.inode, "offset": self.offset}).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Position | None:
        """None for anything that is not a saved position (then reading starts at the end)."""
        try:
            raw = json.loads(data)
            inode, offset = raw["inode"], raw["offset"]
        except (ValueError, KeyError, TypeError):
            return None
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (inode, offset)
        ):
            return None
        return cls(inode, offset)


class LogTail:
    def __init__(self, path: Path, position: Position | None = None) -> None:
        self.path = path
        self.position = position

    def has_news(self) -> bool:
        """Cheap (one stat): is there anything after the position?"""
        info = _stat(self.path)
        if info is None:
            return False
        if self.position is None:
            return False  # the first read starts at the end
        return info.st_ino != self.position.inode or info.st_size != self.position.offset

    def read(self, limit: int = READ_LIMIT) -> tuple[list[str], Position | None]:
        """New complete lines and the position after them (not yet committed)."""
        info = _stat(self.path)
        if info is None:
            return [], self.position
        current = self.position
        if current is None:
            return [], Position(info.st_ino, info.st_size)
        lines: list[str] = []
        if current.inode != info.st_ino:
            rotated = self.path.with_name(self.path.name + ".1")
            old = _stat(rotated)
            if old is not None and old.st_ino == current.inode and old.st_size > current.offset:
                tail, offset = _read_lines(rotated, current.offset, limit, final=True)
                if offset < old.st_size:  # more than one read's worth left in the old file
                    return tail, Position(current.inode, offset)
                lines += tail
            current = Position(info.st_ino, 0)
        elif info.st_size < current.offset:
            current = Position(info.st_ino, 0)  # truncated in place
        more, offset = _read_lines(self.path, current.offset, limit, final=False)
        return lines + more, Position(info.st_ino, offset)

    def commit(self, position: Position | None) -> None:
        self.position = position


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _read_lines(path: Path, offset: int, limit: int, *, final: bool) -> tuple[list[str], int]:
    """Complete lines from `offset` and the offset after the last one. `final`: the file no
    longer grows, so its last line counts even without a newline."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if final and data and end != len(data) - 1 and len(data) < limit:
        end = len(data) - 1
    if end < 0:
        if len(data) >= MAX_LINE:  # one endless line: skip it rather than stall
            return [], offset + len(data)
        return [], offset
    chunk = data[: end + 1]
    lines = [
        raw.decode(errors="replace") for raw in chunk.split(b"\n") if raw and len(raw) <= MAX_LINE
    ]
    return lines, offset + end + 1
