"""Read a systemd unit file the way systemd does, for tests: sections, repeated keys,
comments on their own lines, backslash continuations. Pure; no systemd needed."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "kitting-reconciler.service"

RequirePrograms = Callable[..., None]
"""The type of the shared `require_programs` fixture (tests/conftest.py)."""

# Keys whose values systemd joins across repeated lines (space-separated lists).
LIST_KEYS = frozenset(
    {
        "After",
        "Wants",
        "ReadWritePaths",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
        "SystemCallFilter",
    }
)


class UnitError(ValueError):
    pass


def parse(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} in file order, continuations joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise UnitError(f"line {number}: not a key=value inside a section: {raw!r}")
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    if pending:
        raise UnitError("file ends inside a continuation line")
    return sections


def single(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    """The one value of a key that may appear once; an error if absent or repeated."""
    values = [v for k, v in sections.get(section, []) if k == key]
    if len(values) != 1:
        raise UnitError(f"[{section}] {key}= appears {len(values)} times; expected once")
    return values[0]


def words(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """All words of a list key across its lines (systemd appends them)."""
    assert key in LIST_KEYS, key
    return [word for k, v in sections.get(section, []) if k == key for word in shlex.split(v)]


def load(path: Path = UNIT) -> dict[str, list[tuple[str, str]]]:
    return parse(path.read_text(encoding="utf-8"))
