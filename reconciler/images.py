"""Clonezilla image directories: what they hold and whether they are whole.

Purely computational: parsers of Clonezilla's own file names and small metadata files, the
completeness judge, the integrity comparison and the comparison with the desired Image
documents. They take listings and digests as values; reading an images root (and streaming
digests) lives in `reconciler.image_store`.

Names and formats as Clonezilla 5.x writes them (ocs-functions, drbl-ocs.conf):

- partclone streams: `PART.FS-ptcl-img.COMP[.CHUNK]`, COMP one of gz bz2 lzo lzma xz lzip
  lrz lz4 zst uncomp (the compression is in the name);
- ntfsclone: `PART.ntfs-img[.CHUNK]`, dd: `PART.dd-img[.CHUNK]`, partimage: `PART[.CHUNK]`
  or partimage's own volumes `PART.000`, `.001`; Clonezilla tells their compression from
  the content's magic bytes (`file`), and so does `sniff_compression`;
- CHUNK: `split -a N` suffixes aa, ab, ... (N is split_suf_len, 2 by default); every chunk
  but the last has the split size;
- `disk` and `parts` name the devices at save time; `DISK-pt.sf` (sfdisk dump), `DISK-mbr`
  and, for GPT, `DISK-gpt-1st` hold the partition table;
- checksum files, written with -gm/-gs/-gb as `md5sum * > MD5SUMS` (SHA1SUMS, B2SUMS; also
  SHA256SUMS and SHA512SUMS when drbl-ocs.conf lists those programs) in the GNU format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from reconciler.desired import Firmware, Image, Integrity, IntegritySource

# ---------------------------------------------------------------------------- vocabulary


class Compression(StrEnum):
    gz = "gz"
    bz2 = "bz2"
    lzo = "lzo"
    lzma = "lzma"
    xz = "xz"
    lzip = "lzip"
    lrz = "lrz"
    lz4 = "lz4"
    zst = "zst"
    uncompressed = "uncompressed"


class StreamFormat(StrEnum):
    partclone = "partclone"
    ntfsclone = "ntfsclone"
    dd = "dd"
    partimage = "partimage"


class Kind(StrEnum):
    """What a finding means for the image."""

    incomplete = "incomplete"
    corrupt = "corrupt"
    unverified = "unverified"
    mismatch = "mismatch"
    missing = "missing"
    note = "note"


class Status(StrEnum):
    ok = "OK"
    missing = "MISSING"
    corrupt = "CORRUPT"
    incomplete = "INCOMPLETE"
    mismatch = "MISMATCH"
    unverified = "UNVERIFIED"


# The worst kind decides the status; notes never change it.
_STATUS_ORDER: tuple[tuple[Kind, Status], ...] = (
    (Kind.missing, Status.missing),
    (Kind.corrupt, Status.corrupt),
    (Kind.incomplete, Status.incomplete),
    (Kind.mismatch, Status.mismatch),
    (Kind.unverified, Status.unverified),
)


@dataclass(frozen=True, order=True)
class Finding:
    """One thing wrong with (or worth knowing about) an image. `code` is a CamelCase reason;
    `subject` the file, partition or field it is about."""

    code: str
    subject: str
    message: str
    kind: Kind


# ---------------------------------------------------------------------------- listings


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int


@dataclass(frozen=True)
class ImageListing:
    """What the reader saw of one image directory: every regular file with its size, the
    contents of the small metadata files (`is_metadata`), the first bytes of each stream's
    first chunk, and what could not be read."""

    name: str
    files: tuple[FileEntry, ...]
    texts: Mapping[str, str] = field(default_factory=dict)
    heads: Mapping[str, bytes] = field(default_factory=dict)
    problems: tuple[Finding, ...] = ()
    path: str = ""
    """Where the directory was read (only the reader uses it)."""
    readable: bool = True
    """False when the directory itself was not read (its problems say why)."""


CHECKSUM_FILES: Mapping[str, str] = {
    "MD5SUMS": "md5",
    "SHA1SUMS": "sha1",
    "SHA256SUMS": "sha256",
    "SHA512SUMS": "sha512",
    "B2SUMS": "blake2b",
}
"""Clonezilla's image checksum files and the hashlib algorithm of each (b2sum is
BLAKE2b-512, hashlib.blake2b's default)."""

