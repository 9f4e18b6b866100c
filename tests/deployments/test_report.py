"""The job report line, in the formats Clonezilla's task_notify_job_is_done really sends.

The lines below were written by hand from ocs-functions (Clonezilla 5.3): send_info is
"$ip $mac", then the EFI fields only when set, then $report_msg, whose opening is
"Multicast restored IMAGE," / "Unicast restored IMAGE," / "Saved IMAGE," and whose parts
are "$part, $clone_status, $space_used, $time_elapsed_in_min mins, $speed;" (bc prints
minutes without a leading zero).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address

import pytest

from reconciler.deployment_report import (
    PartitionResult,
    ReportError,
    ReportKind,
    ReportOutcome,
    parse,
)

BIOS_MULTICAST = (
    "192.168.100.21 aa:bb:cc:00:02:01 Multicast restored win11-sales-2025, "
    "/dev/nvme0n1p1, success, 104 MB, .050 mins, 2080.0 MB/min; "
    "/dev/nvme0n1p2, success, 20.1 GB, 3.200 mins, 6.2 GB/min;\n"
)


def test_bios_client_without_efi_fields() -> None:
    report = parse(BIOS_MULTICAST)
    assert report.ip == IPv4Address("192.168.100.21")
    assert report.mac == "aa:bb:cc:00:02:01"
    assert report.efi == ()
    assert report.kind is ReportKind.multicast_restore
    assert report.image == "win11-sales-2025"
    assert report.partitions == (
        PartitionResult("/dev/nvme0n1p1", "success", ("104 MB", ".050 mins", "2080.0 MB/min")),
        PartitionResult("/dev/nvme0n1p2", "success", ("20.1 GB", "3.200 mins", "6.2 GB/min")),
    )
    assert report.outcome is ReportOutcome.succeeded
    assert report.summary() == (
        "Multicast restored win11-sales-2025: /dev/nvme0n1p1 success, /dev/nvme0n1p2 success"
    )


def test_uefi_client_with_the_three_efi_fields() -> None:
    # efi_os_label has its blanks turned into '_' (rep_whspc_w_udrsc); the boot file has
    # its backslashes turned into slashes by update-efi-nvram-boot-entry.
    line = (
        "192.168.100.22 AA:BB:CC:00:02:02 Windows_Boot_Manager 1 "
        "/EFI/Microsoft/Boot/bootmgfw.efi Unicast restored win11, /dev/sda1, success, "
        "104 MB, .020 mins, 5200.0 MB/min; /dev/sda2, success, 9.8 GB, 2.100 mins, 4.6 GB/min;"
    )
    report = parse(line)
    assert report.mac == "aa:bb:cc:00:02:02"
    assert report.efi == ("Windows_Boot_Manager", "1", "/EFI/Microsoft/Boot/bootmgfw.efi")
    assert report.kind is ReportKind.unicast_restore
    assert report.image == "win11"
    assert [p.device for p in report.partitions] == ["/dev/sda1", "/dev/sda2"]
    assert report.outcome is ReportOutcome.succeeded


def test_a_single_efi_field_is_not_taken_for_the_report() -> None:
    # Only efi_system_part_no set: ocsmgrd would take "Multicast restored" as EFI fields.
    line = "192.168.100.23 02:00:00:00:00:23 2 Multicast restored img, /dev/sda1, success, 1 GB, .100 mins, 10.0 GB/min;"
    report = parse(line)
    assert report.efi == ("2",)
    assert report.kind is ReportKind.multicast_restore
    assert report.outcome is ReportOutcome.succeeded


def test_one_failed_partition_fails_the_report() -> None:
    line = (
        "192.168.100.21 aa:bb:cc:00:02:01 Multicast restored win11, "
        "/dev/sda1, success, 104 MB, .050 mins, 2080.0 MB/min; /dev/sda2, ***FAIL***, .900 mins;"
    )
    report = parse(line)
    assert report.partitions[1] == PartitionResult("/dev/sda2", "***FAIL***", (".900 mins",))
    assert report.outcome is ReportOutcome.failed
    assert report.summary() == "Multicast restored win11: /dev/sda1 success, /dev/sda2 ***FAIL***"


def test_capture_report() -> None:
    report = parse(
        "192.168.100.30 02:11:22:33:44:01 Saved master-2026, /dev/nvme0n1p1, success, 104 MB, "
        ".030 mins, 3466.6 MB/min; /dev/nvme0n1p3, success, 31.0 GB, 6.050 mins, 5.1 GB/min;"
    )
    assert report.kind is ReportKind.capture
    assert not report.kind.restores
    assert report.image == "master-2026"
    assert report.outcome is ReportOutcome.succeeded


# What Clonezilla's own `ocs-sr savedisk master-2026 loop7` sent from a lab PC (its
# image_save opens the report with `Saved $(dirname IMAGE_DIR),`: the repository).
REAL_CAPTURE = (
    "192.168.100.101 02:df:df:25:11:00 Saved /home/partimag, /dev/loop7p1, success, "
    "600.1 KB = 1172 Blocks, .035 mins; /dev/loop7p2, success, 5.6 MB = 1370 Blocks, .034 mins;"
)


def test_a_real_capture_report_names_the_repository_not_the_image() -> None:
    report = parse(REAL_CAPTURE)
    assert report.kind is ReportKind.capture
    assert (report.image, report.repository) == ("", "/home/partimag")
    assert report.partitions == (
        PartitionResult("/dev/loop7p1", "success", ("600.1 KB = 1172 Blocks", ".035 mins")),
        PartitionResult("/dev/loop7p2", "success", ("5.6 MB = 1370 Blocks", ".034 mins")),
    )
    assert report.outcome is ReportOutcome.succeeded
    assert report.names("master-2026") and report.names("any-other-image")
    assert report.summary() == (
        "Saved into /home/partimag: /dev/loop7p1 success, /dev/loop7p2 success"
    )
    named = parse("192.168.100.30 02:11:22:33:44:01 Saved master-2026, /dev/sda1, success;")
    assert named.names("master-2026") and not named.names("other")
    restore = parse(BIOS_MULTICAST)
    assert not restore.names("other")


def test_only_a_capture_may_name_a_path_and_only_a_plain_one() -> None:
    with pytest.raises(ReportError, match="not an image name"):
        parse(
            "192.168.100.30 02:11:22:33:44:01 Unicast restored /home/partimag, /dev/sda1, success;"
        )
    with pytest.raises(ReportError, match="not an image repository path"):
        parse("192.168.100.30 02:11:22:33:44:01 Saved /home/part$(x), /dev/sda1, success;")


@pytest.mark.parametrize(
    "line",
    [
        "192.168.100.21 aa:bb:cc:00:02:01 ",  # report_msg empty: send_info ends in a blank
        "192.168.100.21 aa:bb:cc:00:02:01 N/A",
        "192.168.100.21 aa:bb:cc:00:02:01 Multicast restored win11,",  # no partition part
        "192.168.100.21 aa:bb:cc:00:02:01 Multicast restored win11 /dev/sda1, success;",
    ],
)
def test_a_report_without_partition_results_proves_nothing(line: str) -> None:
    assert parse(line).outcome is ReportOutcome.unreadable


def test_leading_and_repeated_blanks_split_like_perl() -> None:
    report = parse(
        "  192.168.100.21\t aa:bb:cc:00:02:01   Unicast   restored  x,  /dev/sda1,success;"
    )
    assert report.kind is ReportKind.unicast_restore
    assert report.partitions == (PartitionResult("/dev/sda1", "success"),)


def test_bytes_line_with_crlf() -> None:
    assert parse(BIOS_MULTICAST.rstrip("\n").encode() + b"\r\n").image == "win11-sales-2025"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "starts with the PC's IP address and MAC address"),
        ("192.168.100.21", "starts with the PC's IP address and MAC address"),
        (
            "host21 aa:bb:cc:00:02:01 Saved x, /dev/sda1, success;",
            "'host21' is not an IPv4 address",
        ),
        ("192.168.100.21 ff:ff:ff:ff:ff:ff Saved x,", "'ff:ff:ff:ff:ff:ff' is not a NIC's MAC"),
        ("192.168.100.21 aa:bb:cc:00:02:01 Saved ../etc, /dev/sda1, success;", "not an image name"),
        ("192.168.100.21 aa:bb:cc:00:02:01 Saved x\x1b[2J, /dev/sda1, success;", "U+001B"),
        ("192.168.100.21 aa:bb:cc:00:02:01 one\ntwo", "U+000A"),
        ("192.168.100.21 aa:bb:cc:00:02:01 " + "x" * 9000, "at most 8192 bytes"),
    ],
)
def test_refused_lines(line: str, message: str) -> None:
    with pytest.raises(ReportError, match=re.escape(message)):
        parse(line)


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(ReportError, match="UTF-8"):
        parse(b"192.168.100.21 aa:bb:cc:00:02:01 Saved \xff, /dev/sda1, success;")
