"""`kitctl`: the command line. Thin: parse arguments, call one command module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from reconciler import logs

# Each module in reconciler.commands registers its own subcommand.
COMMANDS = ("validate", "plan", "apply", "run", "audit", "schema", "images", "lab", "deployments")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kitctl",
        description="Declarative GitOps reconciler for PC kitting servers (Clonezilla SE/DRBL).",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"reconciler.commands.{name}").register(sub)
    return top


# The controller's log is its product (journald); one-shot commands print their own
# report on stdout, so their log lines would only repeat it (the lab keeps every line in
# its run's logs/kitctl.log).
LOGGING_COMMANDS = frozenset({"run"})


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    default = "INFO" if args.command in LOGGING_COMMANDS else "WARNING"
    logs.setup(os.environ.get("KITCTL_LOG_LEVEL", default))
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # `kitctl audit log | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
