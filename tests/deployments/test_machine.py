"""The deployment state machine with a set clock. Every expected value is worked out by hand
from the small Berlin site in deploy_cases: pc01 (two NICs, fixed IP), pc02 (fixed IP),
pc03 (pool address), image win11 on nvme0n1, batch "spring" 09:00-12:00 local time."""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.deployment_state import (
    BatchPhase,
    Outcome,
    PcPhase,
    Reported,
    SessionPhase,
    dumps,
    loads,
)
from reconciler.deployments import (
    Backend,
    ImageFacts,
    MenuFetched,
    ReceiverJoined,
    ReportReceived,
    Requirement,
    SessionExited,
    SessionFailed,
    SessionStarted,
    StartSession,
    StopSession,
    preview,
    request_hash,
    step,
)
from reconciler.desired import Batch
from tests.deployments.deploy_cases import (
    ALL_ENTRIES,
    PC01_MACS,
    PC02_MAC,
    PC03_MAC,
    UNKNOWN_MAC,
    WIN11,
    Run,
    batch,
    berlin,
    desired,
    facts,
    failure_line,
    grub_path,
    kinds,
    lab,
    paths,
    pxe_path,
    success_line,
    utc,
)

NINE = berlin("2026-03-02 09:00")
NOON = berlin("2026-03-02 12:00")
SECOND = timedelta(seconds=1)
MULTICAST_JOB = (
    'ocs_live_run="ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot '
    '--mcast-port 2232 multicast_restoredisk win11 nvme0n1"'
)
UNICAST_JOB = (
    'ocs_live_run="ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot '
    'restoredisk win11 nvme0n1"'
)


def key_of(b: Batch, **kw: object) -> str:
    return f"{b.name}@{request_hash(desired(b, **kw), b)}"  # type: ignore[arg-type]


def started(run: Run, when: datetime, pid: int = 4242) -> StartSession:
    """The window opens and the session runner reports the sender's PID."""
    first = run.at(when)
    [start] = [c for c in first.commands if isinstance(c, StartSession)]
    run.at(when + SECOND, SessionStarted(start.key, pid, when), alive=[pid])
    return start


def pc_entries(*macs: str) -> list[str]:
    return sorted(f(mac) for mac in macs for f in (pxe_path, grub_path))


# ------------------------------------------------------------------------ window edges


def test_one_second_before_the_window_nothing_is_armed() -> None:
    run = Run(desired(batch()))
    result = run.at(NINE - SECOND)
    assert result.artifacts == ()
    assert result.commands == ()
    assert result.events == ()
    [record] = result.state.batches.values()
    assert record.phase is BatchPhase.pending
    # 09:00 Berlin in March is 08:00 UTC (CET, +01:00).
    assert record.window_start == utc("2026-03-02 08:00")
    assert record.window_end == utc("2026-03-02 11:00")


def test_exactly_at_the_start_every_pc_is_armed_and_the_sender_requested() -> None:
    b = batch()
    result = Run(desired(b)).at(NINE)
    assert paths(result) == ALL_ENTRIES
    for artifact in result.artifacts:
        assert MULTICAST_JOB in artifact.content.decode()
    [start] = result.commands
    assert isinstance(start, StartSession)
    assert start.key == key_of(b)
    first, second = start.spec.runs
    assert first.argv == (
        "udp-sender", "--full-duplex", "--min-receivers", "3", "--max-wait", "600",
        # no start_timeout in the batch: until the window closes, 3 h = 10800 s
        "--start-timeout", "10800", "--interface", "enp3s0", "--nokbd", "--mcast-all-addr",
        "224.0.0.1", "--mcast-data-address", "239.192.0.1", "--portbase", "2232", "--ttl", "1",
    )  # fmt: skip
    assert first.chunks == ("/home/partimag/win11/nvme0n1p1.vfat-ptcl-img.gz.aa",)
    assert second.portbase == 2234
    assert second.argv[4:6] == ("--max-wait", "30")
    assert kinds(result) == [
        ("batch_armed", "", "WindowOpen"),
        ("pc_armed", "pc01", "WindowOpen"),
        ("pc_armed", "pc02", "WindowOpen"),
        ("pc_armed", "pc03", "WindowOpen"),
        ("session_requested", "", "WindowOpen"),
    ]
    record = result.state.batches[start.key]
    assert record.phase is BatchPhase.armed
    assert record.pcs["pc01"].entries == (
        pxe_path(PC01_MACS[0]),
        grub_path(PC01_MACS[0]),
        pxe_path(PC01_MACS[1]),
        grub_path(PC01_MACS[1]),
    )


