"""A Clonezilla image as a client reads it before restoring: its metadata and streams.

An image directory (saved by `ocs-sr savedisk`) holds `disk` (the disk it was saved from),
`parts` (its partitions, in restore order), the partition table as `sfdisk -d` wrote it
(`DISK-pt.sf`), parted's view (`DISK-pt.parted`, with the disk's size), and one partclone
stream per partition, compressed and split into chunks (`sda1.ntfs-ptcl-img.gz.aa`, `.ab`,
...). This module turns the text of those files into an `Image`, and the image into
`Target`s: where each partition's stream goes on the PC's disk and on which udpcast port
it arrives (the first partition on the job's port, each next one 2 more).

Purely computational.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reconciler import fields
from reconciler.images import (
    Compression,
    StreamFile,
    StreamFormat,
    chunk_index,
    parse_stream_name,
)
from reconciler.lab.ocs_job import DEFAULT_MCAST_PORT

DECOMPRESS: Mapping[Compression, tuple[str, ...]] = {
    Compression.gz: ("gzip", "-dc"),
    Compression.zst: ("zstd", "-dc"),
    Compression.bz2: ("bzip2", "-dc"),
    Compression.xz: ("xz", "-dc"),
    Compression.lzma: ("xz", "--format=lzma", "-dc"),
    Compression.lz4: ("lz4", "-dc"),
    Compression.lzo: ("lzop", "-dc"),
    Compression.lzip: ("lzip", "-dc"),
    Compression.uncompressed: ("cat",),
}
"""How a stream's compression (its file name says which) is undone; lrzip cannot stream."""
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PARTED_DISK = re.compile(r"^Disk /dev/\S+: (\d+)s$", re.MULTILINE)


class ImageError(ValueError):
    """The image's metadata is missing, inconsistent or not a kind the lab restores."""


@dataclass(frozen=True)
class TableEntry:
    """One partition of an `sfdisk -d` dump (sizes in sectors)."""

    number: int
    start: int
    size: int
    type: str
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False


@dataclass(frozen=True)
class PartitionTable:
    label: str
    label_id: str | None
    first_lba: int | None
    last_lba: int | None
    sector_size: int
    entries: tuple[TableEntry, ...]

    def entry(self, number: int) -> TableEntry:
        for entry in self.entries:
            if entry.number == number:
                return entry
        raise ImageError(f"the partition table has no partition {number}")


def parse_sfdisk(text: str) -> PartitionTable:
    """An `sfdisk -d` dump (Clonezilla's `DISK-pt.sf` is one). Device names are not kept:
    a partition is known by its number (the digits its device name ends with).

    Purely computational.
    """
    header: dict[str, str] = {}
    entries: list[TableEntry] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        device, sep, rest = line.partition(" : ")
        if sep:
            entries.append(_table_entry(device.strip(), rest))
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ImageError(f"not an sfdisk dump line: {line[:80]!r}")
        header[key.strip()] = value.strip()
    if "label" not in header:
        raise ImageError("the sfdisk dump names no label (gpt, dos)")
    if header.get("unit", "sectors") != "sectors":
        raise ImageError(f"sfdisk unit {header['unit']!r}: only sectors are understood")
    numbers = [entry.number for entry in entries]
    if len(set(numbers)) != len(numbers):
        raise ImageError(f"the sfdisk dump lists a partition twice: {numbers}")
    return PartitionTable(
        label=header["label"],
        label_id=header.get("label-id"),
        first_lba=_int_or_none(header.get("first-lba")),
        last_lba=_int_or_none(header.get("last-lba")),
        sector_size=_int_or_none(header.get("sector-size")) or 512,
        entries=tuple(sorted(entries, key=lambda entry: entry.number)),
    )


def _table_entry(device: str, rest: str) -> TableEntry:
    number = re.search(r"(\d+)$", device)
    if number is None:
        raise ImageError(f"partition {device!r}: its name ends with no number")
    values: dict[str, str] = {}
    flags: set[str] = set()
    for item in _split_fields(rest):
        key, sep, value = item.partition("=")
        if sep:
            values[key.strip()] = _unquote(value.strip())
        elif item.strip():
            flags.add(item.strip())
    try:
        return TableEntry(
            number=int(number.group(1)),
            start=int(values["start"]),
            size=int(values["size"]),
            type=values.get("type", ""),
            uuid=values.get("uuid"),
            name=values.get("name"),
            attrs=values.get("attrs"),
            bootable="bootable" in flags,
        )
    except (KeyError, ValueError) as error:
        raise ImageError(f"partition {device}: no usable start and size ({error})") from None


