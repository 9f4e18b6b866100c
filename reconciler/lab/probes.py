"""What a simulated PC does on the kitting network, and the facts it brings back.

Every probe runs a real client inside the PC's namespace through a `ProcessRegistry` (so it
is stopped whatever happens) and returns parsed facts:

- `dhcp`: busybox udhcpc with the NIC's MAC and a DHCP option 93 (client architecture);
  udhcpc hands the lease to a script as environment variables (`ip`, `mask`, `siaddr`,
  `boot_file`, `serverid`, ...); ours dumps its environment NUL-separated to a file, which
  `parse_env_dump` and `lease_from_env` turn into a `DhcpLease`.
- `tftp_get`: tftp-hpa in binary mode; the bytes, or a `TftpFailed` saying why.
- `tcp_connect`, `tcp_send_line`, `udp_send`, `udp_listen`, `tcp_listen`: the socket program
  `reconciler.lab.tcpprobe` run inside the namespace.
- `ping`: busybox ping (ICMP echo).

Targets must be lab addresses (192.168.100.0/24, 198.18.0.0/15, or multicast for UDP):
probes never aim anywhere else. Parsers are pure and tested on captured output.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, ip_address
from pathlib import Path
from typing import Literal

from reconciler.lab.netns import MULTICAST_NET, Host, lab_address
from reconciler.lab.procs import Proc, ProcessRegistry, ProcTimeout

# DHCP option 93 values a kitting bench meets (RFC 4578 and the IANA registry as firmware
# actually uses it: x86-64 UEFI sends 7, some firmware 9).
ARCH_BIOS = 0
ARCH_EFI_IA32 = 6
ARCH_EFI_X86_64 = 7
ARCH_EFI_X86_64_ALT = 9
ARCH_EFI_ARM64 = 11

PROBE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH for clients run in a namespace: system tools only, and an environment dump that
holds nothing from the caller's environment."""

_LEASE_DIR_VAR = "KITTING_LEASE_DIR"
# udhcpc runs this for each event with the event name as $1 (deconfig, bound, renew, nak,
# leasefail); it only records, the probe decides what to do with the lease.
_UDHCPC_SCRIPT = f'#!/bin/sh\nexec env -0 > "${_LEASE_DIR_VAR}/$1.env"\n'
_REMOTE = re.compile(r"[A-Za-z0-9._+@][A-Za-z0-9._+@/-]{0,254}")
_TFTP_ERROR = re.compile(r"^Error code (\d+): (.*)$", re.MULTILINE)
_DNSMASQ_LINE = re.compile(r"dnsmasq-dhcp\[\d+\]: (\d+) (.*)$")


# ---------------------------------------------------------------- DHCP


@dataclass(frozen=True)
class DhcpLease:
    """What the server offered: the lease as udhcpc reported it after DHCPACK."""

    interface: str
    address: IPv4Interface
    server_id: IPv4Address | None
    next_server: IPv4Address | None
    boot_file: str | None
    router: IPv4Address | None
    lease_seconds: int | None
    hostname: str | None


@dataclass(frozen=True)
class DhcpFailed:
    """No lease: `reason` is NoLease (the client gave up) or TimedOut (we stopped it)."""

    reason: Literal["NoLease", "TimedOut"]
    output: str


def arch_option(client_arch: int) -> str:
    """udhcpc's `-x` argument for option 93: two bytes, big-endian, in hex ('0x5d:0007').

    Purely computational.
    """
    if not 0 <= client_arch <= 0xFFFF:
        raise ValueError(f"client architecture is 0..65535, got {client_arch}")
    return f"0x5d:{client_arch:04x}"


def pxe_vendor_class(client_arch: int) -> str:
    """The vendor class (option 60) PXE firmware sends: 'PXEClient:Arch:00007:UNDI:003016'.

    dnsmasq's proxy mode answers only clients that say PXEClient. Purely computational.
    """
    if not 0 <= client_arch <= 0xFFFF:
        raise ValueError(f"client architecture is 0..65535, got {client_arch}")
    return f"PXEClient:Arch:{client_arch:05d}:UNDI:003016"