def test_exactly_at_the_end_everyone_is_disarmed_and_the_sender_stopped() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    still = run.at(NOON - SECOND, alive=[4242])
    assert paths(still) == ALL_ENTRIES
    result = run.at(NOON, alive=[4242])
    assert result.artifacts == ()
    assert result.commands == (StopSession(key_of(b), "spring", 4242, "WindowClosed"),)
    record = result.state.batches[key_of(b)]
    assert record.phase is BatchPhase.disarmed
    assert record.outcome is Outcome.failed
    assert {h: (p.phase, p.reason) for h, p in record.pcs.items()} == {
        "pc01": (PcPhase.missed, "WindowClosed"),
        "pc02": (PcPhase.missed, "WindowClosed"),
        "pc03": (PcPhase.missed, "WindowClosed"),
    }
    assert record.session is not None and record.session.phase is SessionPhase.stopping
    # The stop is asked again while the sender lives, and never after it is gone.
    again = run.at(NOON + SECOND, alive=[4242])
    assert again.commands == (StopSession(key_of(b), "spring", 4242, "WindowClosed"),)
    gone = run.at(NOON + 2 * SECOND, SessionExited(key_of(b), NOON, returncode=0))
    assert gone.commands == ()
    session = gone.state.batches[key_of(b)].session
    assert session is not None and (session.phase, session.reason) == (SessionPhase.over, "Stopped")
    assert run.at(NOON + 3 * SECOND).commands == ()


def test_a_step_that_skips_the_whole_window_never_arms() -> None:
    result = Run(desired(batch())).at(NOON + timedelta(hours=1))
    assert result.artifacts == ()
    assert result.commands == ()
    [record] = result.state.batches.values()
    assert record.phase is BatchPhase.disarmed
    assert {p.reason for p in record.pcs.values()} == {"NeverArmed"}


def test_an_idle_step_changes_nothing() -> None:
    run = Run(desired(batch()))
    started(run, NINE)
    before = run.state
    result = run.at(NINE + timedelta(minutes=5), alive=[4242])
    again = run.at(NINE + timedelta(minutes=5), alive=[4242])
    assert result.state == before == again.state
    assert result.events == again.events == ()
    assert result.commands == again.commands == ()
    assert result.artifacts == again.artifacts


def test_a_clock_stepped_back_before_the_window_withdraws_the_entries_for_that_time() -> None:
    run = Run(desired(batch(mode="unicast")))
    assert paths(run.at(NINE)) == ALL_ENTRIES
    back = run.at(NINE - timedelta(minutes=2))
    assert back.artifacts == ()
    assert {p.phase for p in back.state.batches[key_of(batch(mode="unicast"))].pcs.values()} == {
        PcPhase.waiting
    }
    assert paths(run.at(NINE + timedelta(minutes=1))) == ALL_ENTRIES


# ------------------------------------------------------------------------ DST


def test_window_across_the_spring_change_lasts_one_real_hour() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST. 01:30 CET = 00:30 UTC and
    # 03:30 CEST = 01:30 UTC: the window is 3600 s, not the 7200 s of the wall clocks.
    b = batch(window={"start": "2026-03-29T01:30", "end": "2026-03-29T03:30"})
    run = Run(desired(b))
    start = started(run, berlin("2026-03-29 01:30"))
    assert start.spec.runs[0].argv[6:8] == ("--start-timeout", "3600")
    assert paths(run.at(berlin("2026-03-29 03:29:59"), alive=[4242])) == ALL_ENTRIES
    assert run.at(berlin("2026-03-29 03:30"), alive=[4242]).artifacts == ()


def test_window_across_the_autumn_change_lasts_three_real_hours() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET, so 02:xx happens twice.
    # 01:30 CEST = 23:30 UTC (24th) to 03:30 CET = 02:30 UTC: 10800 s.
    b = batch(window={"start": "2026-10-25T01:30", "end": "2026-10-25T03:30"})
    run = Run(desired(b))
    start = started(run, berlin("2026-10-25 01:30"))
    assert start.spec.runs[0].argv[6:8] == ("--start-timeout", "10800")
    # Both 02:45s are inside: the first (CEST, 00:45 UTC) and the second (CET, 01:45 UTC).
    assert paths(run.at(berlin("2026-10-25 02:45", fold=0), alive=[4242])) == ALL_ENTRIES
    assert paths(run.at(berlin("2026-10-25 02:45", fold=1), alive=[4242])) == ALL_ENTRIES
    assert paths(run.at(berlin("2026-10-25 03:29:59"), alive=[4242])) == ALL_ENTRIES
    closed = run.at(berlin("2026-10-25 03:30"), alive=[4242])
    assert closed.artifacts == ()
    assert closed.state.batches[start.key].phase is BatchPhase.disarmed


def test_the_second_hour_of_an_autumn_change_is_after_a_window_ending_in_the_first() -> None:
    # A window ending at the first 02:45 (an explicit +02:00) is over at the second 02:30,
    # although 02:30 < 02:45 on the wall clock.
    b = batch(mode="unicast", window={"start": "2026-10-25T01:00", "end": "2026-10-25T02:45+02:00"})
    run = Run(desired(b))
    assert paths(run.at(berlin("2026-10-25 02:30", fold=0))) == ALL_ENTRIES
    assert run.at(berlin("2026-10-25 02:30", fold=1)).artifacts == ()


# ------------------------------------------------------------------------ one-shot arming


def test_a_pc_that_fetches_its_entry_is_disarmed_in_the_same_step() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    fetch = MenuFetched(pxe_path(PC02_MAC), berlin("2026-03-02 09:10"), "192.168.100.12")
    result = run.at(berlin("2026-03-02 09:10:02"), fetch, alive=[4242])
    assert paths(result) == pc_entries(*PC01_MACS, PC03_MAC)
    assert kinds(result) == [("pc_disarmed", "pc02", "Booted"), ("pc_joined", "pc02", "Booted")]
    record = result.state.batches[key_of(b)]
    assert record.phase is BatchPhase.running
    assert record.pcs["pc02"].booted_at == utc("2026-03-02 08:10")