def _split_fields(text: str) -> list[str]:
    """Split at commas outside double quotes (a GPT name may hold a comma)."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def table_differences(expected: PartitionTable, actual: PartitionTable) -> list[str]:
    """What differs between two partition tables on the fields that make a disk boot the
    same: label and its id, the usable area, and each partition's place, size, type, id,
    name and flags. Device names do not count. Purely computational."""
    problems = []
    for what, want, got in (
        ("label", expected.label, actual.label),
        ("label-id", _fold(expected.label_id), _fold(actual.label_id)),
        ("first-lba", expected.first_lba, actual.first_lba),
        ("last-lba", expected.last_lba, actual.last_lba),
        ("sector-size", expected.sector_size, actual.sector_size),
    ):
        if want != got:
            problems.append(f"{what} {got}, the image has {want}")
    want_numbers = [entry.number for entry in expected.entries]
    got_numbers = [entry.number for entry in actual.entries]
    if want_numbers != got_numbers:
        problems.append(f"partitions {got_numbers}, the image has {want_numbers}")
    for want_entry in expected.entries:
        got_entry = next((e for e in actual.entries if e.number == want_entry.number), None)
        if got_entry is None:
            continue
        for what in ("start", "size", "type", "uuid", "name", "attrs", "bootable"):
            want_value = getattr(want_entry, what)
            got_value = getattr(got_entry, what)
            if what in ("type", "uuid"):
                want_value, got_value = _fold(want_value), _fold(got_value)
            if want_value != got_value:
                problems.append(
                    f"partition {want_entry.number}: {what} {got_value!r}, "
                    f"the image has {want_value!r}"
                )
    return problems


def _fold(value: str | None) -> str | None:
    return value.upper() if value is not None else None


def table_script(text: str) -> str:
    """The sfdisk input that recreates the image's table, as ocs-sr feeds it: without
    `last-lba`, so that sfdisk places the backup GPT at the end of the disk it writes.

    Purely computational.
    """
    kept = [line for line in text.splitlines() if not line.startswith("last-lba:")]
    return "\n".join(kept) + "\n"


@dataclass(frozen=True)
class Stream:
    """One partition's stream in the image: partclone format, compressed, maybe in chunks."""

    part: str
    fs: str
    compression: Compression
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class Image:
    """What a client reads of an image before it restores it."""

    name: str
    disk: str
    parts: tuple[str, ...]
    table: PartitionTable
    table_text: str
    disk_sectors: int
    streams: tuple[Stream, ...]
    files: Mapping[str, int]
    """Every file of the image directory and its size."""

    def stream(self, part: str) -> Stream:
        return next(stream for stream in self.streams if stream.part == part)

    @property
    def disk_bytes(self) -> int:
        return self.disk_sectors * self.table.sector_size

    @property
    def stream_bytes(self) -> int:
        """What a client receives: every chunk of every partition, compressed."""
        return sum(self.files[chunk] for stream in self.streams for chunk in stream.chunks)


def parse_disk(text: str) -> str:
    """The image's `disk` file: the one disk it was saved from. Purely computational."""
    words = text.split()
    if len(words) != 1:
        raise ImageError(f"the image's disk file names {len(words)} disks; one is restored")
    try:
        return fields.disk_device(words[0])
    except ValueError as error:
        raise ImageError(f"disk file: {error}") from None


def parse_parts(text: str) -> tuple[str, ...]:
    """The image's `parts` file: its partitions in restore order. Purely computational."""
    parts = tuple(text.split())
    if not parts:
        raise ImageError("the image's parts file names no partition")
    for part in parts:
        if not _PART.fullmatch(part):
            raise ImageError(f"parts file: {part[:70]!r} is not a partition name")
    if len(set(parts)) != len(parts):
        raise ImageError(f"parts file names a partition twice: {' '.join(parts)}")
    return parts


