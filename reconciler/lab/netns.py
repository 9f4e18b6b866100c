"""Build and remove a virtual kitting network made of network namespaces.

Shape (all names carry the run's prefix, e.g. `kt1a2b3c-`):

    kt1a2b3c-kit     switch: bridge br0, one port per NIC plugged into it (`pc1-e0`, ...)
    kt1a2b3c-srv     host: e0 (veth, other end in the switch), lo up, 224.0.0.0/4 via e0
    kt1a2b3c-pc1     host: e0 (and e1 for a PC with a dock: two MACs)
    kt1a2b3c-uplink  switch between a router's leg and another's (the server's uplink)
    kt1a2b3c-rtr     router: one leg per switch it joins, forwarding on
    kt1a2b3c-prod    switch of the production network, hosts behind it

Each veth pair is created directly in the two namespaces it joins (`ip -n SWITCH link add
PORT type veth peer name e0 netns HOST`), so no lab interface ever exists in the machine's
default namespace, and deleting a namespace deletes its interfaces. Addresses are accepted
only in 192.168.100.0/24 (kitting) and 198.18.0.0/15 (production).

Ownership: before creating anything, a run writes /run/kitting-lab/<prefix>.json with its PID
and that process's start time. `teardown(prefix)` removes every namespace (after killing
the processes still inside it) and every stray link with that prefix, then the record;
`cleanup_stale()` does that for every prefix whose owner is gone.

Runs `ip` (iproute2) with argument lists, never through a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    ip_address,
    ip_interface,
    ip_network,
)
from pathlib import Path
from types import TracebackType

from loguru import logger

from reconciler.lab.procs import POLL_INTERVAL, ProcessRegistry, poll_count

KITTING_NET = IPv4Network("192.168.100.0/24")
PRODUCTION_NET = IPv4Network("198.18.0.0/15")
LAB_NETS = (KITTING_NET, PRODUCTION_NET)
MULTICAST_NET = IPv4Network("224.0.0.0/4")

STATE_DIR = Path("/run/kitting-lab")
BRIDGE = "br0"
KITTING_SWITCH = "kit"
UPLINK_SWITCH = "uplink"
PRODUCTION_SWITCH = "prod"

IP_TIMEOUT = 10.0
"""Seconds one `ip` command may take (they take milliseconds; a hang is a bug)."""

MAX_NICS = 4
_PREFIX = re.compile(r"kt[0-9a-f]{6}-")
_NODE = re.compile(r"[a-z][a-z0-9]{0,11}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class LabError(Exception):
    """Building or removing the virtual network failed."""


# ---------------------------------------------------------------- names (pure)


def make_prefix(token: bytes) -> str:
    """The run prefix for 3 random bytes: b'\\x1a\\x2b\\x3c' -> 'kt1a2b3c-'.

    Purely computational.
    """
    if len(token) != 3:
        raise ValueError(f"a prefix token is 3 bytes, got {len(token)}")
    return f"kt{token.hex()}-"


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it has the lab's exact shape; teardown never touches other names.

    Purely computational.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"not a lab prefix (kt + 6 lower-case hex digits + '-'): {prefix!r}")
    return prefix


def prefix_of(name: str) -> str | None:
    """The lab prefix a namespace or link name starts with, or None.

    Purely computational.
    """
    match = _PREFIX.match(name)
    return match.group(0) if match else None


def namespace_name(prefix: str, node: str) -> str:
    """The namespace of lab node `node` ('pc1') in the run `prefix`.

    Node names are short lower-case words, so that a switch port `<node>-e<N>` fits the
    kernel's 15-character interface name limit. Purely computational.
    """
    check_prefix(prefix)
    if not _NODE.fullmatch(node):
        raise ValueError(
            f"a lab node name is a lower-case letter then up to 11 letters or digits: {node!r}"
        )
    return prefix + node


def port_name(node: str, nic: int) -> str:
    """The switch-side end of node `node`'s NIC number `nic`: 'pc1-e0'.

    Purely computational.
    """
    if not _NODE.fullmatch(node):
        raise ValueError(f"not a lab node name: {node!r}")
    if not 0 <= nic < MAX_NICS:
        raise ValueError(f"NIC number must be 0..{MAX_NICS - 1}, got {nic}")
    return f"{node}-e{nic}"


def lab_mac(prefix: str, node_index: int, nic: int) -> str:
    """A locally administered MAC unique to this run, node and NIC: '02:1a:2b:3c:05:01'.

    Purely computational.
    """
    check_prefix(prefix)
    if not 0 <= node_index <= 0xFF or not 0 <= nic <= 0xFF:
        raise ValueError(f"node index and NIC must be 0..255, got {node_index}, {nic}")
    token = prefix[2:8]
    return f"02:{token[0:2]}:{token[2:4]}:{token[4:6]}:{node_index:02x}:{nic:02x}"


def check_mac(mac: str) -> str:
    """A unicast MAC in lower case with colons, as the lab and dnsmasq write it.

    Purely computational.
    """
    if not _MAC.fullmatch(mac):
        raise ValueError(f"not a MAC written aa:bb:cc:dd:ee:ff in lower case: {mac!r}")
    if int(mac[0:2], 16) & 1:
        raise ValueError(f"a multicast MAC cannot be a NIC's address: {mac}")
    return mac


def lab_interface(text: str) -> IPv4Interface:
    """Parse 'ADDR/PREFIXLEN' and refuse anything outside the lab's two networks.

    Purely computational.
    """
    iface = ip_interface(text)
    if not isinstance(iface, IPv4Interface) or "/" not in text:
        raise ValueError(
            f"a lab address is IPv4 with a prefix length, e.g. 192.168.100.10/24: {text!r}"
        )
    if not any(iface.network.subnet_of(net) for net in LAB_NETS):
        raise ValueError(f"{text} is outside the lab networks {', '.join(map(str, LAB_NETS))}")
    return iface


def lab_address(text: str) -> IPv4Address:
    """Parse an IPv4 address inside the lab networks (a gateway, a probe target).

    Purely computational.
    """
    addr = ip_address(text)
    if not isinstance(addr, IPv4Address) or not any(addr in net for net in LAB_NETS):
        raise ValueError(f"{text} is not an IPv4 address in {', '.join(map(str, LAB_NETS))}")
    return addr


def parse_netns_list(text: str) -> list[str]:
    """Namespace names from `ip netns list` ('kt1a2b3c-pc1 (id: 3)' or just the name).

    Purely computational.
    """
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_link_names(text: str) -> list[str]:
    """Interface names from `ip -o link show` ('7: pc1-e0@if2: <...> ...').

    Purely computational.
    """
    names = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0].strip().isdigit():
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def start_time_from_stat(text: str) -> int:
    """A process's start time (clock ticks since boot) from the text of /proc/PID/stat.

    With the PID it identifies a process even after the PID is reused. Purely computational.
    """
    # The command name (field 2) is in parentheses and may itself contain ') '.
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[19])  # field 22 overall; `rest` starts at field 3


@dataclass(frozen=True)
class OwnerRecord:
    """Who made a lab run: its prefix, and the owning process (PID and start time)."""

    prefix: str
    pid: int
    start_time: int

    def encode(self) -> bytes:
        """Purely computational."""
        body = {"prefix": self.prefix, "pid": self.pid, "start_time": self.start_time}
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes) -> OwnerRecord:
        """Purely computational; ValueError for anything that is not a record."""
        try:
            body = json.loads(raw)
            record = cls(
                prefix=check_prefix(str(body["prefix"])),
                pid=int(body["pid"]),
                start_time=int(body["start_time"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a lab owner record: {exc}") from exc
        if record.pid <= 0:
            raise ValueError(f"not a lab owner record: pid {record.pid}")
        return record


def record_path(state_dir: Path, prefix: str) -> Path:
    """Purely computational."""
    return state_dir / f"{check_prefix(prefix)[:-1]}.json"


# ---------------------------------------------------------------- the network


@dataclass(frozen=True)
class NicSpec:
    """A NIC to give a host: the switch it plugs into, its MAC (default: one made for this
    run) and an optional address 'ADDR/PREFIXLEN'."""

    switch: str = KITTING_SWITCH
    mac: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class Nic:
    name: str  # inside the host namespace: e0, e1, ...
    mac: str
    switch: str
    port: str  # the other end, a port of the switch's bridge
    address: IPv4Interface | None


@dataclass(frozen=True)
class Switch:
    name: str
    netns: str
    bridge: str = BRIDGE


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    nics: tuple[Nic, ...]
    gateway: IPv4Address | None = None
    router: bool = False

    @property
    def mac(self) -> str:
        """The MAC of e0 (the one a PC boots from)."""
        return self.nics[0].mac

    @property
    def address(self) -> IPv4Address | None:
        """The static address of e0, if it was given one."""
        iface = self.nics[0].address
        return None if iface is None else iface.ip

    def nic(self, name: str) -> Nic:
        for nic in self.nics:
            if nic.name == name:
                return nic
        raise KeyError(f"{self.name} has no NIC {name}")


@dataclass
class _State:
    switches: dict[str, Switch] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    node_count: int = 0


class VirtualNetwork:
    """One lab run: its prefix, the namespaces it built, and the programs it started.

    Use `VirtualNetwork.create(...)` (records the owner first) as a context manager, or call
    `teardown()` in a `finally`. Programs go through `self.procs`, which teardown stops
    before removing the namespaces.
    """

    def __init__(self, prefix: str, *, log_dir: Path, state_dir: Path = STATE_DIR) -> None:
        self.prefix = check_prefix(prefix)
        self.state_dir = state_dir
        self.procs = ProcessRegistry(log_dir)
        self._state = _State()
        self._log = logger.bind(target=prefix, commit=None)

    @classmethod
    def create(
        cls, *, log_dir: Path, state_dir: Path = STATE_DIR, prefix: str | None = None
    ) -> VirtualNetwork:
        """A new run with a fresh prefix (or the given one), its owner record written.

        Every run on a machine must keep its record in the same `state_dir` (the default):
        `cleanup_stale` takes a prefix with no record there for a crashed run's.
        """
        chosen = prefix if prefix is not None else _unused_prefix(state_dir)
        net = cls(chosen, log_dir=log_dir, state_dir=state_dir)
        _write_record(state_dir, OwnerRecord(chosen, os.getpid(), _start_time(os.getpid())))
        return net

    def __enter__(self) -> VirtualNetwork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.teardown()
        except Exception:
            if exc is None:
                raise
            self._log.exception("lab teardown failed")

    @property
    def switches(self) -> dict[str, Switch]:
        return dict(self._state.switches)

    @property
    def hosts(self) -> dict[str, Host]:
        return dict(self._state.hosts)

    def netns(self, node: str) -> str:
        """The namespace name of node `node` of this run."""
        return namespace_name(self.prefix, node)

    def add_switch(self, name: str = KITTING_SWITCH) -> Switch:
        """A namespace holding bridge br0 (no STP delay, no multicast snooping, so that every
        multicast frame reaches every port as on a dumb switch)."""
        if name in self._state.switches or name in self._state.hosts:
            raise LabError(f"lab node {name} exists already")
        ns = self._new_namespace(name)
        _ip("-n", ns, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
            "forward_delay", "0", "mcast_snooping", "0")  # fmt: skip
        _ip("-n", ns, "link", "set", BRIDGE, "up")
        switch = Switch(name=name, netns=ns)
        self._state.switches[name] = switch
        return switch

    def add_host(
        self,
        name: str,
        *,
        nics: Sequence[NicSpec] = (NicSpec(),),
        gateway: str | None = None,
    ) -> Host:
        """A namespace with NICs e0, e1, ... each plugged into a switch, `lo` up and a
        multicast route on e0; static addresses and a default route when given."""
        return self._add_node(name, nics, gateway, router=False)

    def add_router(self, name: str, *, legs: Sequence[NicSpec], gateway: str | None = None) -> Host:
        """A host with one NIC per network (each with an address) and IPv4 forwarding on;
        a default route when `gateway` is given (a server routing to its uplink)."""
        if len(legs) < 2 or any(leg.address is None for leg in legs):
            raise LabError("a router needs at least two legs, each with an address")
        return self._add_node(name, legs, gateway, router=True)

    def add_route(self, host: Host, network: str, *, via: str) -> None:
        """Route a lab network through a neighbour (a router's way back to a network
        behind another router)."""
        target = ip_network(network)
        if not isinstance(target, IPv4Network) or not any(
            target.subnet_of(net) for net in LAB_NETS
        ):
            raise ValueError(f"{network} is not inside the lab networks")
        _ip("-n", host.netns, "route", "replace", str(target), "via", str(lab_address(via)))

    def add_production(
        self,
        *,
        router_kitting: str = "192.168.100.254/24",
        router_production: str = "198.18.0.1/15",
        server_address: str = "198.18.0.10/15",
    ) -> tuple[Host, Host]:
        """The production side of issue 6: switch `prod`, router `rtr` joining it to the
        kitting switch, and host `prodsrv` behind it (routing back through `rtr`).

        Returns (router, production host). The kitting switch must exist already.
        """
        if KITTING_SWITCH not in self._state.switches:
            raise LabError("add the kitting switch before the production side")
        if PRODUCTION_SWITCH not in self._state.switches:
            self.add_switch(PRODUCTION_SWITCH)
        rtr = self.add_router(
            "rtr",
            legs=(
                NicSpec(KITTING_SWITCH, address=router_kitting),
                NicSpec(PRODUCTION_SWITCH, address=router_production),
            ),
        )
        gateway = str(lab_interface(router_production).ip)
        prod = self.add_host(
            "prodsrv", nics=(NicSpec(PRODUCTION_SWITCH, address=server_address),), gateway=gateway
        )
        return rtr, prod

    def assign(
        self, host: Host, address: str, *, nic: str = "e0", gateway: str | None = None
    ) -> None:
        """Put an address (and a default route) on a host's NIC, e.g. after a DHCP lease."""
        iface = lab_interface(address)
        host.nic(nic)  # KeyError for a NIC it does not have
        _ip("-n", host.netns, "addr", "replace", str(iface), "dev", nic)
        if gateway is not None:
            _ip("-n", host.netns, "route", "replace", "default", "via", str(lab_address(gateway)))

    def teardown(self) -> list[str]:
        """Stop the run's programs, then remove its namespaces, links and owner record.

        Returns the namespaces removed. Idempotent.
        """
        try:
            self.procs.stop_all()
        finally:
            removed = teardown(self.prefix, state_dir=self.state_dir)
            self._state = _State()
        return removed

    def _new_namespace(self, node: str) -> str:
        ns = namespace_name(self.prefix, node)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        self._log.debug(f"namespace {ns} added")
        return ns

    def _add_node(
        self, name: str, nics: Sequence[NicSpec], gateway: str | None, *, router: bool
    ) -> Host:
        if name in self._state.switches or name in self._state.hosts:
            raise LabError(f"lab node {name} exists already")
        if not 1 <= len(nics) <= MAX_NICS:
            raise LabError(f"a lab host has 1..{MAX_NICS} NICs, got {len(nics)}")
        for spec in nics:
            if spec.switch not in self._state.switches:
                raise LabError(f"{name}: no switch named {spec.switch} (add_switch first)")
        gw = None if gateway is None else lab_address(gateway)
        # Validate everything before the first `ip` call, so a bad argument leaves nothing.
        self._state.node_count += 1
        index = self._state.node_count
        planned = tuple(
            Nic(
                name=f"e{number}",
                mac=check_mac(spec.mac) if spec.mac else lab_mac(self.prefix, index, number),
                switch=spec.switch,
                port=port_name(name, number),
                address=None if spec.address is None else lab_interface(spec.address),
            )
            for number, spec in enumerate(nics)
        )
        ns = self._new_namespace(name)
        for nic in planned:
            switch_ns = self._state.switches[nic.switch].netns
            _ip("-n", switch_ns, "link", "add", nic.port, "type", "veth",
                "peer", "name", nic.name, "address", nic.mac, "netns", ns)  # fmt: skip
            _ip("-n", switch_ns, "link", "set", nic.port, "master", BRIDGE, "up")
            _ip("-n", ns, "link", "set", nic.name, "up")
            if nic.address is not None:
                _ip("-n", ns, "addr", "add", str(nic.address), "dev", nic.name)
        # Multicast (udpcast, 224.0.0.1) leaves by the kitting NIC even without an address.
        _ip("-n", ns, "route", "add", str(MULTICAST_NET), "dev", planned[0].name)
        if gw is not None:
            _ip("-n", ns, "route", "add", "default", "via", str(gw))
        if router:
            _ip("netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        host = Host(name=name, netns=ns, nics=planned, gateway=gw, router=router)
        self._state.hosts[name] = host
        self._log.debug(f"host {ns} plugged in ({', '.join(n.mac for n in planned)})")
        return host


# ---------------------------------------------------------------- removal


def list_namespaces() -> list[str]:
    """Every network namespace name `ip netns` knows (all runs, all owners)."""
    return parse_netns_list(_ip("netns", "list"))


def teardown(prefix: str, *, state_dir: Path = STATE_DIR, grace: float = 2.0) -> list[str]:
    """Remove every namespace and link named with `prefix`, the processes left inside those
    namespaces, and the run's owner record. Idempotent; returns the namespaces removed."""
    check_prefix(prefix)
    log = logger.bind(target=prefix, commit=None)
    mine = [ns for ns in list_namespaces() if ns.startswith(prefix)]
    for ns in mine:
        _kill_inside(ns, grace)
    removed = []
    for ns in mine:
        done = run_ip("netns", "delete", ns)
        if done.returncode != 0 and ns in list_namespaces():
            raise LabError(f"cannot delete namespace {ns}: {done.stderr.strip()}")
        removed.append(ns)
    # The lab makes no links in the default namespace; this sweeps any that a crashed,
    # older or hand-made run left there under its prefix.
    for link in parse_link_names(_ip("-o", "link", "show")):
        if link.startswith(prefix):
            _ip("link", "delete", link)
    record_path(state_dir, prefix).unlink(missing_ok=True)
    if removed:
        log.info(f"lab removed: {len(removed)} namespace(s)")
    return removed


def hand_over(prefix: str, pid: int, *, state_dir: Path = STATE_DIR) -> None:
    """Make process `pid` the owner of run `prefix`: a lab kept running after the command
    that built it ends is owned by one of its own programs, so `cleanup_stale` leaves it
    alone while that program lives."""
    _write_record(state_dir, OwnerRecord(check_prefix(prefix), pid, _start_time(pid)))


def cleanup_stale(*, state_dir: Path = STATE_DIR) -> list[str]:
    """Tear down every lab run whose owner process is gone; returns their prefixes.

    A prefix seen in a namespace name with no record is stale too: a run writes its record
    before it creates anything.
    """
    prefixes = {p for p in map(prefix_of, list_namespaces()) if p is not None}
    records: dict[str, OwnerRecord | None] = {}
    for path in sorted(state_dir.glob("kt*.json")) if state_dir.is_dir() else []:
        prefix = path.stem + "-"
        if prefix_of(prefix) != prefix:
            continue
        try:
            records[prefix] = OwnerRecord.decode(path.read_bytes())
        except (OSError, ValueError):
            records[prefix] = None
        prefixes.add(prefix)
    stale = sorted(p for p in prefixes if not _owner_alive(records.get(p)))
    for prefix in stale:
        teardown(prefix, state_dir=state_dir)
    return stale


def _owner_alive(record: OwnerRecord | None) -> bool:
    if record is None:
        return False
    try:
        return _start_time(record.pid) == record.start_time
    except (OSError, ValueError, IndexError):
        return False


def _kill_inside(ns: str, grace: float) -> None:
    """End the processes still inside one of our namespaces: TERM, then KILL."""
    pids = _pids_inside(ns)
    if not pids:
        return
    logger.bind(target=ns, commit=None).warning(f"ending {len(pids)} leftover process(es)")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for _ in range(poll_count(grace)):
            pids = _pids_inside(ns)
            if not pids:
                return
            time.sleep(POLL_INTERVAL)


def _pids_inside(ns: str) -> list[int]:
    done = run_ip("netns", "pids", ns)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def run_ip(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` (no shell), bounded by IP_TIMEOUT; the caller judges the status."""
    try:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"ip {' '.join(args)}: {exc}") from exc


def _ip(*args: str) -> str:
    done = run_ip(*args)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _start_time(pid: int) -> int:
    return start_time_from_stat(Path(f"/proc/{pid}/stat").read_text())


def _unused_prefix(state_dir: Path) -> str:
    existing = {prefix_of(ns) for ns in list_namespaces()}
    for _ in range(16):
        prefix = make_prefix(secrets.token_bytes(3))
        if prefix not in existing and not record_path(state_dir, prefix).exists():
            return prefix
    raise LabError("no unused lab prefix after 16 tries")


def _write_record(state_dir: Path, record: OwnerRecord) -> None:
    """Atomically: a half-written record would make a live run look stale."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = record_path(state_dir, record.prefix)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, record.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
