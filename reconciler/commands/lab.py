"""`kitctl lab run [--pcs N] [--keep] [--image DIR | --no-image]` and `kitctl lab down`: the
rehearsal lab (Linux, root)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from reconciler.lab import fixture_image, labsite, rehearsal, workspace
from reconciler.lab.report import Report, checks_text, table, to_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab",
        help="rehearse a kitting day on simulated PCs in network namespaces (root)",
    )
    verbs = lab.add_subparsers(dest="lab_command", required=True, metavar="VERB")

    run_cmd = verbs.add_parser(
        "run", help="build the lab, reconcile it with the real controller, let the PCs boot"
    )
    run_cmd.add_argument(
        "--pcs", type=_pcs, default=4, help=f"simulated PCs in the site (1-{labsite.MAX_PCS})"
    )
    run_cmd.add_argument(
        "--keep", action="store_true", help="leave the lab running to explore it (see lab down)"
    )
    run_cmd.add_argument(
        "--parallel",
        type=int,
        default=4,
        help=f"PCs playing at the same time (1-{rehearsal.MAX_PARALLEL}, default 4)",
    )
    which = run_cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--image",
        type=Path,
        metavar="DIR",
        help="a Clonezilla image directory to serve and restore (default: the lab's own "
        "image, saved by ocs-sr savedisk, built once into --image-cache)",
    )
    which.add_argument(
        "--no-image",
        action="store_true",
        help="the quick run: a stand-in image, nobody is imaged",
    )
    run_cmd.add_argument(
        "--image-cache",
        type=Path,
        metavar="DIR",
        default=fixture_image.LAB_CACHE,
        help=f"where the lab's own image is cached (default {fixture_image.LAB_CACHE})",
    )
    run_cmd.add_argument(
        "--no-ocs-sr",
        action="store_true",
        help="image every PC with the lab's client (default: the first PC runs "
        "Clonezilla's own ocs-sr)",
    )
    run_cmd.add_argument("--report", type=Path, help="also write the JSON report here")
    _add_base(run_cmd)
    run_cmd.set_defaults(run=run)

    down_cmd = verbs.add_parser(
        "down", help="remove kept and crashed labs: namespaces, programs, loop devices, files"
    )
    _add_base(down_cmd)
    down_cmd.set_defaults(run=down)


def _add_base(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--base",
        type=Path,
        default=workspace.LAB_BASE,
        help=f"where lab runs keep their files (default {workspace.LAB_BASE})",
    )


def _pcs(text: str) -> int:
    try:
        return labsite.check_count(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _need_root() -> bool:
    if os.geteuid() != 0:
        sys.stderr.write("error: the lab builds network namespaces: run it as root\n")
        return False
    return True


def run(args: argparse.Namespace) -> int:
    if not _need_root():
        return 1
    options = rehearsal.Options(
        pcs=args.pcs,
        keep=args.keep,
        base=args.base,
        image=args.image,
        stand_in=args.no_image,
        image_cache=args.image_cache,
        ocs_sr=not args.no_ocs_sr,
        parallel=args.parallel,
    )
    lock = threading.Lock()  # PCs report from several threads: one whole line at a time

    def progress(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    try:
        report = rehearsal.run(options, progress)
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    if args.report is not None:
        args.report.write_text(to_json(report))
    sys.stdout.write(summary(report))
    return 0 if report.ok else 1


def summary(report: Report) -> str:
    """What `lab run` prints at its end: the table, the checks, the verdict, and how to
    explore a kept lab."""
    text = "\n" + table(report.pcs) + "\n" + checks_text(report.checks)
    if report.error:
        text += f"error: {report.error}\n"
    verdict = "every check held" if report.ok else "SOME CHECKS FAILED"
    text += f"\nlab {report.prefix}: {verdict} ({report.seconds:.1f} s); report: "
    text += f"{report.facts.get('report', report.run_dir + '/report.json')}\n"
    if report.kept:
        text += explore(report)
    return text


def explore(report: Report) -> str:
    prefix = report.prefix
    server = report.facts.get("server_root", "")
    lines = [
        "",
        f"The lab keeps running ({prefix}). Enter a namespace with a shell:",
        f"  ip netns exec {prefix}srv bash      the server: dnsmasq, nfs-ganesha, sshd, nft",
        f"  ip netns exec {prefix}adm bash      the admin terminal (192.168.100.200)",
        f"  ip netns exec {prefix}pc1 bash      a PC (try: busybox udhcpc -i e0 -q -n)",
        f"  ip netns exec {prefix}rtr bash      the router between the server's uplink and production",
        f"  ip netns exec {prefix}prodsrv bash  the production host (198.18.0.10)",
        f"The server's files are under {server}; the site repo is {report.facts.get('site_repo')}.",
        "Remove it with: kitctl lab down",
    ]
    return "\n".join(lines) + "\n"


def down(args: argparse.Namespace) -> int:
    if not _need_root():
        return 1
    removed, busy = rehearsal.down(args.base)
    for item in removed:
        loops = f", loop devices {', '.join(item.loops)}" if item.loops else ""
        where = "namespaces and files" if item.files else "namespaces (a crashed run)"
        sys.stdout.write(f"removed lab {item.prefix}: {where}{loops}\n")
    for prefix in busy:
        sys.stdout.write(f"left lab {prefix} alone: its `kitctl lab run` is still going\n")
    if not removed and not busy:
        sys.stdout.write("no lab to remove\n")
    return 0