def test_a_pc_that_fetches_its_entry_again_is_flagged_and_never_rearmed() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:10")
    run.at(t, MenuFetched(grub_path(PC02_MAC), t), alive=[4242])
    # GRUB tests the file, then reads it: a second fetch in the same boot is no news.
    same_boot = run.at(t + 20 * SECOND, MenuFetched(grub_path(PC02_MAC), t + SECOND), alive=[4242])
    assert same_boot.events == ()
    # The PC reboots into the job again (the file was still being removed).
    later = t + timedelta(minutes=7)
    result = run.at(later, MenuFetched(pxe_path(PC02_MAC), later), alive=[4242])
    assert kinds(result) == [("pc_held", "pc02", "RefetchedEntry")]
    assert pxe_path(PC02_MAC) not in paths(result)
    pc = result.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.flags) == (PcPhase.joined, ("RefetchedEntry",))
    failed = run.at(later + SECOND, ReportReceived(failure_line(PC02_MAC), later), alive=[4242])
    assert ("pc_failed", "pc02", "ReportedFailure") in kinds(failed)
    for minutes in (20, 60, 170):
        assert pxe_path(PC02_MAC) not in paths(run.at(t + timedelta(minutes=minutes), alive=[4242]))


def test_a_fetch_from_before_the_arming_is_stale() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    old = MenuFetched(pxe_path(PC03_MAC), berlin("2026-03-02 08:59"))
    result = run.at(berlin("2026-03-02 09:05"), old, alive=[4242])
    assert kinds(result) == [("sighting_ignored", "pc03", "StaleSighting")]
    assert pxe_path(PC03_MAC) in paths(result)


def test_a_receiver_joining_counts_as_booting_it_also_disarms() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:12")
    # pc03 has no fixed address: the shell names its MAC from the DHCP leases.
    joined = ReceiverJoined(key_of(b), "192.168.100.120", t, mac=PC03_MAC)
    by_ip = ReceiverJoined(key_of(b), "192.168.100.11", t)
    result = run.at(t, joined, by_ip, alive=[4242])
    assert paths(result) == pc_entries(PC02_MAC)
    record = result.state.batches[key_of(b)]
    assert (record.pcs["pc01"].phase, record.pcs["pc03"].phase) == (
        PcPhase.imaging,
        PcPhase.imaging,
    )
    stranger = ReceiverJoined(key_of(b), "192.168.100.140", t)
    assert kinds(run.at(t, stranger, alive=[4242])) == [("sighting_ignored", "", "UnknownReceiver")]


# ------------------------------------------------------------------------ reports


def test_success_disarms_at_once_and_a_second_report_changes_nothing() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:40")
    # pc01 never showed up in the TFTP log (say the log line was lost): its report counts.
    line = success_line(PC01_MACS[1])
    result = run.at(t, ReportReceived(line, t, "192.168.100.11"), alive=[4242])
    assert kinds(result) == [
        ("pc_disarmed", "pc01", "ReportedSuccess"),
        ("pc_succeeded", "pc01", "ReportedSuccess"),
    ]
    assert paths(result) == pc_entries(PC02_MAC, PC03_MAC)
    pc = result.state.batches[key_of(b)].pcs["pc01"]
    assert (pc.phase, pc.reported) == (PcPhase.succeeded, Reported.succeeded)
    assert pc.report == "Multicast restored win11: /dev/nvme0n1p1 success, /dev/nvme0n1p2 success"
    before = result.state
    again = run.at(t + SECOND, ReportReceived(line, t + SECOND), alive=[4242])
    assert kinds(again) == [("report_ignored", "pc01", "DuplicateReport")]
    assert again.state == before
    # Twice within one step: the first counts, the second is the duplicate.
    run2 = Run(desired(b))
    started(run2, NINE)
    both = run2.at(t, ReportReceived(line, t), ReportReceived(line, t), alive=[4242])
    assert [k for k in kinds(both) if k[0] != "pc_disarmed"] == [
        ("pc_succeeded", "pc01", "ReportedSuccess"),
        ("report_ignored", "pc01", "DuplicateReport"),
    ]
    assert both.state == before


def test_reports_that_are_ignored() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    before = run.state
    t = berlin("2026-03-02 09:40")
    result = run.at(
        t,
        ReportReceived(success_line(UNKNOWN_MAC), t),
        ReportReceived("garbage", t),
        ReportReceived(success_line(PC02_MAC, image="other-image"), t),
        ReportReceived(success_line(PC03_MAC), berlin("2026-03-02 08:30")),
        alive=[4242],
    )
    assert kinds(result) == [
        ("report_ignored", "pc03", "StaleReport"),
        ("report_ignored", "", "UnknownMac"),
        ("report_ignored", "", "UnreadableReport"),
        ("report_ignored", "pc02", "WrongJob"),
    ]
    assert result.state == before
    assert paths(result) == ALL_ENTRIES