def udhcpc_argv(
    *,
    interface: str,
    script: Path,
    client_arch: int | None,
    vendor_class: str | None,
    tries: int,
    pause: int,
) -> list[str]:
    """The udhcpc command line: foreground, quit after a lease, give up after `tries`
    discovers `pause` s apart. Purely computational."""
    if tries < 1 or pause < 1:
        raise ValueError("tries and pause must be at least 1")
    argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-i", interface, "-s", str(script)]
    argv += ["-t", str(tries), "-T", str(pause)]
    if client_arch is not None:
        argv += ["-x", arch_option(client_arch)]
    if vendor_class is not None:
        argv += ["-V", vendor_class]
    return argv


def parse_env_dump(raw: bytes) -> dict[str, str]:
    """`env -0` output -> {name: value}. Purely computational."""
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        name, sep, value = entry.decode(errors="replace").partition("=")
        if not sep or not name:
            raise ValueError(f"not an environment entry: {entry[:60]!r}")
        env[name] = value
    return env


def lease_from_env(env: Mapping[str, str]) -> DhcpLease:
    """The lease udhcpc passed to its script on `bound`. Purely computational.

    `boot_file` comes from the BOOTP `file` field, `bootfile` from option 67: either names
    the boot file. `siaddr` 0.0.0.0 means no next server.
    """
    if "ip" not in env or "interface" not in env:
        raise ValueError("the environment holds no lease (no ip or interface)")
    mask = env.get("mask") or env.get("subnet") or "32"
    address = IPv4Interface(f"{env['ip']}/{mask}")
    next_server = _ipv4_or_none(env.get("siaddr"))
    lease = env.get("lease")
    routers = env.get("router", "").split()
    return DhcpLease(
        interface=env["interface"],
        address=address,
        server_id=_ipv4_or_none(env.get("serverid")),
        next_server=next_server,
        boot_file=env.get("boot_file") or env.get("bootfile") or None,
        router=_ipv4_or_none(routers[0]) if routers else None,
        lease_seconds=int(lease) if lease else None,
        hostname=env.get("hostname") or None,
    )


def dhcp(
    procs: ProcessRegistry,
    host: Host,
    *,
    nic: str = "e0",
    client_arch: int | None = None,
    vendor_class: str | None = None,
    tries: int = 3,
    pause: int = 1,
) -> DhcpLease | DhcpFailed:
    """Ask for a lease from `host`'s NIC (its MAC is the NIC's), sending option 93 when
    `client_arch` is given, and the PXE vendor class for that architecture unless
    `vendor_class` says otherwise. The lease is reported, not put on the NIC
    (`VirtualNetwork.assign` does that)."""
    host.nic(nic)
    work = procs.scratch(f"dhcp-{host.name}")
    script = work / "udhcpc-script"
    script.write_text(_UDHCPC_SCRIPT)
    script.chmod(0o700)
    if vendor_class is None and client_arch is not None:
        vendor_class = pxe_vendor_class(client_arch)
    argv = udhcpc_argv(
        interface=nic,
        script=script,
        client_arch=client_arch,
        vendor_class=vendor_class,
        tries=tries,
        pause=pause,
    )
    done = procs.run(
        argv,
        netns=host.netns,
        timeout=tries * pause + 3.0,
        name=f"udhcpc-{host.name}",
        env={"PATH": PROBE_PATH, _LEASE_DIR_VAR: str(work)},
    )
    bound = work / "bound.env"
    if bound.exists():
        return lease_from_env(parse_env_dump(bound.read_bytes()))
    return DhcpFailed(reason="TimedOut" if done.timed_out else "NoLease", output=done.text)


def dnsmasq_tags(log: str, mac: str) -> frozenset[str]:
    """The tags dnsmasq (with --log-dhcp) set for transactions of `mac`: proof of what it
    made of the request, e.g. 'efi' from a client-arch match. Purely computational."""
    mac = mac.lower()
    xids: set[str] = set()
    tags: dict[str, set[str]] = {}
    for line in log.splitlines():
        match = _DNSMASQ_LINE.search(line)
        if not match:
            continue
        xid, message = match.groups()
        if message.startswith("DHCP") and mac in message.lower().split():
            xids.add(xid)
        elif message.startswith("tags:"):
            words = message[len("tags:") :].split(",")
            tags.setdefault(xid, set()).update(w.strip() for w in words if w.strip())
    return frozenset(tag for xid in xids for tag in tags.get(xid, ()))


