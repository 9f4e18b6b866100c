"""The images export while a capture runs: its master PC alone may write, as root."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from reconciler import preflight
from reconciler.desired import Site
from reconciler.layout import Layout
from reconciler.render import nfs

LAYOUT = Layout()


def site(**nfs_settings: Any) -> Site:
    return Site.model_validate(
        {
            "kind": "Site",
            "name": "lab",
            "timezone": "UTC",
            "server": {"hostname": "kit01", "interface": "e0", "address": "192.168.100.1"},
            "network": {
                "subnet": "192.168.100.0/24",
                "dhcp": {"pool": {"start": "192.168.100.100", "end": "192.168.100.150"}},
            },
            "nfs": nfs_settings,
        }
    )


def lines(content: bytes) -> list[str]:
    return [line for line in content.decode().splitlines() if not line.lstrip().startswith("#")]


def test_the_kernel_export_names_the_master_pc_read_write_before_the_subnet() -> None:
    writer = nfs.Writer(IPv4Address("192.168.100.121"), "batches.master")
    files, _ = nfs.artifacts(site(), LAYOUT, writers=[writer])
    exports = files[0]
    assert exports.path == "/etc/exports.d/kitting.exports"
    assert lines(exports.content) == [
        "/home/partimag "
        "192.168.100.121(rw,no_root_squash,sync,no_subtree_check,secure,sec=sys) "
        "192.168.100.0/24(ro,root_squash,sync,no_subtree_check,secure,sec=sys)"
    ]
    assert preflight.check_exports(exports.content.decode()) == []
    # the export line is traced back to the batch that opened it
    line = exports.content.decode().splitlines().index(lines(exports.content)[0]) + 1
    assert exports.origin_of_line(line) == "batches.master"


def test_without_a_capture_the_export_is_read_only_as_before() -> None:
    files, _ = nfs.artifacts(site(), LAYOUT)
    assert lines(files[0].content) == [
        "/home/partimag 192.168.100.0/24(ro,root_squash,sync,no_subtree_check,secure,sec=sys)"
    ]


def test_ganesha_grants_the_master_pc_its_own_client_block_first() -> None:
    writer = nfs.Writer(IPv4Address("192.168.100.121"), "batches.master")
    (conf,), _ = nfs.artifacts(site(backend="nfs-ganesha"), LAYOUT, writers=[writer])
    body = [line.strip() for line in lines(conf.content)]
    start = body.index("FSAL {")
    assert body[start:] == [
        "FSAL {",
        "Name = VFS;",
        "}",
        "CLIENT {",
        "Clients = 192.168.100.121;",
        "Access_Type = RW;",
        "Squash = no_root_squash;",
        "}",
        "CLIENT {",
        "Clients = 192.168.100.0/24;",
        "Access_Type = RO;",
        "Squash = root_squash;",
        "}",
        "}",
    ]
    assert preflight.check_ganesha(conf.content.decode()) == []


def test_a_writer_outside_the_kitting_network_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside 192\.168\.100\.0/24"):
        nfs.artifacts(site(), LAYOUT, writers=[nfs.Writer(IPv4Address("10.0.0.5"))])
