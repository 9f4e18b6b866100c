"""`kitctl images`: the Clonezilla images under the images root, whole or not; reads only."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from reconciler import image_store
from reconciler.commands import common
from reconciler.desired import Site
from reconciler.host import HostPathError
from reconciler.images import ImageReport, Status

DEFAULT_IMAGES_ROOT: str = Site.model_fields["images_root"].default


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "images",
        help="list the Clonezilla images: partitions, size, completeness, integrity",
        description="Exit 0 when every image is complete (and verified, with --verify), "
        "1 otherwise. Nothing is written.",
    )
    cmd.add_argument(
        "--root", default="/", help="server root the images root lies under (default: /)"
    )
    cmd.add_argument(
        "--images-root",
        metavar="PATH",
        help=f"images directory as the server sees it (default: the site's images_root "
        f"with --repo, else {DEFAULT_IMAGES_ROOT})",
    )
    cmd.add_argument(
        "--repo",
        metavar="DIR",
        help="site repo: compare with its Image documents and check their manifests",
    )
    cmd.add_argument(
        "--verify",
        action="store_true",
        help="check every file against Clonezilla's checksum files and the declared "
        "manifest (reads every byte of every image)",
    )
    cmd.add_argument("--format", choices=("text", "json"), default="text")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    declared = None
    images_root = args.images_root
    if args.repo is not None:
        desired = common.desired_or_report(args.repo)
        if desired is None:
            return 1
        declared = desired.images
        images_root = images_root or desired.site.images_root
    images_root = images_root or DEFAULT_IMAGES_ROOT
    try:
        found = image_store.inventory(args.root, images_root, verify=args.verify, declared=declared)
    except (HostPathError, OSError) as error:
        sys.stderr.write(f"kitctl images: {error}\n")
        return 1
    ok = found.found and all(r.status is Status.ok for r in found.reports)
    if args.format == "json":
        sys.stdout.write(as_json(found, verified=args.verify, ok=ok))
    else:
        sys.stdout.write(as_text(found, root=args.root))
    return 0 if ok else 1


def as_json(found: image_store.Inventory, *, verified: bool, ok: bool) -> str:
    body = {
        "images_root": found.images_root,
        "found": found.found,
        "verify": verified,
        "ok": ok,
        "images": [_image_dict(r) for r in found.reports],
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def _image_dict(report: ImageReport) -> dict[str, Any]:
    return {
        "name": report.name,
        "present": report.present,
        "status": report.status.value,
        "size": report.size,
        "disks": list(report.disks),
        "firmware": report.firmware.value if report.firmware else None,
        "verified_with": list(report.verified_with),
        "partitions": [
            {
                "name": p.name,
                "format": p.format.value if p.format else None,
                "filesystem": p.filesystem,
                "compression": p.compression.value if p.compression else None,
                "chunks": list(p.chunks),
                "size": p.size,
            }
            for p in report.partitions
        ],
        "findings": [
            {"code": f.code, "kind": f.kind.value, "subject": f.subject, "message": f.message}
            for f in report.findings
        ],
    }


def as_text(found: image_store.Inventory, *, root: str) -> str:
    where = found.images_root if root == "/" else f"{found.images_root} under {root}"
    if not found.found:
        lines = [f"{_shown(where)}: no such directory"]
        lines += [_headline(r) for r in found.reports]
        return "\n".join(lines) + "\n"
    lines = []
    for report in found.reports:
        lines.append(_headline(report))
        if report.partitions:
            lines += _table(report)
        lines += [f"  {f.kind.value:<10} {f.code}: {_shown(f.message)}" for f in report.findings]
        lines.append("")
    counts = Counter(r.status.value for r in found.reports)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    total = len(found.reports)
    lines.append(
        f"{_shown(where)}: {total} image{'s' * (total != 1)}" + (f": {summary}" if summary else "")
    )
    return "\n".join(lines) + "\n"


def _headline(report: ImageReport) -> str:
    words = [_shown(report.name), report.status.value]
    if report.present:
        words.append(f"{_human(report.size)} ({report.size} bytes)")
    if report.disks:
        words.append("disk " + " ".join(_shown(d) for d in report.disks))
    if report.firmware:
        words.append(report.firmware.value)
    if report.verified_with:
        words.append("checked with " + ", ".join(report.verified_with))
    return "  ".join(words)


def _table(report: ImageReport) -> list[str]:
    rows = [("PARTITION", "FORMAT", "FS", "COMPRESSION", "CHUNKS", "SIZE")]
    rows += [
        (
            _shown(p.name),
            p.format.value if p.format else "-",
            _shown(p.filesystem or "-"),
            p.compression.value if p.compression else "-",
            str(len(p.chunks)),
            _human(p.size),
        )
        for p in report.partitions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _shown(text: str) -> str:
    # Names come from the disk: keep every report line one printable line.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
