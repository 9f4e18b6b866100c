"""The inventory on a real image saved by Clonezilla's ocs-sr (tests/fixtures/clonezilla.py),
and on broken copies of it. The image is built once per machine (about 25 s) and cached;
every test here then takes well under a second."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import image_store
from reconciler.desired import Firmware
from reconciler.images import Compression, ImageReport, Status, StreamFormat
from tests.fixtures import clonezilla
from tests.fixtures.clonezilla import ClonezillaImage

pytestmark = pytest.mark.integration

RequirePrograms = Callable[..., None]

IMAGES_ROOT = "/partimag"  # the fixture's images root, relative to its cache entry


def codes(report: ImageReport) -> set[tuple[str, str]]:
    return {(f.code, f.subject) for f in report.findings}


def only(reports: tuple[ImageReport, ...]) -> ImageReport:
    (report,) = reports
    return report


def test_the_fixture_records_its_disk_and_detached_its_loop_device(
    clonezilla_image: ClonezillaImage,
) -> None:
    image = clonezilla_image
    assert image.disk.startswith("loop")
    assert (image.image_dir / "disk").read_text() == f"{image.disk}\n"
    assert (image.image_dir / "parts").read_text() == f"{image.disk}p1 {image.disk}p2\n"
    assert image.parts == (f"{image.disk}p1", f"{image.disk}p2")
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True)
    assert str(image.home.parent) not in attached.stdout
    assert not list(image.home.parent.glob("clonezilla-v*.build-*"))


def test_the_source_disk_holds_the_known_files(
    clonezilla_image: ClonezillaImage, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("mtype", "ntfscat")
    disk = clonezilla_image.source_disk
    assert disk.stat().st_size == 64 * 1024 * 1024
    for path, content in clonezilla.ESP_FILES.items():
        shown = subprocess.run(
            ["mtype", "-i", f"{disk}@@{2048 * 512}", f"::/{path}"], capture_output=True, check=True
        )
        assert shown.stdout == content
    data = tmp_path / "data.fs"
    with open(disk, "rb") as src, open(data, "wb") as dst:
        src.seek(75776 * 512)  # the NTFS partition's first sector (sgdisk -n 2:75776:131038)
        shutil.copyfileobj(src, dst)
    for path, content in clonezilla.data_files().items():
        shown = subprocess.run(["ntfscat", "-f", str(data), path], capture_output=True, check=True)
        assert hashlib.sha256(shown.stdout).hexdigest() == hashlib.sha256(content).hexdigest()


def test_the_real_image_is_complete_and_verified(clonezilla_image: ClonezillaImage) -> None:
    image = clonezilla_image
    found = image_store.inventory(str(image.home), IMAGES_ROOT, verify=True)
    report = only(found.reports)
    assert (report.name, report.status, report.findings) == ("kitting-fixture", Status.ok, ())
    assert report.verified_with == ("B2SUMS", "MD5SUMS", "SHA1SUMS")
    assert report.disks == (image.disk,)
    assert report.firmware is Firmware.uefi
    esp, data = report.partitions
    assert (esp.name, esp.format, esp.filesystem, esp.compression) == (
        image.parts[0],
        StreamFormat.partclone,
        "vfat",
        Compression.gz,
    )
    assert esp.chunks == (f"{image.parts[0]}.vfat-ptcl-img.gz.aa",)
    assert (data.name, data.format, data.filesystem, data.compression) == (
        image.parts[1],
        StreamFormat.partclone,
        "ntfs",
        Compression.gz,
    )
    # 3,000,000 incompressible bytes gzip to a little more: four 1 MB (10^6) chunks.
    assert data.chunks == tuple(f"{image.parts[1]}.ntfs-ptcl-img.gz.a{c}" for c in "abcd")
    sizes = [(image.image_dir / c).stat().st_size for c in data.chunks]
    assert sizes[:3] == [1_000_000] * 3
    assert 0 < sizes[3] < 1_000_000
    assert report.size == sum(f.stat().st_size for f in image.image_dir.iterdir())


def damaged(image: ClonezillaImage, root: Path) -> Path:
    """A private copy of the image under ROOT/partimag to damage (the cache stays intact)."""
    return clonezilla.copy_image(image, root / "partimag")


def inventory_both(root: Path) -> tuple[ImageReport, ImageReport]:
    """The image as `kitctl images` sees it, without and with --verify."""
    plain = only(image_store.inventory(str(root), IMAGES_ROOT).reports)
    verified = only(image_store.inventory(str(root), IMAGES_ROOT, verify=True).reports)
    return plain, verified


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))


def test_deleting_parts(clonezilla_image: ClonezillaImage, tmp_path: Path) -> None:
    (damaged(clonezilla_image, tmp_path) / "parts").unlink()
    plain, verified = inventory_both(tmp_path)
    assert codes(plain) == {("MissingMetadata", "parts")}
    assert codes(verified) == {("MissingMetadata", "parts"), ("ListedFileMissing", "parts")}
    assert plain.status is verified.status is Status.incomplete


def test_deleting_a_chunk_in_the_middle(clonezilla_image: ClonezillaImage, tmp_path: Path) -> None:
    data = clonezilla_image.parts[1]
    chunk = f"{data}.ntfs-ptcl-img.gz.ab"
    (damaged(clonezilla_image, tmp_path) / chunk).unlink()
    plain, verified = inventory_both(tmp_path)
    assert codes(plain) == {("ChunkGap", data)}
    assert plain.findings[0].message == f"{data}: missing {chunk} (the stream cannot be restored)"
    assert codes(verified) == {("ChunkGap", data), ("ListedFileMissing", chunk)}
    assert plain.status is verified.status is Status.incomplete


def test_flipping_one_byte_in_a_stream(clonezilla_image: ClonezillaImage, tmp_path: Path) -> None:
    chunk = f"{clonezilla_image.parts[1]}.ntfs-ptcl-img.gz.ac"
    flip(damaged(clonezilla_image, tmp_path) / chunk, 500_000)
    plain, verified = inventory_both(tmp_path)
    # Only reading every byte shows it: that is what --verify is for.
    assert (plain.status, plain.findings) == (Status.ok, ())
    assert codes(verified) == {("ChecksumMismatch", chunk)}
    assert verified.findings[0].message == (
        f"{chunk} does not match its md5 in MD5SUMS, sha1 in SHA1SUMS, blake2b in B2SUMS"
    )
    assert verified.status is Status.corrupt


def test_flipping_the_first_byte_of_a_stream(
    clonezilla_image: ClonezillaImage, tmp_path: Path
) -> None:
    chunk = f"{clonezilla_image.parts[0]}.vfat-ptcl-img.gz.aa"
    flip(damaged(clonezilla_image, tmp_path) / chunk, 0)
    plain, verified = inventory_both(tmp_path)
    assert codes(plain) == {("CompressionMismatch", chunk)}  # no longer a gzip header
    assert codes(verified) == {("CompressionMismatch", chunk), ("ChecksumMismatch", chunk)}
    assert plain.status is verified.status is Status.corrupt


def test_deleting_a_partition_stream(clonezilla_image: ClonezillaImage, tmp_path: Path) -> None:
    esp = clonezilla_image.parts[0]
    stream = f"{esp}.vfat-ptcl-img.gz.aa"
    (damaged(clonezilla_image, tmp_path) / stream).unlink()
    plain, verified = inventory_both(tmp_path)
    assert codes(plain) == {("MissingStream", esp)}
    assert codes(verified) == {("MissingStream", esp), ("ListedFileMissing", stream)}
    assert plain.status is verified.status is Status.incomplete


# ---------------------------------------------------------------------------- kitctl images


def kitctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "images", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def site_repo(path: Path, image_doc: str) -> Path:
    path.mkdir()
    (path / "site.yaml").write_text(
        "kind: Site\nname: lab\ntimezone: Europe/Berlin\nimages_root: /partimag\n"
        "server: {hostname: kit01, interface: eth0, address: 10.1.0.1}\n"
        "network:\n  subnet: 10.1.0.0/24\n  dhcp: {pool: {start: 10.1.0.10, end: 10.1.0.99}}\n"
    )
    (path / "images.yaml").write_text(image_doc)
    return path


def test_kitctl_images_on_the_real_image(clonezilla_image: ClonezillaImage) -> None:
    done = kitctl("--root", str(clonezilla_image.home), "--images-root", IMAGES_ROOT, "--verify")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0].startswith("kitting-fixture  OK  ")
    assert done.stdout.splitlines()[-1] == (
        f"{IMAGES_ROOT} under {clonezilla_image.home}: 1 image: 1 OK"
    )


def test_kitctl_images_fails_on_a_damaged_copy(
    clonezilla_image: ClonezillaImage, tmp_path: Path
) -> None:
    (damaged(clonezilla_image, tmp_path) / "parts").unlink()
    done = kitctl("--root", str(tmp_path), "--images-root", IMAGES_ROOT, "--format", "json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert [(i["name"], i["status"]) for i in body["images"]] == [("kitting-fixture", "INCOMPLETE")]


def test_kitctl_images_with_a_manifest_from_git(
    clonezilla_image: ClonezillaImage, tmp_path: Path
) -> None:
    image = clonezilla_image
    chunks = sorted(p.name for p in image.image_dir.glob(f"{image.disk}p*-img.*"))
    # The pins as an operator would take them: with sha256sum, not with our code.
    sums = subprocess.run(
        ["sha256sum", *chunks], cwd=image.image_dir, capture_output=True, text=True, check=True
    ).stdout
    pins = "".join(
        f'    {name}: "{digest}"\n' for digest, name in (line.split() for line in sums.splitlines())
    )
    doc = (
        f"kind: Image\nname: kitting-fixture\nfirmware: uefi\ndisk: {{device: {image.disk}}}\n"
        f"integrity:\n  source: manifest\n  manifest:\n{pins}"
    )
    repo = site_repo(tmp_path / "site", doc)
    done = kitctl("--root", str(image.home), "--repo", str(repo), "--verify", "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    (entry,) = json.loads(done.stdout)["images"]
    assert (entry["status"], entry["verified_with"]) == (
        "OK",
        ["B2SUMS", "MD5SUMS", "SHA1SUMS", "manifest"],
    )

    wrong_pin = doc.replace(sums.split()[0], "f" * 64)
    repo = site_repo(tmp_path / "site2", wrong_pin)
    done = kitctl("--root", str(image.home), "--repo", str(repo), "--verify", "--format", "json")
    assert done.returncode == 1
    (entry,) = json.loads(done.stdout)["images"]
    assert [(f["code"], f["subject"]) for f in entry["findings"]] == [
        ("ChecksumMismatch", chunks[0])
    ]


def test_kitctl_images_compares_with_the_declared_images(
    clonezilla_image: ClonezillaImage, tmp_path: Path
) -> None:
    doc = (
        "kind: Image\nname: kitting-fixture\nfirmware: bios\ndisk: {device: sda}\n---\n"
        "kind: Image\nname: win11-base\ndisk: {device: nvme0n1}\n"
    )
    repo = site_repo(tmp_path / "site", doc)
    done = kitctl("--root", str(clonezilla_image.home), "--repo", str(repo), "--format", "json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert [
        (i["name"], i["status"], [f["code"] for f in i["findings"]]) for i in body["images"]
    ] == [
        ("kitting-fixture", "MISMATCH", ["DiskMismatch", "FirmwareMismatch"]),
        ("win11-base", "MISSING", ["NotOnDisk"]),
    ]
