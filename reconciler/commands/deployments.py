"""`kitctl deployments`: every batch request the server knows, its phase and each PC's state.

Reads the controller's deployment state (running and recent requests) and the history
documents under the images root's `logs/` (requests that ended, also after the state has
pruned them). Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reconciler import batch_history, deploy_shell
from reconciler.commands import common
from reconciler.desired import Site
from reconciler.host import HostPathError, LocalHost

DEFAULT_IMAGES_ROOT: str = Site.model_fields["images_root"].default
MAX_HISTORY_BYTES = 4 * 1024 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "deployments",
        help="list batch requests: phase, outcome and each PC's state; reads only",
        description="Running and recent requests come from the controller's state under "
        "--root; ended ones also from the history under the images root's logs/.",
    )
    common.add_root(cmd)
    cmd.add_argument(
        "--images-root",
        metavar="PATH",
        default=DEFAULT_IMAGES_ROOT,
        help=f"images directory as the server sees it (default: {DEFAULT_IMAGES_ROOT})",
    )
    cmd.add_argument("--format", choices=("text", "json"), default="text")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    layout = common.layout(args)
    try:
        state = deploy_shell.load_state(args.root, layout)
    except deploy_shell.DeploymentStateError as error:
        sys.stderr.write(f"kitctl deployments: {error}\n")
        return 1
    found: dict[str, dict[str, Any]] = {}
    for key, record in state.batches.items():
        body = json.loads(
            batch_history.document(record, batch_history.Usage(), commit="", addresses={})
        )
        body["source"] = "state"
        found[key] = body
    for key, body in _history(args.root, args.images_root).items():
        if key not in found:
            body["source"] = "history"
            found[key] = body
    batches = [found[key] for key in sorted(found, key=lambda k: (found[k]["window"]["start"], k))]
    if args.format == "json":
        sys.stdout.write(json.dumps({"batches": batches}, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(as_text(batches))
    return 0


def _history(root: str, images_root: str) -> dict[str, dict[str, Any]]:
    try:
        directory = Path(LocalHost(root).local_path(images_root)) / batch_history.LOGS_DIR
    except HostPathError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(f"{batch_history.PREFIX}*.json")):
        try:
            if path.stat().st_size > MAX_HISTORY_BYTES:
                continue
            body = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict) or body.get("version") != batch_history.VERSION:
            continue
        try:
            key = f"{body['batch']}@{body['content']}"
            _ = body["window"]["start"], body["pcs"].items()
        except (KeyError, TypeError, AttributeError):
            continue
        found[key] = body
    return found


def as_text(batches: list[dict[str, Any]]) -> str:
    if not batches:
        return "No deployments recorded.\n"
    lines = []
    for body in batches:
        outcome = f", {body['outcome']}" if body.get("outcome") else ""
        lines.append(
            f"{_shown(body['batch'])}@{_shown(body['content'])}: {body['phase']}{outcome}"
            f"  ({body['action']} {_shown(body['image'])} by {body['mode']}; "
            f"window {body['window']['start']} .. {body['window']['end']}; {body['source']})"
        )
        if body.get("reason"):
            lines.append(f"  reason: {_shown(str(body['reason']))}")
        session = body.get("session")
        if session:
            lines.append(
                f"  session: {session['phase']}"
                + (f" ({_shown(str(session['reason']))})" if session.get("reason") else "")
                + (f", pid {session['pid']}" if session.get("pid") else "")
                + (f": {_shown(str(session['summary']))}" if session.get("summary") else "")
            )
        width = max((len(host) for host in body["pcs"]), default=0)
        for host, pc in sorted(body["pcs"].items()):
            words = [f"  {_shown(host).ljust(width)}", str(pc.get("phase", "?")).ljust(9)]
            words.append(_shown(str(pc.get("reason", ""))))
            if pc.get("attempt", 1) != 1:
                words.append(f"attempt {pc.get('attempt')}")
            if pc.get("flags"):
                words.append("flags " + ",".join(_shown(str(f)) for f in pc["flags"]))
            if pc.get("report"):
                words.append(f"- {_shown(str(pc['report']))}")
            lines.append("  ".join(words).rstrip())
        lines.append("")
    return "\n".join(lines)


def _shown(text: str) -> str:
    # Names come from files: keep every report line one printable line.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
