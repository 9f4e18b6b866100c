"""The host seam: atomic writes under a root, modes, and no way out of the root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler.host import (
    HostPathError,
    LocalHost,
    MemoryHost,
    check_server_path,
    is_temp_name,
    temp_name,
)


def test_write_creates_parents_content_and_mode(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    host.write_atomic("/etc/kitting/dhcp-hosts/pc-1", b"aa:bb:cc:dd:ee:01,pc-1\n", 0o640)
    local = tmp_path / "etc/kitting/dhcp-hosts/pc-1"
    assert local.read_bytes() == b"aa:bb:cc:dd:ee:01,pc-1\n"
    assert stat.S_IMODE(local.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "etc/kitting").stat().st_mode) == 0o755
    assert host.read("/etc/kitting/dhcp-hosts/pc-1") == b"aa:bb:cc:dd:ee:01,pc-1\n"
    assert host.stat_mode("/etc/kitting/dhcp-hosts/pc-1") == 0o640
    assert host.list_dir("/etc/kitting/dhcp-hosts") == ["pc-1"]


def test_replace_keeps_no_temp_file_and_sets_new_mode(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    host.write_atomic("/etc/a.conf", b"old\n", 0o600)
    host.write_atomic("/etc/a.conf", b"new\n", 0o644)
    assert (tmp_path / "etc/a.conf").read_bytes() == b"new\n"
    assert host.stat_mode("/etc/a.conf") == 0o644
    assert os.listdir(tmp_path / "etc") == ["a.conf"]


def test_absent_file_reads_as_none(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    assert host.read("/etc/nothing") is None
    assert host.stat_mode("/etc/nothing") is None
    assert host.list_dir("/etc/nowhere") == []
    host.remove("/etc/nothing")  # already gone: no error


def test_remove(tmp_path: Path) -> None:
    host = LocalHost(tmp_path)
    host.write_atomic("/etc/a", b"x", 0o644)
    host.remove("/etc/a")
    assert not (tmp_path / "etc/a").exists()


def test_steps_are_reported_in_order(tmp_path: Path) -> None:
    steps: list[tuple[str, str, bool]] = []

    def hook(step: str, path: str) -> None:
        steps.append((step, path, (tmp_path / "etc/a").exists()))

    host = LocalHost(tmp_path, on_step=hook)
    host.write_atomic("/etc/a", b"x", 0o644)
    host.remove("/etc/a")
    assert steps == [
        ("temp-written", "/etc/a", False),  # the new content is only under the temp name
        ("renamed", "/etc/a", True),
        ("removed", "/etc/a", False),
    ]


def test_failed_write_leaves_old_content_and_no_temp(tmp_path: Path) -> None:
    def hook(step: str, path: str) -> None:
        if step == "temp-written":
            raise OSError("disk full (test)")

    LocalHost(tmp_path).write_atomic("/etc/a", b"old", 0o644)
    with pytest.raises(OSError, match="disk full"):
        LocalHost(tmp_path, on_step=hook).write_atomic("/etc/a", b"new", 0o644)
    assert (tmp_path / "etc/a").read_bytes() == b"old"
    assert os.listdir(tmp_path / "etc") == ["a"]


def test_symlinked_directory_cannot_redirect_a_write_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "etc").symlink_to(outside)
    host = LocalHost(root)
    with pytest.raises(HostPathError, match="outside the root"):
        host.write_atomic("/etc/dnsmasq.d/kitting.conf", b"x", 0o644)
    with pytest.raises(HostPathError, match="outside the root"):
        host.read("/etc/passwd")
    assert list(outside.iterdir()) == []


def test_symlinked_file_cannot_redirect_a_write_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "etc").mkdir(parents=True)
    outside.write_bytes(b"keep me")
    (root / "etc/a.conf").symlink_to(outside)
    with pytest.raises(HostPathError, match="outside the root"):
        LocalHost(root).write_atomic("/etc/a.conf", b"x", 0o644)
    assert outside.read_bytes() == b"keep me"


def test_absolute_symlink_is_resolved_against_the_machine_not_the_root(tmp_path: Path) -> None:
    # A link to "/etc" inside a sandbox root points at the machine's real /etc: refused.
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    (root / "srv/tftp").symlink_to("/etc")
    with pytest.raises(HostPathError):
        LocalHost(root).write_atomic("/srv/tftp/x", b"x", 0o644)


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "data/tftp").mkdir(parents=True)
    (root / "srv").mkdir()
    (root / "srv/tftp").symlink_to("../data/tftp")
    LocalHost(root).write_atomic("/srv/tftp/menu", b"m", 0o644)
    assert (root / "data/tftp/menu").read_bytes() == b"m"


@pytest.mark.parametrize(
    "path", ["etc/a", "/", "/etc/../a", "/etc/./a", "/etc//a", "/etc/a\0b", "/etc/"]
)
def test_unclean_paths_are_refused(path: str, tmp_path: Path) -> None:
    with pytest.raises(HostPathError):
        check_server_path(path)
    with pytest.raises(HostPathError):
        LocalHost(tmp_path).write_atomic(path, b"x", 0o644)
    with pytest.raises(HostPathError):
        MemoryHost().write_atomic(path, b"x", 0o644)


def test_temp_names_are_hidden_from_readers_of_the_directory() -> None:
    name = temp_name("pc-1")
    assert name.startswith(".pc-1.")
    assert name.endswith(".kitting-tmp~")
    assert is_temp_name(name)
    assert not is_temp_name("pc-1")
    assert not is_temp_name(".pc-1.kitting-tmp~")  # no random part: not one of ours


def test_memory_host_lists_and_records_writes() -> None:
    host = MemoryHost()
    host.write_atomic("/etc/kitting/dhcp-hosts/b", b"2", 0o644)
    host.write_atomic("/etc/kitting/dhcp-hosts/a", b"1", 0o600)
    host.write_atomic("/etc/kitting/x", b"3", 0o644)
    assert host.list_dir("/etc/kitting") == ["dhcp-hosts", "x"]
    assert host.list_dir("/etc/kitting/dhcp-hosts") == ["a", "b"]
    assert host.stat_mode("/etc/kitting/dhcp-hosts/a") == 0o600
    host.remove("/etc/kitting/x")
    host.remove("/etc/kitting/x")
    assert host.writes == [
        "/etc/kitting/dhcp-hosts/b",
        "/etc/kitting/dhcp-hosts/a",
        "/etc/kitting/x",
        "/etc/kitting/x",
    ]
