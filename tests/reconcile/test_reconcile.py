"""The reconcile step: stage order, sandbox seams, exit codes; the example site end to end
into a sandbox root (render -> observe -> plan -> apply -> nothing left to do)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from reconciler import load, plan, preflight, reconcile, validate
from reconciler.apply import Report, Result, Status
from reconciler.desired import Desired
from reconciler.host import LocalHost
from reconciler.inventory import Inventory
from reconciler.live_firewall import NoFirewall
from reconciler.preflight import Preflight
from reconciler.services import NoServices

from .helpers import (
    LAYOUT,
    MAIN,
    RequirePrograms,
    accept_all,
    in_fresh_netns,
    rendered,
    reservation,
)

EXAMPLE = Path(__file__).parent.parent.parent / "site-repo-example"


def example_desired() -> Desired:
    checked = validate.run(load.repo(EXAMPLE))
    assert checked.desired is not None, checked.problems
    return checked.desired


def test_plan_exit_codes() -> None:
    nothing = plan.Plan(summary="no changes")
    changes = plan.Plan(records=(plan.RecordFile("/a", None, "gone"),))
    blocked = plan.Plan(conflicts=(plan.Conflict("/a", "not owned", ""),))
    assert reconcile.plan_exit_code(nothing) == 0
    assert reconcile.plan_exit_code(nothing, detailed=True) == 0
    assert reconcile.plan_exit_code(changes) == 0
    assert reconcile.plan_exit_code(changes, detailed=True) == 2
    assert reconcile.plan_exit_code(blocked) == 1
    assert reconcile.plan_exit_code(blocked, detailed=True) == 1


def test_apply_exit_codes() -> None:
    written = Result("write", "/a", Status.ok, "FileWritten", "new")
    rolled = Result("reload", "dnsmasq", Status.rolled_back, "RolledBack", "restored")
    assert reconcile.apply_exit_code(Report((), Inventory())) == 0
    assert reconcile.apply_exit_code(Report((), Inventory()), detailed=True) == 0
    assert reconcile.apply_exit_code(Report((written,), Inventory())) == 0
    assert reconcile.apply_exit_code(Report((written,), Inventory()), detailed=True) == 2
    assert reconcile.apply_exit_code(Report((written, rolled), Inventory()), detailed=True) == 1


def test_a_sandbox_root_signals_nothing_and_reads_no_kernel_table(tmp_path: Path) -> None:
    seams = reconcile.seams_for(str(tmp_path), LAYOUT)
    assert isinstance(seams.services, NoServices)
    assert isinstance(seams.firewall, NoFirewall)


def test_apply_then_plan_into_a_sandbox(tmp_path: Path) -> None:
    seams = reconcile.seams_for(str(tmp_path), LAYOUT)
    wanted = rendered(reservation("pc-1", "aa:bb:cc:dd:ee:01,pc-1"))
    built, report = reconcile.apply_rendered(wanted, seams, LAYOUT, commit="abc")
    assert built.summary == "+1 reservation" and report.ok
    assert (tmp_path / "etc/kitting/dhcp-hosts/pc-1").read_text() == "aa:bb:cc:dd:ee:01,pc-1\n"
    again, _ = reconcile.plan_rendered(wanted, seams, LAYOUT)
    assert again.summary == "no changes: all 1 file match; inventory clean"


def sandbox(root: str, check: Preflight) -> reconcile.Seams:
    return reconcile.Seams(LocalHost(root), NoServices(), NoFirewall(), check)


def example_end_to_end(root: Path, check: Preflight) -> None:
    desired = example_desired()
    seams = sandbox(str(root), check)
    first = reconcile.plan_for(desired, str(root), LAYOUT, seams=seams)
    assert first.changes and not first.blocked
    assert MAIN in {w.path for w in first.writes}
    assert reconcile.plan_exit_code(first, detailed=True) == 2

    built, report = reconcile.apply_for(desired, str(root), LAYOUT, commit="e2e", seams=seams)
    assert report.ok, [r for r in report.results if r.status is not Status.ok]
    assert built.summary == first.summary
    for write in first.writes:
        assert (root / write.path.lstrip("/")).read_bytes() == write.artifact.content

    after = reconcile.plan_for(desired, str(root), LAYOUT, seams=seams)
    assert not after.changes, after.summary
    assert reconcile.plan_exit_code(after, detailed=True) == 0
    assert isinstance(seams.services, NoServices)
    calls = list(seams.services.calls)
    _, idle = reconcile.apply_for(desired, str(root), LAYOUT, commit="e2e", seams=seams)
    assert idle.results == ()
    assert seams.services.calls == calls


def test_the_example_site_end_to_end_in_a_sandbox(tmp_path: Path) -> None:
    example_end_to_end(tmp_path, accept_all)


@pytest.mark.integration
def test_the_example_site_passes_the_real_checkers(
    tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq", "nft", "sshd", "unshare")
    example_end_to_end(tmp_path, partial(preflight.check, layout=LAYOUT, runner=in_fresh_netns))
