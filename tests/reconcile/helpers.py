"""Hand-built artifacts and small fakes for the observe / plan / apply tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler import apply, facts, inventory, plan
from reconciler.facts import FirewallReader, LiveFirewall
from reconciler.host import Host
from reconciler.layout import Layout
from reconciler.live_firewall import NoFirewall
from reconciler.preflight import Outcome, Preflight, Rejection
from reconciler.rendered import Artifact, Check, Effect, Rendered, Service
from reconciler.runner import Completed, run
from reconciler.services import NoServices, ServiceError, ServiceManager

RequirePrograms = Callable[..., None]
"""The shared `require_programs` fixture (tests/conftest.py)."""

LAYOUT = Layout()
HOSTS = LAYOUT.dhcp_hosts_dir  # /etc/kitting/dhcp-hosts
MAIN = LAYOUT.dnsmasq_conf  # /etc/dnsmasq.d/kitting.conf
NFT = LAYOUT.nft_file  # /etc/nftables.d/kitting.nft
BOOT = "/srv/tftp/pxelinux.cfg/default"
INVENTORY = "/var/lib/kitting/inventory.json"


def reservation(name: str, line: str, origin: str = "") -> Artifact:
    """A file in dnsmasq's hosts directory: new ones are noticed without a signal."""
    return Artifact(
        path=f"{HOSTS}/{name}",
        content=(line + "\n").encode(),
        service=Service.dnsmasq,
        on_add=Effect.none,
        on_change=Effect.reload,
        on_remove=Effect.reload,
        check=Check.dnsmasq,
        origins=(origin,),
    )


def main_conf(text: str, origins: tuple[str, ...] = ()) -> Artifact:
    """dnsmasq's main file: only a restart re-reads it."""
    return Artifact(
        path=MAIN,
        content=text.encode(),
        service=Service.dnsmasq,
        on_add=Effect.restart,
        on_change=Effect.restart,
        on_remove=Effect.restart,
        check=Check.dnsmasq,
        origins=origins,
    )


def nft_file(text: str, origins: tuple[str, ...] = ()) -> Artifact:
    return Artifact(
        path=NFT, content=text.encode(), service=Service.nftables, check=Check.nft, origins=origins
    )


def boot_menu(text: str) -> Artifact:
    """A file no program watches (read by PXE clients on demand)."""
    return Artifact(path=BOOT, content=text.encode(), service=None, on_change=Effect.none)


def rendered(*artifacts: Artifact, notes: tuple[str, ...] = ()) -> Rendered:
    return Rendered({a.path: a for a in artifacts}, notes)


def observe(
    host: Host,
    wanted: Rendered,
    services: ServiceManager | None = None,
    firewall: FirewallReader | None = None,
) -> facts.Facts:
    return facts.gather(
        host,
        wanted,
        inventory.load(host, LAYOUT),
        services or NoServices(),
        firewall or NoFirewall(),
        scan_dirs=(LAYOUT.state_dir,),
    )


def accept_all(candidates: Sequence[Artifact], everything: Mapping[str, Artifact]) -> Outcome:
    del everything
    return Outcome(checked=tuple(a.path for a in candidates))


@dataclass
class RejectLine:
    """A fake preflight rejecting one line of one file (apply must then change nothing)."""

    path: str
    line: int
    seen: list[str] = field(default_factory=list)

    def __call__(
        self, candidates: Sequence[Artifact], everything: Mapping[str, Artifact]
    ) -> Outcome:
        self.seen.extend(a.path for a in candidates)
        artifact = everything[self.path]
        origin = artifact.origin_of_line(self.line)
        return Outcome(rejections=(Rejection(self.path, self.line, origin, "dnsmasq", "bad"),))


@dataclass
class FailingServices(NoServices):
    """Records like NoServices; the first `failures` calls named in `fail` raise."""

    fail: set[tuple[str, str]] = field(default_factory=set)
    failures: int = 1

    def _maybe_fail(self, call: str, target: str) -> None:
        if (call, target) in self.fail and self.failures > 0:
            self.failures -= 1
            raise ServiceError(f"{call} {target}: refused (test)")

    def reload(self, service: Service) -> None:
        super().reload(service)
        self._maybe_fail("reload", service.value)

    def restart(self, service: Service) -> None:
        super().restart(service)
        self._maybe_fail("restart", service.value)

    def apply_firewall(self, path: str) -> None:
        super().apply_firewall(path)
        self._maybe_fail("apply_firewall", path)


@dataclass
class FixedFirewall:
    """A firewall reader that reports whatever the test sets."""

    live: LiveFirewall

    def read(self) -> LiveFirewall:
        return self.live


def apply_once(
    host: Host,
    wanted: Rendered,
    *,
    services: ServiceManager | None = None,
    firewall: FirewallReader | None = None,
    adopt: bool = False,
    preflight: Preflight | None = None,
    on_result: apply.OnResult | None = None,
    commit: str = "c0ffee",
) -> tuple[plan.Plan, apply.Report]:
    services = services if services is not None else NoServices()
    observed = observe(host, wanted, services, firewall)
    built = plan.build(wanted, observed, layout=LAYOUT, adopt=adopt)
    report = apply.run(
        built,
        observed,
        wanted,
        host=host,
        services=services,
        layout=LAYOUT,
        preflight=preflight or accept_all,
        firewall=firewall,
        commit=commit,
        on_result=on_result,
    )
    return built, report


def in_fresh_netns(argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
    """Each check runs in a network namespace of its own that dies with it: whatever a
    checker might resolve or probe, nothing leaves this machine's default namespace."""
    return run(["unshare", "--net", "--", *argv], timeout=timeout)
