"""The imaging part of a kitting day, played by a simulated PC with real programs.

A PC whose menu is armed runs the Clonezilla job the menu names (`ocs_job.parse_job`).
The simulated client does what ocs-sr does, step by step, from the PC's namespace:

1. reads the image's metadata over NFS with libnfs (`nfs-ls`, `nfs-cat`): the file list,
   `disk`, `parts` and the partition table files (`read_image_nfs`);
2. gives itself a zeroed disk file as big as the source disk and writes the image's
   partition table onto it with `sfdisk`, as ocs-sr does (`prepare_disk`);
3. per partition, in `parts` order, pipes the stream into the decompressor its file name
   names (`gzip -dc`, `zstd -dc`, ...) and into `partclone.FS -r -s - -O DISK
   --offset=START`: partclone writes at the partition's place in the disk file, so no loop
   device is needed. The stream comes from `udp-receiver` on port PORT + 2*i with
   Clonezilla's own flags (`--nokbd --mcast-all-addr 224.0.0.1 --ttl 1`), or, unicast,
   from `nfs-cat` of each chunk in turn (`restore_multicast`, `restore_unicast`);
4. is verified by content (`verify`): the partition table read back with `sfdisk -d`
   against the image's; the whole disk byte for byte against a reference restored from
   the same image with no network (`restore_local`: partclone writes only used blocks,
   so the source disk itself is no fair reference); and known files read back from the
   partitions (`mtype` on FAT, `ntfscat` on NTFS). udp-receiver's own words prove
   nothing: it can say "Transfer complete." having written nothing (FIELD_NOTES);
5. sends the job report line (`ocs_job.report_line`) to the server's port 6461.

Every program runs inside a namespace through a `ProcessRegistry`, so it is stopped by
PID whatever happens. Command builders are pure and tested. Clonezilla's own client
(ocs-sr itself, on a loop device) is `reconciler.lab.ocs_client`.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from loguru import logger

from reconciler import fields
from reconciler.images import Compression
from reconciler.lab import probes
from reconciler.lab.netns import Host
from reconciler.lab.ocs_image import (
    DECOMPRESS,
    Image,
    ImageError,
    Target,
    image_from,
    metadata_names,
    parse_disk,
    parse_sfdisk,
    partition_number,
    table_differences,
    table_script,
    targets,
)
from reconciler.lab.ocs_job import (
    DEFAULT_MCAST_PORT,
    REPORT_PORT,
    Job,
    Mode,
    PartitionRestore,
    space_in_use,
)
from reconciler.lab.procs import ProcessRegistry

MULTICAST_ALL_ADDR = "224.0.0.1"
"""udpcast's control group, as DRBL sets it (MULTICAST_ALL_ADDR in drbl-ocs.conf)."""
START_TIMEOUT = 30
"""Seconds a udp-receiver waits for its sender before it gives up."""
RECEIVE_TIMEOUT = 30
"""Seconds a udp-receiver waits for data in the middle of a transfer."""
PARTITION_TIMEOUT = 300.0
"""Seconds one partition's pipeline may take before it is stopped."""
TOOL_TIMEOUT = 30.0
"""Seconds for one quick program (nfs-ls, nfs-cat of a metadata file, sfdisk, mtype)."""
COMPARE_BLOCK = 1 << 20
_FAT = frozenset({"vfat", "fat", "fat12", "fat16", "fat32"})


class ImagingError(RuntimeError):
    """Restoring or verifying failed; the message says what was seen."""


# ---------------------------------------------------------------- command lines (pure)


def receiver_argv(
    port: int,
    *,
    interface: str = "e0",
    start_timeout: int = START_TIMEOUT,
    receive_timeout: int = RECEIVE_TIMEOUT,
) -> list[str]:
    """udp-receiver as ocs-sr runs it (`--nokbd --mcast-all-addr 224.0.0.1 --portbase PORT
    --ttl 1`), on the PC's kitting NIC, giving up when no sender comes or data stops.

    Purely computational.
    """
    fields.interface(interface)
    if not 1 <= port <= 65534:
        raise ValueError(f"udpcast port {port} is outside 1-65534")
    return [
        "udp-receiver", "--interface", interface, "--nokbd",
        "--mcast-all-addr", MULTICAST_ALL_ADDR, "--portbase", str(port), "--ttl", "1",
        "--start-timeout", str(start_timeout), "--receive-timeout", str(receive_timeout),
    ]  # fmt: skip