_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "blake2b": 128}
MANIFEST = "manifest"
"""The `source` of checksums declared in Git (Image.integrity.manifest, SHA-256)."""

_METADATA_NAMES = frozenset(
    {"disk", "parts", "dev-fs.list", "lvm_vg_dev.list", "lvm_logv.list", *CHECKSUM_FILES}
)


def is_metadata(name: str) -> bool:
    """Small files whose content the judge reads (the reader loads exactly these)."""
    return name in _METADATA_NAMES or name.endswith("-pt.sf")


# ---------------------------------------------------------------------------- stream names


@dataclass(frozen=True)
class StreamFile:
    """One file of a partition stream, as its name says."""

    name: str
    partition: str
    format: StreamFormat
    filesystem: str | None
    compression: Compression | None
    """None when the name does not say (ntfsclone, dd, partimage)."""
    chunk: str | None
    """The split suffix (aa, ab, ... or partimage's 000, 001); None for an unsplit file."""


_NAME_COMPRESSION: dict[str, Compression] = {
    c.value: c for c in Compression if c is not Compression.uncompressed
}
_NAME_COMPRESSION["uncomp"] = Compression.uncompressed
_COMP = "|".join(sorted(_NAME_COMPRESSION))
_LETTERS = r"[a-z]{2,3}"
_PARTCLONE = re.compile(
    rf"(?P<part>.+?)\.(?P<fs>[a-z0-9_+]+)-ptcl-img\.(?P<comp>{_COMP})(?:\.(?P<chunk>{_LETTERS}))?"
)
# ntfsclone and dd names carry no compression in Clonezilla; an older `.gz.aa` style is
# accepted, but the last token is always the chunk, so `.gz` alone is the 182nd chunk.
_NTFSCLONE = re.compile(
    rf"(?P<part>.+?)\.ntfs-img(?:\.(?P<comp>{_COMP})(?=\.))?(?:\.(?P<chunk>{_LETTERS}))?"
)
_DD = re.compile(
    rf"(?P<part>.+?)\.dd-img(?:\.(?P<comp>{_COMP})(?=\.))?(?:\.(?P<chunk>{_LETTERS}))?"
)
_PARTIMAGE_CHUNK = re.compile(rf"{_LETTERS}|[0-9]{{3}}")


def parse_stream_name(name: str, partitions: Iterable[str] = ()) -> StreamFile | None:
    """The stream a file name belongs to, or None when it is no stream file.

    partimage names (`sda1.aa`) look like many other names, so they are recognised only
    for the partitions given (as `parts` names them, after `to_filename`).
    """
    for pattern, fmt in (
        (_PARTCLONE, StreamFormat.partclone),
        (_NTFSCLONE, StreamFormat.ntfsclone),
        (_DD, StreamFormat.dd),
    ):
        match = pattern.fullmatch(name)
        if match is None:
            continue
        groups = match.groupdict()
        comp = groups.get("comp")
        fs = groups.get("fs") or ("ntfs" if fmt is StreamFormat.ntfsclone else None)
        return StreamFile(
            name=name,
            partition=groups["part"],
            format=fmt,
            filesystem=fs,
            compression=_NAME_COMPRESSION[comp] if comp else None,
            chunk=groups.get("chunk"),
        )
    for part in partitions:
        if name == part:
            return StreamFile(name, part, StreamFormat.partimage, None, None, None)
        rest = name.removeprefix(part + ".")
        if rest != name and _PARTIMAGE_CHUNK.fullmatch(rest):
            return StreamFile(name, part, StreamFormat.partimage, None, None, rest)
    return None


def chunk_index(chunk: str) -> int:
    """Position of a split suffix in its sequence: aa -> 0, ab -> 1, ba -> 26; 000 -> 0."""
    if chunk.isdigit():
        return int(chunk)
    value = 0
    for letter in chunk:
        value = value * 26 + (ord(letter) - ord("a"))
    return value