# ---------------------------------------------------------------- TFTP


@dataclass(frozen=True)
class TftpFetched:
    remote: str
    data: bytes


@dataclass(frozen=True)
class TftpFailed:
    """`kind`: error (the server answered with a TFTP error `code`), timeout, failed."""

    remote: str
    kind: Literal["error", "timeout", "failed"]
    code: int | None
    message: str


def check_remote(remote: str) -> str:
    """A TFTP path the client can pass unambiguously (no spaces, no leading '-').

    Purely computational.
    """
    if not _REMOTE.fullmatch(remote):
        raise ValueError(f"not a TFTP path the lab client can ask for: {remote!r}")
    return remote


def tftp_argv(server: str, remote: str, local: Path) -> list[str]:
    """tftp-hpa in binary (octet) mode, one `get`. Purely computational."""
    return ["tftp", "-m", "octet", server, "-c", "get", check_remote(remote), str(local)]


def parse_tftp_output(remote: str, output: str, returncode: int) -> TftpFailed | None:
    """tftp-hpa exits 0 even when the server refused the file; its words say so.

    Purely computational.
    """
    error = _TFTP_ERROR.search(output)
    if error:
        return TftpFailed(remote, "error", int(error.group(1)), error.group(2).strip())
    if "timed out" in output.lower():
        return TftpFailed(remote, "timeout", None, output.strip())
    if returncode != 0:
        return TftpFailed(remote, "failed", None, output.strip() or f"exit status {returncode}")
    return None


def tftp_get(
    procs: ProcessRegistry, host: Host, server: str, remote: str, *, timeout: float = 5.0
) -> TftpFetched | TftpFailed:
    """Fetch `remote` from the TFTP server at `server` (a lab address) from `host`."""
    target = str(lab_address(server))
    local = procs.scratch(f"tftp-{host.name}") / "fetched"
    done = procs.run(
        tftp_argv(target, remote, local),
        netns=host.netns,
        timeout=timeout,
        name=f"tftp-{host.name}",
        env={"PATH": PROBE_PATH},
    )
    if done.timed_out:
        return TftpFailed(remote, "timeout", None, f"no transfer within {timeout:g} s")
    failed = parse_tftp_output(remote, done.text, done.returncode)
    if failed is not None:
        return failed
    try:
        return TftpFetched(remote, local.read_bytes())
    except FileNotFoundError:
        return TftpFailed(remote, "failed", None, "tftp wrote no file")


# ---------------------------------------------------------------- TCP, UDP, ICMP

Outcome = Literal["connected", "refused", "timeout", "unreachable"]


@dataclass(frozen=True)
class Message:
    """One datagram or one connection's bytes, as a listener received it."""

    source: IPv4Address
    payload: str


def parse_probe_lines(text: str) -> list[dict[str, object]]:
    """The JSON lines tcpprobe printed. Purely computational."""
    records = []
    for line in text.splitlines():
        if line.strip():
            body = json.loads(line)
            if not isinstance(body, dict):
                raise ValueError(f"not a tcpprobe record: {line!r}")
            records.append(body)
    return records


def outcome_of(text: str) -> Outcome:
    """The outcome of a connect/send run from its output. Purely computational."""
    records = [r for r in parse_probe_lines(text) if "outcome" in r]
    if len(records) != 1:
        raise ValueError(f"tcpprobe printed {len(records)} outcomes: {text!r}")
    outcome = records[0]["outcome"]
    if outcome not in ("connected", "refused", "timeout", "unreachable"):
        raise ValueError(f"unknown tcpprobe outcome {outcome!r}")
    return outcome


def messages_of(text: str) -> list[Message]:
    """What a listener received, from its output. Purely computational."""
    return [
        Message(source=IPv4Address(str(r["source"])), payload=str(r["payload"]))
        for r in parse_probe_lines(text)
        if r.get("event") in ("datagram", "connection")
    ]


def tcp_connect(
    procs: ProcessRegistry, host: Host, target: str, port: int, *, timeout: float = 2.0
) -> Outcome:
    """Does a TCP connection from `host` to target:port succeed, get refused or time out?"""
    return _tcp(procs, host, ["connect", _unicast(target), _port(port)], timeout)


