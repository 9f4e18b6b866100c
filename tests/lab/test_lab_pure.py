"""The lab's pure parts: names, owner records, command lines and parsers of captured output.

No root, no namespaces. Expected values are read off the captured files by hand.
"""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from reconciler.lab import netns, probes, procs, security, tcpprobe

CASES = Path(__file__).parent / "cases"


# ---------------------------------------------------------------- names


def test_prefix_is_kt_and_the_token_in_hex() -> None:
    assert netns.make_prefix(b"\x1a\x2b\x3c") == "kt1a2b3c-"
    assert netns.make_prefix(b"\x00\x00\xff") == "kt0000ff-"
    with pytest.raises(ValueError, match="3 bytes"):
        netns.make_prefix(b"\x01\x02")


@pytest.mark.parametrize("bad", ["kt1A2b3c-", "kt1a2b3c", "xx1a2b3c-", "kt1a2b3c-x", "kt1a2b-", ""])
def test_check_prefix_refuses_anything_but_the_exact_shape(bad: str) -> None:
    with pytest.raises(ValueError, match="not a lab prefix"):
        netns.check_prefix(bad)


def test_prefix_of_names() -> None:
    assert netns.prefix_of("kt1a2b3c-pc1") == "kt1a2b3c-"
    assert netns.prefix_of("ktzzzzzz-pc1") is None
    assert netns.prefix_of("docker0") is None
    assert netns.prefix_of("xkt1a2b3c-pc1") is None


def test_namespace_and_port_names() -> None:
    assert netns.namespace_name("kt1a2b3c-", "pc1") == "kt1a2b3c-pc1"
    assert netns.port_name("pc1", 0) == "pc1-e0"
    # The longest node name still gives a port name within the kernel's 15 characters.
    assert netns.port_name("abcdefghijkl", 3) == "abcdefghijkl-e3"
    for bad in ("PC1", "pc_1", "../x", "1pc", "abcdefghijklm", ""):
        with pytest.raises(ValueError, match="node name"):
            netns.namespace_name("kt1a2b3c-", bad)
    with pytest.raises(ValueError, match="NIC number"):
        netns.port_name("pc1", 4)


def test_lab_mac_is_local_unicast_from_prefix_node_and_nic() -> None:
    assert netns.lab_mac("kt1a2b3c-", 5, 1) == "02:1a:2b:3c:05:01"
    assert netns.lab_mac("ktffffff-", 255, 0) == "02:ff:ff:ff:ff:00"
    with pytest.raises(ValueError):
        netns.lab_mac("kt1a2b3c-", 256, 0)


def test_check_mac() -> None:
    assert netns.check_mac("02:00:5e:10:00:21") == "02:00:5e:10:00:21"
    for bad in ("02:00:5E:10:00:21", "02-00-5e-10-00-21", "02:00:5e:10:00", "01:00:5e:00:00:01"):
        with pytest.raises(ValueError):
            netns.check_mac(bad)


def test_lab_addresses_stay_inside_the_two_lab_networks() -> None:
    assert netns.lab_interface("192.168.100.10/24") == IPv4Interface("192.168.100.10/24")
    assert netns.lab_interface("198.19.255.1/15") == IPv4Interface("198.19.255.1/15")
    # 198.20/16 is just past 198.18.0.0/15; /16 around the kitting net is wider than it.
    for bad in ("198.20.0.1/16", "192.168.0.1/16", "10.0.0.1/8", "192.168.100.10", "fd00::1/64"):
        with pytest.raises(ValueError):
            netns.lab_interface(bad)
    assert netns.lab_address("198.18.0.10") == IPv4Address("198.18.0.10")
    for bad in ("8.8.8.8", "127.0.0.1", "192.168.101.1"):
        with pytest.raises(ValueError):
            netns.lab_address(bad)


def test_parse_netns_list_with_and_without_ids() -> None:
    text = "kt1a2b3c-pc1 (id: 3)\nkt1a2b3c-kit\n\nother\n"
    assert netns.parse_netns_list(text) == ["kt1a2b3c-pc1", "kt1a2b3c-kit", "other"]


def test_parse_link_names_from_captured_ip_o_link() -> None:
    text = (
        "1: lo: <LOOPBACK> mtu 65536 qdisc noop state DOWN mode DEFAULT group default qlen 1000"
        "\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        "2: br0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group "
        "default qlen 1000\\    link/ether 36:06:45:fb:8d:91 brd ff:ff:ff:ff:ff:ff\n"
        "3: pc1-e0@if2: <BROADCAST,MULTICAST> mtu 1500 qdisc noop master br0 state DOWN mode "
        "DEFAULT group default qlen 1000\\    link/ether 36:06:45:fb:8d:91 brd "
        "ff:ff:ff:ff:ff:ff link-netns ktdebug-b\n"
    )
    assert netns.parse_link_names(text) == ["lo", "br0", "pc1-e0"]


def test_start_time_is_field_22_even_with_parentheses_in_the_name() -> None:
    stat = (
        "1234 (a) b) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 "
        "12345678 300 18446744073709551615\n"
    )
    assert netns.start_time_from_stat(stat) == 987654