def decompress_argv(compression: Compression) -> list[str]:
    """The program that undoes a stream's compression. Purely computational."""
    try:
        return list(DECOMPRESS[compression])
    except KeyError:
        raise ImageError(f"no decompressor known for {compression!r}") from None


def partclone_argv(fs: str, disk: Path, offset: int, log: Path) -> list[str]:
    """partclone restoring a stream from stdin into the disk file at `offset` bytes.

    `-O` writes into the existing disk file (`-o` refuses an existing file) without
    truncating it; partclone.dd takes no `-r`, as in ocs-sr. Purely computational.
    """
    if not re.fullmatch(r"[a-z0-9]{1,16}", fs):
        raise ImageError(f"not a file system name: {fs!r}")
    restore = [] if fs == "dd" else ["-r"]
    return [f"partclone.{fs}", *restore, "-s", "-", "-O", str(disk), f"--offset={offset}",
            "-L", str(log)]  # fmt: skip


_CAT_URLS = 'for url do nfs-cat "$url" || exit 1; done'


def nfs_cat_argv(urls: Sequence[str]) -> list[str]:
    """One stream from NFS files read one after another (a partition's chunks).

    Purely computational."""
    return ["sh", "-c", _CAT_URLS, "nfs-cat-all", *urls]


def pipeline_script(
    source: Sequence[str],
    decompress: Sequence[str],
    restore: Sequence[str],
    errors: tuple[Path, Path, Path],
) -> str:
    """A bash script: SOURCE | DECOMPRESS | RESTORE, each stage's messages to its own file,
    then every stage's exit status on one line. Every word is quoted. Purely computational.
    """
    q = shlex.quote
    return (
        f"{shlex.join(source)} 2>{q(str(errors[0]))}"
        f" | {shlex.join(decompress)} 2>{q(str(errors[1]))}"
        f" | {shlex.join(restore)} >{q(str(errors[2]))} 2>&1\n"
        'echo "${PIPESTATUS[*]}"\n'
    )


def parse_pipeline_status(stdout: str) -> tuple[int, int, int] | None:
    """The three exit statuses the script printed last, or None. Purely computational."""
    lines = stdout.strip().splitlines()
    words = lines[-1].split() if lines else []
    if len(words) != 3 or not all(word.isdigit() for word in words):
        return None
    return int(words[0]), int(words[1]), int(words[2])


# ---------------------------------------------------------------- reading the image


def parse_nfs_ls(text: str) -> dict[str, int]:
    """Regular files and their sizes from `nfs-ls` lines
    ('-rw-r--r--  1     0     0            4 disk'). Purely computational."""
    found = {}
    for line in text.splitlines():
        words = line.split(maxsplit=5)
        if len(words) == 6 and words[0].startswith("-") and words[4].isdigit():
            found[words[5]] = int(words[4])
    return found


def nfs_url(server: IPv4Address, images_root: str, image: str, name: str = "") -> str:
    """nfs://SERVER/IMAGES_ROOT/IMAGE[/NAME] for libnfs. Purely computational."""
    root = posixpath.normpath("/" + images_root.strip("/"))
    url = f"nfs://{server}{root}/{fields.image_name(image)}"
    return f"{url}/{name}" if name else url


def read_image_nfs(
    procs: ProcessRegistry, host: Host, server: IPv4Address, images_root: str, image: str
) -> tuple[Image, int]:
    """The image's metadata read over NFS from `host` (libnfs: nfs-ls, nfs-cat).

    Returns the image and the bytes read.
    """
    url = nfs_url(server, images_root, image)
    listed = _run(procs, host.netns, ["nfs-ls", url], "nfs-ls", TOOL_TIMEOUT)
    files = parse_nfs_ls(listed.decode(errors="replace"))

    def read(name: str) -> bytes:
        if name not in files:
            raise ImageError(f"the image has no {name} file")
        return _run(procs, host.netns, ["nfs-cat", f"{url}/{name}"], "nfs-cat", TOOL_TIMEOUT)

    disk_raw, parts_raw = read("disk"), read("parts")
    disk = parse_disk(disk_raw.decode(errors="replace"))
    table_name, parted_name = metadata_names(disk)
    table_raw = read(table_name)
    parted_raw = read(parted_name) if files.get(parted_name) else b""
    found = image_from(
        image,
        files,
        disk_text=disk_raw.decode(errors="replace"),
        parts_text=parts_raw.decode(errors="replace"),
        table_text=table_raw.decode(errors="replace"),
        parted_text=parted_raw.decode(errors="replace"),
    )
    return found, len(listed) + len(disk_raw) + len(parts_raw) + len(table_raw) + len(parted_raw)