def chunk_suffix(index: int, like: str) -> str:
    """The suffix at `index` in the sequence `like` belongs to (same length and alphabet)."""
    if like.isdigit():
        return f"{index:0{len(like)}d}"
    letters = []
    for _ in like:
        index, rest = divmod(index, 26)
        letters.append(chr(ord("a") + rest))
    return "".join(reversed(letters))


def to_filename(device: str) -> str:
    """Clonezilla's file name for a device (cciss/c0d0p1 -> cciss-c0d0p1)."""
    return device.replace("/", "-")


def heads_to_read(names: Iterable[str], parts_text: str | None) -> list[str]:
    """The files whose first bytes the judge wants: the first chunk of every stream."""
    parts = [to_filename(p) for p in parse_devices(parts_text or "")[0]]
    wanted = []
    for name in sorted(names):
        stream = parse_stream_name(name, parts)
        if stream is not None and (stream.chunk is None or chunk_index(stream.chunk) == 0):
            wanted.append(name)
    return wanted


def is_image(listing: ImageListing) -> bool:
    """Whether a directory under the images root is (or was meant to be) a Clonezilla image:
    Clonezilla's own test (a `disk` or `parts` file), or any other file only images have."""
    names = {f.name for f in listing.files}
    if listing.problems or names & {"disk", "parts", "clonezilla-img", *CHECKSUM_FILES}:
        return True
    return any(parse_stream_name(n) is not None or n.endswith("-pt.sf") for n in names)


# ---------------------------------------------------------------------------- magic bytes

_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", Compression.gz),
    (b"BZh", Compression.bz2),
    (b"\x89LZO\x00\r\n\x1a\n", Compression.lzo),
    (b"\xfd7zXZ\x00", Compression.xz),
    (b"LZIP", Compression.lzip),
    (b"LRZI", Compression.lrz),
    (b"\x04\x22\x4d\x18", Compression.lz4),
    (b"\x02\x21\x4c\x18", Compression.lz4),  # lz4 legacy frame (lz4 -l)
    (b"\x28\xb5\x2f\xfd", Compression.zst),
    (b"\x5d\x00\x00", Compression.lzma),  # lzma-alone with the usual properties byte
)
_RAW_MAGIC = (b"partclone-image", b"\x00ntfsclone-image", b"PaRtImAgE-VoLuMe")
HEAD_BYTES = 16
"""How many leading bytes of a stream the judge looks at."""


def sniff_compression(head: bytes) -> Compression | None:
    """The compression a stream's first bytes show: a compressor's magic, `uncompressed`
    for a raw partclone, ntfsclone or partimage stream, None when it cannot tell."""
    for magic, compression in _MAGIC:
        if head.startswith(magic):
            return compression
    if head.startswith(_RAW_MAGIC):
        return Compression.uncompressed
    return None


# ---------------------------------------------------------------------------- metadata files


_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.:/-]{0,63}")


def parse_devices(text: str) -> tuple[list[str], list[str]]:
    """`disk` and `parts`: device names separated by white space -> (names, bad tokens)."""
    names: list[str] = []
    bad: list[str] = []
    for token in text.split():
        (names if _DEVICE.fullmatch(token) and ".." not in token else bad).append(token)
    return names, bad


ESP_TYPES = frozenset({"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EF"})
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"


@dataclass(frozen=True)
class PartitionTable:
    label: str | None
    """"gpt" or "dos" (sfdisk's names), None when the dump does not say."""
    types: tuple[str, ...]
    """Each partition's type, upper case (a GUID for GPT, hex for dos)."""
    bootable: bool
    """A dos partition carries the boot flag."""


def parse_sfdisk_dump(text: str) -> PartitionTable:
    """An `sfdisk --dump` file (`DISK-pt.sf`)."""
    label = None
    types: list[str] = []
    bootable = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("label:"):
            label = line.partition(":")[2].strip() or None
        elif " : " in line:
            attrs = [a.strip() for a in line.partition(" : ")[2].split(",")]
            for attr in attrs:
                key, _, value = attr.partition("=")
                if key.strip() == "type":
                    types.append(value.strip().upper())
            bootable = bootable or "bootable" in attrs
    return PartitionTable(label, tuple(types), bootable)


