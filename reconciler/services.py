"""The service manager seam: make programs re-read their files, and say how they are.

Three implementations fit the protocol:
- `SystemdServices` for real servers (systemctl, exportfs, nft);
- `NoServices`, a recording no-op for the demo and sandboxes (`--root` elsewhere than /);
- the lab's direct process manager (signals the PIDs of the dnsmasq / nfs-ganesha it
  started itself inside network namespaces) belongs in its own module and implements
  `ServiceManager` as well; nothing else here needs to change for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from reconciler import nftables
from reconciler.facts import ServiceState
from reconciler.host import LocalHost
from reconciler.rendered import Service
from reconciler.runner import Completed, Runner, run


class ServiceError(RuntimeError):
    """A reload, restart or firewall load that failed; the message is the tool's words."""


class ServiceManager(Protocol):
    def reload(self, service: Service) -> None: ...

    def restart(self, service: Service) -> None: ...

    def apply_firewall(self, path: str) -> None:
        """Load an nft file (which replaces the reconciler's own table atomically)."""
        ...

    def drop_firewall(self) -> None:
        """Delete the reconciler's table (its file is no longer rendered)."""
        ...

    def state(self, service: Service) -> ServiceState: ...


@runtime_checkable
class OwnsPrograms(Protocol):
    """A manager whose programs are the controller's own children (`services: direct`):
    started with the controller from the files already converged, stopped when it ends."""

    def start_existing(self) -> list[str]: ...

    def stop_all(self) -> None: ...


DEBIAN_UNITS: Mapping[Service, str] = MappingProxyType(
    {
        Service.dnsmasq: "dnsmasq.service",
        Service.nfs_kernel: "nfs-kernel-server.service",
        Service.nfs_ganesha: "nfs-ganesha.service",
        Service.nftables: "nftables.service",
        Service.sshd: "ssh.service",  # Debian's unit; "sshd.service" is only an alias
    }
)


def parse_systemctl_show(output: str) -> ServiceState:
    """State from `systemctl show --property=LoadState,ActiveState UNIT` (KEY=value lines)."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    if values.get("LoadState") == "not-found":
        return ServiceState.not_found
    try:
        return ServiceState(values.get("ActiveState", ""))
    except ValueError:
        return ServiceState.unknown


class SystemdServices:
    """Debian/Ubuntu servers booted with systemd."""

    def __init__(
        self,
        runner: Runner = run,
        units: Mapping[Service, str] = DEBIAN_UNITS,
        root: str = "/",
    ):
        self._run = runner
        self._units = units
        self._host = LocalHost(root)  # maps the server path of the nft file under --root

    def reload(self, service: Service) -> None:
        unit = self._units[service]
        if service is Service.dnsmasq:
            # SIGHUP to the main process re-reads hosts files (not the main file). Debian's
            # unit does exactly this as ExecReload; other distributions' units have no
            # ExecReload, so signal it directly and it works on both.
            self._check(["systemctl", "kill", "--kill-whom=main", "--signal=SIGHUP", unit])
        elif service is Service.nfs_kernel:
            self._check(["exportfs", "-ra"])
        else:
            self._check(["systemctl", "reload-or-restart", unit])

    def restart(self, service: Service) -> None:
        self._check(["systemctl", "restart", self._units[service]])

    def apply_firewall(self, path: str) -> None:
        self._check(["nft", "-f", self._host.local_path(path)])

    def drop_firewall(self) -> None:
        done = self._run(["nft", "delete", "table", nftables.FAMILY, nftables.TABLE])
        if not done.ok and not nftables.is_missing_table(done.output):
            raise ServiceError(_failure(done))

    def state(self, service: Service) -> ServiceState:
        unit = self._units[service]
        done = self._run(["systemctl", "show", "--property=LoadState,ActiveState", unit])
        return parse_systemctl_show(done.stdout) if done.ok else ServiceState.unknown

    def _check(self, argv: list[str]) -> None:
        done = self._run(argv)
        if not done.ok:
            raise ServiceError(_failure(done))


def _failure(done: Completed) -> str:
    words = done.output or "no output"
    return f"`{' '.join(done.argv)}` exited with {done.returncode}: {words}"


@dataclass
class NoServices:
    """Changes nothing; records what a real service manager would have been asked."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def reload(self, service: Service) -> None:
        self.calls.append(("reload", service.value))

    def restart(self, service: Service) -> None:
        self.calls.append(("restart", service.value))

    def apply_firewall(self, path: str) -> None:
        self.calls.append(("apply_firewall", path))

    def drop_firewall(self) -> None:
        self.calls.append(("drop_firewall", f"{nftables.FAMILY} {nftables.TABLE}"))

    def state(self, service: Service) -> ServiceState:
        return ServiceState.unknown