def read_image_dir(image_dir: Path) -> Image:
    """The metadata of an image directory on this machine (the reference's source)."""
    files = {p.name: p.stat().st_size for p in image_dir.iterdir() if p.is_file()}

    def text(name: str) -> str:
        path = image_dir / name
        return path.read_text(errors="replace") if path.is_file() else ""

    disk = parse_disk(text("disk"))
    table_name, parted_name = metadata_names(disk)
    return image_from(
        image_dir.name,
        files,
        disk_text=text("disk"),
        parts_text=text("parts"),
        table_text=text(table_name),
        parted_text=text(parted_name),
    )


# ---------------------------------------------------------------- restoring

SourceOf = Callable[[Target], list[str]]
"""The command whose output is one partition's stream."""


@dataclass(frozen=True)
class DiskRestore:
    """A disk file restored from an image."""

    mode: Mode
    image: Image
    disk: Path
    partitions: tuple[PartitionRestore, ...]

    @property
    def ok(self) -> bool:
        return all(part.ok for part in self.partitions)

    @property
    def stream_bytes(self) -> int:
        return sum(part.stream_bytes for part in self.partitions)

    def problems(self) -> str:
        return "; ".join(f"{p.device}: {p.problem}" for p in self.partitions if p.problem)


def prepare_disk(procs: ProcessRegistry, netns: str, disk: Path, image: Image) -> None:
    """A fresh, zeroed disk file as big as the source disk, with the image's partition
    table written by sfdisk (a file holds no stale sectors that partclone skips)."""
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as handle:
        handle.truncate(image.disk_bytes)
    script = disk.with_name(disk.name + ".sfdisk")
    script.write_text(table_script(image.table_text))
    argv = ["bash", "-c", 'exec sfdisk --quiet --wipe always "$1" < "$2"', "sfdisk"]
    _run(procs, netns, [*argv, str(disk), str(script)], "sfdisk", TOOL_TIMEOUT)


def restore_multicast(
    procs: ProcessRegistry,
    host: Host,
    image: Image,
    job: Job,
    disk: Path,
    *,
    interface: str = "e0",
    start_timeout: int = START_TIMEOUT,
) -> DiskRestore:
    """Receive every partition over multicast (udp-receiver) and restore it onto `disk`."""

    def source(target: Target) -> list[str]:
        return receiver_argv(target.port, interface=interface, start_timeout=start_timeout)

    return _restore(
        procs,
        host.netns,
        image=image,
        disk_name=job.disk,
        base_port=job.mcast_port,
        disk=disk,
        mode="multicast",
        source_of=source,
    )


def restore_unicast(
    procs: ProcessRegistry,
    host: Host,
    image: Image,
    job: Job,
    disk: Path,
    *,
    server: IPv4Address,
    images_root: str,
) -> DiskRestore:
    """Read every partition's chunks over NFS (nfs-cat) and restore them onto `disk`."""

    def source(target: Target) -> list[str]:
        urls = [nfs_url(server, images_root, image.name, c) for c in target.stream.chunks]
        return nfs_cat_argv(urls)

    return _restore(
        procs,
        host.netns,
        image=image,
        disk_name=job.disk,
        base_port=job.mcast_port,
        disk=disk,
        mode="unicast",
        source_of=source,
    )


def restore_local(procs: ProcessRegistry, netns: str, image_dir: Path, disk: Path) -> DiskRestore:
    """Restore the image from its directory on this machine, no network: the reference a
    network restore must equal byte for byte (partclone writes only used blocks, so the
    source disk itself is no fair reference)."""
    image = read_image_dir(image_dir)

    def source(target: Target) -> list[str]:
        return ["cat", *(str(image_dir / chunk) for chunk in target.stream.chunks)]

    restored = _restore(
        procs,
        netns,
        image=image,
        disk_name=image.disk,
        base_port=DEFAULT_MCAST_PORT,
        disk=disk,
        mode="unicast",
        source_of=source,
    )
    if not restored.ok:
        raise ImagingError(f"the local reference restore failed: {restored.problems()}")
    return restored


