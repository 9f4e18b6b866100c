"""What a boot menu fetched over TFTP makes a PC do: boot its local disk, or run a job.

A simulated PC does not run pxelinux or GRUB; it reads the menu the way they would pick
its default entry: pxelinux's `DEFAULT label` and that `LABEL` block (LOCALBOOT, or KERNEL
with APPEND), GRUB's `set default=ID` and the `menuentry ... --id ID { ... }` block
(`linux` with its command line, or chainloading/`exit` back to the firmware). For a
Clonezilla job the verdict carries `ocs_live_run`, the ocs-sr command the live system
would run; the imaging steps of the rehearsal start from it.

Purely computational.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal

Kind = Literal["local", "job", "unknown"]

_OCS_LIVE_RUN = re.compile(r'(?:ocs_live_run="([^"]*)"|"ocs_live_run=([^"]*)")')
_GRUB_DEFAULT = re.compile(r"^\s*set\s+default=\"?([A-Za-z0-9_.-]+)\"?\s*$")
_GRUB_ENTRY = re.compile(r"^\s*menuentry\s.*--id\s+\"?([A-Za-z0-9_.-]+)\"?.*\{\s*$")


@dataclass(frozen=True)
class MenuVerdict:
    kind: Kind
    entry: str
    """The default entry's label or id ("" when the menu names none)."""
    kernel: str | None = None
    command_line: str | None = None
    ocs_live_run: str | None = None
    """The Clonezilla job (`ocs-sr ...`) when the entry boots Clonezilla live."""

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def describe(self) -> str:
        if self.kind == "local":
            return f"local boot (entry {self.entry})"
        if self.kind == "job":
            return f"job: {self.ocs_live_run or self.kernel}"
        return f"no usable default entry ({self.entry or 'none named'})"


def pxelinux(text: str) -> MenuVerdict:
    """The default entry of a pxelinux menu."""
    default = ""
    labels: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "DEFAULT":
            default = rest
        elif keyword == "LABEL":
            current = labels.setdefault(rest, [])
        elif current is not None:
            current.append((keyword, rest))
    block = labels.get(default)
    if block is None:
        return MenuVerdict("unknown", default)
    words = dict(block)
    if "LOCALBOOT" in words:
        return MenuVerdict("local", default)
    kernel = words.get("KERNEL") or words.get("LINUX")
    if kernel:
        append = words.get("APPEND", "")
        return MenuVerdict("job", default, kernel, append, _ocs_live_run(append))
    return MenuVerdict("unknown", default)


def grub(text: str) -> MenuVerdict:
    """The default entry of a GRUB menu (entries named with --id)."""
    default = ""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if current is None:
            found = _GRUB_DEFAULT.match(line)
            if found:
                default = found.group(1)
            entry = _GRUB_ENTRY.match(line)
            if entry:
                current = entries.setdefault(entry.group(1), [])
                depth = 1
            continue
        depth += _braces(line)
        if depth <= 0:
            current = None
            continue
        current.append(line)
    body = entries.get(default)
    if body is None:
        return MenuVerdict("unknown", default)
    for line in body:
        first, _, rest = line.partition(" ")
        if first in ("linux", "linuxefi"):
            kernel, _, command_line = rest.strip().partition(" ")
            return MenuVerdict("job", default, kernel, command_line, _ocs_live_run(command_line))
    if any(line.split()[0] in ("chainloader", "exit") for line in body):
        return MenuVerdict("local", default)
    return MenuVerdict("unknown", default)


def ocs_words(verdict: MenuVerdict) -> list[str]:
    """The job's ocs-sr command as words ([] for a menu that runs no job)."""
    return shlex.split(verdict.ocs_live_run) if verdict.ocs_live_run else []


def _ocs_live_run(command_line: str) -> str | None:
    found = _OCS_LIVE_RUN.search(command_line)
    if not found:
        return None
    return found.group(1) if found.group(1) is not None else found.group(2)


def _braces(line: str) -> int:
    """Opening minus closing braces outside double quotes."""
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "{":
            count += 1
        elif not quoted and char == "}":
            count -= 1
    return count
