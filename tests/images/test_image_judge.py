"""Completeness, integrity and the desired-state comparison, on hand-written listings
(tests/images/listings.py); every expected finding is worked out by hand."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from reconciler.desired import Disk, Firmware, Image, Integrity, IntegritySource
from reconciler.images import (
    Compression,
    Finding,
    ImageListing,
    ImageReport,
    Kind,
    PartitionReport,
    Status,
    StreamFormat,
    compare,
    digest_plan,
    expectations,
    judge,
    verify,
)

from .listings import (
    FIXTURE_SIZES,
    FIXTURE_TOTAL,
    MD5SUMS,
    listing,
    variant,
)

AA, AB, AC, AD = (f"loop0p2.ntfs-ptcl-img.gz.{c}" for c in ("aa", "ab", "ac", "ad"))
VFAT = "loop0p1.vfat-ptcl-img.gz.aa"


def codes(report: ImageReport) -> set[tuple[str, str]]:
    return {(f.code, f.subject) for f in report.findings}


def test_the_fixture_is_complete() -> None:
    report = judge(variant())
    assert report.status is Status.ok
    assert report.findings == ()
    assert report.disks == ("loop0",)
    assert report.firmware is Firmware.uefi
    assert report.size == FIXTURE_TOTAL
    assert report.partitions == (
        PartitionReport("loop0p1", StreamFormat.partclone, "vfat", Compression.gz, (VFAT,), 3329),
        PartitionReport(
            "loop0p2",
            StreamFormat.partclone,
            "ntfs",
            Compression.gz,
            (AA, AB, AC, AD),
            3131838,  # 3 x 1000000 + 131838
        ),
    )


@pytest.mark.parametrize(
    ("dropped", "expected"),
    [
        ("parts", {("MissingMetadata", "parts")}),
        ("disk", {("MissingMetadata", "disk")}),
        ("clonezilla-img", {("MissingMetadata", "clonezilla-img")}),
        ("loop0-mbr", {("MissingMetadata", "loop0-mbr")}),
        ("loop0-gpt-1st", {("MissingMetadata", "loop0-gpt-1st")}),
        # loop0-gpt.sgdisk still says GPT, so the GPT header stays required (and present)
        ("loop0-pt.sf", {("MissingMetadata", "loop0-pt.sf")}),
        (VFAT, {("MissingStream", "loop0p1")}),
        (AB, {("ChunkGap", "loop0p2")}),
        (AA, {("ChunkGap", "loop0p2")}),
    ],
)
def test_one_file_missing(dropped: str, expected: set[tuple[str, str]]) -> None:
    report = judge(variant(drop=(dropped,)))
    assert codes(report) == expected
    assert report.status is Status.incomplete
    assert all(f.kind is Kind.incomplete for f in report.findings)


def test_without_parts_the_streams_still_show() -> None:
    report = judge(variant(drop=("parts",)))
    assert [p.name for p in report.partitions] == ["loop0p1", "loop0p2"]
    assert report.partitions[1].chunks == (AA, AB, AC, AD)


def test_a_gap_names_the_missing_chunks() -> None:
    report = judge(variant(drop=(AB, AC)))
    (gap,) = report.findings
    assert gap.message == (
        "loop0p2: missing loop0p2.ntfs-ptcl-img.gz.ab, loop0p2.ntfs-ptcl-img.gz.ac "
        "(the stream cannot be restored)"
    )
    assert report.partitions[1].chunks == (AA, AD)
    assert report.partitions[1].size == 1131838


def test_a_missing_first_chunk_is_a_gap() -> None:
    (gap,) = judge(variant(drop=(AA,))).findings
    assert "missing loop0p2.ntfs-ptcl-img.gz.aa " in gap.message


def test_a_missing_last_chunk_shows_as_a_long_last_chunk() -> None:
    # Nothing names the chunk count, but .ac (now last) is as long as a full chunk: not
    # detectable, and the judge must not invent a finding for a plausible stream.
    report = judge(variant(drop=(AD,)))
    assert report.findings == ()
    assert report.partitions[1].size == 3000000


def test_a_shortened_middle_chunk() -> None:
    report = judge(variant(sizes={AB: 999424}))
    assert codes(report) == {("ChunkTruncated", AB)}


def test_a_last_chunk_longer_than_the_split_size() -> None:
    report = judge(variant(sizes={AD: 1000001}))
    assert codes(report) == {("ChunkOversized", AD)}


def test_an_empty_chunk() -> None:
    report = judge(variant(sizes={VFAT: 0}))
    assert codes(report) == {("EmptyChunk", VFAT)}


def test_a_stream_for_a_partition_not_in_parts() -> None:
    report = judge(variant(sizes={"loop0p3.ext4-ptcl-img.gz.aa": 5000}))
    assert codes(report) == {("OrphanStream", "loop0p3")}
    assert [p.name for p in report.partitions] == ["loop0p1", "loop0p2", "loop0p3"]


def test_two_streams_for_one_partition() -> None:
    report = judge(variant(sizes={"loop0p1.vfat-ptcl-img.zst.aa": 3000}))
    assert codes(report) == {("AmbiguousStream", "loop0p1")}
    assert report.findings[0].message == (
        "loop0p1 has more than one stream (partclone/vfat/gz, partclone/vfat/zst)"
    )


def test_split_and_unsplit_files_of_one_stream() -> None:
    report = judge(variant(sizes={"loop0p2.ntfs-ptcl-img.gz": 3131838}))
    assert codes(report) == {("MixedChunkNames", "loop0p2")}


def test_chunk_suffixes_of_two_lengths() -> None:
    report = judge(variant(sizes={"loop0p2.ntfs-ptcl-img.gz.aae": 1000}))
    assert ("MixedChunkNames", "loop0p2") in codes(report)


def test_content_that_contradicts_the_name() -> None:
    zstd_head = bytes.fromhex("28b52ffd0458") + bytes(10)
    report = judge(variant(heads={VFAT: zstd_head}))
    assert codes(report) == {("CompressionMismatch", VFAT)}
    assert report.status is Status.corrupt
    assert report.findings[0].message == f"{VFAT} is named gz but starts like zst"


def test_zeroed_first_bytes_are_corrupt() -> None:
    report = judge(variant(heads={AA: bytes(16)}))
    assert codes(report) == {("CompressionMismatch", AA)}


def test_garbage_in_parts() -> None:
    report = judge(variant(texts={"parts": "loop0p1 ../../etc\n"}))
    assert ("MalformedMetadata", "parts") in codes(report)
    report = judge(variant(texts={"parts": "\n"}))
    assert ("MalformedMetadata", "parts") in codes(report)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x1f\x8b\x08\x00" + bytes(12), Compression.gz),
        (b"\x00ntfsclone-image", Compression.uncompressed),
        (bytes(16), Compression.uncompressed),  # as Clonezilla: no known magic means raw
    ],
)
def test_ntfsclone_compression_comes_from_the_content(head: bytes, expected: Compression) -> None:
    sizes = {
        "disk": 4,
        "parts": 5,
        "clonezilla-img": 10,
        "sda-pt.sf": 100,
        "sda-mbr": 512,
        "sda1.ntfs-img.aa": 400,
    }
    texts = {"disk": "sda\n", "parts": "sda1\n", "sda-pt.sf": "label: dos\n"}
    report = judge(listing(sizes, texts, {"sda1.ntfs-img.aa": head}))
    assert report.findings == ()
    (part,) = report.partitions
    assert (part.format, part.filesystem, part.compression) == (
        StreamFormat.ntfsclone,
        "ntfs",
        expected,
    )


def test_partimage_and_dd_streams() -> None:
    sizes = {
        "disk": 4,
        "parts": 10,
        "clonezilla-img": 10,
        "hda-pt.sf": 100,
        "hda-mbr": 512,
        "hda1.000": 700,
        "hda1.001": 300,
        "hda2.dd-img.aa": 50,
    }
    texts = {"disk": "hda\n", "parts": "hda1 hda2\n", "hda-pt.sf": "label: dos\n"}
    heads = {"hda1.000": b"PaRtImAgE-VoLuMe", "hda2.dd-img.aa": b"BZh91AY&SY" + bytes(6)}
    report = judge(listing(sizes, texts, heads))
    assert report.findings == ()
    assert [(p.name, p.format, p.compression, p.chunks, p.size) for p in report.partitions] == [
        ("hda1", StreamFormat.partimage, Compression.uncompressed, ("hda1.000", "hda1.001"), 1000),
        ("hda2", StreamFormat.dd, Compression.bz2, ("hda2.dd-img.aa",), 50),
    ]


def test_lvm_volumes_instead_of_their_physical_volume() -> None:
    sizes = {
        "disk": 4,
        "parts": 10,
        "clonezilla-img": 10,
        "sda-pt.sf": 100,
        "sda-mbr": 512,
        "lvm_vg_dev.list": 60,
        "lvm_logv.list": 40,
        "sda1.ext4-ptcl-img.gz.aa": 100,
        "vg0-root.ext4-ptcl-img.gz.aa": 300,
    }
    texts = {
        "disk": "sda\n",
        "parts": "sda1 sda2\n",
        "sda-pt.sf": "label: dos\n",
        "lvm_vg_dev.list": "vg0 /dev/sda2 qdlt6U-M4bo-xExy-XG9Q-U7pg-bOXN-n54i5Y\n",
        "lvm_logv.list": "/dev/vg0/root ext4\n",
    }
    report = judge(listing(sizes, texts))
    assert report.findings == ()
    assert [p.name for p in report.partitions] == ["sda1", "vg0-root"]
    report = judge(listing({**sizes, "vg0-root.ext4-ptcl-img.gz.aa": 0}, texts))
    assert codes(report) == {("EmptyChunk", "vg0-root.ext4-ptcl-img.gz.aa")}
    del sizes["vg0-root.ext4-ptcl-img.gz.aa"]
    assert codes(judge(listing(sizes, texts))) == {("MissingStream", "vg0-root")}


def test_two_disks_need_two_partition_tables() -> None:
    sizes = {**FIXTURE_SIZES, "disk": 12}
    report = judge(variant(sizes=sizes, texts={"disk": "loop0 loop1\n"}))
    assert codes(report) == {
        ("MissingMetadata", "loop1-pt.sf"),
        ("MissingMetadata", "loop1-mbr"),
    }
    assert report.disks == ("loop0", "loop1")


def test_unreadable_directory() -> None:
    problem = Finding("SymlinkOutsideRoot", "evil", "evil points outside", Kind.incomplete)
    report = judge(ImageListing("evil", (), problems=(problem,), readable=False))
    assert report.findings == (problem,)
    assert report.status is Status.incomplete


# ---------------------------------------------------------------------------- integrity

MD5_OF = {line.split("  ")[1]: line.split("  ")[0] for line in MD5SUMS.splitlines() if line.strip()}
"""What md5sum printed for each file; a digest map as the reader would compute it."""


def digests(**changed: str | None) -> dict[str, Mapping[str, str] | None]:
    out: dict[str, Mapping[str, str] | None] = {n: {"md5": d} for n, d in MD5_OF.items()}
    for key, value in changed.items():
        name = key.replace("__", ".")
        out[name] = None if value is None else {"md5": value}
    return out


def verified(
    seen: ImageListing | None = None,
    found: dict[str, Mapping[str, str] | None] | None = None,
    integrity: Integrity | None = None,
) -> ImageReport:
    """What the shell does with --verify, with the digests given."""
    seen = seen or variant()
    wanted, malformed = expectations(seen, integrity)
    return verify(judge(seen), wanted, digests() if found is None else found, integrity, malformed)


def test_every_checksum_matches() -> None:
    report = verified()
    assert report.status is Status.ok
    assert report.verified_with == ("MD5SUMS",)


def test_a_changed_chunk() -> None:
    found = digests()
    found[AC] = {"md5": "0" * 32}
    report = verified(found=found)
    assert codes(report) == {("ChecksumMismatch", AC)}
    assert report.status is Status.corrupt
    assert report.findings[0].message == f"{AC} does not match its md5 in MD5SUMS"


def test_a_listed_file_that_is_gone() -> None:
    found = digests()
    found["parts"] = None
    report = verified(variant(drop=("parts",)), found)
    assert codes(report) == {("MissingMetadata", "parts"), ("ListedFileMissing", "parts")}
    assert report.status is Status.incomplete


def test_a_chunk_no_checksum_covers() -> None:
    extra = "loop0p2.ntfs-ptcl-img.gz.ae"
    found = digests()
    found[extra] = {"md5": "1" * 32}
    report = verified(variant(sizes={extra: 5, AD: 1000000}), found)
    assert codes(report) == {("NotCovered", extra)}
    assert report.status is Status.unverified


def test_no_checksum_files() -> None:
    report = verified(variant(drop=("MD5SUMS",)))
    assert codes(report) == {("NoChecksums", "kitting-fixture")}
    assert report.status is Status.unverified
    assert report.verified_with == ()


def test_a_malformed_checksum_file() -> None:
    text = MD5SUMS + "not a checksum line\n"
    report = verified(variant(texts={"MD5SUMS": text}))
    assert codes(report) == {("MalformedChecksums", "MD5SUMS")}
    assert report.findings[0].message == ("MD5SUMS: line 19 is not '<md5 hex>  <file name>'")


def test_the_digest_plan_reads_each_file_once() -> None:
    sha1 = "".join(f"{'a' * 40}  {name}\n" for name in ("disk", "parts"))
    image = variant(sizes={"SHA1SUMS": len(sha1)}, texts={"SHA1SUMS": sha1})
    integrity = Integrity(source=IntegritySource.manifest, manifest={"disk": "b" * 64})
    wanted, _ = expectations(image, integrity)
    plan = digest_plan(wanted)
    assert plan["disk"] == frozenset({"md5", "sha1", "sha256"})
    assert plan["parts"] == frozenset({"md5", "sha1"})
    assert plan[AA] == frozenset({"md5"})
    assert len(plan) == 18


SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_manifest_from_git() -> None:
    chunks = [VFAT, AA, AB, AC, AD]
    integrity = Integrity(
        source=IntegritySource.manifest, manifest=dict.fromkeys(chunks, SHA256_ABC)
    )
    found = digests()
    for name in chunks:
        found[name] = {"md5": MD5_OF[name], "sha256": SHA256_ABC}
    report = verified(found=found, integrity=integrity)
    assert report.status is Status.ok
    assert report.verified_with == ("MD5SUMS", "manifest")

    found[AB] = {"md5": MD5_OF[AB], "sha256": "0" * 64}
    report = verified(found=found, integrity=integrity)
    assert codes(report) == {("ChecksumMismatch", AB)}
    assert report.findings[0].message == f"{AB} does not match its sha256 in manifest"


def test_a_manifest_must_cover_every_chunk() -> None:
    integrity = Integrity(source=IntegritySource.manifest, manifest={VFAT: SHA256_ABC})
    found = digests()
    found[VFAT] = {"md5": MD5_OF[VFAT], "sha256": SHA256_ABC}
    report = verified(found=found, integrity=integrity)
    # Clonezilla's MD5SUMS covers them, but the trusted source is the manifest in Git.
    assert codes(report) == {("NotCovered", c) for c in (AA, AB, AC, AD)}


def test_an_empty_manifest_is_nothing_to_verify_against() -> None:
    integrity = Integrity(source=IntegritySource.manifest)
    report = verified(integrity=integrity)
    assert codes(report) == {("NoChecksums", "kitting-fixture")}
    assert "a manifest in Git" in report.findings[0].message


# ---------------------------------------------------------------------------- desired


def image(name: str = "kitting-fixture", device: str = "loop0", firmware: str = "uefi") -> Image:
    return Image.model_validate(
        {"kind": "Image", "name": name, "firmware": firmware, "disk": Disk(device=device)}
    )


def test_declared_and_found() -> None:
    (report,) = compare([judge(variant())], {"kitting-fixture": image()})
    assert report.status is Status.ok
    assert report.findings == ()


def test_declared_but_not_on_disk() -> None:
    reports = compare([], {"win11": image("win11", "nvme0n1")})
    assert [(r.name, r.present, r.status) for r in reports] == [("win11", False, Status.missing)]
    assert codes(reports[0]) == {("NotOnDisk", "win11")}


def test_on_disk_but_not_declared_is_a_note() -> None:
    (report,) = compare([judge(variant())], {})
    assert codes(report) == {("Undeclared", "kitting-fixture")}
    assert report.findings[0].kind is Kind.note
    assert report.status is Status.ok


def test_saved_from_another_disk_or_firmware() -> None:
    (report,) = compare([judge(variant())], {"kitting-fixture": image(device="sda")})
    assert codes(report) == {("DiskMismatch", "disk")}
    assert report.status is Status.mismatch
    assert report.findings[0].message == (
        "the image was saved from loop0, the Image document says sda"
    )
    (report,) = compare([judge(variant())], {"kitting-fixture": image(firmware="bios")})
    assert codes(report) == {("FirmwareMismatch", "firmware")}


def test_reports_come_sorted_by_name() -> None:
    reports = compare(
        [judge(variant())], {"a-image": image("a-image"), "z-image": image("z-image")}
    )
    assert [r.name for r in reports] == ["a-image", "kitting-fixture", "z-image"]


def test_status_order() -> None:
    findings = judge(variant(drop=("parts",), heads={VFAT: bytes(16)})).findings
    assert {f.kind for f in findings} == {Kind.incomplete, Kind.corrupt}
    assert ImageReport("x", True, findings=findings).status is Status.corrupt


def test_a_stray_file_beside_a_stream_is_no_partimage_volume() -> None:
    report = judge(variant(sizes={"loop0p1.log": 10, "loop0p1.aa": 10}))
    assert report.findings == ()
    assert report.partitions[0].chunks == (VFAT,)