def tcp_send_line(
    procs: ProcessRegistry, host: Host, target: str, port: int, line: str, *, timeout: float = 2.0
) -> Outcome:
    """Connect and send one line (e.g. a Clonezilla job report to port 6461)."""
    if "\n" in line or "\r" in line:
        raise ValueError("one line: no line breaks inside")
    argv = ["send", _unicast(target), _port(port), f"--line={line}"]
    return _tcp(procs, host, argv, timeout)


def udp_send(procs: ProcessRegistry, host: Host, target: str, port: int, payload: str) -> None:
    """Send one datagram (to a lab address or a multicast group)."""
    addr = ip_address(target)
    dest = str(addr) if addr in MULTICAST_NET else _unicast(target)
    done = procs.run(
        _tcpprobe("udp-send", dest, _port(port), f"--payload={payload}"),
        netns=host.netns,
        timeout=5.0,
        name=f"udpsend-{host.name}",
    )
    if not done.ok:
        raise RuntimeError(f"udp-send from {host.name} failed: {done.text}")


class Listener:
    """A tcpprobe listener running in a namespace (started and ready)."""

    def __init__(self, proc: Proc, timeout: float) -> None:
        self.proc = proc
        self.timeout = timeout

    def messages(self) -> list[Message]:
        """Wait until the listener got its count or its own timeout ran out (bounded: we
        stop it a little later still), then what it received."""
        try:
            self.proc.wait(self.timeout + 3.0)
        except ProcTimeout:
            self.proc.stop()
        return messages_of(self.proc.stdout().decode(errors="replace"))


def udp_listen(
    procs: ProcessRegistry, host: Host, port: int, *, count: int = 1, timeout: float = 5.0
) -> Listener:
    """Listen for `count` datagrams on `port` in `host` for at most `timeout` s."""
    return _listen(procs, host, "udp-listen", port, count=count, timeout=timeout)


def tcp_listen(
    procs: ProcessRegistry, host: Host, port: int, *, count: int = 1, timeout: float = 5.0
) -> Listener:
    """Accept `count` connections on `port` in `host` and keep what each sent."""
    return _listen(procs, host, "tcp-listen", port, count=count, timeout=timeout)


def ping(procs: ProcessRegistry, host: Host, target: str, *, timeout: float = 2.0) -> bool:
    """Does one ICMP echo from `host` to `target` get an answer within `timeout` s?"""
    seconds = str(max(1, math.ceil(timeout)))
    done = procs.run(
        ["busybox", "ping", "-c", "1", "-W", seconds, "-w", seconds, _unicast(target)],
        netns=host.netns,
        timeout=timeout + 2.0,
        name=f"ping-{host.name}",
        env={"PATH": PROBE_PATH},
    )
    return done.ok


def _tcp(procs: ProcessRegistry, host: Host, args: list[str], timeout: float) -> Outcome:
    done = procs.run(
        _tcpprobe(*args, "--timeout", f"{timeout:g}"),
        netns=host.netns,
        timeout=timeout + 5.0,
        name=f"tcpprobe-{host.name}",
    )
    if not done.ok:
        raise RuntimeError(f"tcpprobe in {host.name} failed: {done.text}")
    return outcome_of(done.stdout.decode(errors="replace"))


def _listen(
    procs: ProcessRegistry, host: Host, kind: str, port: int, *, count: int, timeout: float
) -> Listener:
    argv = _tcpprobe(kind, _port(port), "--count", str(count), "--timeout", f"{timeout:g}")
    proc = procs.start(argv, netns=host.netns, name=f"{kind}-{host.name}")
    if not proc.wait_for_output('"listening"', timeout=5.0):
        proc.stop()
        raise RuntimeError(f"{kind} in {host.name} did not start: {proc.output()}")
    return Listener(proc, timeout)


def _tcpprobe(*args: str) -> list[str]:
    # The interpreter running the lab, so the probe imports this same package.
    return [sys.executable, "-m", "reconciler.lab.tcpprobe", *args]


def _unicast(target: str) -> str:
    return str(lab_address(target))


def _port(port: int) -> str:
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    return str(port)


def _ipv4_or_none(text: str | None) -> IPv4Address | None:
    if not text:
        return None
    addr = IPv4Address(text.split()[0])
    return None if addr.is_unspecified else addr
