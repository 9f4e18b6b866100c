"""One pass at a time (`Controller.pass_once`) against real git repositories and sandbox
roots: merges, force pushes, invalid and valid commits, drift, the source going away.

Expected values are worked out from the example site (site-repo-example): its pool is
192.168.100.10-.100 on a /24, so a lease of 12h renders as
`dhcp-range=192.168.100.10,192.168.100.100,255.255.255.0,43200` (8h: 28800, 6h: 21600).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler import audit
from reconciler import status as status_file
from reconciler.clock import FixedClock
from reconciler.host import LocalHost
from reconciler.layout import Layout
from reconciler.rendered import Service
from reconciler.services import NoServices, ServiceError

from .siterepo import (
    DNSMASQ,
    HOSTS,
    RANGE_12H,
    STATE,
    SiteRepo,
    condition,
    controller,
    dhcp_range,
    entries,
    events,
    files_under,
    kitctl,
    sha256,
    status_json,
)

MERGE_SUBJECT = "Merge pull request #12 from ann/shorter-leases"
REVIEWER = "Bob Reviewer <bob@example.org>"


def dnsmasq_conf(root: Path) -> str:
    return (root / DNSMASQ).read_text()


def test_a_merged_pull_request_reaches_the_root(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    assert ctl.pass_once().applied
    before = (root / DNSMASQ).read_bytes()
    assert RANGE_12H in before.decode()

    site.git("checkout", "--quiet", "-b", "shorter-leases")
    site.lease("8h")
    site.commit("Shorter leases for the December rollout")
    site.git("checkout", "--quiet", "main")
    merge = site.merge("shorter-leases", MERGE_SUBJECT, f"Reviewed-by: {REVIEWER}")

    outcome = ctl.pass_once("commit")
    assert outcome.applied and not outcome.transient
    after = (root / DNSMASQ).read_bytes()
    assert dhcp_range(28800) in after.decode() and RANGE_12H not in after.decode()

    status = status_json(root)
    assert condition(status, "Ready") == (True, "ApplySucceeded")
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert condition(status, "Reconciling") == (False, "Idle")
    assert (status["last_applied"], status["last_attempted"]) == (merge, merge)

    # What the merge caused on this server: one file, the restart only a restart re-reads it
    # with, and the commit itself.
    caused = audit.select(entries(root), commit=merge)
    assert [(e.event, e.target) for e in caused] == [
        ("preflight_passed", "candidates"),
        ("file_written", "/etc/dnsmasq.d/kitting.conf"),
        ("service_restarted", "dnsmasq"),
        ("commit_applied", "main"),
    ]
    written = caused[1]
    assert written.details["hash_before"] == sha256(before)
    assert written.details["hash_after"] == sha256(after)
    assert "-dhcp-range=192.168.100.10,192.168.100.100,255.255.255.0,43200" in str(
        written.details["diff"]
    )
    applied = caused[-1]
    assert applied.details == {"summary": "~1 file, dnsmasq: restart"}
    assert applied.commit == audit.CommitInfo(
        sha=merge,
        author="Ann Author <ann@example.org>",
        committer="Ann Author <ann@example.org>",
        date="2026-12-01T10:02:00+09:00",  # the third commit: 10:00 + 2 minutes
        subject=MERGE_SUBJECT,
        review=("GitHub pull request #12", f"Reviewed-by: {REVIEWER}"),
    )

    shown = kitctl("audit", "show", merge[:10], "--root", str(root))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:9] == [
        f"commit {merge}",
        "Author:    Ann Author <ann@example.org>",
        "Committer: Ann Author <ann@example.org>",
        "Date:      2026-12-01T10:02:00+09:00",
        f"Review:    GitHub pull request #12; Reviewed-by: {REVIEWER}",
        "",
        f"    {MERGE_SUBJECT}",
        "",
        "4 action(s) on this server:",
    ]
    assert "file_written" in lines[10] and "/etc/dnsmasq.d/kitting.conf" in lines[10]

    clone = f"--git-dir={root / STATE / 'source'}"
    note = subprocess.run(
        ["git", clone, "notes", "--ref=refs/notes/kitting", "show", merge],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert note.stdout == "kitting: applied on this server: ~1 file, dnsmasq: restart\n"


def test_a_force_push_is_refused_once_and_the_server_keeps_its_files(
    site: SiteRepo, root: Path, clock: FixedClock, tmp_path: Path
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    site.lease("8h")
    pushed = site.commit("Shorter leases")
    assert ctl.pass_once().applied
    site.lease("6h")
    rewritten = site.commit("Shorter leases", amend=True)  # pushed is no longer in main
    kept = files_under(root)

    for _ in range(4):  # the first pass refuses; three more report nothing new
        outcome = ctl.pass_once("poll")
        assert not outcome.applied and not outcome.transient
    assert files_under(root) == kept
    assert dhcp_range(28800) in dnsmasq_conf(root)
    status = status_json(root)
    assert condition(status, "Stalled") == (True, "HistoryRewritten")
    assert condition(status, "Ready") == (False, "HistoryRewritten")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert f"moved to {rewritten[:12]}, which does not contain {pushed[:12]}" in stalled["message"]
    assert (status["refused"], status["refused_reason"]) == (rewritten, "HistoryRewritten")
    assert (status["last_applied"], status["last_attempted"]) == (pushed, rewritten)
    refused = events(root, "commit_refused")
    assert len(refused) == 1
    assert refused[0].details == {"reason": "HistoryRewritten", "head": rewritten}
    assert refused[0].commit is not None
    assert (refused[0].commit.sha, refused[0].commit.subject) == (rewritten, "Shorter leases")

    # A restarted controller judges the head again: still refused, still reported once.
    args = ["--config", os.devnull, "--source", str(site.path)]
    args += ["--root", str(root), "--services", "none", "--once"]
    again = kitctl("run", *args)
    assert again.returncode == 1, again.stderr
    assert len(events(root, "commit_refused")) == 1
    # not audited again, but --once still says why it is not ready
    assert again.stderr.splitlines()[-1].startswith(
        f"not ready (HistoryRewritten): {rewritten[:12]} refused; the server keeps {pushed[:12]}"
    )
    assert files_under(root) == kept

    # The operator allows the rewrite: the same head is applied.
    accepted = kitctl("run", *args, "--allow-rewrite")
    assert accepted.returncode == 0, accepted.stderr
    assert dhcp_range(21600) in dnsmasq_conf(root)
    status = status_json(root)
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert condition(status, "Ready") == (True, "ApplySucceeded")
    assert (status["last_applied"], status["refused"]) == (rewritten, "")
    assert [e.commit.sha for e in events(root, "commit_applied") if e.commit] == [
        site.head("HEAD~1"),  # the first pass applied the example commit
        pushed,
        rewritten,
    ]


def test_a_force_push_taken_back_lifts_the_stall(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    applied = site.head()
    site.lease("6h")
    site.commit("Rewrite", amend=True)
    ctl.pass_once("poll")
    assert condition(status_json(root), "Stalled") == (True, "HistoryRewritten")

    site.git("reset", "--quiet", "--hard", applied)  # pushed back where it was
    assert not ctl.pass_once("poll").applied
    status = status_json(root)
    assert condition(status, "Stalled") == (False, "UpToDate")
    assert condition(status, "Ready") == (True, "UpToDate")
    assert (status["refused"], status["last_applied"]) == ("", applied)


def test_an_invalid_commit_is_refused_once_and_the_next_valid_one_applied(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    first = site.head()
    kept = files_under(root)

    site.lease("12x")
    invalid = site.commit("Typo in the lease time")
    outcome = ctl.pass_once("commit")
    assert not outcome.applied and not outcome.transient
    status = status_json(root)
    assert condition(status, "Stalled") == (True, "ValidationFailed")
    assert condition(status, "Ready") == (False, "ValidationFailed")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    # line 26 is "    lease_time: 12x": the value starts after 4 spaces and "lease_time: "
    assert stalled["message"].startswith(
        f"{invalid[:12]}: site.yaml:26:17: error: '12x' is not a duration"
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert f"the server keeps {first[:12]}" in ready["message"]
    assert (status["refused"], status["last_applied"]) == (invalid, first)

    clock.advance(timedelta(minutes=10))
    ctl.pass_once("poll")
    ctl.pass_once("drift", converge=True)  # converges to the last good commit, not to it
    assert files_under(root) == kept
    caused = audit.select(entries(root), commit=invalid)
    assert [(e.event, e.details["reason"]) for e in caused] == [
        ("commit_refused", "ValidationFailed")
    ]

    site.lease("8h")
    fixed = site.commit("Fix the lease time")
    assert ctl.pass_once("commit").applied
    assert dhcp_range(28800) in dnsmasq_conf(root)
    status = status_json(root)
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert condition(status, "Ready") == (True, "ApplySucceeded")
    assert (status["refused"], status["last_applied"]) == ("", fixed)

    shown = kitctl("audit", "show", invalid, "--root", str(root), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [line.count('"event":"commit_refused"') for line in shown.stdout.splitlines()] == [1]


def test_drift_is_repaired_by_a_drift_pass_only(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    applied = site.head()
    original = (root / DNSMASQ).read_bytes()
    edited = original + b"dhcp-range=10.9.9.1,10.9.9.9,1h\n"
    (root / DNSMASQ).write_bytes(edited)
    pc7 = root / HOSTS / "ACC-PC-07.hosts"
    pc7.unlink()

    ctl.pass_once("poll")  # no drift check on a plain poll
    assert (root / DNSMASQ).read_bytes() == edited and not pc7.exists()

    clock.advance(timedelta(minutes=5))
    outcome = ctl.pass_once("drift", converge=True)
    assert not outcome.applied and not outcome.transient
    assert (root / DNSMASQ).read_bytes() == original
    # from departments/accounting.yaml: ACC-PC-07, 02:4b:49:54:02:07, 192.168.100.127
    assert pc7.read_text() == (
        "# managed by kitctl; edits are reverted\n02:4b:49:54:02:07,192.168.100.127,ACC-PC-07\n"
    )
    repaired = {e.target: e for e in events(root, "drift_repaired")}
    assert sorted(repaired) == [
        "/etc/dnsmasq.d/kitting.conf",
        "/etc/kitting/dhcp-hosts/ACC-PC-07.hosts",
    ]
    conf = repaired["/etc/dnsmasq.d/kitting.conf"]
    assert conf.result == audit.Result.success("drift: owned file edited by hand")
    assert conf.details["hash_before"] == sha256(edited)
    assert conf.details["hash_after"] == sha256(original)
    assert "\n-dhcp-range=10.9.9.1,10.9.9.9,1h" in str(conf.details["diff"])
    lost = repaired["/etc/kitting/dhcp-hosts/ACC-PC-07.hosts"]
    assert lost.result == audit.Result.success("drift: owned file was deleted by hand")
    assert lost.details["hash_before"] == "absent"
    assert all(e.commit is not None and e.commit.sha == applied for e in repaired.values())

    status = status_json(root)
    assert sorted(status["drift"]) == sorted(repaired)
    assert status["last_drift_check"] == "2026-11-30T08:05:00+09:00"
    assert condition(status, "Ready") == (True, "ApplySucceeded")

    clock.advance(timedelta(minutes=5))
    ctl.pass_once("drift", converge=True)
    status = status_json(root)
    assert (status["drift"], status["last_drift_check"]) == ([], "2026-11-30T08:10:00+09:00")
    assert len(events(root, "drift_repaired")) == 2


class WatchingServices(NoServices):
    """Records the controller's status as it stands while the pass restarts a service;
    fails the first `fail` restarts."""

    def __init__(self, root: Path, fail: int = 0) -> None:
        super().__init__()
        self.root = root
        self.fail = fail
        self.seen: list[tuple[bool, str]] = []

    def restart(self, service: Service) -> None:
        self.seen.append(condition(status_json(self.root), "Reconciling"))
        if self.fail:
            self.fail -= 1
            raise ServiceError(f"{service.value}: Job for {service.value}.service failed")
        super().restart(service)


def test_status_says_reconciling_while_a_pass_runs(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    services = WatchingServices(root)
    ctl.seams = type(ctl.seams)(ctl.seams.host, services, ctl.seams.firewall, ctl.seams.preflight)
    ctl.pass_once("start")
    # dnsmasq and nfs-kernel-server restart on the first apply (their main files are new)
    assert services.seen == [(True, "Progressing"), (True, "Progressing")]
    assert condition(status_json(root), "Reconciling") == (False, "Idle")


def test_a_failed_restart_is_transient_and_retried(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    site.lease("8h")
    head = site.commit("Shorter leases")
    services = WatchingServices(root, fail=1)
    ctl.seams = type(ctl.seams)(ctl.seams.host, services, ctl.seams.firewall, ctl.seams.preflight)

    outcome = ctl.pass_once("commit")
    assert outcome.transient and not outcome.applied
    assert RANGE_12H in dnsmasq_conf(root)  # rolled back
    status = status_json(root)
    assert condition(status, "Ready") == (False, "ApplyFailed")
    assert (status["last_attempted"], status["refused"]) == (head, "")

    assert ctl.pass_once("poll").applied  # the same head, tried again
    assert dhcp_range(28800) in dnsmasq_conf(root)
    assert status_json(root)["last_applied"] == head


def test_an_unreachable_source_is_transient_and_recovers(
    site: SiteRepo, root: Path, clock: FixedClock, tmp_path: Path
) -> None:
    ctl = controller(site, root, clock)
    ctl.pass_once()
    applied = site.head()
    away = tmp_path / "away"
    site.path.rename(away)

    # a drift check in the outage still converges, but Ready stays false
    outcome = ctl.pass_once("drift", converge=True)
    assert outcome.transient and not outcome.applied
    status = status_json(root)
    assert condition(status, "Ready") == (False, "GitUnreachable")
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert status["source_error"] == "GitUnreachable"

    away.rename(site.path)
    outcome = ctl.pass_once("poll")
    assert not outcome.transient
    status = status_json(root)
    assert condition(status, "Ready") == (True, "UpToDate")
    assert (status["source_error"], status["last_applied"]) == ("", applied)


def test_a_missing_branch_stalls_until_it_exists(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    ctl = controller(site, root, clock, branch="release")
    outcome = ctl.pass_once()
    assert not outcome.transient and not outcome.applied
    status = status_json(root)
    assert condition(status, "Stalled") == (True, "BranchNotFound")
    assert files_under(root) == {}

    site.git("branch", "release")
    assert ctl.pass_once("poll").applied
    status = status_json(root)
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert (status["last_applied"], status["source_error"]) == (site.head(), "")


@pytest.mark.parametrize("garbage", [b"[]", b"{", b'{"conditions": [1]}', b"\xff"])
def test_an_unreadable_status_is_rebuilt(
    site: SiteRepo, root: Path, clock: FixedClock, garbage: bytes
) -> None:
    (root / STATE).mkdir(parents=True)
    (root / STATE / "status.json").write_bytes(garbage)
    shown = kitctl("status", "--root", str(root))
    assert (shown.returncode, shown.stdout) == (0, "no pass has run for this root yet\n")
    assert controller(site, root, clock).pass_once().applied
    assert status_json(root)["last_applied"] == site.head()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_status_before_any_pass(root: Path, fmt: str) -> None:
    shown = kitctl("status", "--root", str(root), "--format", fmt)
    assert shown.returncode == 0, shown.stderr
    if fmt == "text":
        assert shown.stdout == "no pass has run for this root yet\n"
    else:
        assert '"running": false' in shown.stdout and '"last_applied": ""' in shown.stdout


def test_status_command(site: SiteRepo, root: Path, clock: FixedClock) -> None:
    clock.set(clock.now().replace(month=12, day=7, hour=10))  # sales window: 09:00-12:00
    controller(site, root, clock).pass_once("start")
    head = site.head()
    at = "2026-12-07T10:00:00+09:00"

    shown = kitctl("status", "--root", str(root), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    ready = body["conditions"][0]
    # 20 sales + 20 accounting PCs; dnsmasq, exports, nfs.conf, nft, sshd, two boot menus
    assert ready["message"].startswith(f"applied {head[:12]}: +40 reservations, +7 files, ")
    assert body["conditions"] == [
        {
            "type": "Ready",
            "status": True,
            "reason": "ApplySucceeded",
            "message": ready["message"],
            "since": at,
        },
        {"type": "Reconciling", "status": False, "reason": "Idle", "message": "", "since": at},
        {
            "type": "Stalled",
            "status": False,
            "reason": "ApplySucceeded",
            "message": "",
            "since": at,
        },
    ]
    del body["conditions"], body["pid"]
    assert body == {
        "drift": [],
        "last_applied": head,
        "last_attempted": head,
        "last_drift_check": "",
        "next_pass": "",
        "open_windows": [
            {
                "batch": "sales-2026-12-07",
                "start": "2026-12-07T09:00:00+09:00",
                "end": "2026-12-07T12:00:00+09:00",
            }
        ],
        "refused": "",
        "refused_reason": "",
        "running": False,
        "source_error": "",
        "updated": at,
    }

    text = kitctl("status", "--root", str(root))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "controller: not running"
    assert lines[1].split(None, 3)[:3] == ["Ready", "True", "ApplySucceeded"]
    assert lines[2].split() == ["Reconciling", "False", "Idle"]
    assert lines[3].split() == ["Stalled", "False", "ApplySucceeded"]
    assert lines[4:] == [
        f"last attempted: {head}",
        f"last applied:   {head}",
        "drift:          not checked yet",
        "next pass:      -",
        "open window:    sales-2026-12-07 2026-12-07T09:00:00+09:00 .. 2026-12-07T12:00:00+09:00",
    ]


def test_the_paths_of_the_settings_are_where_the_controller_writes(
    site: SiteRepo, root: Path, clock: FixedClock
) -> None:
    # `kitctl run` builds its controller from the settings alone: `paths` must move the files
    ctl = controller(
        site,
        root,
        clock,
        paths={"dnsmasq_conf": "/srv/k/dnsmasq.conf", "state_dir": "/srv/k/state"},
    )
    assert ctl.pass_once().applied
    assert RANGE_12H in (root / "srv/k/dnsmasq.conf").read_text()
    assert not (root / DNSMASQ).exists()
    assert (root / "srv/k/state/status.json").is_file()
    assert not (root / STATE).exists()

    # `kitctl status --config` finds that state; plain --root looks where nothing ran
    config = root.parent / "reconciler.yaml"
    config.write_text(
        f"source: {site.path}\nroot: {root}\nservices: none\n"
        "paths: {dnsmasq_conf: /srv/k/dnsmasq.conf, state_dir: /srv/k/state}\n"
    )
    shown = kitctl("status", "--config", str(config), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["last_applied"] == site.head()
    plain = kitctl("status", "--root", str(root), "--format", "json")
    assert json.loads(plain.stdout)["last_applied"] == ""
    missing = kitctl("status", "--config", str(root / "nope.yaml"))
    assert (missing.returncode, missing.stderr) == (
        1,
        f"error: {root}/nope.yaml: no such settings file\n",
    )


def test_the_text_status_keeps_one_line_per_condition(root: Path) -> None:
    two = "abc123: site.yaml:3:1: error: one\nsite.yaml:9:5: error: two\n"
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    saved = status_file.Status(updated=now.isoformat()).with_condition(
        "Stalled", True, "ValidationFailed", two, now
    )
    status_file.save(LocalHost(str(root)), Layout(), saved)
    text = kitctl("status", "--root", str(root)).stdout.splitlines()
    assert text[1].split(None, 3) == [
        "Stalled",
        "True",
        "ValidationFailed",
        "abc123: site.yaml:3:1: error: one; site.yaml:9:5: error: two",
    ]
    assert text[-2:] == ["drift:          not checked yet", "next pass:      -"]