def test_a_report_from_a_pc_outside_every_batch_is_not_armed() -> None:
    extra = {"hostname": "pc09", "macs": [UNKNOWN_MAC]}
    b = batch(mode="unicast", targets={"pcs": ["pc01"]})
    run = Run(desired(b, department=lab(extra=[extra])))
    run.at(NINE)
    t = berlin("2026-03-02 09:30")
    result = run.at(t, ReportReceived(success_line(UNKNOWN_MAC), t))
    assert kinds(result) == [("report_ignored", "pc09", "NotArmed")]


def test_an_unreadable_result_fails_the_pc_and_is_not_retried() -> None:
    b = batch(on_failure="retry-unicast")
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:40")
    result = run.at(t, ReportReceived(f"192.168.100.12 {PC02_MAC} N/A", t), alive=[4242])
    pc = result.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.reason, pc.reported) == (
        PcPhase.failed,
        "UnreadableResult",
        Reported.unreadable,
    )
    assert pxe_path(PC02_MAC) not in paths(result)


# ------------------------------------------------------------------------ closing


def test_window_closing_with_pcs_missing() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:15")
    run.at(
        t, MenuFetched(pxe_path(PC01_MACS[0]), t), MenuFetched(pxe_path(PC02_MAC), t), alive=[4242]
    )
    run.at(t + timedelta(minutes=30), ReportReceived(success_line(PC01_MACS[0]), t), alive=[4242])
    result = run.at(NOON, alive=[4242])
    record = result.state.batches[key_of(b)]
    assert {h: (p.phase, p.reason) for h, p in record.pcs.items()} == {
        "pc01": (PcPhase.succeeded, "ReportedSuccess"),
        "pc02": (PcPhase.missed, "NoReport"),
        "pc03": (PcPhase.missed, "WindowClosed"),
    }
    assert record.outcome is Outcome.partial
    assert kinds(result) == [
        ("pc_disarmed", "pc03", "WindowClosed"),
        ("pc_missed", "pc03", "WindowClosed"),
        ("pc_missed", "pc02", "NoReport"),
        ("batch_disarmed", "", "WindowClosed"),
    ]
    # A late report of the silent PC still lands in the history.
    late = run.at(NOON + timedelta(minutes=2), ReportReceived(success_line(PC02_MAC), NOON))
    record = late.state.batches[key_of(b)]
    assert record.pcs["pc02"].phase is PcPhase.succeeded
    assert record.outcome is Outcome.partial
    assert late.artifacts == ()


def test_everyone_done_early_stops_the_session_and_finishes() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:45")
    reports = [ReportReceived(success_line(m), t) for m in (PC01_MACS[0], PC02_MAC, PC03_MAC)]
    result = run.at(t, *reports, alive=[4242])
    assert result.commands == (StopSession(key_of(b), "spring", 4242, "AllPcsFinished"),)
    done = run.at(t + SECOND, SessionExited(key_of(b), t, 0))
    record = done.state.batches[key_of(b)]
    assert (record.phase, record.outcome) == (BatchPhase.finished, Outcome.succeeded)
    assert ("batch_finished", "", "succeeded") in kinds(done)
    assert run.at(NOON).state.batches[key_of(b)].outcome is Outcome.succeeded


# ------------------------------------------------------------------------ sessions


def test_session_end_sends_the_waiting_pcs_to_local_boot() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    run.at(t, MenuFetched(pxe_path(PC01_MACS[0]), t), alive=[4242])
    # udp-sender ends (transfer done, or --start-timeout): its exit status proves nothing.
    result = run.at(t + timedelta(minutes=20), SessionExited(key_of(b), t, returncode=0))
    assert result.artifacts == ()
    record = result.state.batches[key_of(b)]
    assert {h: (p.phase, p.reason) for h, p in record.pcs.items()} == {
        "pc01": (PcPhase.joined, "Booted"),
        "pc02": (PcPhase.missed, "SessionEnded"),
        "pc03": (PcPhase.missed, "SessionEnded"),
    }
    assert record.phase is BatchPhase.running


def test_a_failed_start_is_not_retried() -> None:
    b = batch()
    run = Run(desired(b))
    run.at(NINE)
    result = run.at(NINE + SECOND, SessionFailed(key_of(b), "udp-sender: not found", NINE))
    assert result.artifacts == ()
    assert not [c for c in result.commands if isinstance(c, StartSession)]
    for minutes in (1, 30, 120):
        assert run.at(NINE + timedelta(minutes=minutes)).commands == ()


def test_restart_mid_session_adopts_a_live_sender() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:20")
    run.at(t, MenuFetched(pxe_path(PC01_MACS[1]), t), alive=[4242])
    saved = dumps(run.state)
    # The controller restarts: it reads the state back and finds the sender alive.
    after = Run(desired(b), loads(saved))
    result = after.at(t + timedelta(minutes=1), alive=[4242], first_pass=True)
    assert kinds(result) == [("session_adopted", "", "SenderAlive")]
    assert result.commands == ()
    assert paths(result) == pc_entries(PC02_MAC, PC03_MAC)


