"""The DRBL backend's reports (ocsmgrd's job log), its port, and PCs with pool addresses.

Site from deploy_cases: pc01 (two NICs, 192.168.100.11), pc02 (192.168.100.12), pc03 (no
fixed address; its pool address is 192.168.100.120 here). Every expected value is worked out
by hand from the lines below (ocsmgrd's format is read from /usr/sbin/ocsmgrd: `client
$peeraddr ($peermac) finished restoring. Stats: $peermsg`, where $peermsg is the client's
words from the sixth on).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from zoneinfo import ZoneInfo

import pytest

from reconciler import deployment_report, dhcp_leases, drbl_files
from reconciler import deployment_rules as rules
from reconciler.deployment_state import PcPhase, Reported
from reconciler.deployments import (
    Backend,
    MenuFetched,
    ReceiverJoined,
    ReportOrigin,
    ReportReceived,
    SessionStarted,
    StartSession,
    StopSession,
    step,
)
from tests.deployments.deploy_cases import (
    PC01_MACS,
    PC02_MAC,
    PC03_MAC,
    Run,
    batch,
    berlin,
    desired,
    facts,
    kinds,
    pxe_path,
)

NINE = berlin("2026-03-02 09:00")
BERLIN = ZoneInfo("Europe/Berlin")

# A BIOS client sent "IP MAC Multicast restored win11, /dev/nvme0n1p1, success, ..."; ocsmgrd
# took "Multicast restored win11," as the three EFI fields.
BIOS_JOB = (
    "client 192.168.100.12 (02:00:00:00:02:01) finished restoring. Stats: /dev/nvme0n1p1, "
    "success, 104 MB, .050 mins, 2080.0 MB/min; /dev/nvme0n1p2, success, 20.1 GB, 3.200 mins, "
    "6.2 GB/min;"
)
# A UEFI client sent three EFI words before its report: ocsmgrd kept the whole report.
UEFI_JOB = (
    "client 192.168.100.11 (02:00:00:00:01:02) finished restoring. Stats: Multicast restored "
    "win11, /dev/nvme0n1p1, success, 104 MB, .050 mins, 2080.0 MB/min; /dev/nvme0n1p2, "
    "***FAIL***, .900 mins;"
)


# ------------------------------------------------------------------ ocsmgrd's job log


def test_a_bios_clients_job_line_keeps_its_partitions_without_job_or_image() -> None:
    report = deployment_report.parse_joblog(BIOS_JOB)
    assert (str(report.ip), report.mac) == ("192.168.100.12", PC02_MAC)
    assert report.kind is None and report.image == "" and report.opening_lost
    assert [(p.device, p.status) for p in report.partitions] == [
        ("/dev/nvme0n1p1", "success"),
        ("/dev/nvme0n1p2", "success"),
    ]
    assert report.outcome is deployment_report.ReportOutcome.succeeded
    assert report.summary() == (
        "restored (job and image not logged by ocsmgrd): /dev/nvme0n1p1 success, "
        "/dev/nvme0n1p2 success"
    )


def test_a_uefi_clients_job_line_is_its_whole_report() -> None:
    report = deployment_report.parse_joblog(UEFI_JOB)
    assert report.kind is deployment_report.ReportKind.multicast_restore
    assert report.image == "win11" and not report.opening_lost
    assert report.outcome is deployment_report.ReportOutcome.failed


def test_job_lines_that_prove_nothing() -> None:
    # the client sent no report text: ocsmgrd logs N/A
    empty = deployment_report.parse_joblog(
        "client 192.168.100.12 (02:00:00:00:02:01) finished restoring. Stats: N/A"
    )
    assert empty.outcome is deployment_report.ReportOutcome.unreadable
    with pytest.raises(deployment_report.ReportError):
        deployment_report.parse_joblog("Start clonezilla logging.")
    with pytest.raises(deployment_report.ReportError):
        deployment_report.parse_joblog("client 192.168.100.12 02:00:00:00:02:01 finished")


def test_job_log_stamps_are_local_minutes_read_as_their_last_instant() -> None:
    def localize(naive: datetime) -> datetime:
        return naive.replace(tzinfo=BERLIN)

    now = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)  # 09:30 in Berlin
    job = drbl_files.job_line(f"2026-0302-0915, {BIOS_JOB}\n", now=now, localize=localize)
    assert job is not None and job.text == BIOS_JOB
    # 09:15:59.999999 Berlin (UTC+1) = 08:15:59.999999 UTC
    assert job.at == datetime(2026, 3, 2, 8, 15, 59, 999999, tzinfo=UTC)
    # the minute that is now: capped at now
    same = drbl_files.job_line(f"2026-0302-0930, {BIOS_JOB}", now=now, localize=localize)
    assert same is not None and same.at == now
    assert drbl_files.job_line("2026-0302-0800, Start clonezilla logging.", now=now,
                               localize=localize) is None  # fmt: skip
    assert drbl_files.job_line(f"2026-1302-0915, {BIOS_JOB}", now=now, localize=localize) is None


def test_multicast_port_of_drbl_ocs_conf() -> None:
    conf = '# the port\nMULTICAST_PORT="2232"\nTIME_TO_WAIT=""\n'
    assert drbl_files.multicast_port(conf) == 2232
    assert drbl_files.multicast_port(conf + "MULTICAST_PORT=2240  # moved\n") == 2240
    assert drbl_files.multicast_port("#MULTICAST_PORT=2232\n") is None
    assert drbl_files.multicast_port('MULTICAST_PORT="99999"\n') is None


def test_the_installed_drbl_ocs_conf_names_its_port() -> None:
    try:
        with open(drbl_files.DRBL_OCS_CONF, encoding="utf-8") as conf:
            text = conf.read()
    except FileNotFoundError:
        pytest.skip("drbl is not installed")
    assert drbl_files.multicast_port(text) == 2232  # drbl 5.2.7's shipped value


# ------------------------------------------------------------------ the machine, DRBL


def drbl_run() -> tuple[Run, str]:
    b = batch(targets={"pcs": ["pc01", "pc02"]}, clients_to_wait=2)
    run = Run(desired(b))
    first = step(run.desired, run.state, facts(drbl_port=2232), NINE, backend=Backend.drbl)
    [start] = [c for c in first.commands if isinstance(c, StartSession)]
    t = NINE + timedelta(seconds=1)
    second = step(
        run.desired,
        first.state,
        facts(SessionStarted(start.key, 7, NINE), alive=[7], drbl_port=2232),
        t,
        backend=Backend.drbl,
    )
    run.state = second.state
    return run, start.key


def test_with_drbl_ocsmgrds_job_lines_are_the_reports() -> None:
    run, key = drbl_run()
    t = berlin("2026-03-02 09:40")
    bios = ReportReceived(BIOS_JOB, t, "ocsmgrd", ReportOrigin.ocsmgrd)
    uefi = ReportReceived(UEFI_JOB, t, "ocsmgrd", ReportOrigin.ocsmgrd)
    result = step(run.desired, run.state, facts(bios, uefi, alive=[7], drbl_port=2232), t,
                  backend=Backend.drbl)  # fmt: skip
    pcs = result.state.batches[key].pcs
    assert (pcs["pc02"].phase, pcs["pc02"].reported) == (PcPhase.succeeded, Reported.succeeded)
    assert (pcs["pc01"].phase, pcs["pc01"].reported) == (PcPhase.failed, Reported.failed)
    # both done: DRBL is stopped (drbl-ocs stop, by the feeder on SIGTERM)
    assert [(type(c).__name__, c.key) for c in result.commands] == [("StopSession", key)]
    assert [c.reason for c in result.commands if isinstance(c, StopSession)] == ["AllPcsFinished"]
    # the same line read by the client parser is not a report: origin matters
    as_client = ReportReceived(BIOS_JOB, t, "192.168.100.12")
    ignored = step(run.desired, run.state, facts(as_client, alive=[7], drbl_port=2232), t,
                   backend=Backend.drbl)  # fmt: skip
    assert ("report_ignored", "", "UnreadableReport") in kinds(ignored)


def test_a_drbl_multicast_batch_whose_port_is_not_drbls_is_blocked() -> None:
    b = batch(targets={"pcs": ["pc01", "pc02"]})
    d = desired(b)
    result = step(d, Run(d).state, facts(drbl_port=2240), NINE, backend=Backend.drbl)
    [record] = result.state.batches.values()
    assert record.reason == "DrblPortMismatch"
    assert record.message == (
        "drbl-ocs sends on port 2240 (drbl-ocs.conf MULTICAST_PORT); the batch tells its PCs "
        "port 2232"
    )
    # a unicast restore has no port to agree on
    u = batch(targets={"pcs": ["pc01", "pc02"]}, mode="unicast")
    du = desired(u)
    armed = step(du, Run(du).state, facts(drbl_port=2240), NINE, backend=Backend.drbl)
    assert [r.phase.value for r in armed.state.batches.values()] == ["armed"]


# ------------------------------------------------------------------ pool addresses


def test_receiver_host_by_mac_then_fixed_ip_then_learned_address() -> None:
    by_mac = {PC01_MACS[0]: "pc01", PC02_MAC: "pc02", PC03_MAC: "pc03"}
    by_ip = {IPv4Address("192.168.100.11"): "pc01", IPv4Address("192.168.100.12"): "pc02"}
    learned = {"192.168.100.120": "pc03"}
    # the lease names the MAC: whoever holds the address now
    assert rules.receiver_host("192.168.100.130", "02-00-00-00-03-01", by_mac, by_ip, {}) == "pc03"
    # a MAC that is no PC's is no PC, even on a fixed PC's address
    assert rules.receiver_host("192.168.100.11", "02:00:00:00:09:09", by_mac, by_ip, {}) is None
    # no MAC (no lease): fixed address, then the address seen fetching the entry
    assert rules.receiver_host("192.168.100.12", "", by_mac, by_ip, learned) == "pc02"
    assert rules.receiver_host("192.168.100.120", "", by_mac, by_ip, learned) == "pc03"
    assert rules.receiver_host("192.168.100.121", "", by_mac, by_ip, learned) is None
    assert rules.receiver_host("not-an-ip", "", by_mac, by_ip, learned) is None
    # a MAC that cannot be read does not hide the address
    assert rules.receiver_host("192.168.100.12", "garbage", by_mac, by_ip, learned) == "pc02"


def test_a_pool_pc_is_known_by_the_address_it_fetched_its_entry_with() -> None:
    b = batch()
    run = Run(desired(b))
    first = run.at(NINE)
    [start] = [c for c in first.commands if isinstance(c, StartSession)]
    key = start.key
    run.at(NINE + timedelta(seconds=1), SessionStarted(key, 42, NINE), alive=[42])
    t = berlin("2026-03-02 09:05")
    fetched = run.at(t, MenuFetched(pxe_path(PC03_MAC), t, "192.168.100.120"), alive=[42])
    pc03 = fetched.state.batches[key].pcs["pc03"]
    assert (pc03.phase, pc03.address) == (PcPhase.joined, "192.168.100.120")
    # udp-sender names the receiver by address only, and no lease was found for it
    later = t + timedelta(seconds=30)
    joined = run.at(later, ReceiverJoined(key, "192.168.100.120", later), alive=[42])
    assert joined.state.batches[key].pcs["pc03"].phase is PcPhase.imaging
    assert ("pc_imaging", "pc03", "ReceiverJoined") in kinds(joined)


def test_a_report_records_the_address_it_came_from() -> None:
    b = batch()
    run = Run(desired(b))
    run.at(NINE)
    t = berlin("2026-03-02 09:40")
    line = (
        f"192.168.100.133 {PC03_MAC} Unicast restored win11, /dev/nvme0n1p1, success, 104 MB, "
        ".050 mins, 2080.0 MB/min;"
    )
    result = run.at(t, ReportReceived(line, t, "192.168.100.133"))
    [record] = result.state.batches.values()
    assert (record.pcs["pc03"].phase, record.pcs["pc03"].address) == (
        PcPhase.succeeded,
        "192.168.100.133",
    )


# ------------------------------------------------------------------ dnsmasq's leases


def test_leases_map_live_addresses_to_macs() -> None:
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 1772438400 seconds since the epoch
    text = (
        "1772442000 02:00:00:00:03:01 192.168.100.120 pc03 01:02:00:00:00:03:01\n"
        "0 02-00-00-00-02-01 192.168.100.121 * *\n"  # never expires; another spelling
        "1772438399 02:00:00:00:01:01 192.168.100.122 * *\n"  # expired a second ago
        "06-02:00:00:00:04:01 192.168.100.123 * *\n"  # expiry missing: not a lease line
        "1772442000 06-02:00:00:00:05:01 192.168.100.124 * *\n"  # not Ethernet
        "duid 00:01:00:01:2c:00:00:00:02:00:00:00:00:01\n"
        "1772442000 1234 2001:db8::5 * 00:01\n"  # DHCPv6
        "\n"
    )
    assert dhcp_leases.parse(text, now=now) == {
        "192.168.100.120": PC03_MAC,
        "192.168.100.121": PC02_MAC,
    }
