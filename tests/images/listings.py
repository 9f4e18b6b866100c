"""Listings of image directories, written down by hand from what `ocs-sr savedisk` wrote.

`FIXTURE` is the cached test image (tests/fixtures/clonezilla.py) as `stat -c '%s %n' *`
and `cat` showed it: a 64 MiB GPT disk on loop0, an EFI FAT32 partition and an NTFS one,
saved with `-z1p -i 1 -gm -gs -gb`. Tests change copies of it (`variant`).
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.images import FileEntry, ImageListing

FIXTURE_SIZES: dict[str, int] = {
    "B2SUMS": 2925,
    "Info-img-id.txt": 236,
    "Info-img-size.txt": 101,
    "Info-packages.txt": 194,
    "Info-saved-by-cmd.txt": 171,
    "MD5SUMS": 920,
    "SHA1SUMS": 1114,
    "blkdev.list": 293,
    "blkid.list": 301,
    "clonezilla-img": 5548,
    "dev-fs.list": 181,
    "disk": 6,
    "loop0-chs.sf": 33,
    "loop0-gpt-1st": 17408,
    "loop0-gpt.gdisk": 17920,
    "loop0-gpt.sgdisk": 592,
    "loop0-mbr": 512,
    "loop0-pt.parted": 0,
    "loop0-pt.parted.compact": 0,
    "loop0-pt.sf": 443,
    "loop0p1.vfat-ptcl-img.gz.aa": 3329,
    "loop0p2.ntfs-ptcl-img.gz.aa": 1000000,
    "loop0p2.ntfs-ptcl-img.gz.ab": 1000000,
    "loop0p2.ntfs-ptcl-img.gz.ac": 1000000,
    "loop0p2.ntfs-ptcl-img.gz.ad": 131838,
    "parts": 16,
}
FIXTURE_TOTAL = 3184081  # stat -c '%s' * | awk '{s+=$1} END {print s}'

PT_SF = """\
label: gpt
label-id: 4B495454-494E-4700-8000-000000000001
device: /dev/loop0
unit: sectors
first-lba: 34
last-lba: 131038
sector-size: 512

/dev/loop0p1 : start=        2048, size=       73728, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=4B495454-494E-4700-8000-000000000011, name="EFI"
/dev/loop0p2 : start=       75776, size=       55263, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=4B495454-494E-4700-8000-000000000012, name="DATA"
"""

DEV_FS = """\
# <Device name>   <File system>   <Size>
# File system is got from ocs-get-dev-info. It might be different from that of blkid or parted.
/dev/loop0p1 vfat 36M
/dev/loop0p2 ntfs 27M
"""

MD5SUMS = """\
9d92616f1c2b83257928abac2001511f  blkdev.list
6d3caf38b8fd25b3738f6f716d3d69e6  blkid.list
63028c3c78f514e8014d85e04511b773  dev-fs.list
d19fb70a6dcc0c8a9b05aabb876fa69b  disk
f261c3c8c7dc614384623bd3f75e4d18  loop0-chs.sf
fc6d000437575eb5cf1eabb9f7497657  loop0-gpt-1st
b3a65ae3963e19b96db18f9d35514724  loop0-gpt.gdisk
3b96f28698cab4b463d0ad43b1ca7429  loop0-gpt.sgdisk
9b6af13e625816e59481095d3d43a398  loop0-mbr
d41d8cd98f00b204e9800998ecf8427e  loop0-pt.parted
d41d8cd98f00b204e9800998ecf8427e  loop0-pt.parted.compact
6935a4bba27f152440330d8239f4be18  loop0-pt.sf
7c36fcb3ab11b64835c3bc042160654c  loop0p1.vfat-ptcl-img.gz.aa
2301a166300632de93af749e29d83e88  loop0p2.ntfs-ptcl-img.gz.aa
54f422cacfc2283b008db0994177b5cd  loop0p2.ntfs-ptcl-img.gz.ab
06d3c5130bc1a1de52328e755093c83b  loop0p2.ntfs-ptcl-img.gz.ac
41e27a3240e646886ada02aa309d290a  loop0p2.ntfs-ptcl-img.gz.ad
65509b9e574e2fa68730b8e4879441c0  parts
"""

VFAT_HEAD = bytes.fromhex("1f8b0800567a116b0403edddcf6b1c55")
NTFS_HEAD = bytes.fromhex("1f8b08005e7a116b0403ecdd0780d544")
"""The first 16 bytes of the two streams' first chunks (`head -c16 | xxd`): gzip headers."""

FIXTURE_TEXTS: dict[str, str] = {
    "disk": "loop0\n",
    "parts": "loop0p1 loop0p2\n",
    "loop0-pt.sf": PT_SF,
    "dev-fs.list": DEV_FS,
    "MD5SUMS": MD5SUMS,
}
FIXTURE_HEADS: dict[str, bytes] = {
    "loop0p1.vfat-ptcl-img.gz.aa": VFAT_HEAD,
    "loop0p2.ntfs-ptcl-img.gz.aa": NTFS_HEAD,
}


def listing(
    sizes: Mapping[str, int],
    texts: Mapping[str, str] | None = None,
    heads: Mapping[str, bytes] | None = None,
    name: str = "kitting-fixture",
) -> ImageListing:
    return ImageListing(
        name=name,
        files=tuple(FileEntry(n, s) for n, s in sorted(sizes.items())),
        texts=dict(texts or {}),
        heads=dict(heads or {}),
    )


def variant(
    *,
    drop: tuple[str, ...] = (),
    sizes: Mapping[str, int] | None = None,
    texts: Mapping[str, str] | None = None,
    heads: Mapping[str, bytes] | None = None,
) -> ImageListing:
    """The fixture's listing with files dropped, and sizes, texts or heads replaced/added."""
    all_sizes = {n: s for n, s in FIXTURE_SIZES.items() if n not in drop}
    all_sizes.update(sizes or {})
    all_texts = {n: t for n, t in FIXTURE_TEXTS.items() if n not in drop}
    all_texts.update(texts or {})
    all_heads = {n: h for n, h in FIXTURE_HEADS.items() if n not in drop}
    all_heads.update(heads or {})
    return listing(all_sizes, all_texts, all_heads)