def test_restart_mid_session_with_the_sender_gone_never_starts_it_again() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    after = Run(desired(b), loads(dumps(run.state)))
    t = berlin("2026-03-02 09:20")
    result = after.at(t, alive=[], first_pass=True)
    assert kinds(result)[0] == ("session_stopped", "", "SenderGone")
    assert result.commands == ()
    assert result.artifacts == ()  # multicast: nobody is left to serve the waiting PCs
    for minutes in (1, 60):
        assert after.at(t + timedelta(minutes=minutes)).commands == ()


def test_a_crash_between_the_start_and_its_outcome_is_a_lost_start() -> None:
    b = batch()
    run = Run(desired(b))
    run.at(NINE)  # StartSession handed out, state saved, then the controller died
    after = Run(desired(b), loads(dumps(run.state)))
    result = after.at(NINE + timedelta(minutes=2), first_pass=True)
    assert kinds(result)[0] == ("session_stopped", "", "StartLost")
    assert not [c for c in result.commands if isinstance(c, StartSession)]
    # If that sender did start after all, it is stopped on sight.
    late = after.at(NINE + timedelta(minutes=3), SessionStarted(key_of(b), 77, NINE), alive=[77])
    assert late.commands == (StopSession(key_of(b), "spring", 77, "StartedAfterGivenUp"),)


def test_the_same_sender_reported_again_is_kept_a_second_one_is_stopped() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE, pid=4242)
    t = NINE + timedelta(minutes=3)
    again = run.at(t, SessionStarted(key_of(b), 4242, NINE), alive=[4242], first_pass=True)
    assert again.commands == ()
    assert kinds(again) == [("session_adopted", "", "SenderAlive")]
    second = run.at(t, SessionStarted(key_of(b), 5000, t), alive=[4242, 5000])
    assert second.commands == (StopSession(key_of(b), "spring", 5000, "SecondSender"),)
    # When that second one ends, the running session is not taken for over.
    ended = run.at(t + SECOND, SessionExited(key_of(b), t, -15, pid=5000), alive=[4242])
    session = ended.state.batches[key_of(b)].session
    assert session is not None and (session.phase, session.pid) == (SessionPhase.running, 4242)
    assert paths(ended) == ALL_ENTRIES


def test_an_unknown_sender_is_stopped() -> None:
    result = Run(desired(batch())).at(NINE, SessionStarted("ghost@0123", 99, NINE), alive=[99])
    assert StopSession("ghost@0123", "ghost", 99, "UnknownSession") in result.commands


# ------------------------------------------------------------------------ retry-unicast


def test_retry_unicast_only_after_a_provable_failure_and_only_once() -> None:
    b = batch(on_failure="retry-unicast")
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:20")
    run.at(
        t, MenuFetched(pxe_path(PC01_MACS[0]), t), MenuFetched(pxe_path(PC02_MAC), t), alive=[4242]
    )
    failed = run.at(
        t + timedelta(minutes=15), ReportReceived(failure_line(PC02_MAC), t), alive=[4242]
    )
    # The failed PC is offered one unicast restore in the same step.
    assert pc_entries(PC02_MAC) == [p for p in paths(failed) if "02-01" in p]
    for artifact in failed.artifacts:
        if PC02_MAC.replace(":", "-") in artifact.path:
            assert UNICAST_JOB in artifact.content.decode()
    pc = failed.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.mode, pc.attempt) == (PcPhase.waiting, "unicast", 2)
    assert pc.first_attempt == "failed: ReportedFailure"
    # The session ends: pc03 never booted, so its unicast offer is its first imaging;
    # pc01 booted and stayed silent: it may have succeeded, so it is never retried.
    over = run.at(t + timedelta(minutes=40), SessionExited(key_of(b), t, 0))
    assert paths(over) == pc_entries(PC02_MAC, PC03_MAC)
    record = over.state.batches[key_of(b)]
    assert record.pcs["pc01"].phase is PcPhase.joined
    assert (record.pcs["pc03"].mode, record.pcs["pc03"].attempt) == ("unicast", 2)
    # The retry fails too: that was the last attempt.
    t2 = t + timedelta(minutes=50)
    run.at(t2, MenuFetched(pxe_path(PC02_MAC), t2))
    final = run.at(t2 + timedelta(minutes=20), ReportReceived(failure_line(PC02_MAC), t2 + SECOND))
    assert paths(final) == pc_entries(PC03_MAC)
    pc = final.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.attempt, pc.reason) == (PcPhase.failed, 2, "ReportedFailure")


def test_a_pc_that_fetched_its_withdrawn_entry_is_flagged_and_its_report_counts() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    run.at(t, SessionExited(key_of(b), t, 0))  # pc02 never booted: missed, entry withdrawn
    # ... but the file is still served to it before the apply removes it.
    late = run.at(t + SECOND, MenuFetched(grub_path(PC02_MAC), t))
    assert kinds(late) == [("pc_held", "pc02", "FetchedWithdrawnEntry")]
    assert late.artifacts == ()
    pc = late.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.reason) == (PcPhase.missed, "SessionEnded")
    assert (pc.booted_at, pc.flags) == (utc("2026-03-02 08:30"), ("FetchedWithdrawnEntry",))
    report = run.at(t + timedelta(minutes=20), ReportReceived(success_line(PC02_MAC), t))
    assert ("pc_succeeded", "pc02", "ReportedSuccess") in kinds(report)