def firmware_of(table: PartitionTable) -> Firmware | None:
    """The firmware a disk with this table boots with, when the table shows it: an EFI
    system partition means UEFI; a BIOS boot partition (GPT) or a boot flag (dos), BIOS."""
    if any(t in ESP_TYPES for t in table.types):
        return Firmware.uefi
    if BIOS_BOOT_TYPE in table.types or (table.label == "dos" and table.bootable):
        return Firmware.bios
    return None


def parse_dev_fs(text: str) -> dict[str, str]:
    """`dev-fs.list`: `/dev/sda1 ntfs 100G` lines -> {"sda1": "ntfs"}."""
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and not words[0].startswith("#"):
            found[to_filename(words[0].removeprefix("/dev/"))] = words[1]
    return found


def parse_lvm(pv_text: str, lv_text: str) -> tuple[set[str], list[str]]:
    """`lvm_vg_dev.list` (`VG /dev/sda2 UUID`) and `lvm_logv.list` (`/dev/VG/LV FS...`) ->
    (partitions that are LVM physical volumes, logical volumes' stream names in order)."""
    pvs = {
        to_filename(words[1].removeprefix("/dev/"))
        for words in (line.split() for line in pv_text.splitlines())
        if len(words) >= 2
    }
    lvs = [
        to_filename(words[0].removeprefix("/dev/"))
        for words in (line.split() for line in lv_text.splitlines())
        if words and words[0].startswith("/dev/")
    ]
    return pvs, lvs


def parse_checksums(text: str, algorithm: str) -> tuple[dict[str, str], list[int]]:
    """A GNU checksum file (`HEX  NAME` or `HEX *NAME`; a leading backslash escapes `\\\\`
    and `\\n` in the name) -> ({name: hex}, numbers of the lines that are not such a line).
    A name with a `/` is refused: Clonezilla sums the files of the image directory only."""
    entries: dict[str, str] = {}
    bad: list[int] = []
    length = _HEX_LENGTH[algorithm]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        digest, sep, rest = body[:length], body[length : length + 2], body[length + 2 :]
        valid = (
            re.fullmatch(r"[0-9a-fA-F]+", digest) is not None
            and len(digest) == length
            and sep in {"  ", " *"}
            and rest != ""
        )
        name = _unescape(rest) if escaped else rest
        if not valid or name is None or "/" in name or name in {".", ".."}:
            bad.append(number)
            continue
        entries[name] = digest.lower()
    return entries, bad


def _unescape(name: str) -> str | None:
    out, i = [], 0
    while i < len(name):
        if name[i] == "\\":
            nxt = name[i + 1 : i + 2]
            if nxt not in {"\\", "n", "r"}:
                return None
            out.append({"\\": "\\", "n": "\n", "r": "\r"}[nxt])
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class PartitionReport:
    name: str
    format: StreamFormat | None
    filesystem: str | None
    compression: Compression | None
    chunks: tuple[str, ...]
    """The stream's files in restore order."""
    size: int


@dataclass(frozen=True)
class ImageReport:
    name: str
    present: bool
    disks: tuple[str, ...] = ()
    firmware: Firmware | None = None
    partitions: tuple[PartitionReport, ...] = ()
    size: int = 0
    findings: tuple[Finding, ...] = ()
    verified_with: tuple[str, ...] = ()
    """The checksum sources that were checked (e.g. MD5SUMS, manifest); empty unless
    verification ran."""

    @property
    def status(self) -> Status:
        kinds = {f.kind for f in self.findings}
        for kind, status in _STATUS_ORDER:
            if kind in kinds:
                return status
        return Status.ok


def _finding(code: str, subject: str, message: str, kind: Kind) -> Finding:
    return Finding(code, subject, message, kind)


def _missing(name: str, why: str) -> Finding:
    return _finding("MissingMetadata", name, f"{name} is missing: {why}", Kind.incomplete)