def streams_of(parts: Sequence[str], names: Iterable[str]) -> tuple[Stream, ...]:
    """Each partition's partclone stream from the image's file names
    (`sda1.ntfs-ptcl-img.gz.aa`, `.ab`, ... or one unsplit `sda1.ext4-ptcl-img.zst`), its
    chunks in split order. Names are read by `reconciler.images`, as the inventory reads
    them. Purely computational.
    """
    found: dict[str, list[StreamFile]] = {part: [] for part in parts}
    for name in names:
        stream = parse_stream_name(name, parts)
        if stream is not None and stream.partition in found:
            found[stream.partition].append(stream)
    streams = []
    for part in parts:
        files = found[part]
        if not files:
            raise ImageError(f"{part}: the image holds no stream of it")
        formats = sorted({f.format.value for f in files})
        if formats != [StreamFormat.partclone.value]:
            raise ImageError(
                f"{part}: a {'/'.join(formats)} stream; the lab restores partclone streams only"
            )
        kinds = {(f.filesystem, f.compression) for f in files}
        if len(kinds) != 1:
            raise ImageError(f"{part}: streams of different kinds: {sorted(map(str, kinds))}")
        split = [f.chunk is not None for f in files]
        if any(split) and not all(split):
            raise ImageError(f"{part}: both an unsplit stream and chunks of one")
        if not any(split) and len(files) > 1:
            raise ImageError(f"{part}: more than one stream: {sorted(f.name for f in files)}")
        fs, compression = kinds.pop()
        if fs is None or compression is None or compression not in DECOMPRESS:
            raise ImageError(f"{part}: a {compression} stream cannot be read as a pipe here")
        ordered = sorted(files, key=lambda f: chunk_index(f.chunk or "aa"))
        streams.append(Stream(part, fs, compression, tuple(f.name for f in ordered)))
    return tuple(streams)


def disk_sectors(table: PartitionTable, parted_text: str = "") -> int:
    """How big the source disk was, in sectors: from `DISK-pt.parted` when the image has
    one ('Disk /dev/sda: 131072s', as ocs-sr reads it), else from a GPT's layout (the
    backup table fills the sectors after last-lba as the primary fills those before
    first-lba). Purely computational."""
    found = _PARTED_DISK.search(parted_text)
    if found:
        return int(found.group(1))
    if table.label == "gpt" and table.first_lba is not None and table.last_lba is not None:
        return table.last_lba + table.first_lba
    raise ImageError("the image says nothing of its disk's size (no DISK-pt.parted, not GPT)")


def image_from(
    name: str,
    files: Mapping[str, int],
    *,
    disk_text: str,
    parts_text: str,
    table_text: str,
    parted_text: str = "",
) -> Image:
    """The image from its file list and the text of its metadata files. Purely
    computational."""
    disk = parse_disk(disk_text)
    parts = parse_parts(parts_text)
    table = parse_sfdisk(table_text)
    streams = streams_of(parts, files)
    image = Image(
        name=name,
        disk=disk,
        parts=parts,
        table=table,
        table_text=table_text,
        disk_sectors=disk_sectors(table, parted_text),
        streams=streams,
        files=dict(files),
    )
    for part in parts:
        entry = table.entry(partition_number(disk, part))
        if entry.start + entry.size > image.disk_sectors:
            raise ImageError(f"{part} ends after the end of its disk")
    return image


def metadata_names(disk: str) -> tuple[str, str]:
    """The image's partition table files of `disk`: (DISK-pt.sf, DISK-pt.parted)."""
    return f"{disk}-pt.sf", f"{disk}-pt.parted"


def partition_number(disk: str, part: str) -> int:
    """'loop0', 'loop0p2' -> 2; 'sda', 'sda10' -> 10; 'nvme0n1', 'nvme0n1p1' -> 1.

    Linux puts a 'p' between a disk name ending in a digit and the number. Purely
    computational.
    """
    rest = part[len(disk) :] if part.startswith(disk) else ""
    if disk[-1:].isdigit():
        rest = rest[1:] if rest.startswith("p") else ""
    if not rest.isdigit():
        raise ImageError(f"{part} is not a partition of {disk}")
    return int(rest)


def partition_device(disk: str, number: int) -> str:
    """'/dev/loop0p2', '/dev/sda2': the name ocs-sr gives a partition in its report."""
    separator = "p" if disk[-1:].isdigit() else ""
    return f"/dev/{disk}{separator}{number}"


@dataclass(frozen=True)
class Target:
    """Where one partition's stream goes on the PC's disk, and where it comes from."""

    part: str
    device: str
    number: int
    offset: int
    """Bytes from the start of the disk."""
    size: int
    stream: Stream
    port: int
    """udpcast port (multicast only)."""


def targets(image: Image, disk: str, base_port: int = DEFAULT_MCAST_PORT) -> tuple[Target, ...]:
    """Each partition in `parts` order: its place on the disk and its udpcast port (the
    first gets `base_port`, each next one 2 more). Purely computational."""
    if base_port + 2 * (len(image.parts) - 1) + 1 > 65535:
        raise ImageError(f"{len(image.parts)} partitions from port {base_port} pass 65535")
    sector = image.table.sector_size
    found = []
    for index, part in enumerate(image.parts):
        number = partition_number(image.disk, part)
        entry = image.table.entry(number)
        found.append(
            Target(
                part=part,
                device=partition_device(disk, number),
                number=number,
                offset=entry.start * sector,
                size=entry.size * sector,
                stream=image.stream(part),
                port=base_port + 2 * index,
            )
        )
    return tuple(found)
