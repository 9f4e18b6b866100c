"""`kitctl deployments` and `kitctl plan --at`, run in-process on a sandbox root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import batch_history, cli, deployment_state
from reconciler.deployment_state import DeploymentState
from reconciler.deployments import ReportReceived, SessionStarted
from tests.deployments.deploy_cases import (
    PC01_MACS,
    Run,
    batch,
    berlin,
    desired,
    success_line,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "site-repo-example"


def ended_spring() -> DeploymentState:
    """The three-PC Berlin batch: armed at 09:00, pc01 reports success, the window closes."""
    run = Run(desired(batch()))
    (start,) = run.at(berlin("2026-03-02 09:00")).commands
    started = SessionStarted(start.key, 4242, berlin("2026-03-02 09:00"))
    run.at(berlin("2026-03-02 09:00:01"), started, alive=[4242])
    report = ReportReceived(success_line(PC01_MACS[0]), berlin("2026-03-02 10:00"))
    run.at(berlin("2026-03-02 10:00"), report, alive=[4242])
    run.at(berlin("2026-03-02 12:00"), alive=[4242])
    run.at(berlin("2026-03-02 12:00:05"), alive=[])  # the sender ended
    return run.state


def write_state(root: Path, state: DeploymentState) -> None:
    path = root / "var/lib/kitting/deployments.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(deployment_state.dumps(state))


def test_deployments_lists_each_request_and_its_pcs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ended_spring()
    write_state(tmp_path, state)
    (key,) = state.batches
    assert cli.main(["deployments", "--root", str(tmp_path), "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["batches"]
    assert (shown["batch"], shown["phase"], shown["outcome"], shown["source"]) == (
        "spring",
        "disarmed",
        "partial",
        "state",
    )
    assert f"{shown['batch']}@{shown['content']}" == key
    assert {host: (pc["phase"], pc["reason"]) for host, pc in shown["pcs"].items()} == {
        "pc01": ("succeeded", "ReportedSuccess"),
        "pc02": ("missed", "WindowClosed"),
        "pc03": ("missed", "WindowClosed"),
    }
    assert shown["window"] == {
        "start": "2026-03-02T08:00:00+00:00",  # 09:00 in Berlin (CET, +01:00)
        "end": "2026-03-02T11:00:00+00:00",
    }

    assert cli.main(["deployments", "--root", str(tmp_path)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == (
        f"{key}: disarmed, partial  (restore win11 by multicast; window "
        "2026-03-02T08:00:00+00:00 .. 2026-03-02T11:00:00+00:00; state)"
    )
    assert text[1] == "  reason: WindowClosed"
    assert text[3].split() == [
        "pc01",
        "succeeded",
        "ReportedSuccess",
        "-",
        "Multicast",
        "restored",
        "win11:",
        "/dev/nvme0n1p1",
        "success,",
        "/dev/nvme0n1p2",
        "success",
    ]
    assert text[4].split() == ["pc02", "missed", "WindowClosed"]


def test_deployments_shows_history_the_state_has_pruned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ended_spring()
    (record,) = state.batches.values()
    logs = tmp_path / "home/partimag/logs"
    logs.mkdir(parents=True)
    body = batch_history.document(record, batch_history.Usage(), commit="abc", addresses={})
    (logs / f"deployment-{record.key}.json").write_bytes(body)
    (logs / "deployment-garbage.json").write_text("[1, 2")  # ignored, not fatal
    assert cli.main(["deployments", "--root", str(tmp_path), "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["batches"]
    assert (shown["source"], shown["commit"], shown["outcome"]) == ("history", "abc", "partial")


def test_deployments_refuses_a_damaged_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "var/lib/kitting/deployments.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 99}')
    assert cli.main(["deployments", "--root", str(tmp_path)]) == 1
    assert "version 99" in capsys.readouterr().err
    (tmp_path / "var/lib/kitting/deployments.json").unlink()
    assert cli.main(["deployments", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "No deployments recorded.\n"


def test_plan_at_shows_what_the_deployments_do_then(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan", "--repo", str(EXAMPLE), "--root", str(tmp_path), "--no-diff"]
    assert cli.main([*argv, "--at", "2026-12-07T09:30"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("Deployments at") :].splitlines()
    assert section[:4] == [
        "Deployments at 2026-12-07T09:30:00+09:00:",  # the site's zone, Asia/Tokyo
        "  (assuming every image is complete and every prerequisite is there)",
        "  batch accounting-2026-12-08-acc07: pending (restore win11-accounting-2025 by "
        "unicast); window opens 2026-12-08T13:00:00+09:00",
        "  batch sales-2026-12-07: window open until 2026-12-07T12:00:00+09:00: restore "
        "win11-sales-2025 by multicast, port 2232",
    ]
    assert section[4] == (
        "    SALES-PC-01: restore entry: restore image win11-sales-2025 to nvme0n1 "
        "(multicast) (02:4b:49:54:01:01)"
    )
    assert section[-1] == "  Every other PC boots its local disk."
    assert len(section) == 4 + 20 + 1

    assert cli.main([*argv, "--at", "2026-12-07T03:00:00+00:00", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["deployments"]["lines"][3] == (
        "  batch sales-2026-12-07: window closed 2026-12-07T12:00:00+09:00; disarmed (no outcome)"
    )


def test_plan_at_refuses_what_is_not_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plan", "--repo", str(EXAMPLE), "--root", str(tmp_path)]
    assert cli.main([*argv, "--at", "monday 9am"]) == 1
    assert "--at 'monday 9am' is not an ISO 8601 time" in capsys.readouterr().err
    assert cli.main([*argv, "--at", "2026-12-07T09:30", "--base", "HEAD"]) == 1
    assert "not with --base" in capsys.readouterr().err