def judge(listing: ImageListing) -> ImageReport:
    """Completeness of one image directory (no checksums: see `verify`)."""
    if not listing.readable:
        return ImageReport(listing.name, present=True, findings=listing.problems)
    sizes = {f.name: f.size for f in listing.files}
    findings: list[Finding] = list(listing.problems)

    disks: list[str] = []
    if "disk" in sizes:
        disks, bad = parse_devices(listing.texts.get("disk", ""))
        findings += _malformed("disk", bad, empty=not disks)
    else:
        findings.append(_missing("disk", "the image cannot be restored as a whole disk"))

    parts: list[str] | None = None
    if "parts" in sizes:
        parts, bad = parse_devices(listing.texts.get("parts", ""))
        parts = [to_filename(p) for p in parts]
        findings += _malformed("parts", bad, empty=not parts)
    else:
        findings.append(_missing("parts", "the partitions to restore are unknown"))

    if "clonezilla-img" not in sizes:
        findings.append(_missing("clonezilla-img", "Clonezilla writes it with every image"))

    tables = {}
    for disk in disks:
        found, table = _partition_table_findings(to_filename(disk), sizes, listing.texts)
        findings += found
        if table is not None:
            tables[disk] = table

    pvs, lvs = parse_lvm(
        listing.texts.get("lvm_vg_dev.list", ""), listing.texts.get("lvm_logv.list", "")
    )
    streams = _group_streams(listing.files, parts or [])
    fs_by_dev = parse_dev_fs(listing.texts.get("dev-fs.list", ""))
    reports, stream_findings = _partitions(
        listing, parts, pvs=pvs, lvs=lvs, streams=streams, fs_by_dev=fs_by_dev
    )
    findings += stream_findings

    firmwares = {firmware_of(t) for t in tables.values()} - {None}
    return ImageReport(
        name=listing.name,
        present=True,
        disks=tuple(disks),
        firmware=firmwares.pop() if len(firmwares) == 1 else None,
        partitions=tuple(reports),
        size=sum(sizes.values()),
        findings=tuple(findings),
    )


def _malformed(name: str, bad: list[str], *, empty: bool) -> list[Finding]:
    if bad:
        shown = ", ".join(repr(b) for b in bad[:3])
        return [_finding("MalformedMetadata", name, f"{name} holds {shown}", Kind.incomplete)]
    if empty:
        return [_finding("MalformedMetadata", name, f"{name} names no device", Kind.incomplete)]
    return []


def _partition_table_findings(
    disk: str, sizes: Mapping[str, int], texts: Mapping[str, str]
) -> tuple[list[Finding], PartitionTable | None]:
    found: list[Finding] = []
    table = None
    if f"{disk}-pt.sf" in sizes:
        table = parse_sfdisk_dump(texts.get(f"{disk}-pt.sf", ""))
    else:
        found.append(_missing(f"{disk}-pt.sf", f"the partition table of {disk}"))
    if f"{disk}-mbr" not in sizes:
        found.append(_missing(f"{disk}-mbr", f"the first sector of {disk}"))
    gpt = (table is not None and table.label == "gpt") or f"{disk}-gpt.sgdisk" in sizes
    if gpt and f"{disk}-gpt-1st" not in sizes:
        found.append(_missing(f"{disk}-gpt-1st", f"the GPT header and entries of {disk}"))
    return found, table


@dataclass(frozen=True)
class _StreamKey:
    partition: str
    format: StreamFormat
    filesystem: str | None
    compression: Compression | None


def _group_streams(
    files: Iterable[FileEntry], partitions: Sequence[str]
) -> dict[_StreamKey, list[StreamFile]]:
    names = sorted(f.name for f in files)
    streams = [s for s in map(parse_stream_name, names) if s is not None]
    # partimage names are bare (`sda1.aa`): look for them only where no other stream is,
    # so that a stray `sda1.log` beside a partclone stream is not taken for one.
    taken = {s.partition for s in streams}
    others = [p for p in partitions if p not in taken]
    streams += [
        s
        for s in (parse_stream_name(n, others) for n in names)
        if s is not None and s.format is StreamFormat.partimage
    ]
    groups: dict[_StreamKey, list[StreamFile]] = {}
    for stream in sorted(streams, key=lambda s: s.name):
        key = _StreamKey(stream.partition, stream.format, stream.filesystem, stream.compression)
        groups.setdefault(key, []).append(stream)
    return groups


