"""Wake-on-LAN in the state machine: one WakePcs, in the step that arms the batch, to every
NIC of exactly the PCs armed then. Expected values worked out by hand from the Berlin site
in deploy_cases: pc01 (NICs 02:00:00:00:01:01 and :01:02), pc02 (:02:01), pc03 (:03:01),
site interface enp3s0, batch "spring" 09:00-12:00 Berlin (08:00-11:00 UTC in March)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from reconciler.deployment_state import BatchPhase, PcPhase, dumps, loads
from reconciler.deployments import (
    MenuFetched,
    ReportReceived,
    SessionStarted,
    StartSession,
    Step,
    WakePcs,
    request_hash,
)
from reconciler.desired import Batch
from tests.deployments.deploy_cases import (
    PC01_MACS,
    PC02_MAC,
    PC03_MAC,
    WIN11,
    Run,
    batch,
    berlin,
    desired,
    kinds,
    lab,
    pxe_path,
    success_line,
)

NINE = berlin("2026-03-02 09:00")
SECOND = timedelta(seconds=1)
EVERY_PC = (
    ("pc01", ("02:00:00:00:01:01", "02:00:00:00:01:02")),
    ("pc02", ("02:00:00:00:02:01",)),
    ("pc03", ("02:00:00:00:03:01",)),
)


def key_of(b: Batch) -> str:
    return f"{b.name}@{request_hash(desired(b), b)}"


def wakes(result: Step) -> list[WakePcs]:
    return [c for c in result.commands if isinstance(c, WakePcs)]


def test_no_wake_before_the_window_and_one_at_its_first_second() -> None:
    b = batch(wake_on_lan=True)
    run = Run(desired(b))
    assert run.at(NINE - SECOND).commands == ()
    result = run.at(NINE)
    start, wake = result.commands  # the sender is asked for first, then the PCs woken
    assert isinstance(start, StartSession)
    assert wake == WakePcs(key_of(b), "spring", "enp3s0", EVERY_PC)
    assert wake.macs == (
        "02:00:00:00:01:01",
        "02:00:00:00:01:02",
        "02:00:00:00:02:01",
        "02:00:00:00:03:01",
    )
    assert ("wake_requested", "", "WindowOpen") in kinds(result)
    [event] = [e for e in result.events if e.kind.value == "wake_requested"]
    assert event.batch == key_of(b)
    assert event.message == "3 PCs, 4 NICs, out of enp3s0"


def test_never_again_on_later_passes_nor_after_a_restart() -> None:
    b = batch(wake_on_lan=True)
    run = Run(desired(b))
    [start] = [c for c in run.at(NINE).commands if isinstance(c, StartSession)]
    assert wakes(run.at(NINE + SECOND, SessionStarted(start.key, 4242, NINE), alive=[4242])) == []
    assert wakes(run.at(NINE + timedelta(minutes=20), alive=[4242])) == []
    # The controller restarts (state read back from its file) with the window still open.
    after = Run(desired(b), loads(dumps(run.state)))
    for minutes in (21, 22, 90):
        result = after.at(NINE + timedelta(minutes=minutes), alive=[4242], first_pass=True)
        assert wakes(result) == []
        assert "wake_requested" not in [e.kind.value for e in result.events]


def test_a_restart_right_after_the_arming_step_does_not_wake_again() -> None:
    # The state of the arming step is saved before its commands run: if the controller dies
    # right after the save, the next start finds the batch armed and wakes nobody (at most
    # once: the wake of that step may be lost, never doubled).
    b = batch(wake_on_lan=True, mode="unicast")
    run = Run(desired(b))
    assert len(wakes(run.at(NINE))) == 1
    after = Run(desired(b), loads(dumps(run.state)))
    result = after.at(NINE + SECOND, first_pass=True)
    assert wakes(result) == []
    assert result.state.batches[key_of(b)].phase is BatchPhase.armed


def test_a_clock_stepped_back_and_forward_again_does_not_wake_twice() -> None:
    b = batch(wake_on_lan=True, mode="unicast")
    run = Run(desired(b))
    assert len(wakes(run.at(NINE))) == 1
    assert wakes(run.at(NINE - timedelta(minutes=2))) == []
    assert wakes(run.at(NINE + timedelta(minutes=1))) == []


def test_a_blocked_batch_wakes_when_it_is_armed_not_before() -> None:
    b = batch(wake_on_lan=True, mode="unicast")
    run = Run(desired(b))
    blocked = run.at(NINE, images={})
    assert blocked.state.batches[key_of(b)].phase is BatchPhase.blocked
    assert wakes(blocked) == []
    ten_past = NINE + timedelta(minutes=10)
    [wake] = wakes(run.at(ten_past, images={"win11": WIN11}))
    assert wake.pcs == EVERY_PC  # unicast: no session, the PCs are woken all the same
    assert wakes(run.at(ten_past + SECOND)) == []


def test_pcs_held_for_an_earlier_version_are_not_woken() -> None:
    # pc01 ran "spring" (and succeeded) before the batch was edited to wake its PCs: the
    # edit is a new request, pc01 is held on local boot, so only pc02 and pc03 are woken.
    old = batch()
    run = Run(desired(old))
    [start] = [c for c in run.at(NINE).commands if isinstance(c, StartSession)]
    run.at(NINE + SECOND, SessionStarted(start.key, 4242, NINE), alive=[4242])
    t = berlin("2026-03-02 09:30")
    run.at(t, ReportReceived(success_line(PC01_MACS[0]), t), alive=[4242])
    new = batch(wake_on_lan=True)
    run.desired = desired(new)
    result = run.at(t + SECOND, alive=[4242])
    held = result.state.batches[key_of(new)].pcs["pc01"]
    assert (held.phase, held.reason) == (PcPhase.succeeded, "ImagedEarlier")
    [wake] = wakes(result)
    assert wake.pcs == (("pc02", (PC02_MAC,)), ("pc03", (PC03_MAC,)))
    assert wake.key == key_of(new)


def test_pcs_armed_later_are_not_woken() -> None:
    # pc04 joins the department after the window opened: armed (unicast) but never woken,
    # and a PC that booted meanwhile does not bring a second wake either.
    b = batch(wake_on_lan=True, mode="unicast")
    run = Run(desired(b))
    assert len(wakes(run.at(NINE))) == 1
    t = NINE + timedelta(minutes=5)
    run.at(t, MenuFetched(pxe_path(PC02_MAC), t, "192.168.100.12"))
    run.desired = desired(
        b, department=lab(extra=[{"hostname": "pc04", "macs": ["02:00:00:00:04:01"]}])
    )
    result = run.at(t + SECOND)
    assert ("pc_armed", "pc04", "AddedToBatch") in kinds(result)
    assert wakes(result) == []


def test_without_wake_on_lan_no_command_no_event_and_the_same_request() -> None:
    plain = batch()
    spelled = batch(wake_on_lan=False)
    result = Run(desired(plain)).at(NINE)
    assert wakes(result) == []
    assert "wake_requested" not in [e.kind.value for e in result.events]
    assert key_of(plain) == key_of(spelled)
    # The request hash of a batch that does not set it is what it always was: the batch as
    # written (defaults left out) and its window in UTC, written out here by hand.
    blob = (
        b'{"image":"win11","kind":"Batch","name":"spring",'
        b'"resolved_window":["2026-03-02T08:00:00+00:00","2026-03-02T11:00:00+00:00"],'
        b'"targets":{"departments":["lab"]},'
        b'"window":{"end":"2026-03-02T12:00:00","start":"2026-03-02T09:00:00"}}'
    )
    by_hand = hashlib.sha256(b"kitting-request-v1\0" + blob).hexdigest()[:16]
    assert request_hash(desired(plain), plain) == by_hand
    # Setting it is another request (a batch that now wakes its PCs is a new decision).
    woken = batch(wake_on_lan=True)
    assert request_hash(desired(woken), woken) != by_hand


def test_a_capture_wakes_its_master_pc() -> None:
    master = {"hostname": "master01", "macs": ["02:00:00:00:09:09"], "disk": {"device": "sda"}}
    b = batch(
        action="capture", mode="unicast", image="master", targets={"pcs": ["master01"]},
        wake_on_lan=True,
    )  # fmt: skip
    result = Run(desired(b, department=lab(extra=[master]))).at(NINE, images={})
    assert result.commands == (
        WakePcs(key_of(b), "spring", "enp3s0", (("master01", ("02:00:00:00:09:09",)),)),
    )
