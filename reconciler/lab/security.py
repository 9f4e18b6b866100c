"""Lab-wide checks: what the reconciler's firewall lets through, and what it must not.

- production: a kitting PC cannot reach the production network (TCP, UDP, ICMP) through
  the server, which routes the kitting network to its uplink, where a router joins the
  production network; the same path is shown open before the firewall is loaded
  (`production_control`: the admin terminal reaches production, and traceroute shows the
  server then the router on the way), so "blocked" is not a broken route.
- ssh: port 22 answers the admin terminal (the real sshd, recognised by its host key) and
  drops a kitting PC; another closed port drops it too.
- firewall: the reconciler's table is live in the server namespace, with the TFTP helper.
- kernel NFS: that backend cannot be served here, so its files are rendered from the same
  desired state and checked (our exports checker, nfsconf for the pinned mountd port).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler import preflight, render
from reconciler.desired import Desired, NfsBackend
from reconciler.lab import labsite, probes
from reconciler.lab.netns import PRODUCTION_NET, Host
from reconciler.lab.nsrunner import NetnsRunner
from reconciler.lab.procs import ProcessRegistry
from reconciler.lab.report import CheckResult
from reconciler.layout import Layout
from reconciler.live_firewall import NftReader
from reconciler.rendered import Service

PRODUCTION_TCP = 443
PRODUCTION_UDP = 514
CLOSED_PORT = 8080
PROBE_TIMEOUT = 1.5
"""Seconds a blocked probe waits: a dropped packet gets no answer at all."""
TRACE_HOPS = 6
_HOP = re.compile(r"^\s*(\d+)\s+(\S+)")


@dataclass(frozen=True)
class Roles:
    """The lab's hosts in the parts the checks give them."""

    server: Host
    admin: Host
    production: Host
    pc: Host
    """A kitting PC that holds its address."""
    router: Host | None = None
    """The router between the server's uplink and production; when given, the control
    check also proves the path runs through the server, then through it."""


def production_reach(procs: ProcessRegistry, roles: Roles, source: Host) -> dict[str, bool]:
    """Which of TCP, UDP and ICMP from `source` reach the production host."""
    target = str(labsite.PRODUCTION_HOST.ip)
    tcp_in = probes.tcp_listen(procs, roles.production, PRODUCTION_TCP, timeout=PROBE_TIMEOUT + 3)
    udp_in = probes.udp_listen(procs, roles.production, PRODUCTION_UDP, timeout=PROBE_TIMEOUT + 2)
    tcp = probes.tcp_connect(procs, source, target, PRODUCTION_TCP, timeout=PROBE_TIMEOUT)
    payload = f"from {source.name}"
    probes.udp_send(procs, source, target, PRODUCTION_UDP, payload)
    icmp = probes.ping(procs, source, target, timeout=PROBE_TIMEOUT)
    udp = any(message.payload == payload for message in udp_in.messages())
    tcp_in.proc.stop()
    return {"tcp": tcp == "connected", "udp": udp, "icmp": icmp}


def production_control(procs: ProcessRegistry, roles: Roles) -> CheckResult:
    """Before the reconciler's pass: the admin terminal reaches production through the
    server (and the router, when the lab has one), so the route exists and a later
    "blocked" is the firewall's doing."""
    reached = production_reach(procs, roles, roles.admin)
    ok = all(reached.values())
    detail = _reach_words(roles.admin, reached) + " (no firewall loaded yet)"
    if roles.router is not None:
        hops = trace(procs, roles.admin, str(labsite.PRODUCTION_HOST.ip))
        wanted = expected_path()
        ok = ok and hops == wanted
        words = ", ".join(hop or "*" for hop in hops) or "no hop"
        detail += f"; traceroute: {words}"
        if hops != wanted:
            detail += f" (expected {', '.join(wanted)})"
    return CheckResult("production-route-control", ok, detail)


def expected_path() -> list[str]:
    """The hops from the admin terminal to the production host: the server's kitting
    address, the router's uplink address, the host. Purely computational."""
    return [
        str(labsite.SERVER_KITTING.ip),
        str(labsite.ROUTER_UPLINK.ip),
        str(labsite.PRODUCTION_HOST.ip),
    ]


def parse_traceroute(text: str) -> list[str | None]:
    """The address that answered at each hop of `traceroute -n -q 1` (None for '*'), in
    hop order. Purely computational."""
    hops: list[str | None] = []
    for line in text.splitlines():
        found = _HOP.match(line)
        if found is None:
            continue
        word = found.group(2)
        hops.append(None if word == "*" else word)
    return hops


def trace(procs: ProcessRegistry, source: Host, target: str) -> list[str | None]:
    """traceroute (busybox, UDP probes, one per hop) from `source` to `target`."""
    done = procs.run(
        ["busybox", "traceroute", "-n", "-q", "1", "-w", "1", "-m", str(TRACE_HOPS), target],
        netns=source.netns,
        timeout=TRACE_HOPS * 2 + 5.0,
        name=f"traceroute-{source.name}",
        env={"PATH": probes.PROBE_PATH},
    )
    return parse_traceroute(done.stdout.decode(errors="replace"))


