"""Line-by-line text building with an origin for every line.

Every rendered file is built here so that each line carries the desired-state field that
produced it (or "" for a fixed line), and so that no line can ever contain a line break or
a control character: whatever slipped past validation cannot start a new directive.
Purely computational.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reconciler.rendered import Artifact, Check, Effect, Service

HEADER = "managed by kitctl; edits are reverted"

# Printable ASCII and tab only: every format we write is ASCII, and a stray control
# character (newline, carriage return, NUL, escape) could split or hide a directive.
_SAFE_LINE = re.compile(r"[\t\x20-\x7e]*")


@dataclass
class Lines:
    """An ordered list of (text, origin) pairs that becomes one file."""

    comment: str = "#"
    _entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, text: str, origin: str = "") -> None:
        if _SAFE_LINE.fullmatch(text) is None:
            raise ValueError(f"refusing to render a line with a control character: {text!r}")
        self._entries.append((text, origin))

    def note(self, text: str, indent: str = "") -> None:
        """A comment line (fixed text written by the renderer, never site data)."""
        self.add(f"{indent}{self.comment} {text}" if text else f"{indent}{self.comment}")

    def blank(self) -> None:
        self.add("")

    def header(self) -> None:
        self.note(HEADER)

    def content(self) -> bytes:
        return "".join(f"{text}\n" for text, _ in self._entries).encode("ascii")

    def origins(self) -> tuple[str, ...]:
        return tuple(origin for _, origin in self._entries)

    def artifact(
        self,
        path: str,
        service: Service | None,
        *,
        on_add: Effect,
        on_change: Effect,
        on_remove: Effect,
        check: Check | None = None,
    ) -> Artifact:
        return Artifact(
            path=path,
            content=self.content(),
            service=service,
            on_add=on_add,
            on_change=on_change,
            on_remove=on_remove,
            mode=0o644,
            check=check,
            origins=self.origins(),
        )


def join(directory: str, name: str) -> str:
    """Join an absolute directory and a relative path from the desired state."""
    return f"{directory.rstrip('/')}/{name}"
