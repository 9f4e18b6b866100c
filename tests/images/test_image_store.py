"""The reader: what it reads of an images root, what it refuses to follow, and checksums
streamed in blocks. Small hand-made directories; no root needed."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from reconciler import cli, image_store
from reconciler.host import HostPathError
from reconciler.images import Status

# Standard test vectors (RFC 1321, FIPS 180, RFC 7693) for b"abc".
ABC = {
    "md5": "900150983cd24fb0d6963f7d28e17f72",
    "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "blake2b": "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
    "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
}
# md5 of one million "a" (RFC 1321's test suite).
MILLION_A_MD5 = "7707d6ae4e027c70eea2a935c2296f21"

STREAM = "sda1.ntfs-ptcl-img.zst.aa"


def make_image(directory: Path, *, stream: bytes = b"\x28\xb5\x2f\xfd" + b"x" * 60) -> Path:
    """A tiny but complete MBR image of one NTFS partition, with an MD5SUMS (by hand)."""
    directory.mkdir(parents=True)
    files = {
        "disk": b"sda\n",
        "parts": b"sda1\n",
        "clonezilla-img": b"log\n",
        "sda-pt.sf": b"label: dos\n\n/dev/sda1 : start=2048, size=2048, type=7, bootable\n",
        "sda-mbr": bytes(512),
        STREAM: stream,
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


def test_a_listing_holds_sizes_metadata_and_heads(tmp_path: Path) -> None:
    base = tmp_path / "partimag"
    make_image(base / "img")
    (base / "img" / "sub").mkdir()  # not a file: not listed
    listing = image_store.read_listing(str(base), "img")
    assert listing is not None
    assert [(f.name, f.size) for f in listing.files] == [
        ("clonezilla-img", 4),
        ("disk", 4),
        ("parts", 5),
        ("sda-mbr", 512),
        ("sda-pt.sf", 64),  # 11 + 1 + 52 characters
        (STREAM, 64),
    ]
    assert dict(listing.texts) == {
        "disk": "sda\n",
        "parts": "sda1\n",
        "sda-pt.sf": "label: dos\n\n/dev/sda1 : start=2048, size=2048, type=7, bootable\n",
    }
    assert dict(listing.heads) == {STREAM: b"\x28\xb5\x2f\xfd" + b"x" * 12}


def test_scan_finds_images_and_skips_other_directories(tmp_path: Path) -> None:
    base = tmp_path / "partimag"
    make_image(base / "b-image")
    (base / "a-only-disk").mkdir()
    (base / "a-only-disk" / "disk").write_bytes(b"sda\n")
    (base / "logs").mkdir()
    (base / "logs" / "2026-01-01.json").write_bytes(b"{}")
    (base / "lost+found").mkdir()
    (base / ".hidden").mkdir()
    (base / ".hidden" / "disk").write_bytes(b"sda\n")
    (base / "notes.txt").write_bytes(b"hello")
    assert [listing.name for listing in image_store.scan(str(base))] == ["a-only-disk", "b-image"]


def test_a_symlinked_image_outside_the_root_is_reported_not_read(tmp_path: Path) -> None:
    outside = make_image(tmp_path / "elsewhere" / "img")
    base = tmp_path / "partimag"
    base.mkdir()
    (base / "img").symlink_to(outside)
    (listing,) = image_store.scan(str(base))
    assert not listing.readable
    assert listing.files == ()
    assert [(p.code, p.subject) for p in listing.problems] == [("SymlinkOutsideRoot", "img")]


def test_a_symlinked_file_outside_the_root_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0\n")
    base = tmp_path / "partimag"
    make_image(base / "img")
    (base / "img" / "MD5SUMS").symlink_to(secret)
    listing = image_store.read_listing(str(base), "img")
    assert listing is not None
    assert "MD5SUMS" not in listing.texts
    assert "MD5SUMS" not in {f.name for f in listing.files}
    assert [(p.code, p.subject) for p in listing.problems] == [("SymlinkOutsideRoot", "MD5SUMS")]


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    base = tmp_path / "partimag"
    make_image(base / "real")
    (base / "alias").symlink_to(base / "real")
    (base / "real" / "parts-copy").symlink_to(base / "real" / "parts")
    listing = image_store.read_listing(str(base), "alias")
    assert listing is not None
    assert listing.readable
    assert ("parts-copy", 5) in [(f.name, f.size) for f in listing.files]


def test_the_images_root_may_not_leave_the_server_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "partimag").symlink_to(tmp_path)
    with pytest.raises(HostPathError):
        image_store.images_dir(str(root), "/partimag")
    with pytest.raises(HostPathError):
        image_store.images_dir(str(root), "/../etc")


def test_hashes_are_the_standard_vectors(tmp_path: Path) -> None:
    (tmp_path / "abc").write_bytes(b"abc")
    found = image_store.hash_files(
        str(tmp_path), {"abc": frozenset(ABC), "gone": frozenset({"md5"})}, within=str(tmp_path)
    )
    assert found == {"abc": ABC, "gone": None}


def test_hashing_streams_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_bytes(b"a" * 1_000_000)
    monkeypatch.setattr(image_store, "BLOCK_SIZE", 4096)  # 245 blocks, the last one short
    found = image_store.hash_files(str(tmp_path), {"a": frozenset({"md5"})}, within=str(tmp_path))
    assert found == {"a": {"md5": MILLION_A_MD5}}


def test_hashing_a_big_file_keeps_memory_flat(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        for _ in range(16):
            handle.write(b"\x5a" * (1024 * 1024))
    tracemalloc.start()
    try:
        image_store.hash_files(str(tmp_path), {"big": frozenset({"md5"})}, within=str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024 * 1024  # one 1 MiB block, not the 16 MiB file


def test_hashing_refuses_paths_out_of_the_image(tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.mkdir()
    (tmp_path / "outside").write_bytes(b"abc")
    (image / "link").symlink_to(tmp_path / "outside")
    plan = {"../outside": frozenset({"md5"}), "link": frozenset({"md5"})}
    assert image_store.hash_files(str(image), plan, within=str(tmp_path)) == {
        "../outside": None,
        "link": None,
    }
    # and nothing at all when the image directory is not inside the images root
    (image / "abc").write_bytes(b"abc")
    assert image_store.hash_files(
        str(image), {"abc": frozenset({"md5"})}, within=str(tmp_path / "other")
    ) == {"abc": None}


def test_inventory_verifies_against_md5sums(tmp_path: Path) -> None:
    base = tmp_path / "root" / "home" / "partimag"
    image = make_image(base / "img")
    # md5sum of the files as ocs-sr -gm would have written it
    sums = subprocess.run(
        ["md5sum", "disk", "parts", STREAM], cwd=image, capture_output=True, check=True
    ).stdout
    (image / "MD5SUMS").write_bytes(sums)
    found = image_store.inventory(str(tmp_path / "root"), "/home/partimag", verify=True)
    (report,) = found.reports
    assert (report.name, report.status, report.verified_with) == ("img", Status.ok, ("MD5SUMS",))

    with open(image / STREAM, "r+b") as handle:
        handle.seek(30)
        handle.write(b"y")
    (report,) = image_store.inventory(str(tmp_path / "root"), "/home/partimag", verify=True).reports
    assert [(f.code, f.subject) for f in report.findings] == [("ChecksumMismatch", STREAM)]


def test_no_images_root(tmp_path: Path) -> None:
    found = image_store.inventory(str(tmp_path), "/home/partimag")
    assert (found.found, found.reports) == (False, ())


# ---------------------------------------------------------------------------- the command


def kitctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["images", *args])
    return code, capsys.readouterr().out


def test_command_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image(tmp_path / "partimag" / "img")
    code, out = kitctl(capsys, "--root", str(tmp_path), "--images-root", "/partimag")
    assert code == 0
    assert out == (
        "img  OK  653 B (653 bytes)  disk sda  bios\n"  # 4+4+5+512+64+64
        "  PARTITION  FORMAT     FS    COMPRESSION  CHUNKS  SIZE\n"
        "  sda1       partclone  ntfs  zst          1       64 B\n"
        "\n"
        f"/partimag under {tmp_path}: 1 image: 1 OK\n"
    )


def test_command_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(tmp_path / "partimag" / "img")
    (image / "parts").unlink()
    args = ("--root", str(tmp_path), "--images-root", "/partimag", "--format", "json")
    code, out = kitctl(capsys, *args)
    assert code == 1
    body = json.loads(out)
    assert (body["ok"], body["found"], body["verify"]) == (False, True, False)
    (entry,) = body["images"]
    assert entry["status"] == "INCOMPLETE"
    assert entry["findings"] == [
        {
            "code": "MissingMetadata",
            "kind": "incomplete",
            "subject": "parts",
            "message": "parts is missing: the partitions to restore are unknown",
        }
    ]
    assert entry["partitions"] == [
        {
            "name": "sda1",
            "format": "partclone",
            "filesystem": "ntfs",
            "compression": "zst",
            "chunks": [STREAM],
            "size": 64,
        }
    ]


def test_command_verify_without_checksums_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "partimag" / "img")
    code, out = kitctl(capsys, "--root", str(tmp_path), "--images-root", "/partimag", "--verify")
    assert code == 1
    assert "img  UNVERIFIED" in out
    assert "unverified NoChecksums: nothing to verify against" in out


def test_command_without_an_images_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = kitctl(capsys, "--root", str(tmp_path))
    assert code == 1
    assert out == f"/home/partimag under {tmp_path}: no such directory\n"


def test_command_shows_odd_names_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image(tmp_path / "partimag" / "bad\nname")
    code, out = kitctl(capsys, "--root", str(tmp_path), "--images-root", "/partimag")
    assert code == 0
    assert out.splitlines()[0].startswith("bad\\nname  OK")


def test_command_refuses_an_images_root_outside_the_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "partimag").symlink_to("/etc")
    code = cli.main(["images", "--root", str(tmp_path / "root"), "--images-root", "/partimag"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "outside the root" in captured.err


def test_pure_module_loads_no_shell() -> None:
    probe = (
        "import sys, reconciler.images\n"
        "print(','.join(m for m in ('subprocess', 'loguru', 'reconciler.image_store', "
        "'reconciler.host') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == ""