def test_with_retry_a_fetch_in_the_step_of_the_swap_is_the_retrys_boot() -> None:
    b = batch(on_failure="retry-unicast")
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    run.at(t, SessionExited(key_of(b), t, 0))  # pc02 is offered unicast at once
    # Which file it got (the old multicast or the new unicast one) cannot be told apart:
    # the fetch uses up the retry, so it is never armed a third time.
    late = run.at(t + SECOND, MenuFetched(grub_path(PC02_MAC), t))
    pc = late.state.batches[key_of(b)].pcs["pc02"]
    assert (pc.phase, pc.attempt, pc.mode) == (PcPhase.joined, 2, "unicast")
    assert pxe_path(PC02_MAC) not in paths(late)


def test_hold_never_retries() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    t = berlin("2026-03-02 09:20")
    run.at(t, MenuFetched(pxe_path(PC02_MAC), t), alive=[4242])
    result = run.at(
        t + timedelta(minutes=5), ReportReceived(failure_line(PC02_MAC), t), alive=[4242]
    )
    assert pxe_path(PC02_MAC) not in paths(result)
    assert result.state.batches[key_of(b)].pcs["pc02"].phase is PcPhase.failed


# ------------------------------------------------------------------------ desired changes


def test_a_changed_batch_is_a_new_request_and_the_old_one_is_withdrawn() -> None:
    old = batch()
    run = Run(desired(old))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    run.at(t, ReportReceived(success_line(PC01_MACS[0]), t), alive=[4242])
    new = batch(window={"start": "2026-03-02T09:00", "end": "2026-03-02T13:00"})
    run.desired = desired(new)
    result = run.at(t + SECOND, alive=[4242])
    assert key_of(new) != key_of(old)
    old_record = result.state.batches[key_of(old)]
    assert old_record.withdrawn and old_record.phase is BatchPhase.disarmed
    assert {h: p.reason for h, p in old_record.pcs.items()} == {
        "pc01": "ReportedSuccess",
        "pc02": "BatchChanged",
        "pc03": "BatchChanged",
    }
    assert StopSession(key_of(old), "spring", 4242, "BatchChanged") in result.commands
    starts = [c for c in result.commands if isinstance(c, StartSession)]
    assert [s.key for s in starts] == [key_of(new)]
    # A new request arms its targets again, except pc01: it already ran this batch's job
    # (same name, same image), so the edit does not image it a second time.
    assert paths(result) == pc_entries(PC02_MAC, PC03_MAC)
    held = result.state.batches[key_of(new)].pcs["pc01"]
    assert (held.phase, held.reason, held.attempt) == (PcPhase.succeeded, "ImagedEarlier", 0)
    assert ("pc_held", "pc01", "ImagedEarlier") in kinds(result)
    assert starts[0].spec.summary.endswith("waits for 2 PCs")  # the two armed, not pc01


def test_an_edit_after_everyone_booted_arms_nobody_and_starts_no_session() -> None:
    old = batch()
    run = Run(desired(old))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    lines = [success_line(PC01_MACS[0]), success_line(PC02_MAC), failure_line(PC03_MAC)]
    run.at(t, *(ReportReceived(line, t) for line in lines), alive=[4242])
    new = batch(clients_to_wait=2)
    run.desired = desired(new)
    result = run.at(t + SECOND, alive=[4242])
    assert paths(result) == []
    assert not [c for c in result.commands if isinstance(c, StartSession)]
    record = result.state.batches[key_of(new)]
    assert {h: (p.phase.value, p.reason) for h, p in record.pcs.items()} == {
        "pc01": ("succeeded", "ImagedEarlier"),
        "pc02": ("succeeded", "ImagedEarlier"),
        "pc03": ("failed", "ImagedEarlier"),
    }


def test_a_new_batch_name_images_again_even_who_succeeded() -> None:
    old = batch()
    run = Run(desired(old))
    started(run, NINE)
    t = berlin("2026-03-02 09:30")
    run.at(t, ReportReceived(success_line(PC01_MACS[0]), t), alive=[4242])
    again = batch(name="spring-again")
    run.desired = desired(again)
    result = run.at(t + SECOND, alive=[4242])
    assert paths(result) == ALL_ENTRIES  # pc01 too: the operator asked by naming a new batch
    assert result.state.batches[key_of(old)].withdrawn


def test_re_merging_the_same_batch_is_the_same_request() -> None:
    b = batch(targets={"departments": ["lab"], "pcs": ["pc01"]})
    spelled_out = batch(
        targets={"pcs": ["pc01"], "departments": ["lab"]}, on_failure="hold", max_wait="10m"
    )
    assert request_hash(desired(b), b) == request_hash(desired(spelled_out), spelled_out)


def test_a_removed_batch_is_disarmed_and_never_rearmed_when_it_comes_back() -> None:
    b = batch()
    run = Run(desired(b))
    started(run, NINE)
    run.desired = desired()
    removed = run.at(NINE + timedelta(minutes=5), alive=[4242])
    assert removed.artifacts == ()
    assert StopSession(key_of(b), "spring", 4242, "BatchRemoved") in removed.commands
    run.desired = desired(b)  # the revert of the revert
    back = run.at(NINE + timedelta(minutes=10), SessionExited(key_of(b), NINE))
    assert back.artifacts == ()
    assert not [c for c in back.commands if isinstance(c, StartSession)]
    assert "this content was withdrawn earlier" in "\n".join(
        preview(run.desired, run.state, NINE + timedelta(minutes=11))
    )


