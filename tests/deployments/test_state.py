"""The persisted deployment state: its JSON, its version, and refusing a damaged file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reconciler.deployment_state import (
    BatchPhase,
    BatchRecord,
    DeploymentState,
    PcPhase,
    PcRecord,
    SessionPhase,
    SessionRecord,
    StateError,
    dumps,
    loads,
    utc,
)
from reconciler.desired import Action, Mode, OnFailure
from tests.deployments.deploy_cases import Run, batch, berlin, desired

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def record() -> BatchRecord:
    return BatchRecord(
        name="spring",
        content="05a09df93c73088d",
        phase=BatchPhase.running,
        window_start=T0,
        window_end=T0.replace(hour=11),
        action=Action.restore,
        mode=Mode.multicast,
        on_failure=OnFailure.hold,
        image="win11",
        pcs={
            "pc02": PcRecord(phase=PcPhase.waiting, mode=Mode.multicast, armed_at=T0),
            "pc01": PcRecord(
                phase=PcPhase.joined,
                mode=Mode.multicast,
                reason="Booted",
                armed_at=T0,
                booted_at=T0.replace(minute=5),
                flags=("RefetchedEntry",),
            ),
        },
        session=SessionRecord(phase=SessionPhase.running, requested_at=T0, pid=4242),
    )


EXPECTED = """{
  "version": 1,
  "batches": {
    "spring@05a09df93c73088d": {
      "name": "spring",
      "content": "05a09df93c73088d",
      "phase": "running",
      "window_start": "2026-03-02T08:00:00Z",
      "window_end": "2026-03-02T11:00:00Z",
      "action": "restore",
      "mode": "multicast",
      "on_failure": "hold",
      "image": "win11",
      "reason": "",
      "message": "",
      "pcs": {
        "pc01": {
          "phase": "joined",
          "mode": "multicast",
          "attempt": 1,
          "reason": "Booted",
          "armed_at": "2026-03-02T08:00:00Z",
          "booted_at": "2026-03-02T08:05:00Z",
          "finished_at": null,
          "reported": "",
          "report": "",
          "first_attempt": "",
          "flags": [
            "RefetchedEntry"
          ],
          "entries": [],
          "address": ""
        },
        "pc02": {
          "phase": "waiting",
          "mode": "multicast",
          "attempt": 1,
          "reason": "",
          "armed_at": "2026-03-02T08:00:00Z",
          "booted_at": null,
          "finished_at": null,
          "reported": "",
          "report": "",
          "first_attempt": "",
          "flags": [],
          "entries": [],
          "address": ""
        }
      },
      "session": {
        "phase": "running",
        "requested_at": "2026-03-02T08:00:00Z",
        "pid": 4242,
        "started_at": null,
        "ended_at": null,
        "reason": "",
        "returncode": null,
        "summary": ""
      },
      "outcome": null,
      "withdrawn": false
    }
  }
}
"""


def test_json_is_versioned_sorted_and_in_utc() -> None:
    state = DeploymentState(batches={record().key: record()})
    assert dumps(state).decode() == EXPECTED


def test_round_trip_of_a_real_run() -> None:
    run = Run(desired(batch()))
    run.at(berlin("2026-03-02 09:00"))
    state = run.state
    assert loads(dumps(state)) == state
    assert dumps(loads(dumps(state))) == dumps(state)


def test_the_empty_state() -> None:
    assert loads(b'{"version": 1}') == DeploymentState()
    assert dumps(DeploymentState()) == b'{\n  "version": 1,\n  "batches": {}\n}\n'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "has version None; this reconciler reads version 1"),
        (b'{"version": 2, "batches": {}}', "has version 2"),
        (b'{"version": 1, "batches": [], "extra": 1}', "damaged at"),
    ],
)
def test_damaged_or_foreign_state_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        loads(data)


def test_unknown_field_naive_time_and_wrong_key_are_refused() -> None:
    good = json.loads(EXPECTED)
    pc = good["batches"]["spring@05a09df93c73088d"]["pcs"]["pc01"]
    for change, message in (
        ({"bogus": 1}, "damaged at batches.spring@05a09df93c73088d.pcs.pc01.bogus"),
        ({"armed_at": "2026-03-02T08:00:00"}, "pcs.pc01.armed_at: Input should have timezone info"),
        ({"phase": "imaged"}, "pcs.pc01.phase"),
    ):
        broken = json.loads(EXPECTED)
        broken["batches"]["spring@05a09df93c73088d"]["pcs"]["pc01"] = {**pc, **change}
        with pytest.raises(StateError, match=message):
            loads(json.dumps(broken).encode())
    moved = {"version": 1, "batches": {"spring@ffff": good["batches"]["spring@05a09df93c73088d"]}}
    with pytest.raises(StateError, match="lists spring@05a09df93c73088d under the key spring@ffff"):
        loads(json.dumps(moved).encode())


def test_utc_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc(datetime(2026, 3, 2, 9))
    assert utc(berlin("2026-03-02 09:00")) == T0