def test_owner_record_bytes_and_round_trip() -> None:
    record = netns.OwnerRecord("kt1a2b3c-", 42, 99)
    assert record.encode() == b'{"pid": 42, "prefix": "kt1a2b3c-", "start_time": 99}\n'
    assert netns.OwnerRecord.decode(record.encode()) == record
    for bad in (b"", b"[]", b'{"pid": 1}', b'{"pid": 0, "prefix": "kt1a2b3c-", "start_time": 1}'):
        with pytest.raises(ValueError):
            netns.OwnerRecord.decode(bad)
    with pytest.raises(ValueError, match="not a lab prefix"):
        netns.OwnerRecord.decode(b'{"pid": 5, "prefix": "../etc", "start_time": 1}')
    assert netns.record_path(Path("/run/kitting-lab"), "kt1a2b3c-") == Path(
        "/run/kitting-lab/kt1a2b3c.json"
    )


# ---------------------------------------------------------------- procs


def test_netns_argv_and_poll_count() -> None:
    assert procs.netns_argv("kt1a2b3c-pc1", ["sleep", "1"]) == [
        "ip", "netns", "exec", "kt1a2b3c-pc1", "sleep", "1",
    ]  # fmt: skip
    for bad in ("", "-n", "a/b"):
        with pytest.raises(ValueError):
            procs.netns_argv(bad, ["true"])
    with pytest.raises(ValueError):
        procs.netns_argv("ns", [])
    assert procs.poll_count(1.0, 0.02) == 51
    assert procs.poll_count(0.0) == 1
    for bad_timeout in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            procs.poll_count(bad_timeout)


# ---------------------------------------------------------------- DHCP


def test_option_93_and_pxe_vendor_class() -> None:
    assert probes.arch_option(0) == "0x5d:0000"
    assert probes.arch_option(7) == "0x5d:0007"
    assert probes.arch_option(11) == "0x5d:000b"
    assert probes.pxe_vendor_class(7) == "PXEClient:Arch:00007:UNDI:003016"
    with pytest.raises(ValueError):
        probes.arch_option(65536)


def test_udhcpc_argv() -> None:
    argv = probes.udhcpc_argv(
        interface="e0",
        script=Path("/tmp/s"),
        client_arch=9,
        vendor_class="PXEClient:Arch:00009:UNDI:003016",
        tries=3,
        pause=1,
    )
    assert argv == [
        "busybox", "udhcpc", "-f", "-q", "-n", "-i", "e0", "-s", "/tmp/s", "-t", "3", "-T", "1",
        "-x", "0x5d:0009", "-V", "PXEClient:Arch:00009:UNDI:003016",
    ]  # fmt: skip
    plain = probes.udhcpc_argv(
        interface="e1", script=Path("/s"), client_arch=None, vendor_class=None, tries=1, pause=2
    )
    assert "-x" not in plain and "-V" not in plain


def test_lease_from_a_captured_udhcpc_dump() -> None:
    # Captured from busybox udhcpc 1.35 against dnsmasq 2.90 (UEFI PC, reserved address).
    env = probes.parse_env_dump((CASES / "udhcpc-bound-uefi.env0").read_bytes())
    assert env["boot_file"] == "shimx64.efi"
    assert env["opt53"] == "05"  # DHCPACK
    lease = probes.lease_from_env(env)
    assert lease == probes.DhcpLease(
        interface="e0",
        address=IPv4Interface("192.168.100.22/24"),
        server_id=IPv4Address("192.168.100.1"),
        next_server=IPv4Address("192.168.100.1"),
        boot_file="shimx64.efi",
        router=IPv4Address("192.168.100.1"),
        lease_seconds=3600,
        hostname=None,
    )


def test_lease_without_next_server_and_with_option_67_only() -> None:
    env = {"interface": "e1", "ip": "192.168.100.30", "mask": "24", "siaddr": "0.0.0.0"}
    env |= {"bootfile": "grubx64.efi", "router": "192.168.100.1 192.168.100.2"}
    lease = probes.lease_from_env(env)
    assert lease.next_server is None
    assert lease.boot_file == "grubx64.efi"
    assert lease.router == IPv4Address("192.168.100.1")
    assert lease.server_id is None and lease.lease_seconds is None
    with pytest.raises(ValueError, match="no lease"):
        probes.lease_from_env({"interface": "e0"})


def test_parse_env_dump_keeps_equals_signs_and_newlines_in_values() -> None:
    raw = b"a=1\0b=x=y\0c=two\nlines\0"
    assert probes.parse_env_dump(raw) == {"a": "1", "b": "x=y", "c": "two\nlines"}
    with pytest.raises(ValueError):
        probes.parse_env_dump(b"novalue\0")


