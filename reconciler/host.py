"""The host/filesystem seam: read and atomically replace files under a root.

Paths are absolute as the server's programs see them ("/etc/dnsmasq.d/kitting.conf");
a host maps them under its root ("/" on a server, a directory for a sandbox). No path may
leave the root, not even through a symlink planted inside it.

`LocalHost` is the real filesystem; `MemoryHost` is the fake the unit tests drive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

StepHook = Callable[[str, str], None]
"""Called as hook(step, path) after each durable step: "temp-written" (the new content is
on disk under a temporary name), "renamed" (the path now holds it), "removed". Tests use it
to kill the process between steps and prove crash safety."""

_TEMP_SUFFIX = ".kitting-tmp~"
# A leading dot and a trailing "~": dnsmasq skips such names in --dhcp-hostsdir (checked
# with dnsmasq 2.90), and no "*.conf", "*.nft" or "*.exports" include glob matches them, so
# a temporary file left by a crash is never read as a live file.
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(_TEMP_SUFFIX) + "$")


class HostPathError(ValueError):
    """A path that is not a clean absolute server path, or that would leave the root."""


def temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """True for the temporary names this module creates (left behind only by a crash)."""
    return _TEMP_NAME.match(name) is not None


_BAD_PARTS = frozenset({"", ".", ".."})


def check_server_path(path: str) -> str:
    """Refuse anything but a clean absolute path: no '.', '..', empty parts or NUL."""
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise HostPathError(f"{path!r} is not an absolute path to a file")
    if "\0" in path or not _BAD_PARTS.isdisjoint(path.split("/")[1:]):
        raise HostPathError(f"{path!r} is not a clean absolute path (no '.', '..' or '//')")
    return path


class Host(Protocol):
    """What observe and apply need from a server's filesystem."""

    def read(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        ...

    def stat_mode(self, path: str) -> int | None:
        """Permission bits (e.g. 0o644), or None when the file does not exist."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """Sorted entry names of a directory; [] when it does not exist."""
        ...

    def read_files(self, paths: Iterable[str]) -> dict[str, tuple[bytes | None, int | None]]:
        """`read` and `stat_mode` of many files at once (what observe needs), each pair
        taken from the same file."""
        ...

    def write_atomic(self, path: str, content: bytes, mode: int) -> None:
        """Replace the file so that a reader (or a crash) sees the old or the new content."""
        ...

    def remove(self, path: str) -> None:
        """Remove the file durably; nothing happens when it is already gone."""
        ...


class LocalHost:
    """The real filesystem under `root`."""

    def __init__(self, root: str | os.PathLike[str] = "/", on_step: StepHook | None = None):
        self.root = os.path.realpath(root)
        self._on_step = on_step

    def local_path(self, path: str) -> str:
        """Where the server path lives on this machine, with every symlink resolved.

        Resolving first and then checking containment means a symlink planted anywhere
        on the way (a parent directory or the file itself) cannot redirect a read or a
        write outside the root.
        """
        check_server_path(path)
        joined = os.path.join(self.root, path.lstrip("/"))
        resolved = os.path.realpath(joined)
        inside = self.root == "/" or resolved.startswith(self.root + os.sep)
        if not inside:
            raise HostPathError(f"{path} resolves to {resolved}, outside the root {self.root}")
        return resolved

    def read(self, path: str) -> bytes | None:
        local = self.local_path(path)
        try:
            with open(local, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def stat_mode(self, path: str) -> int | None:
        try:
            return os.stat(self.local_path(path)).st_mode & 0o7777
        except FileNotFoundError:
            return None

    def read_files(self, paths: Iterable[str]) -> dict[str, tuple[bytes | None, int | None]]:
        """Like `read` and `stat_mode` for each path, as safe and much cheaper for many
        files in few directories: each directory is resolved (all symlinks, then the
        containment check) once, not once per file and call; a file that is itself a
        symlink is resolved in full, as `local_path` does."""
        found: dict[str, tuple[bytes | None, int | None]] = {}
        directories: dict[str, str] = {}
        for path in paths:
            check_server_path(path)
            parent, name = path.rsplit("/", 1)
            if parent not in directories:
                directories[parent] = self._resolved_dir(parent or "/")
            found[path] = self._read_in(directories[parent], name, path)
        return found

    def _resolved_dir(self, directory: str) -> str:
        resolved = os.path.realpath(os.path.join(self.root, directory.lstrip("/")))
        if not (self.root in ("/", resolved) or resolved.startswith(self.root + os.sep)):
            raise HostPathError(f"{directory} resolves to {resolved}, outside the root {self.root}")
        return resolved

    def _read_in(self, directory: str, name: str, path: str) -> tuple[bytes | None, int | None]:
        local = os.path.join(directory, name)
        try:
            # O_NOFOLLOW: a symlink (or one swapped in after a check) is never opened here.
            fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            return self.read(path), self.stat_mode(path)  # a symlink: resolve it in full
        try:
            info = os.fstat(fd)
            mode = info.st_mode & 0o7777
            # Plain os.read: a file object per file costs more than the reading itself.
            first = os.read(fd, info.st_size + 1)
            if len(first) <= info.st_size:
                return first, mode  # a short read is the end of a regular file
            chunks = [first]  # it grew since fstat: read on to its end
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks), mode
        finally:
            os.close(fd)

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.local_path(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write_atomic(self, path: str, content: bytes, mode: int) -> None:
        local = self.local_path(path)
        directory = os.path.dirname(local)
        self._make_dirs(directory)
        if self.local_path(path) != local:  # a symlink appeared while we made directories
            raise HostPathError(f"{path} changed its resolution while being written")
        temp = os.path.join(directory, temp_name(os.path.basename(local)))
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
            self._step("temp-written", path)
            os.rename(temp, local)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(directory)
        self._step("renamed", path)

    def remove(self, path: str) -> None:
        local = self.local_path(path)
        try:
            os.unlink(local)
        except FileNotFoundError:
            return
        _fsync_dir(os.path.dirname(local))
        self._step("removed", path)

    def _make_dirs(self, directory: str) -> None:
        missing: list[str] = []
        current = directory
        while not os.path.isdir(current):
            missing.append(current)
            current = os.path.dirname(current)
        for new in reversed(missing):
            os.mkdir(new, 0o755)
            _fsync_dir(os.path.dirname(new))  # the new directory entry must survive a crash

    def _step(self, step: str, path: str) -> None:
        if self._on_step is not None:
            self._on_step(step, path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class MemoryHost:
    """An in-memory server for unit tests: path -> (content, mode)."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    on_step: StepHook | None = None
    writes: list[str] = field(default_factory=list)
    """Every path written or removed, in order (tests assert "nothing was written")."""

    def read(self, path: str) -> bytes | None:
        entry = self.files.get(check_server_path(path))
        return None if entry is None else entry[0]

    def stat_mode(self, path: str) -> int | None:
        entry = self.files.get(check_server_path(path))
        return None if entry is None else entry[1]

    def read_files(self, paths: Iterable[str]) -> dict[str, tuple[bytes | None, int | None]]:
        return {path: (self.read(path), self.stat_mode(path)) for path in paths}

    def list_dir(self, path: str) -> list[str]:
        prefix = check_server_path(path) + "/"
        names = {p[len(prefix) :].split("/")[0] for p in self.files if p.startswith(prefix)}
        return sorted(names)

    def write_atomic(self, path: str, content: bytes, mode: int) -> None:
        check_server_path(path)
        if self.on_step is not None:
            self.on_step("temp-written", path)
        self.files[path] = (bytes(content), mode)
        self.writes.append(path)
        if self.on_step is not None:
            self.on_step("renamed", path)

    def remove(self, path: str) -> None:
        if self.files.pop(check_server_path(path), None) is None:
            return
        self.writes.append(path)
        if self.on_step is not None:
            self.on_step("removed", path)

    def text(self, path: str) -> str | None:
        """Test convenience: the file's content as text."""
        content = self.read(path)
        return None if content is None else content.decode()