def _restore(
    procs: ProcessRegistry,
    netns: str,
    *,
    image: Image,
    disk_name: str,
    base_port: int,
    disk: Path,
    mode: Mode,
    source_of: SourceOf,
) -> DiskRestore:
    log = logger.bind(target=netns, commit=None)
    prepare_disk(procs, netns, disk, image)
    done: list[PartitionRestore] = []
    for target in targets(image, disk_name, base_port):
        restored = _restore_partition(
            procs, netns, target=target, disk=disk, source=source_of(target), image=image
        )
        done.append(restored)
        log.info(
            f"{mode} {image.name} {target.device}: {'ok' if restored.ok else 'FAILED'} "
            f"{restored.problem}".rstrip()
        )
        if not restored.ok:
            break  # as ocs-sr: a partition that failed ends the job
    return DiskRestore(mode, image, disk, tuple(done))


def _restore_partition(
    procs: ProcessRegistry,
    netns: str,
    *,
    target: Target,
    disk: Path,
    source: list[str],
    image: Image,
) -> PartitionRestore:
    work = procs.scratch(f"restore-{target.number}")
    errors = (work / "source.err", work / "decompress.err", work / "partclone.err")
    partclone_log = work / "partclone.log"
    script = pipeline_script(
        source,
        decompress_argv(target.stream.compression),
        partclone_argv(target.stream.fs, disk, target.offset, partclone_log),
        errors,
    )
    started = time.monotonic_ns()
    done = procs.run(
        ["bash", "-c", script],
        netns=netns,
        timeout=PARTITION_TIMEOUT,
        name=f"restore-{target.number}",
        env={"PATH": probes.PROBE_PATH, "LC_ALL": "C"},
    )
    elapsed = time.monotonic_ns() - started
    statuses = parse_pipeline_status(done.stdout.decode(errors="replace"))
    log_text = _text(partclone_log)
    stream_bytes = sum(image.files[chunk] for chunk in target.stream.chunks)
    problem = ""
    if done.timed_out:
        problem = f"stopped after {PARTITION_TIMEOUT:g} s"
    elif statuses is None or any(statuses):
        stages = ("source", "decompress", "partclone")
        failed = [
            f"{stage} exit {status}: {_tail(_text(path))}"
            for stage, status, path in zip(stages, statuses or (1, 1, 1), errors, strict=True)
            if status
        ]
        problem = "; ".join(failed) or f"no exit statuses: {done.text[-300:]}"
    return PartitionRestore(
        device=target.device,
        ok=not problem,
        space_used=space_in_use(log_text),
        nanoseconds=elapsed,
        stream_bytes=stream_bytes if not problem else 0,
        problem=problem,
    )


# ---------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Verified:
    detail: str


def verify(
    procs: ProcessRegistry,
    netns: str,
    disk: Path,
    *,
    image: Image,
    reference: Path,
    expected_files: Mapping[int, Mapping[str, bytes]] | None = None,
) -> Verified:
    """Prove the restored disk by its content (every problem is reported together):

    - its partition table, read back with `sfdisk -d`, equals the image's;
    - it equals `reference` (the same image restored with no network) byte for byte;
    - the files of `expected_files` (partition number -> path -> content) read back
      from it with the file system's own tools have that content.
    """
    problems: list[str] = []
    dumped = _run(procs, netns, ["sfdisk", "--dump", str(disk)], "sfdisk-dump", TOOL_TIMEOUT)
    actual = parse_sfdisk(dumped.decode(errors="replace"))
    problems += [f"table: {p}" for p in table_differences(image.table, actual)]
    difference = first_difference(disk, reference)
    if difference is not None:
        problems.append(f"differs from the reference {difference}")
    checked = 0
    for number, files in sorted((expected_files or {}).items()):
        part = next((p for p in image.parts if partition_number(image.disk, p) == number), None)
        if part is None:
            problems.append(f"partition {number}: not in the image")
            continue
        entry = image.table.entry(number)
        sector = image.table.sector_size
        got = read_files(
            procs,
            netns,
            disk,
            fs=image.stream(part).fs,
            offset=entry.start * sector,
            size=entry.size * sector,
            paths=sorted(files),
        )
        for path, content in sorted(files.items()):
            read = got[path]
            if read != content:
                seen = "missing" if read is None else f"{len(read)} bytes that differ"
                problems.append(f"partition {number}: {path}: {seen}, expected {len(content)}")
            checked += 1
    if problems:
        raise ImagingError("; ".join(problems))
    return Verified(
        f"table as in the image, {disk.stat().st_size} bytes equal to the reference, "
        f"{checked} known files read back"
    )