def test_dnsmasq_tags_from_a_captured_log() -> None:
    # The captured log: 02:00:00:00:00:21 asked as BIOS (arch 0), ...:22 as UEFI (arch 7).
    log = (CASES / "dnsmasq-log-dhcp.txt").read_text()
    assert probes.dnsmasq_tags(log, "02:00:00:00:00:21") == {"known", "e0"}
    assert probes.dnsmasq_tags(log, "02:00:00:00:00:22") == {"known", "efi", "e0"}
    assert probes.dnsmasq_tags(log, "02:00:00:00:00:99") == set()


# ---------------------------------------------------------------- TFTP


def test_tftp_argv_and_remote_names() -> None:
    assert probes.tftp_argv("192.168.100.1", "pxelinux.cfg/default", Path("/t/f")) == [
        "tftp", "-m", "octet", "192.168.100.1", "-c", "get", "pxelinux.cfg/default", "/t/f",
    ]  # fmt: skip
    for bad in ("", "-v", "a b", "a\nb", "x" * 256):
        with pytest.raises(ValueError):
            probes.check_remote(bad)


def test_tftp_outcomes_from_captured_output() -> None:
    # tftp-hpa 5.2 prints the server's error and still exits 0.
    refused = "Error code 1: file /srv/tftp/nothere not found for 192.168.100.21\n"
    assert probes.parse_tftp_output("nothere", refused, 0) == probes.TftpFailed(
        "nothere", "error", 1, "file /srv/tftp/nothere not found for 192.168.100.21"
    )
    timed_out = probes.parse_tftp_output("f", "Transfer timed out.\n", 0)
    assert timed_out is not None and timed_out.kind == "timeout"
    assert probes.parse_tftp_output("f", "", 0) is None
    failed = probes.parse_tftp_output("f", "", 1)
    assert failed == probes.TftpFailed("f", "failed", None, "exit status 1")


# ---------------------------------------------------------------- sockets


def test_connection_outcomes() -> None:
    assert tcpprobe.classify(None) == "connected"
    assert tcpprobe.classify(ConnectionRefusedError()) == "refused"
    assert tcpprobe.classify(TimeoutError()) == "timeout"
    assert tcpprobe.classify(OSError(errno.EHOSTUNREACH, "no route")) == "unreachable"
    assert tcpprobe.classify(OSError(errno.ENETUNREACH, "no net")) == "unreachable"
    with pytest.raises(OSError, match="odd"):
        tcpprobe.classify(OSError(errno.EIO, "odd"))


def test_probe_output_parsers() -> None:
    assert probes.outcome_of('{"detail": "", "outcome": "refused"}\n') == "refused"
    with pytest.raises(ValueError):
        probes.outcome_of("")
    with pytest.raises(ValueError):
        probes.outcome_of('{"outcome": "maybe", "detail": ""}\n')
    listened = (
        '{"event": "listening", "port": 9999}\n'
        '{"event": "datagram", "payload": "hi", "source": "192.168.100.21"}\n'
        '{"event": "done", "reason": "count"}\n'
    )
    assert probes.messages_of(listened) == [probes.Message(IPv4Address("192.168.100.21"), "hi")]


def test_probes_refuse_targets_outside_the_lab() -> None:
    host = netns.Host("pc1", "kt1a2b3c-pc1", ())
    registry = procs.ProcessRegistry(Path("/nonexistent"))
    with pytest.raises(ValueError):
        probes.tcp_connect(registry, host, "8.8.8.8", 53)
    with pytest.raises(ValueError):
        probes.tcp_send_line(registry, host, "192.168.100.1", 6461, "two\nlines")
    with pytest.raises(ValueError):
        probes.tcp_connect(registry, host, "192.168.100.1", 0)
    assert registry.procs == ()


def test_tcpprobe_refuses_to_run_outside_a_lab_namespace(tmp_path: Path) -> None:
    # The test process is in the machine's own namespace, which no lab entry names.
    assert not tcpprobe.in_lab_namespace(tmp_path)
    assert tcpprobe.main(["connect", "192.168.100.1", "6461"]) == 2


# ---------------------------------------------------------------- the production path


def test_traceroute_hops_from_captured_busybox_output() -> None:
    # Captured from busybox 1.35 traceroute in the admin terminal's namespace of a lab.
    reached = (
        "traceroute to 198.18.0.10 (198.18.0.10), 4 hops max, 46 byte packets\n"
        " 1  192.168.100.1  0.004 ms\n 2  198.19.0.254  0.001 ms\n 3  198.18.0.10  0.002 ms\n"
    )
    assert security.parse_traceroute(reached) == ["192.168.100.1", "198.19.0.254", "198.18.0.10"]
    lost = (
        "traceroute to 198.18.0.99 (198.18.0.99), 4 hops max, 46 byte packets\n"
        " 1  192.168.100.1  0.002 ms\n 2  198.19.0.254  0.001 ms\n 3  *\n 4  *\n"
    )
    assert security.parse_traceroute(lost) == ["192.168.100.1", "198.19.0.254", None, None]
    assert security.parse_traceroute("") == []


def test_the_path_to_production_is_the_server_then_the_router() -> None:
    assert security.expected_path() == ["192.168.100.1", "198.19.0.254", "198.18.0.10"]