def _partitions(
    listing: ImageListing,
    parts: list[str] | None,
    *,
    pvs: set[str],
    lvs: list[str],
    streams: Mapping[_StreamKey, list[StreamFile]],
    fs_by_dev: Mapping[str, str],
) -> tuple[list[PartitionReport], list[Finding]]:
    sizes = {f.name: f.size for f in listing.files}
    findings: list[Finding] = []
    by_partition: dict[str, list[_StreamKey]] = {}
    for key in streams:
        by_partition.setdefault(key.partition, []).append(key)

    expected = [p for p in (parts or []) if p not in pvs] + [lv for lv in lvs if lv not in pvs]
    # Without `parts` the streams are all there is to go by (already reported missing).
    order = list(dict.fromkeys(expected if parts is not None else sorted(by_partition)))
    order += sorted(p for p in by_partition if p not in order)

    reports = []
    for partition in order:
        keys = by_partition.get(partition, [])
        if partition not in expected and parts is not None:
            names = ", ".join(s.name for k in keys for s in streams[k])
            findings.append(
                _finding(
                    "OrphanStream",
                    partition,
                    f"{names}: a stream for {partition}, which parts does not list",
                    Kind.incomplete,
                )
            )
        if not keys:
            findings.append(
                _finding(
                    "MissingStream",
                    partition,
                    f"{partition} is listed in parts but has no image file",
                    Kind.incomplete,
                )
            )
            reports.append(PartitionReport(partition, None, fs_by_dev.get(partition), None, (), 0))
            continue
        if len(keys) > 1:
            kinds = ", ".join(_describe(k) for k in keys)
            findings.append(
                _finding(
                    "AmbiguousStream",
                    partition,
                    f"{partition} has more than one stream ({kinds})",
                    Kind.incomplete,
                )
            )
        key = keys[0]
        files = streams[key]
        ordered, chunk_findings = _chunks(partition, files, sizes)
        findings += chunk_findings
        compression = key.compression
        head = listing.heads.get(ordered[0].name) if ordered else None
        sniffed = sniff_compression(head) if head is not None else None
        findings += _compression_findings(key, ordered, head, sniffed)
        if compression is None and head is not None:
            # As Clonezilla does: no known magic in an ntfsclone/dd/partimage stream means raw.
            compression = sniffed or Compression.uncompressed
        reports.append(
            PartitionReport(
                partition,
                key.format,
                key.filesystem or fs_by_dev.get(partition),
                compression,
                tuple(s.name for s in ordered),
                sum(sizes[s.name] for s in ordered),
            )
        )
    return reports, findings


def _describe(key: _StreamKey) -> str:
    parts = [key.format.value, key.filesystem or "", key.compression or ""]
    return "/".join(p for p in parts if p)


def _chunks(
    partition: str, files: list[StreamFile], sizes: Mapping[str, int]
) -> tuple[list[StreamFile], list[Finding]]:
    findings: list[Finding] = []
    unsplit = [f for f in files if f.chunk is None]
    split = [f for f in files if f.chunk is not None]
    if unsplit and split:
        findings.append(
            _finding(
                "MixedChunkNames",
                partition,
                f"{unsplit[0].name} and split chunks ({split[0].name}, ...) both exist",
                Kind.incomplete,
            )
        )
        return unsplit, findings
    if unsplit:
        ordered = unsplit
    else:
        styles = {(len(f.chunk or ""), (f.chunk or "").isdigit()) for f in split}
        if len(styles) > 1:
            shown = ", ".join(f.name for f in split[:4])
            findings.append(
                _finding(
                    "MixedChunkNames",
                    partition,
                    f"chunk suffixes of different lengths: {shown}",
                    Kind.incomplete,
                )
            )
        ordered = sorted(split, key=lambda f: (len(f.chunk or ""), chunk_index(f.chunk or "")))
        findings += _gaps(partition, ordered)

    for f in ordered:
        if sizes[f.name] == 0:
            findings.append(_finding("EmptyChunk", f.name, f"{f.name} is empty", Kind.incomplete))
    full = [sizes[f.name] for f in ordered[:-1] if sizes[f.name] > 0]
    reference = max(full, default=0)
    for f in ordered[:-1]:
        if 0 < sizes[f.name] < reference:
            findings.append(
                _finding(
                    "ChunkTruncated",
                    f.name,
                    f"{f.name} has {sizes[f.name]} bytes, less than the {reference} of its "
                    "sibling chunks: only the last chunk of a split stream may be shorter",
                    Kind.incomplete,
                )
            )
    if len(ordered) > 1 and reference and sizes[ordered[-1].name] > reference:
        last = ordered[-1].name
        findings.append(
            _finding(
                "ChunkOversized",
                last,
                f"{last}, the last chunk, is longer ({sizes[last]} bytes) than the split size "
                f"({reference}): an earlier chunk is likely shortened",
                Kind.incomplete,
            )
        )
    return ordered, findings


