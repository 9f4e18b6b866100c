"""The images root on disk: list the image directories and stream their checksums.

The thin shell around `reconciler.images`. Listing reads names, sizes, the small metadata
files and the first bytes of each stream, never a stream itself; only `hash_files` (for
--verify) reads whole files, in blocks, so memory stays flat however big a chunk is.
Nothing outside the images root is read: a symlink that resolves out of it is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler import images
from reconciler.desired import Image
from reconciler.host import LocalHost
from reconciler.images import FileEntry, Finding, ImageListing, ImageReport, Kind

METADATA_LIMIT = 16 * 1024 * 1024
"""Larger `disk`, `parts`, `*-pt.sf` or checksum files are not Clonezilla's."""
BLOCK_SIZE = 1024 * 1024


def images_dir(root: str, images_root: str) -> str:
    """Where the server's images root is on this machine (symlinks resolved, inside root)."""
    return LocalHost(root).local_path(images_root)


def _inside(path: str, base: str) -> bool:
    return base in {"/", path} or path.startswith(base + os.sep)


def _escape(name: str, target: str) -> Finding:
    return Finding(
        "SymlinkOutsideRoot",
        name,
        f"{name} is a symlink to {target}, outside the images root; it was not read",
        Kind.incomplete,
    )


def _unreadable(name: str, error: OSError) -> Finding:
    return Finding("Unreadable", name, f"{name}: {error.strerror or error}", Kind.incomplete)


def scan(base: str) -> list[ImageListing]:
    """Every image directory directly under the (resolved) images root, by name."""
    found = []
    with os.scandir(base) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith("."))
    for name in names:
        listing = read_listing(base, name)
        if listing is not None and images.is_image(listing):
            found.append(listing)
    return found


def read_listing(base: str, name: str) -> ImageListing | None:
    """One directory under the images root; None when there is no such directory."""
    path = os.path.join(base, name)
    real = os.path.realpath(path)
    if not _inside(real, base):
        if not os.path.isdir(real):
            return None
        return ImageListing(name, (), problems=(_escape(name, real),), path=path, readable=False)
    if not os.path.isdir(real):
        return None
    files: list[FileEntry] = []
    problems: list[Finding] = []
    try:
        with os.scandir(real) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                found = _entry(entry, base, problems)
                if found is not None:
                    files.append(found)
    except OSError as error:
        return ImageListing(
            name, (), problems=(_unreadable(name, error),), path=real, readable=False
        )
    texts = _texts(real, files, problems)
    heads = _heads(real, [f.name for f in files], texts.get("parts"), problems)
    return ImageListing(name, tuple(files), texts, heads, tuple(problems), real)


def _entry(entry: os.DirEntry[str], base: str, problems: list[Finding]) -> FileEntry | None:
    try:
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if not _inside(target, base):
                problems.append(_escape(entry.name, target))
                return None
            info = os.stat(target)
        else:
            info = entry.stat(follow_symlinks=False)
    except OSError as error:
        problems.append(_unreadable(entry.name, error))
        return None
    return FileEntry(entry.name, info.st_size) if stat.S_ISREG(info.st_mode) else None


def _open(directory: str, name: str) -> int:
    # The name was checked not to lead outside; O_NOFOLLOW stops a symlink swapped in since.
    target = os.path.realpath(os.path.join(directory, name))
    return os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _texts(directory: str, files: list[FileEntry], problems: list[Finding]) -> dict[str, str]:
    texts = {}
    for entry in files:
        if not images.is_metadata(entry.name):
            continue
        if entry.size > METADATA_LIMIT:
            problems.append(
                Finding(
                    "MetadataTooLarge",
                    entry.name,
                    f"{entry.name} has {entry.size} bytes; Clonezilla's are far smaller",
                    Kind.incomplete,
                )
            )
            continue
        try:
            with os.fdopen(_open(directory, entry.name), "rb") as handle:
                texts[entry.name] = handle.read(METADATA_LIMIT).decode("utf-8", "replace")
        except OSError as error:
            problems.append(_unreadable(entry.name, error))
    return texts


def _heads(
    directory: str, names: list[str], parts_text: str | None, problems: list[Finding]
) -> dict[str, bytes]:
    heads = {}
    for name in images.heads_to_read(names, parts_text):
        try:
            with os.fdopen(_open(directory, name), "rb") as handle:
                heads[name] = handle.read(images.HEAD_BYTES)
        except OSError as error:
            problems.append(_unreadable(name, error))
    return heads


def hash_files(
    directory: str, plan: Mapping[str, frozenset[str]], *, within: str
) -> dict[str, dict[str, str] | None]:
    """Digests of the image's files, each file read once in blocks for all its algorithms.
    None for a file that is missing, unreadable or (through a symlink) outside the image
    directory, or when the directory itself is not inside `within` (the images root)."""
    real_dir = os.path.realpath(directory)
    out: dict[str, dict[str, str] | None] = {}
    if not _inside(real_dir, within):
        return {name: None for name in sorted(plan)}
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    for name, algorithms in sorted(plan.items()):
        target = os.path.realpath(os.path.join(real_dir, name))
        if not _inside(target, real_dir) or target == real_dir:
            out[name] = None
            continue
        hashers = {a: hashlib.new(a, usedforsecurity=False) for a in sorted(algorithms)}
        try:
            with os.fdopen(_open(real_dir, name), "rb", buffering=0) as handle:
                while count := handle.readinto(view):
                    for hasher in hashers.values():
                        hasher.update(view[:count])
        except OSError:
            out[name] = None
            continue
        out[name] = {a: h.hexdigest() for a, h in hashers.items()}
    return out


@dataclass(frozen=True)
class Inventory:
    images_root: str
    """As the server sees it (e.g. /home/partimag)."""
    found: bool
    """Whether the images root exists."""
    reports: tuple[ImageReport, ...]


def inventory(
    root: str,
    images_root: str,
    *,
    verify: bool = False,
    declared: Mapping[str, Image] | None = None,
) -> Inventory:
    """Judge every image under ROOT + images_root; with `verify`, check their checksums
    (this reads every byte); with `declared` (the desired Image documents), compare."""
    base = images_dir(root, images_root)
    if not os.path.isdir(base):
        reports = images.compare([], declared) if declared is not None else []
        return Inventory(images_root, False, tuple(reports))
    listings = {listing.name: listing for listing in scan(base)}
    for name in sorted(declared or {}):
        if name not in listings:  # a declared directory that no longer looks like an image
            with contextlib.suppress(OSError):
                listing = read_listing(base, name)
                if listing is not None:
                    listings[name] = listing
    judged = []
    for name in sorted(listings):
        listing = listings[name]
        report = images.judge(listing)
        if verify and listing.readable:
            image = (declared or {}).get(name)
            integrity = image.integrity if image is not None else None
            wanted, found = images.expectations(listing, integrity)
            digests = hash_files(listing.path, images.digest_plan(wanted), within=base)
            report = images.verify(report, wanted, digests, integrity, found)
        judged.append(report)
    if declared is not None:
        judged = images.compare(judged, declared)
    return Inventory(images_root, True, tuple(judged))
