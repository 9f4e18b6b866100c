"""`LabServices`: the third service manager, which runs the server's programs itself.

It implements `reconciler.services.ServiceManager` for the lab: no systemd, the programs are
started directly in the lab server's network namespace through a `ProcessRegistry`, with
the very files the reconciler wrote (their paths come from the `Layout`):

- dnsmasq: `dnsmasq --keep-in-foreground --conf-file=LAYOUT.dnsmasq_conf`, logging to its
  output file; lease and PID files in the lab's private directory. reload = SIGHUP (it
  re-reads its hosts files), restart = stop + start.
- nfs-ganesha: `rpcbind -w -f`, then `ganesha.nfsd -F -f MAIN`, where MAIN is a lab file
  that `%include`s the reconciler's LAYOUT.ganesha_conf. Both run in one private mount
  namespace with their own /run: rpcbind's socket (/run/rpcbind.sock) and state files live
  in the file system, not in the network namespace, so a lab rpcbind would otherwise take
  over the machine's and a lab ganesha could register with another namespace's rpcbind.
  Ready when mountd is registered; reload = SIGHUP (ganesha re-reads its exports).
- sshd: the real sshd, `sshd -D -e -f MAIN` where MAIN names a lab host key and includes
  the reconciler's drop-in directory, with a private /run for its privilege separation
  directory (so the machine's /run is not touched). reload = SIGHUP (sshd re-executes).
- nftables: `nft -f LAYOUT.nft_file` and `nft delete table inet kitting` inside the namespace.
- the kernel NFS server: not available here (this kernel has none); its files are still
  rendered and checked, but asking this manager to reload it is an error.

Every wait is bounded; a program that does not come up is stopped and reported as a
`ServiceError` carrying the end of its output, which apply turns into a rollback.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from reconciler import nftables
from reconciler.facts import ServiceState
from reconciler.lab.nsrunner import NetnsRunner
from reconciler.lab.procs import POLL_INTERVAL, Proc, ProcessRegistry, poll_count
from reconciler.layout import Layout
from reconciler.rendered import Service
from reconciler.runner import Runner, run
from reconciler.services import ServiceError

READY_TIMEOUT = 15.0
"""Seconds a program gets to say it is serving."""
OUTPUT_TAIL = 1500
NO_KERNEL_NFS = (
    "the lab has no kernel NFS server (this kernel has none): use the nfs-ganesha backend; "
    "the kernel backend's files are rendered and checked only"
)

# A private /run for programs that keep sockets or directories there. `ip netns exec`
# already gives each program its own mount namespace with / as a slave, so nothing
# mounted here reaches the machine; unshare makes that explicit and independent of ip.
_PRIVATE_RUN = "mount -t tmpfs -o mode=0755 kitting-lab-run /run"
# rpcbind then ganesha in one private /run: argv "sh -c NFS_SCRIPT sh MAIN LOG PIDFILE".
NFS_SCRIPT = f"""set -e
{_PRIVATE_RUN}
mkdir -p /run/rpcbind /run/ganesha
rpcbind -w -f &
i=0
while [ ! -S /run/rpcbind.sock ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
exec ganesha.nfsd -F -f "$1" -L "$2" -N NIV_EVENT -p "$3"
"""
_SSHD_SCRIPT = f"""set -e
{_PRIVATE_RUN}
mkdir -m 0755 /run/sshd
exec /usr/sbin/sshd -D -e -f "$1"
"""
_SSHD_READY = "Server listening"


class LabServices:
    """Starts, signals and stops the lab server's programs (see the module docstring)."""

    def __init__(
        self,
        procs: ProcessRegistry,
        netns: str | None,
        layout: Layout,
        private: Path,
        *,
        ready_timeout: float = READY_TIMEOUT,
        host_runner: Runner = run,
    ) -> None:
        self.netns = netns
        self.layout = layout
        self.private = private
        self.ready_timeout = ready_timeout
        self.calls: list[tuple[str, str]] = []
        """What the reconciler asked, in order (as NoServices records it)."""
        self._procs = procs
        # None: the programs run in this process's own namespace (`services: direct`)
        self._in_netns: Runner = NetnsRunner(netns) if netns is not None else host_runner
        self._host_runner = host_runner
        self._running: dict[Service, Proc] = {}
        self._log = logger.bind(target=netns or "direct", commit=None)

    # ------------------------------------------------------------ ServiceManager

    def reload(self, service: Service) -> None:
        self.calls.append(("reload", service.value))
        if service is Service.nftables:
            self._load_firewall(self.layout.nft_file)
            return
        if service is Service.nfs_kernel:
            raise ServiceError(NO_KERNEL_NFS)
        proc = self._running.get(service)
        if proc is None or not proc.running():
            raise ServiceError(f"{service.value} is not running in the lab: it needs a start")
        listening = proc.output().count(_SSHD_READY)
        proc.send_signal(signal.SIGHUP)
        if service is Service.sshd:
            # sshd re-executes itself on SIGHUP and says so once it listens again
            self._wait(proc, lambda: proc.output().count(_SSHD_READY) > listening, "re-listen")
        elif not proc.running():
            raise ServiceError(f"{service.value} ended on SIGHUP: {_tail(proc)}")
        self._log.info(f"reloaded {service.value} (SIGHUP to pid {proc.pid})")

    def restart(self, service: Service) -> None:
        self.calls.append(("restart", service.value))
        if service is Service.nftables:
            self._load_firewall(self.layout.nft_file)
            return
        if service is Service.nfs_kernel:
            raise ServiceError(NO_KERNEL_NFS)
        self.stop(service)
        starters = {
            Service.dnsmasq: self._start_dnsmasq,
            Service.nfs_ganesha: self._start_nfs,
            Service.sshd: self._start_sshd,
        }
        proc = starters[service]()
        self._running[service] = proc
        self._log.info(f"started {service.value} (pid {proc.pid})")

    def apply_firewall(self, path: str) -> None:
        self.calls.append(("apply_firewall", path))
        self._load_firewall(path)

    def drop_firewall(self) -> None:
        self.calls.append(("drop_firewall", f"{nftables.FAMILY} {nftables.TABLE}"))
        done = self._in_netns(["nft", "delete", "table", nftables.FAMILY, nftables.TABLE])
        if not done.ok and not nftables.is_missing_table(done.output):
            raise ServiceError(f"nft delete table in {self.netns}: {done.output}")

    def state(self, service: Service) -> ServiceState:
        if service is Service.nfs_kernel:
            return ServiceState.not_found
        if service is Service.nftables:
            done = self._in_netns(["nft", "list", "table", nftables.FAMILY, nftables.TABLE])
            if done.ok:
                return ServiceState.active
            if nftables.is_missing_table(done.output):
                return ServiceState.inactive
            return ServiceState.unknown
        proc = self._running.get(service)
        if proc is None:
            return ServiceState.inactive
        if proc.running():
            return ServiceState.active
        return ServiceState.failed if proc.wait(0) != 0 else ServiceState.inactive

    # ------------------------------------------------------------ the lab's own

    def pid(self, service: Service) -> int | None:
        """The PID of a running program of `service`, or None."""
        proc = self._running.get(service)
        return proc.pid if proc is not None and proc.running() else None

    def stop(self, service: Service) -> None:
        proc = self._running.pop(service, None)
        if proc is not None:
            status = proc.stop()
            self._log.info(f"stopped {service.value} (pid {proc.pid}, status {status})")

    def stop_all(self) -> None:
        for service in sorted(self._running, reverse=True):
            self.stop(service)

    def start_existing(self) -> list[str]:
        """Start every program whose configuration the reconciler has already written (a
        restarted `kitctl run` with `services: direct`: the files are converged, so no plan
        would start them). Returns what failed to start, in the programs' own words."""
        files = {
            Service.nftables: self.layout.nft_file,
            Service.dnsmasq: self.layout.dnsmasq_conf,
            Service.nfs_ganesha: self.layout.ganesha_conf,
            Service.sshd: self.layout.sshd_dropin,
        }
        failures: list[str] = []
        for service, path in files.items():
            if not Path(path).is_file() or self.pid(service) is not None:
                continue
            try:
                self.restart(service)
            except ServiceError as error:
                failures.append(f"{service.value}: {error}")
        return failures

    @property
    def host_key(self) -> Path:
        return self.private / "ssh_host_ed25519_key"

    def _load_firewall(self, path: str) -> None:
        done = self._in_netns(["nft", "-f", path], timeout=30.0)
        if not done.ok:
            raise ServiceError(f"nft -f {path} in {self.netns}: {done.output}")
        self._log.info(f"firewall loaded from {path}")

    def _start_dnsmasq(self) -> Proc:
        self.private.mkdir(parents=True, exist_ok=True)
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            f"--conf-file={self.layout.dnsmasq_conf}",
            "--log-facility=-",
            f"--dhcp-leasefile={self.layout.dhcp_leases}",
            f"--pid-file={self.private / 'dnsmasq.pid'}",
        ]
        # The rendered file's log-facility wins over --log-facility=-: dnsmasq writes its log
        # to that file (the reconciler reads its TFTP lines), whose directory must exist.
        log = Path(self.layout.dnsmasq_log)
        log.parent.mkdir(parents=True, exist_ok=True)
        Path(self.layout.dhcp_leases).parent.mkdir(parents=True, exist_ok=True)
        before = len(_text(log))  # a restart's readiness is in what this start writes
        proc = self._procs.start(argv, netns=self.netns, name="dnsmasq")
        self._wait(proc, lambda: "started, version" in proc.output() + _text(log)[before:], "start")
        return proc

    def _start_nfs(self) -> Proc:
        self.private.mkdir(parents=True, exist_ok=True)
        main = self.private / "ganesha.conf"
        main.write_text(self.ganesha_main())
        log = self.private / "ganesha.log"
        argv = ["unshare", "--mount", "--", "sh", "-c", NFS_SCRIPT, "sh"]
        argv += [str(main), str(log), str(self.private / "ganesha.pid")]
        proc = self._procs.start(argv, netns=self.netns, name="nfs-ganesha")

        def mountd_registered() -> bool:
            done = self._in_netns(["rpcinfo", "-p", "127.0.0.1"], timeout=5.0)
            return done.ok and " mountd" in done.stdout

        self._wait(proc, mountd_registered, "register mountd", log=log)
        return proc

    def ganesha_main(self) -> str:
        """The lab's ganesha.conf: recovery state inside the lab, no grace period (clients
        of a fresh lab server have nothing to reclaim), then the reconciler's file."""
        recovery = self.private / "ganesha-recovery"
        return (
            "# The lab's main nfs-ganesha file; the export is the reconciler's.\n"
            f'NFSv4 {{\n    RecoveryRoot = "{recovery}";\n    Graceless = true;\n}}\n'
            f'%include "{self.layout.ganesha_conf}"\n'
        )

    def _start_sshd(self) -> Proc:
        self.private.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            made = self._host_runner(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)]
            )
            if not made.ok:
                raise ServiceError(f"ssh-keygen for the lab's host key: {made.output}")
        main = self.private / "sshd_config"
        main.write_text(self.sshd_main())
        argv = ["unshare", "--mount", "--", "sh", "-c", _SSHD_SCRIPT, "sh", str(main)]
        proc = self._procs.start(argv, netns=self.netns, name="sshd")
        self._wait(proc, lambda: _SSHD_READY in proc.output(), "listen")
        return proc

    def sshd_main(self) -> str:
        """The lab's sshd_config: its own host key, then the drop-ins as Debian's does."""
        dropins = Path(self.layout.sshd_dropin).parent
        return (
            "# The lab's main sshd file; the hardening is the reconciler's drop-in.\n"
            f"Include {dropins}/*.conf\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
        )

    def _wait(
        self, proc: Proc, ready: Callable[[], bool], what: str, *, log: Path | None = None
    ) -> None:
        deadline = time.monotonic() + self.ready_timeout
        for _ in range(poll_count(self.ready_timeout, 0.05)):
            if not proc.running():
                break
            if ready():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(max(POLL_INTERVAL, 0.05))
        words = _tail(proc)
        if log is not None and log.exists():
            words += "\n" + log.read_text(errors="replace")[-OUTPUT_TAIL:]
        proc.stop()
        raise ServiceError(f"{proc.name} did not {what} within {self.ready_timeout:g} s: {words}")


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(proc: Proc) -> str:
    return proc.output().strip()[-OUTPUT_TAIL:] or "no output"
