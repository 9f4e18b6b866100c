"""`kitctl run`: the controller; `kitctl reconcile --now`: nudge it; `kitctl status`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict

from reconciler import controller, settings
from reconciler import status as status_file
from reconciler.clock import SystemClock
from reconciler.host import LocalHost
from reconciler.layout import Layout
from reconciler.source import SourceError

STATUS_WIDTH = 400
"""Characters of a condition's message in `kitctl status` (`--format json` has them all)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run_cmd = sub.add_parser("run", help="follow the site repo and keep the server converged")
    run_cmd.add_argument(
        "--config",
        help=f"operator settings file (default: {settings.DEFAULT_PATH}, if it exists)",
    )
    run_cmd.add_argument("--source", help="site repo: local path or URL")
    run_cmd.add_argument("--branch", help="branch to follow (default: main)")
    run_cmd.add_argument("--root", help="server root (default: /)")
    run_cmd.add_argument("--services", choices=("auto", "systemd", "direct", "none"))
    run_cmd.add_argument("--interval", type=float, help="seconds between polls of a remote source")
    run_cmd.add_argument("--drift-interval", type=float, help="seconds between drift checks")
    run_cmd.add_argument(
        "--allow-rewrite",
        action="store_true",
        default=None,
        help="accept a rewritten (force-pushed) branch",
    )
    run_cmd.add_argument("--once", action="store_true", help="one pass, then exit (cron, tests)")
    run_cmd.set_defaults(run=run)

    nudge = sub.add_parser("reconcile", help="ask the running controller for a pass now")
    nudge.add_argument("--now", action="store_true", required=True)
    _where(nudge)
    nudge.set_defaults(run=reconcile_now)

    show = sub.add_parser("status", help="the controller's conditions and revisions")
    _where(show)
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(run=show_status)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "source": args.source,
        "branch": args.branch,
        "root": args.root,
        "services": args.services,
        "interval": args.interval,
        "drift_interval": args.drift_interval,
        "allow_rewrite": args.allow_rewrite,
    }
    try:
        # Only a file the operator named must exist; the default one is optional.
        chosen = settings.read(
            args.config or settings.DEFAULT_PATH, overrides, required=args.config is not None
        )
    except settings.SettingsError as error:
        _complain(error)
        return 1
    try:
        ctl = controller.Controller(chosen, clock=SystemClock())
        code = ctl.run(once=args.once)
        ready = ctl.status.condition(status_file.READY)
        if args.once and code != 0 and ready is not None:
            # said once in the log when it happened; a repeated --once says it again here
            sys.stderr.write(f"not ready ({ready.reason}): {ready.message}\n")
        return code
    except controller.ControllerBusy as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    except SourceError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1


def _complain(error: settings.SettingsError) -> None:
    """Each problem on its own line; those placed in the file already say `error:`."""
    for line in str(error).splitlines():
        sys.stderr.write(f"{line}\n" if ": error: " in line else f"error: {line}\n")


def _where(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--root", help="server root (default: /, or the settings' root)")
    cmd.add_argument(
        "--config",
        help="the controller's settings file: its root and paths say where its state is "
        "(default: the default layout under --root)",
    )


def _server(args: argparse.Namespace) -> tuple[str, Layout]:
    """The root and layout of the controller asked about: from its settings when given."""
    if args.config is None:
        return args.root or "/", Layout()
    chosen = settings.read(args.config, required=True)
    return args.root or chosen.root, chosen.layout()


def reconcile_now(args: argparse.Namespace) -> int:
    try:
        root, layout = _server(args)
    except settings.SettingsError as error:
        _complain(error)
        return 1
    pid = controller.running_pid(root, layout)
    if pid is None:
        sys.stderr.write("no controller is running for this root; start one with `kitctl run`\n")
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:  # it exited between reading the lock and the signal
        sys.stderr.write(f"the controller (pid {pid}) has just exited; nothing to nudge\n")
        return 1
    except PermissionError:
        sys.stderr.write(f"not allowed to signal the controller (pid {pid}); run as its user\n")
        return 1
    print(f"asked controller (pid {pid}) for a pass")
    return 0


def show_status(args: argparse.Namespace) -> int:
    try:
        root, layout = _server(args)
    except settings.SettingsError as error:
        _complain(error)
        return 1
    current = status_file.load(LocalHost(root), layout)
    pid = controller.running_pid(root, layout)
    if args.format == "json":
        body = asdict(current)
        body["running"] = pid is not None
        sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return 0
    if not current.updated:
        print("no pass has run for this root yet")
        return 0
    print(f"controller: {f'running (pid {pid})' if pid else 'not running'}")
    for condition in current.conditions:
        # one line each: a message of many problems (one per line) reads as a list
        message = "; ".join(line.strip() for line in condition.message.splitlines() if line.strip())
        if len(message) > STATUS_WIDTH:
            message = message[: STATUS_WIDTH - 1] + "…"
        print(f"{condition.type:<12} {condition.status!s:<5} {condition.reason:<20} {message}")
    print(f"last attempted: {current.last_attempted or '-'}")
    print(f"last applied:   {current.last_applied or '-'}")
    if current.refused:
        print(f"refused:        {current.refused} ({current.refused_reason})")
    if current.last_drift_check:
        drift = f"{', '.join(current.drift) or 'none'} (checked {current.last_drift_check})"
    else:
        drift = "not checked yet"
    print(f"drift:          {drift}")
    print(f"next pass:      {current.next_pass or '-'}")
    for window in current.open_windows:
        print(f"open window:    {window.batch} {window.start} .. {window.end}")
    return 0
