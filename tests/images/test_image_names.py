"""Parsers of Clonezilla's file names and metadata files, with values worked out by hand
from ocs-functions (Clonezilla 5.3) and from files ocs-sr wrote."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from reconciler.desired import Firmware
from reconciler.images import (
    Compression,
    StreamFile,
    StreamFormat,
    chunk_index,
    chunk_suffix,
    firmware_of,
    heads_to_read,
    is_metadata,
    parse_checksums,
    parse_dev_fs,
    parse_devices,
    parse_lvm,
    parse_sfdisk_dump,
    parse_stream_name,
    sniff_compression,
)

from .listings import DEV_FS, MD5SUMS, PT_SF

P, N, D, PI = (
    StreamFormat.partclone,
    StreamFormat.ntfsclone,
    StreamFormat.dd,
    StreamFormat.partimage,
)
C = Compression


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sda1.ntfs-ptcl-img.gz.aa", ("sda1", P, "ntfs", C.gz, "aa")),
        ("sda1.ntfs-ptcl-img.gz.ab", ("sda1", P, "ntfs", C.gz, "ab")),
        ("loop0p1.vfat-ptcl-img.gz.aa", ("loop0p1", P, "vfat", C.gz, "aa")),
        ("nvme0n1p3.ext4-ptcl-img.zst.aab", ("nvme0n1p3", P, "ext4", C.zst, "aab")),
        ("sda2.vfat-ptcl-img.uncomp", ("sda2", P, "vfat", C.uncompressed, None)),
        ("sda2.vfat-ptcl-img.uncomp.aa", ("sda2", P, "vfat", C.uncompressed, "aa")),
        ("sda1.ntfs-ptcl-img.bz2.aa", ("sda1", P, "ntfs", C.bz2, "aa")),
        ("sda1.ntfs-ptcl-img.lzo.aa", ("sda1", P, "ntfs", C.lzo, "aa")),
        ("sda1.ntfs-ptcl-img.lzma.aa", ("sda1", P, "ntfs", C.lzma, "aa")),
        ("sda1.ntfs-ptcl-img.xz.aa", ("sda1", P, "ntfs", C.xz, "aa")),
        ("sda1.ntfs-ptcl-img.lzip.aa", ("sda1", P, "ntfs", C.lzip, "aa")),
        ("sda1.ntfs-ptcl-img.lrz.aa", ("sda1", P, "ntfs", C.lrz, "aa")),
        ("sda1.ntfs-ptcl-img.lz4.aa", ("sda1", P, "ntfs", C.lz4, "aa")),
        ("sda3.fat32-ptcl-img.gz", ("sda3", P, "fat32", C.gz, None)),
        ("vg0-root.ext4-ptcl-img.gz.aa", ("vg0-root", P, "ext4", C.gz, "aa")),
        ("cciss-c0d0p1.ntfs-ptcl-img.gz.aa", ("cciss-c0d0p1", P, "ntfs", C.gz, "aa")),
        # ntfsclone: no compression in Clonezilla's names; an older .gz.aa style is read too
        ("sda1.ntfs-img.aa", ("sda1", N, "ntfs", None, "aa")),
        ("sda1.ntfs-img.gz.aa", ("sda1", N, "ntfs", C.gz, "aa")),
        ("sda1.ntfs-img", ("sda1", N, "ntfs", None, None)),
        # the last token is always the chunk: .gz after 181 chunks (aa=0 ... gz=6*26+25)
        ("sda1.ntfs-img.gz", ("sda1", N, "ntfs", None, "gz")),
        ("sda1.dd-img.aa", ("sda1", D, None, None, "aa")),
        ("sda1.dd-img", ("sda1", D, None, None, None)),
        ("sda1.dd-img.zst.ab", ("sda1", D, None, C.zst, "ab")),
    ],
)
def test_stream_names(
    name: str,
    expected: tuple[str, StreamFormat, str | None, Compression | None, str | None],
) -> None:
    assert parse_stream_name(name) == StreamFile(name, *expected)


@pytest.mark.parametrize(
    ("name", "chunk"), [("hda1.aa", "aa"), ("hda1.ab", "ab"), ("hda1.000", "000"), ("hda1", None)]
)
def test_partimage_names_only_for_known_partitions(name: str, chunk: str | None) -> None:
    assert parse_stream_name(name, ["hda1"]) == StreamFile(name, "hda1", PI, None, None, chunk)
    assert parse_stream_name(name) is None
    assert parse_stream_name(name, ["hda2"]) is None


@pytest.mark.parametrize(
    "name",
    [
        "disk",
        "parts",
        "clonezilla-img",
        "MD5SUMS",
        "Info-img-id.txt",
        "loop0-pt.sf",
        "loop0-gpt-1st",
        "sda1.info",
        "sda1.dd-img.info",  # partition type note, not a stream
        "swappt-sda5.info",
        "sda2-ebr",
        "sda1.files-b2sum.info.gz",
        "sda1.ntfs-ptcl-img",  # partclone names always carry the compression
        "sda1.ntfs-ptcl-img.rar.aa",
        "sda1.ntfs-ptcl-img.gz.AA",
        "sda1.ntfs-ptcl-img.gz.aaaa",
        "sda1.0000",
    ],
)
def test_names_that_are_no_stream(name: str) -> None:
    assert parse_stream_name(name, ["sda1"]) is None


@pytest.mark.parametrize(
    ("chunk", "index"),
    [("aa", 0), ("ab", 1), ("az", 25), ("ba", 26), ("zz", 675), ("aaa", 0), ("abc", 28)],
)
def test_chunk_index(chunk: str, index: int) -> None:
    assert chunk_index(chunk) == index
    assert chunk_suffix(index, chunk) == chunk


def test_partimage_volume_numbers() -> None:
    assert chunk_index("000") == 0
    assert chunk_index("012") == 12
    assert chunk_suffix(7, "000") == "007"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (gzip.compress(b"partclone-image"), C.gz),
        (bz2.compress(b"partclone-image"), C.bz2),
        (lzma.compress(b"partclone-image", format=lzma.FORMAT_XZ), C.xz),
        (lzma.compress(b"partclone-image", format=lzma.FORMAT_ALONE), C.lzma),
        (bytes.fromhex("28b52ffd2058"), C.zst),
        (bytes.fromhex("04224d186440"), C.lz4),
        (bytes.fromhex("02214c18"), C.lz4),
        (b"\x89LZO\x00\r\n\x1a\n\x10", C.lzo),
        (b"LZIP\x01", C.lzip),
        (b"LRZI\x00\x06", C.lrz),
        (b"partclone-image\x000002", C.uncompressed),
        (b"\x00ntfsclone-image", C.uncompressed),
        (b"PaRtImAgE-VoLuMe", C.uncompressed),
        (b"\x00" * 16, None),
        (b"", None),
    ],
)
def test_sniff_compression(head: bytes, expected: Compression | None) -> None:
    assert sniff_compression(head[:16]) is expected


def test_sfdisk_dump_of_the_fixture() -> None:
    table = parse_sfdisk_dump(PT_SF)
    assert table.label == "gpt"
    assert table.types == (
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    )
    assert firmware_of(table) is Firmware.uefi


def test_sfdisk_dump_of_a_bios_disk() -> None:
    dump = (
        "label: dos\nlabel-id: 0x1234abcd\ndevice: /dev/sda\nunit: sectors\n\n"
        "/dev/sda1 : start=2048, size=1124352, type=7, bootable\n"
        "/dev/sda2 : start=1126400, size=8000000, type=7\n"
    )
    table = parse_sfdisk_dump(dump)
    assert (table.label, table.types, table.bootable) == ("dos", ("7", "7"), True)
    assert firmware_of(table) is Firmware.bios


@pytest.mark.parametrize(
    ("types", "label", "expected"),
    [
        ("type=21686148-6449-6E6F-744E-656564454649", "gpt", Firmware.bios),
        ("type=0FC63DAF-8483-4772-8E79-3D69D8477DE4", "gpt", None),
        ("type=ef", "dos", Firmware.uefi),
        ("type=83", "dos", None),
    ],
)
def test_firmware_from_partition_types(types: str, label: str, expected: Firmware | None) -> None:
    table = parse_sfdisk_dump(f"label: {label}\n\n/dev/sda1 : start=2048, size=2048, {types}\n")
    assert firmware_of(table) is expected


def test_devices() -> None:
    assert parse_devices("loop0\n") == (["loop0"], [])
    assert parse_devices("sda1 sda2 nvme0n1p1\n") == (["sda1", "sda2", "nvme0n1p1"], [])
    assert parse_devices("sda1 ../etc $(reboot)") == (["sda1"], ["../etc", "$(reboot)"])
    assert parse_devices("") == ([], [])


def test_dev_fs_list_of_the_fixture() -> None:
    assert parse_dev_fs(DEV_FS) == {"loop0p1": "vfat", "loop0p2": "ntfs"}


def test_lvm_lists() -> None:
    pvs, lvs = parse_lvm(
        "vg0 /dev/sda2 qdlt6U-M4bo-xExy-XG9Q-U7pg-bOXN-n54i5Y\n",
        "/dev/vg0/root ext4\n/dev/vg0/home xfs\n",
    )
    assert pvs == {"sda2"}
    assert lvs == ["vg0-root", "vg0-home"]


def test_checksum_file_of_the_fixture() -> None:
    entries, bad = parse_checksums(MD5SUMS, "md5")
    assert bad == []
    assert len(entries) == 18
    assert entries["disk"] == "d19fb70a6dcc0c8a9b05aabb876fa69b"  # md5sum of "loop0\n"
    assert entries["loop0-pt.parted"] == "d41d8cd98f00b204e9800998ecf8427e"  # empty file
    assert entries["loop0p2.ntfs-ptcl-img.gz.ad"] == "41e27a3240e646886ada02aa309d290a"


def test_checksum_file_forms() -> None:
    text = (
        "900150983CD24FB0D6963F7D28E17F72 *binary-mode\n"
        "\\900150983cd24fb0d6963f7d28e17f72  a\\nb\\\\c\n"
        "\n"
        "900150983cd24fb0d6963f7d28e17f7  short-hex\n"
        "900150983cd24fb0d6963f7d28e17f72 one-space\n"
        "900150983cd24fb0d6963f7d28e17f72  ../escape\n"
        "900150983cd24fb0d6963f7d28e17f72  sub/dir\n"
        "MD5 (bsd-tag) = 900150983cd24fb0d6963f7d28e17f72\n"
        "\\900150983cd24fb0d6963f7d28e17f72  bad\\qescape\n"
    )
    entries, bad = parse_checksums(text, "md5")
    assert entries == {
        "binary-mode": "900150983cd24fb0d6963f7d28e17f72",
        "a\nb\\c": "900150983cd24fb0d6963f7d28e17f72",
    }
    assert bad == [4, 5, 6, 7, 8, 9]


def test_which_files_are_read_as_metadata() -> None:
    for name in ("disk", "parts", "loop0-pt.sf", "B2SUMS", "SHA1SUMS", "dev-fs.list"):
        assert is_metadata(name), name
    assert not is_metadata("loop0p1.vfat-ptcl-img.gz.aa")
    assert not is_metadata("clonezilla-img")
    assert not is_metadata("loop0-mbr")


def test_heads_are_read_from_first_chunks_only() -> None:
    names = [
        "loop0p1.vfat-ptcl-img.gz.aa",
        "loop0p2.ntfs-ptcl-img.gz.ab",
        "loop0p2.ntfs-ptcl-img.gz.aa",
        "sda3.dd-img",
        "hda1.000",
        "hda1.001",
        "parts",
    ]
    assert heads_to_read(names, "hda1\n") == [
        "hda1.000",
        "loop0p1.vfat-ptcl-img.gz.aa",
        "loop0p2.ntfs-ptcl-img.gz.aa",
        "sda3.dd-img",
    ]