def test_a_pc_removed_from_the_targets_is_disarmed() -> None:
    b = batch(mode="unicast", on_failure="retry-unicast")
    run = Run(desired(b))
    run.at(NINE)
    # pc03 leaves the department: the batch is unchanged, so it is the same request.
    run.desired = desired(b, department=lab(without=["pc03"]))
    result = run.at(NINE + timedelta(minutes=1))
    assert paths(result) == pc_entries(*PC01_MACS, PC02_MAC)
    assert kinds(result) == [
        ("pc_disarmed", "pc03", "NoLongerTargeted"),
        ("pc_missed", "pc03", "NoLongerTargeted"),
    ]
    # Back in the department: one arming per request, so it stays on local boot.
    run.desired = desired(b)
    assert pxe_path(PC03_MAC) not in paths(run.at(NINE + timedelta(minutes=2)))


# ------------------------------------------------------------------------ blockers


def test_a_missing_image_blocks_until_it_appears() -> None:
    b = batch()
    run = Run(desired(b))
    blocked = run.at(NINE, images={})
    assert blocked.artifacts == ()
    assert kinds(blocked) == [("batch_blocked", "", "ImageMissing")]
    assert run.at(NINE + SECOND, images={}).events == ()  # said once
    broken = ImageFacts(
        problem="nvme0n1p2 ends at chunk .ab; .ac is missing", reason="ImageIncomplete"
    )
    assert kinds(run.at(NINE + 2 * SECOND, images={"win11": broken})) == [
        ("batch_blocked", "", "ImageIncomplete")
    ]
    ready = run.at(NINE + timedelta(minutes=5))
    assert paths(ready) == ALL_ENTRIES
    [start] = ready.commands
    assert isinstance(start, StartSession)
    # Armed five minutes late: the start timeout is what is left of the window.
    assert start.spec.runs[0].argv[6:8] == ("--start-timeout", str(3 * 3600 - 300))


def test_prerequisites_block_only_the_batches_that_need_them() -> None:
    missing = {Requirement.udp_sender: "udp-sender is not installed"}
    multicast = Run(desired(batch()))
    result = multicast.at(NINE, missing=missing)
    [record] = result.state.batches.values()
    assert (record.phase, record.reason, record.message) == (
        BatchPhase.blocked,
        "PrerequisiteMissing",
        "udp-sender: udp-sender is not installed",
    )
    unicast = Run(desired(batch(mode="unicast")))
    assert paths(unicast.at(NINE, missing=missing)) == ALL_ENTRIES


def test_unsafe_stream_paths_block_the_batch() -> None:
    bad = ImageFacts(partitions=(WIN11.partitions[0].__class__("nvme0n1p1", ("/etc/shadow",)),))
    result = Run(desired(batch())).at(NINE, images={"win11": bad})
    [record] = result.state.batches.values()
    assert record.reason == "ImageIncomplete"
    assert "/etc/shadow" in record.message


def test_a_capture_does_not_overwrite_an_existing_image() -> None:
    master = {"hostname": "master01", "macs": [UNKNOWN_MAC], "disk": {"device": "sda"}}
    site_pcs = lab(extra=[master])
    capture = batch(action="capture", mode="unicast", image="master", targets={"pcs": ["master01"]})
    result = Run(desired(capture, department=site_pcs)).at(NINE, images={"master": ImageFacts()})
    [record] = result.state.batches.values()
    assert (record.phase, record.reason) == (BatchPhase.blocked, "ImageExists")
    fresh = Run(desired(capture, department=site_pcs)).at(NINE, images={})
    assert paths(fresh) == pc_entries(UNKNOWN_MAC)
    assert "savedisk master sda" in fresh.artifacts[0].content.decode()
    assert fresh.commands == ()  # a capture needs no sender
    # A PC without a disk, capturing into an image not defined yet: nothing to name.
    no_disk = batch(action="capture", mode="unicast", image="master", targets={"pcs": ["pc01"]})
    [record] = Run(desired(no_disk)).at(NINE, images={}).state.batches.values()
    assert (record.reason, record.message) == (
        "BootEntryInvalid",
        "pc01: no disk is known for pc01",
    )


def test_a_capture_report_naming_the_repository_finishes_the_capture() -> None:
    """Clonezilla's savedisk report says `Saved /home/partimag, ...` (the repository it
    saved into, not the image: tests/lab/test_capture.py met it); a restore's names the
    image, and a capture naming another image is still the wrong job."""
    master = {"hostname": "master01", "macs": [UNKNOWN_MAC], "disk": {"device": "sda"}}
    capture = batch(action="capture", mode="unicast", image="master", targets={"pcs": ["master01"]})
    line = f"192.168.100.99 {UNKNOWN_MAC} Saved %s, /dev/sda1, success, 5.6 MB, .034 mins;"
    t = berlin("2026-03-02 09:30")
    wrong = Run(desired(capture, department=lab(extra=[master])))
    wrong.at(NINE, images={})
    ignored = wrong.at(t, ReportReceived(line % "other-image", t), images={})
    assert kinds(ignored) == [("report_ignored", "master01", "WrongJob")]
    run = Run(desired(capture, department=lab(extra=[master])))
    run.at(NINE, images={})
    result = run.at(t, ReportReceived(line % "/home/partimag", t), images={})
    [record] = result.state.batches.values()
    assert record.pcs["master01"].phase is PcPhase.succeeded
    assert (record.phase, record.outcome) == (BatchPhase.finished, Outcome.succeeded)