def _gaps(partition: str, ordered: list[StreamFile]) -> list[Finding]:
    if not ordered:
        return []
    like = ordered[0].chunk or ""
    have = {chunk_index(f.chunk or "") for f in ordered if len(f.chunk or "") == len(like)}
    prefix = ordered[0].name[: -len(like)]
    missing = [i for i in range(max(have) + 1) if i not in have]
    if not missing:
        return []
    names = [prefix + chunk_suffix(i, like) for i in missing]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return [
        _finding(
            "ChunkGap",
            partition,
            f"{partition}: missing {shown} (the stream cannot be restored)",
            Kind.incomplete,
        )
    ]


def _compression_findings(
    key: _StreamKey, ordered: list[StreamFile], head: bytes | None, sniffed: Compression | None
) -> list[Finding]:
    if head is None or not ordered or key.compression is None:
        return []
    named = key.compression
    if named is Compression.lzma and sniffed is None:
        return []  # lzma-alone has no fixed magic; its usual first bytes are only a hint
    if sniffed == named:
        return []
    seen = sniffed.value if sniffed else "no known format"
    first = ordered[0].name
    return [
        _finding(
            "CompressionMismatch",
            first,
            f"{first} is named {named.value} but starts like {seen}",
            Kind.corrupt,
        )
    ]


# ---------------------------------------------------------------------------- integrity


@dataclass(frozen=True)
class Expected:
    """One checksum to check: a file of the image, an algorithm, the expected hex digest,
    and where the expectation comes from (a Clonezilla checksum file or the manifest)."""

    file: str
    algorithm: str
    digest: str
    source: str


def expectations(
    listing: ImageListing, integrity: Integrity | None
) -> tuple[list[Expected], list[Finding]]:
    """Every checksum to check for this image: Clonezilla's own checksum files when present,
    and the manifest declared in Git when the desired Image has one."""
    wanted: list[Expected] = []
    findings: list[Finding] = []
    present = {f.name for f in listing.files}
    for source, algorithm in CHECKSUM_FILES.items():
        if source not in present:
            continue
        entries, bad = parse_checksums(listing.texts.get(source, ""), algorithm)
        if bad:
            lines = ", ".join(str(n) for n in bad[:5])
            findings.append(
                _finding(
                    "MalformedChecksums",
                    source,
                    f"{source}: line {lines} is not '<{algorithm} hex>  <file name>'",
                    Kind.corrupt,
                )
            )
        wanted += [Expected(n, algorithm, d, source) for n, d in sorted(entries.items())]
    if integrity is not None:
        wanted += [
            Expected(name, "sha256", digest.lower(), MANIFEST)
            for name, digest in sorted(integrity.manifest.items())
        ]
    return wanted, findings


def digest_plan(wanted: Iterable[Expected]) -> dict[str, frozenset[str]]:
    """Which algorithms each file needs, so that every file is read once."""
    plan: dict[str, set[str]] = {}
    for item in wanted:
        plan.setdefault(item.file, set()).add(item.algorithm)
    return {name: frozenset(algos) for name, algos in sorted(plan.items())}


