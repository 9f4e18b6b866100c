"""A `Runner` (reconciler.runner) that runs each program inside one lab network namespace.

The reconciler's own seams take a Runner: the live-firewall reader (`nft list table`) and
preflight (`dnsmasq --test`, `nft -c -f`, `sshd -t`). Given this one, they look at and
check against the lab server's namespace instead of the machine's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from reconciler.lab.probes import PROBE_PATH
from reconciler.lab.procs import netns_argv
from reconciler.runner import NOT_FOUND, Completed, Runner, run


class NetnsRunner:
    """Runs `argv` as `ip netns exec NETNS argv`; results name the program as called."""

    def __init__(self, netns: str, runner: Runner = run) -> None:
        netns_argv(netns, ["true"])  # refuse a name that is not a namespace name
        self.netns = netns
        self._run = runner

    def __call__(self, argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
        args = tuple(argv)
        # `ip netns exec` reports a missing program in its own words and status; say it as
        # the plain runner does, so preflight treats it as "not installed".
        if not args or shutil.which(args[0], path=PROBE_PATH) is None:
            name = args[0] if args else "(nothing)"
            return Completed(args, NOT_FOUND, "", f"{name}: program not found")
        done = self._run(netns_argv(self.netns, args), timeout=timeout)
        return Completed(args, done.returncode, done.stdout, done.stderr)