def production_blocked(procs: ProcessRegistry, roles: Roles) -> CheckResult:
    reached = production_reach(procs, roles, roles.pc)
    ok = not any(reached.values())
    return CheckResult("production-blocked", ok, _reach_words(roles.pc, reached))


def ssh_admin_only(procs: ProcessRegistry, roles: Roles, host_key: Path) -> CheckResult:
    """The admin terminal gets the lab sshd's own host key; a PC's connection is dropped."""
    server = str(labsite.SERVER)
    scan = procs.run(
        ["ssh-keyscan", "-T", "3", "-t", "ed25519", server],
        netns=roles.admin.netns,
        timeout=8.0,
        name="keyscan-admin",
        env={"PATH": probes.PROBE_PATH},
    )
    wanted = _public_key(host_key)
    admin_ok = bool(wanted) and wanted in scan.stdout.decode(errors="replace").split()
    from_pc = probes.tcp_connect(procs, roles.pc, server, 22, timeout=PROBE_TIMEOUT)
    ok = admin_ok and from_pc != "connected"
    admin_words = "got the lab sshd's host key" if admin_ok else f"no host key ({scan.text})"
    detail = (
        f"{roles.admin.name} ({roles.admin.address}): {admin_words}; {roles.pc.name}: {from_pc}"
    )
    return CheckResult("ssh-admin-only", ok, detail)


def closed_port(procs: ProcessRegistry, roles: Roles) -> CheckResult:
    """A port the site does not open is dropped for a PC (not refused: no answer at all)."""
    outcome = probes.tcp_connect(
        procs, roles.pc, str(labsite.SERVER), CLOSED_PORT, timeout=PROBE_TIMEOUT
    )
    detail = f"PC {roles.pc.name} -> {labsite.SERVER}:{CLOSED_PORT}: {outcome}"
    return CheckResult("other-ports-dropped", outcome == "timeout", detail)


def firewall_live(roles: Roles) -> CheckResult:
    """The reconciler's table is loaded in the server's namespace, as it rendered it."""
    live = NftReader(NetnsRunner(roles.server.netns)).read()
    if not live.observed or not live.present:
        return CheckResult("firewall-live", False, live.error or "table inet kitting is absent")
    wanted = (
        f'iifname "{labsite.INTERFACE}" jump kitting_interface',
        'ct helper set "tftp"',
        f"ip daddr {PRODUCTION_NET} drop",
    )
    missing = [rule for rule in wanted if rule not in live.listing]
    detail = "table inet kitting live in the server namespace"
    if missing:
        detail += f", but without: {'; '.join(missing)}"
    return CheckResult("firewall-live", not missing, detail)


def kernel_nfs_files(desired: Desired, layout: Layout, netns: str) -> CheckResult:
    """The kernel NFS backend's files for the same site, checked as apply would check
    them, and the pinned mountd port read back by nfsconf where it is installed."""
    nfs = desired.site.nfs.model_copy(update={"backend": NfsBackend.kernel})
    site = desired.site.model_copy(update={"nfs": nfs})
    rendered = render.all(replace(desired, site=site), layout)
    kernel = [a for a in rendered.artifacts.values() if a.service is Service.nfs_kernel]
    outcome = preflight.check(kernel, rendered.artifacts, layout=layout, runner=NetnsRunner(netns))
    if not outcome.ok or not kernel:
        words = "; ".join(r.text() for r in outcome.rejections) or "nothing rendered"
        return CheckResult("kernel-nfs-files", False, words)
    detail = f"{len(kernel)} files rendered and accepted"
    conf = rendered.artifacts.get(layout.nfs_conf_file)
    if conf is not None and shutil.which("nfsconf", path=probes.PROBE_PATH):
        port = _nfsconf_port(conf.content)
        if port != str(desired.site.nfs.mountd_port):
            return CheckResult("kernel-nfs-files", False, f"nfsconf reads mountd port {port!r}")
        detail += f"; nfsconf reads mountd port {port}"
    return CheckResult("kernel-nfs-files", True, detail + " (not served: no kernel NFS here)")


def _nfsconf_port(content: bytes) -> str:
    with tempfile.NamedTemporaryFile(prefix="kitting-lab-nfs-", suffix=".conf") as handle:
        handle.write(content)
        handle.flush()
        done = subprocess.run(
            ["nfsconf", "--file", handle.name, "--get", "mountd", "port"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    return done.stdout.strip()


def _public_key(private_key: Path) -> str:
    """The base64 body of the key's .pub file ("" when there is none)."""
    try:
        words = Path(f"{private_key}.pub").read_text().split()
    except OSError:
        return ""
    return words[1] if len(words) > 1 else ""


def _reach_words(source: Host, reached: dict[str, bool]) -> str:
    target = labsite.PRODUCTION_HOST.ip
    parts = ", ".join(f"{kind} {'reached' if ok else 'blocked'}" for kind, ok in reached.items())
    return f"{source.name} -> {target}: {parts}"