# ------------------------------------------------------------------------ DRBL backend


def test_drbl_backend_needs_fixed_addresses() -> None:
    result = step(desired(batch()), Run(desired()).state, facts(), NINE, backend=Backend.drbl)
    [record] = result.state.batches.values()
    assert record.reason == "DrblNeedsFixedIp"
    assert "pc03 has no fixed IP" in record.message


def test_drbl_backend_runs_drbl_ocs_and_stops_it_with_drbl_ocs_stop() -> None:
    b = batch(targets={"pcs": ["pc01", "pc02"]}, clients_to_wait=2)
    d = desired(b)
    first = step(d, Run(d).state, facts(), NINE, backend=Backend.drbl)
    [start] = first.commands
    assert isinstance(start, StartSession)
    assert start.spec.runs == ()
    assert start.spec.drbl_argv[-8:] == (
        "--max-time-to-wait", "600", "-h", "192.168.100.11 192.168.100.12",
        "startdisk", "multicast_restore", "win11", "nvme0n1",
    )  # fmt: skip
    running = step(
        d,
        first.state,
        facts(SessionStarted(start.key, 5, NINE), alive=[5]),
        NINE,
        backend=Backend.drbl,
    )
    closed = step(d, running.state, facts(alive=[5]), NOON, backend=Backend.drbl)
    assert closed.commands == (
        StopSession(start.key, "spring", 5, "WindowClosed", ("drbl-ocs", "stop")),
    )


# ------------------------------------------------------------------------ preview


def test_preview_says_what_each_pc_boots() -> None:
    b = batch(on_failure="retry-unicast")
    run = Run(desired(b))
    assert preview(run.desired, run.state, berlin("2026-03-02 08:00")) == [
        "Deployments at 2026-03-02T08:00:00+01:00:",
        "  (assuming every image is complete and every prerequisite is there)",
        "  batch spring: pending (restore win11 by multicast); window opens 2026-03-02T09:00:00+01:00",
        "  Every other PC boots its local disk.",
    ]
    started(run, NINE)
    t = berlin("2026-03-02 09:20")
    run.at(t, MenuFetched(pxe_path(PC01_MACS[0]), t), alive=[4242])
    run.at(t, ReportReceived(failure_line(PC02_MAC), t), alive=[4242])
    lines = preview(run.desired, run.state, berlin("2026-03-02 10:00"), facts())
    assert lines == [
        "Deployments at 2026-03-02T10:00:00+01:00:",
        "  batch spring: window open until 2026-03-02T12:00:00+01:00: restore win11 by multicast, port 2232",
        "    pc01: local boot (joined since 2026-03-02T08:20:00+00:00)",
        "    pc02: restore entry: restore image win11 to nvme0n1 (unicast) (02:00:00:00:02:01)",
        "    pc03: restore entry: restore image win11 to nvme0n1 (multicast) (02:00:00:00:03:01)",
        "  Every other PC boots its local disk.",
    ]
    assert preview(run.desired, run.state, NOON)[1:3] == [
        "  (assuming every image is complete and every prerequisite is there)",
        "  batch spring: window closed 2026-03-02T12:00:00+01:00; disarmed (no outcome)",
    ]


def test_preview_of_an_edited_batch_keeps_who_ran_it_on_local_boot() -> None:
    run = Run(desired(batch()))
    started(run, NINE)
    t = berlin("2026-03-02 09:20")
    run.at(t, ReportReceived(success_line(PC01_MACS[0]), t), alive=[4242])
    edited = desired(batch(clients_to_wait=2))  # the plan of the edit, before its merge
    lines = preview(edited, run.state, berlin("2026-03-02 09:25"), facts())
    assert lines[2:5] == [
        "    pc01: local boot (ran this batch's job before it was edited: succeeded)",
        "    pc02: restore entry: restore image win11 to nvme0n1 (multicast) (02:00:00:00:02:01)",
        "    pc03: restore entry: restore image win11 to nvme0n1 (multicast) (02:00:00:00:03:01)",
    ]


def test_preview_says_a_pending_batch_wakes_its_pcs() -> None:
    run = Run(desired(batch(wake_on_lan=True)))
    assert preview(run.desired, run.state, berlin("2026-03-02 08:00"))[2] == (
        "  batch spring: pending (restore win11 by multicast); window opens "
        "2026-03-02T09:00:00+01:00; its PCs are woken (Wake-on-LAN) then"
    )


def test_preview_shows_a_blocker_when_given_facts() -> None:
    d = desired(batch())
    lines = preview(d, Run(d).state, NINE, facts(images={}))
    assert (
        lines[1]
        == "  batch spring: blocked (ImageMissing: image win11 is not in /home/partimag); no entries"
    )
