"""Golden command lines: udp-sender as DRBL's udp_send_part_img orders it, and drbl-ocs as
its own option parser reads it. Expected values are written out by hand."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from reconciler.deployment_session import (
    PartitionStream,
    chunk_problem,
    drbl_ocs_argv,
    drbl_ocs_stop_argv,
    multicast_runs,
    udp_sender_argv,
)
from reconciler.desired import AfterImaging, Mode

GROUP = IPv4Address("239.192.0.1")


def test_first_partition_waits_for_the_pcs() -> None:
    argv = udp_sender_argv(
        interface="enp3s0",
        portbase=2232,
        data_group=GROUP,
        ttl=1,
        min_receivers=20,
        max_wait=600,
        start_timeout=3600,
        max_bitrate=800_000_000,
    )
    assert argv == (
        "udp-sender",
        "--full-duplex",
        "--max-bitrate", "800000000",
        "--min-receivers", "20",
        "--max-wait", "600",
        "--start-timeout", "3600",
        "--interface", "enp3s0",
        "--nokbd",
        "--mcast-all-addr", "224.0.0.1",
        "--mcast-data-address", "239.192.0.1",
        "--portbase", "2232",
        "--ttl", "1",
    )  # fmt: skip


def test_runs_per_partition_in_parts_order_port_plus_two() -> None:
    parts = [
        PartitionStream("sda1", ("/home/partimag/img/sda1.vfat-ptcl-img.gz.aa",)),
        PartitionStream("sda2", ("/home/partimag/img/sda2.ntfs-ptcl-img.gz.aa",
                                 "/home/partimag/img/sda2.ntfs-ptcl-img.gz.ab")),
        PartitionStream("sda3", ("/home/partimag/img/sda3.ext4-ptcl-img.zst.aa",)),
    ]  # fmt: skip
    runs = multicast_runs(
        parts,
        interface="eth1",
        portbase=4000,
        data_group=IPv4Address("239.192.7.9"),
        ttl=1,
        min_receivers=3,
        max_wait=300,
        start_timeout=900,
        max_bitrate=None,
    )
    assert [(r.partition, r.portbase) for r in runs] == [
        ("sda1", 4000),
        ("sda2", 4002),
        ("sda3", 4004),
    ]
    assert runs[1].chunks == parts[1].chunks
    tail = ("--interface", "eth1", "--nokbd", "--mcast-all-addr", "224.0.0.1",
            "--mcast-data-address", "239.192.7.9", "--portbase")  # fmt: skip
    assert runs[0].argv == (
        "udp-sender", "--full-duplex", "--min-receivers", "3", "--max-wait", "300",
        "--start-timeout", "900", *tail, "4000", "--ttl", "1",
    )  # fmt: skip
    # Later partitions: the same PCs, but only PART_PREPARE_TIME (30 s) after the first one.
    assert runs[1].argv == (
        "udp-sender", "--full-duplex", "--min-receivers", "3", "--max-wait", "30",
        *tail, "4002", "--ttl", "1",
    )  # fmt: skip
    assert runs[2].argv[-3:] == ("4004", "--ttl", "1")


def test_at_most_sixteen_partitions_fit_the_port_span() -> None:
    parts = [PartitionStream(f"sda{i}", (f"/x/sda{i}.aa",)) for i in range(1, 18)]
    with pytest.raises(ValueError, match="at most 16 partitions"):
        multicast_runs(
            parts,
            interface="eth0",
            portbase=2232,
            data_group=GROUP,
            ttl=1,
            min_receivers=1,
            max_wait=60,
            start_timeout=None,
            max_bitrate=None,
        )


def test_the_last_partition_port_must_fit() -> None:
    parts = [PartitionStream("sda1", ("/x/sda1.aa",)), PartitionStream("sda2", ("/x/sda2.aa",))]
    with pytest.raises(ValueError, match="port base 65536"):
        multicast_runs(
            parts,
            interface="eth0",
            portbase=65534,
            data_group=GROUP,
            ttl=1,
            min_receivers=1,
            max_wait=60,
            start_timeout=None,
            max_bitrate=None,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"portbase": 2233}, "must be even"),
        ({"portbase": 80}, "within 1024-65534"),
        ({"data_group": IPv4Address("192.168.100.1")}, "not a multicast address"),
        ({"interface": "eth0; rm -rf /"}, "not a network interface name"),
        ({"min_receivers": 0}, "min_receivers must be a positive"),
        ({"start_timeout": 0}, "start_timeout must be a positive"),
        ({"ttl": 0}, "TTL 0"),
    ],
)
def test_sender_refuses_bad_values(change: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "interface": "eth0",
        "portbase": 2232,
        "data_group": GROUP,
        "ttl": 1,
        "min_receivers": 1,
        "max_wait": 60,
    }
    values.update(change)
    with pytest.raises(ValueError, match=message):
        udp_sender_argv(**values)  # type: ignore[arg-type]


def test_drbl_multicast_restore() -> None:
    argv = drbl_ocs_argv(
        mode=Mode.multicast,
        image="win11-sales-2025",
        disk="nvme0n1",
        after=AfterImaging.reboot,
        interface="enp3s0",
        hosts=[IPv4Address("192.168.100.21"), IPv4Address("192.168.100.22")],
        clients_to_wait=2,
        max_wait=600,
    )
    assert argv == (
        "drbl-ocs", "-b", "-l", "en_US.UTF-8", "-g", "auto", "-e1", "auto", "-e2", "-r", "-x",
        "-j2", "-p", "reboot", "--mcast-iface", "enp3s0", "--clients-to-wait", "2",
        "--max-time-to-wait", "600", "-h", "192.168.100.21 192.168.100.22",
        "startdisk", "multicast_restore", "win11-sales-2025", "nvme0n1",
    )  # fmt: skip


def test_drbl_unicast_restore_has_no_multicast_options() -> None:
    argv = drbl_ocs_argv(
        mode=Mode.unicast,
        image="win11",
        disk="sda",
        after=AfterImaging.poweroff,
        interface="eth0",
        hosts=[IPv4Address("192.168.100.30")],
    )
    assert argv == (
        "drbl-ocs", "-b", "-l", "en_US.UTF-8", "-g", "auto", "-e1", "auto", "-e2", "-r",
        "-j2", "-p", "poweroff", "-h", "192.168.100.30", "startdisk", "restore", "win11", "sda",
    )  # fmt: skip
    assert drbl_ocs_stop_argv() == ("drbl-ocs", "stop")


def test_drbl_refuses_what_it_cannot_say() -> None:
    with pytest.raises(ValueError, match="at least one PC"):
        drbl_ocs_argv(
            mode=Mode.unicast,
            image="win11",
            disk="sda",
            after=AfterImaging.reboot,
            interface="eth0",
            hosts=[],
        )
    with pytest.raises(ValueError, match="clients_to_wait and max_wait"):
        drbl_ocs_argv(
            mode=Mode.multicast,
            image="win11",
            disk="sda",
            after=AfterImaging.reboot,
            interface="eth0",
            hosts=[IPv4Address("192.168.100.30")],
        )


def test_chunk_paths_must_be_the_partitions_files_in_the_image_directory() -> None:
    ok = [PartitionStream("sda1", ("/home/partimag/img/sda1.ntfs-ptcl-img.gz.aa",))]
    assert chunk_problem("/home/partimag", "img", ok) == ""
    cases = {
        "/home/partimag/other/sda1.ntfs-ptcl-img.gz.aa": "not a file of sda1 directly in /home/partimag/img",
        "/home/partimag/img/../img/sda1.aa": "not a file of sda1",
        "/home/partimag/img/sda10.ntfs-ptcl-img.gz.aa": "not a file of sda1",
        "/home/partimag/img/sub/sda1.aa": "not a file of sda1",
    }
    for chunk, message in cases.items():
        problem = chunk_problem("/home/partimag", "img", [PartitionStream("sda1", (chunk,))])
        assert message in problem, chunk
    assert "no stream files" in chunk_problem("/p", "img", [PartitionStream("sda1", ())])
    assert "no partition streams" in chunk_problem("/p", "img", [])
    assert "unusable name" in chunk_problem("/p", "img", [PartitionStream("../x", ("/p/img/x",))])
