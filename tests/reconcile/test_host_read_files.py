"""`Host.read_files`: what observe reads, many files at once, with the same answers and the
same refusals as `read` + `stat_mode` one file at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.host import HostPathError, LocalHost, MemoryHost


def test_contents_and_modes_of_present_and_absent_files(tmp_path: Path) -> None:
    (tmp_path / "etc/kitting/dhcp-hosts").mkdir(parents=True)
    (tmp_path / "etc/kitting/dhcp-hosts/pc-1.hosts").write_bytes(b"aa:bb:cc:dd:ee:01,pc-1\n")
    (tmp_path / "etc/kitting/dhcp-hosts/pc-1.hosts").chmod(0o640)
    (tmp_path / "etc/empty").write_bytes(b"")
    (tmp_path / "etc/empty").chmod(0o644)
    (tmp_path / "top").write_bytes(b"at the root\n")
    (tmp_path / "top").chmod(0o600)
    paths = [
        "/etc/kitting/dhcp-hosts/pc-1.hosts",
        "/etc/kitting/dhcp-hosts/pc-2.hosts",
        "/etc/empty",
        "/nowhere/at/all",
        "/top",
    ]
    assert LocalHost(tmp_path).read_files(paths) == {
        "/etc/kitting/dhcp-hosts/pc-1.hosts": (b"aa:bb:cc:dd:ee:01,pc-1\n", 0o640),
        "/etc/kitting/dhcp-hosts/pc-2.hosts": (None, None),
        "/etc/empty": (b"", 0o644),
        "/nowhere/at/all": (None, None),
        "/top": (b"at the root\n", 0o600),
    }


def test_a_file_larger_than_a_read_chunk_is_read_whole(tmp_path: Path) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "big").chmod(0o644)
    assert LocalHost(tmp_path).read_files(["/big"]) == {"/big": (big, 0o644)}


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    (tmp_path / "data/tftp").mkdir(parents=True)
    (tmp_path / "data/tftp/menu").write_bytes(b"menu\n")
    (tmp_path / "data/tftp/real").write_bytes(b"real\n")
    for name in ("menu", "real"):
        (tmp_path / "data/tftp" / name).chmod(0o644)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/tftp").symlink_to("../data/tftp")  # a linked directory
    (tmp_path / "data/tftp/alias").symlink_to("real")  # a linked file
    found = LocalHost(tmp_path).read_files(["/srv/tftp/menu", "/srv/tftp/alias"])
    assert found == {"/srv/tftp/menu": (b"menu\n", 0o644), "/srv/tftp/alias": (b"real\n", 0o644)}


def test_a_linked_directory_leading_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "passwd").write_bytes(b"secret\n")
    (root / "etc").symlink_to(outside)
    with pytest.raises(HostPathError, match="outside the root"):
        LocalHost(root).read_files(["/etc/passwd"])


def test_a_linked_file_leading_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, secret = tmp_path / "root", tmp_path / "secret"
    (root / "etc").mkdir(parents=True)
    secret.write_bytes(b"keep me\n")
    (root / "etc/a.conf").symlink_to(secret)
    with pytest.raises(HostPathError, match="outside the root"):
        LocalHost(root).read_files(["/etc/a.conf"])


@pytest.mark.parametrize("path", ["etc/a", "/", "/etc/../a", "/etc//a", "/etc/a\0b"])
def test_unclean_paths_are_refused(path: str, tmp_path: Path) -> None:
    with pytest.raises(HostPathError):
        LocalHost(tmp_path).read_files([path])
    with pytest.raises(HostPathError):
        MemoryHost().read_files([path])


def test_the_memory_host_answers_alike() -> None:
    host = MemoryHost()
    host.write_atomic("/etc/a", b"a\n", 0o600)
    assert host.read_files(["/etc/a", "/etc/b"]) == {
        "/etc/a": (b"a\n", 0o600),
        "/etc/b": (None, None),
    }