def verify(
    report: ImageReport,
    wanted: Sequence[Expected],
    digests: Mapping[str, Mapping[str, str] | None],
    integrity: Integrity | None,
    earlier: Sequence[Finding] = (),
) -> ImageReport:
    """Add the integrity findings to a report: every expected checksum compared with the
    computed digests (None: the file could not be read), and every stream chunk covered by
    the trusted source: the manifest when the desired Image says so, else Clonezilla's
    checksum files."""
    findings = list(earlier)
    missing: dict[str, list[str]] = {}
    wrong: dict[str, list[str]] = {}
    for item in wanted:
        got = digests.get(item.file)
        if got is None:
            missing.setdefault(item.file, []).append(item.source)
        elif got.get(item.algorithm) != item.digest:
            wrong.setdefault(item.file, []).append(f"{item.algorithm} in {item.source}")
    # One finding per file, however many checksum files list it.
    for name, listed_in in sorted(missing.items()):
        findings.append(
            _finding(
                "ListedFileMissing",
                name,
                f"{name} is missing or unreadable; {', '.join(listed_in)} list it",
                Kind.incomplete,
            )
        )
    for name, expected in sorted(wrong.items()):
        findings.append(
            _finding(
                "ChecksumMismatch",
                name,
                f"{name} does not match its {', '.join(expected)}",
                Kind.corrupt,
            )
        )
    trusted = _trusted_sources(integrity)
    covering = {item.file for item in wanted if item.source in trusted}
    chunks = [c for p in report.partitions for c in p.chunks]
    if not covering:
        which = "a manifest in Git" if MANIFEST in trusted else "Clonezilla checksum files"
        findings.append(
            _finding(
                "NoChecksums",
                report.name,
                f"nothing to verify against: no {which} (save with ocs-sr -gm, -gs or -gb)",
                Kind.unverified,
            )
        )
    else:
        for chunk in chunks:
            if chunk not in covering:
                findings.append(
                    _finding(
                        "NotCovered",
                        chunk,
                        f"{chunk} is not covered by {' or '.join(sorted(trusted))}",
                        Kind.unverified,
                    )
                )
    sources = tuple(sorted({item.source for item in wanted}))
    return replace(report, findings=(*report.findings, *findings), verified_with=sources)


def _trusted_sources(integrity: Integrity | None) -> set[str]:
    if integrity is not None and integrity.source is IntegritySource.manifest:
        return {MANIFEST}
    return set(CHECKSUM_FILES)


# ---------------------------------------------------------------------------- desired state


def compare(reports: Sequence[ImageReport], images: Mapping[str, Image]) -> list[ImageReport]:
    """Set the reports beside the desired Image documents: a declared image that is not on
    disk, one on disk that nobody declared (a note), and a `disk` file or partition table
    that contradicts the declared disk or firmware."""
    by_name = {r.name: r for r in reports}
    out = []
    for name in sorted({*by_name, *images}):
        report = by_name.get(name)
        image = images.get(name)
        if report is None:
            assert image is not None
            out.append(
                ImageReport(
                    name=name,
                    present=False,
                    findings=(
                        _finding(
                            "NotOnDisk",
                            name,
                            f"{name} is declared in the site repo but not under the images root",
                            Kind.missing,
                        ),
                    ),
                )
            )
            continue
        extra: list[Finding] = []
        if image is None:
            extra.append(
                _finding(
                    "Undeclared",
                    name,
                    f"{name} is on disk but no Image document declares it",
                    Kind.note,
                )
            )
        elif report.present:
            extra += _contradictions(report, image)
        out.append(replace(report, findings=(*report.findings, *extra)))
    return out


def _contradictions(report: ImageReport, image: Image) -> list[Finding]:
    found = []
    if report.disks and list(report.disks) != [image.disk.device]:
        found.append(
            _finding(
                "DiskMismatch",
                "disk",
                f"the image was saved from {' '.join(report.disks)}, the Image document "
                f"says {image.disk.device}",
                Kind.mismatch,
            )
        )
    if report.firmware is not None and report.firmware is not image.firmware:
        found.append(
            _finding(
                "FirmwareMismatch",
                "firmware",
                f"the partition table is for {report.firmware.value}, the Image document "
                f"says {image.firmware.value}",
                Kind.mismatch,
            )
        )
    return found