def first_difference(a: Path, b: Path) -> str | None:
    """Where two disk files first differ ('at byte N (sector S)'), or None if equal."""
    size_a, size_b = a.stat().st_size, b.stat().st_size
    if size_a != size_b:
        return f"in size: {size_a} bytes, the reference {size_b}"
    offset = 0
    with open(a, "rb") as first, open(b, "rb") as second:
        while True:
            block_a, block_b = first.read(COMPARE_BLOCK), second.read(COMPARE_BLOCK)
            if block_a != block_b:
                at = offset + next(
                    i for i, (x, y) in enumerate(zip(block_a, block_b, strict=False)) if x != y
                )
                return f"at byte {at} (sector {at // 512})"
            if not block_a:
                return None
            offset += len(block_a)


def read_files(
    procs: ProcessRegistry,
    netns: str,
    disk: Path,
    *,
    fs: str,
    offset: int,
    size: int,
    paths: Sequence[str],
) -> dict[str, bytes | None]:
    """Files read from one partition of the disk file with the file system's own tools
    (mtools for FAT, ntfs-3g's ntfscat for NTFS): path -> content, None when unreadable."""
    for path in paths:
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"a file path inside the partition, relative: {path!r}")
    if fs in _FAT:
        return {
            path: _run_or_none(procs, netns, ["mtype", "-i", f"{disk}@@{offset}", f"::/{path}"])
            for path in paths
        }
    if fs == "ntfs":
        # ntfscat takes no offset: it reads a copy of the partition alone.
        copy = procs.scratch("ntfs") / "partition"
        copy_range(disk, copy, offset, size)
        try:
            return {
                path: _run_or_none(procs, netns, ["ntfscat", str(copy), f"/{path}"])
                for path in paths
            }
        finally:
            copy.unlink(missing_ok=True)
    raise ImagingError(f"no tool here reads files from a {fs} partition")


def copy_range(source: Path, target: Path, offset: int, size: int) -> None:
    """Copy `size` bytes of `source` from `offset` into a new file `target`."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            copied = 0
            while copied < size:
                step = os.copy_file_range(src, dst, size - copied, offset + copied)
                if step == 0:
                    raise ImagingError(f"{source} ends before byte {offset + size}")
                copied += step
        finally:
            os.close(dst)
    finally:
        os.close(src)


# ---------------------------------------------------------------- the job report


def send_report(
    procs: ProcessRegistry,
    host: Host,
    server: IPv4Address,
    line: str,
    *,
    port: int = REPORT_PORT,
    timeout: float = 5.0,
) -> None:
    """Send the job report line to the server, as ocs-socket does (one line over TCP)."""
    outcome = probes.tcp_send_line(procs, host, str(server), port, line, timeout=timeout)
    if outcome != "connected":
        raise ImagingError(f"the job report to {server}:{port} was not delivered: {outcome}")


# ---------------------------------------------------------------- helpers


def _run(procs: ProcessRegistry, netns: str, argv: list[str], name: str, timeout: float) -> bytes:
    done = procs.run(argv, netns=netns, timeout=timeout, name=name, env={"PATH": probes.PROBE_PATH})
    if not done.ok:
        words = "timed out" if done.timed_out else f"exit {done.returncode}"
        raise ImagingError(f"{' '.join(argv[:2])}: {words}: {_tail(done.text)}")
    return done.stdout


def _run_or_none(procs: ProcessRegistry, netns: str, argv: list[str]) -> bytes | None:
    done = procs.run(
        argv, netns=netns, timeout=TOOL_TIMEOUT, name=argv[0], env={"PATH": probes.PROBE_PATH}
    )
    return done.stdout if done.ok else None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, size: int = 400) -> str:
    return " ".join(text.strip().split())[-size:] or "no output"
