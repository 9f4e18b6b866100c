"""Plan and apply-report output: text with diffs, JSON, Markdown; expected output by hand."""

from __future__ import annotations

import hashlib
import json

from reconciler import plan, plan_format
from reconciler.apply import Report, Result, Status
from reconciler.facts import Facts, FileState
from reconciler.inventory import Entry, Inventory
from reconciler.rendered import Effect, Service

from .helpers import HOSTS, LAYOUT, MAIN, main_conf, rendered, reservation

PC1 = f"{HOSTS}/pc-1"


def drift_and_new() -> plan.Plan:
    wanted = rendered(reservation("pc-1", "aa:bb:cc:dd:ee:01,pc-1"), main_conf("port=0\n"))
    written = hashlib.sha256(b"aa:bb:cc:dd:ee:01,pc-1\n").hexdigest()
    facts = Facts(
        files={PC1: FileState(b"aa:bb:cc:dd:ee:01,pc-9\n", 0o644), MAIN: FileState(None)},
        inventory=Inventory(files={PC1: Entry(written, 0o644, Service.dnsmasq, Effect.reload)}),
    )
    return plan.build(wanted, facts, layout=LAYOUT)


def test_text() -> None:
    assert plan_format.text(drift_and_new()) == (
        "Plan: ~1 reservation, +1 file, 1 drifted, dnsmasq: restart\n"
        "\n"
        "Actions:\n"
        "  + /etc/dnsmasq.d/kitting.conf: new\n"
        "      --- /dev/null\n"
        "      +++ /etc/dnsmasq.d/kitting.conf (desired)\n"
        "      @@ -0,0 +1 @@\n"
        "      +port=0\n"
        "  ~ /etc/kitting/dhcp-hosts/pc-1: drift: owned file edited by hand\n"
        "      --- /etc/kitting/dhcp-hosts/pc-1 (server)\n"
        "      +++ /etc/kitting/dhcp-hosts/pc-1 (desired)\n"
        "      @@ -1 +1 @@\n"
        "      -aa:bb:cc:dd:ee:01,pc-9\n"
        "      +aa:bb:cc:dd:ee:01,pc-1\n"
        "  * dnsmasq: restart: /etc/dnsmasq.d/kitting.conf changed; only a restart re-reads it\n"
    )


def test_text_of_nothing_to_do() -> None:
    assert plan_format.text(
        plan.Plan(summary="no changes: all 0 files match; inventory clean")
    ) == ("Plan: no changes: all 0 files match; inventory clean\n")


def test_json() -> None:
    body = json.loads(plan_format.as_json(drift_and_new()))
    assert body == {
        "summary": "~1 reservation, +1 file, 1 drifted, dnsmasq: restart",
        "changes": True,
        "blocked": False,
        "actions": [
            {
                "kind": "write",
                "reason": "new",
                "path": MAIN,
                "create": True,
                "drift": False,
                "adopt": False,
                "mode": "0644",
                "service": "dnsmasq",
                "diff": f"--- /dev/null\n+++ {MAIN} (desired)\n@@ -0,0 +1 @@\n+port=0",
            },
            {
                "kind": "write",
                "reason": "drift: owned file edited by hand",
                "path": PC1,
                "create": False,
                "drift": True,
                "adopt": False,
                "mode": "0644",
                "service": "dnsmasq",
                "diff": (
                    f"--- {PC1} (server)\n+++ {PC1} (desired)\n@@ -1 +1 @@\n"
                    "-aa:bb:cc:dd:ee:01,pc-9\n+aa:bb:cc:dd:ee:01,pc-1"
                ),
            },
            {
                "kind": "restart",
                "reason": f"{MAIN} changed; only a restart re-reads it",
                "service": "dnsmasq",
                "paths": [PC1, MAIN],
            },
        ],
        "conflicts": [],
        "noops": [],
        "notes": [],
    }


def test_markdown() -> None:
    assert plan_format.markdown(drift_and_new()) == (
        "## Plan\n"
        "\n"
        "**~1 reservation, +1 file, 1 drifted, dnsmasq: restart**\n"
        "\n"
        "### Actions\n"
        "\n"
        "| | What | Why |\n"
        "|---|---|---|\n"
        "| + | `/etc/dnsmasq.d/kitting.conf` | new |\n"
        "| ~ | `/etc/kitting/dhcp-hosts/pc-1` | drift: owned file edited by hand |\n"
        "| * | `dnsmasq: restart` | /etc/dnsmasq.d/kitting.conf changed; only a restart "
        "re-reads it |\n"
        "\n"
        "### Diffs\n"
        "\n"
        "`/etc/dnsmasq.d/kitting.conf`\n"
        "\n"
        "```diff\n"
        "--- /dev/null\n"
        "+++ /etc/dnsmasq.d/kitting.conf (desired)\n"
        "@@ -0,0 +1 @@\n"
        "+port=0\n"
        "```\n"
        "\n"
        "`/etc/kitting/dhcp-hosts/pc-1`\n"
        "\n"
        "```diff\n"
        "--- /etc/kitting/dhcp-hosts/pc-1 (server)\n"
        "+++ /etc/kitting/dhcp-hosts/pc-1 (desired)\n"
        "@@ -1 +1 @@\n"
        "-aa:bb:cc:dd:ee:01,pc-9\n"
        "+aa:bb:cc:dd:ee:01,pc-1\n"
        "```\n"
    )


def test_markdown_diff_cannot_break_out_of_its_fence() -> None:
    conflict = plan.Conflict("/etc/x", "not owned | <b>", "-```\n+````` injected")
    text = plan_format.markdown(plan.Plan(conflicts=(conflict,), summary="1 conflict (blocked)"))
    assert "``````diff\n-```\n+````` injected\n``````\n" in text
    assert "- `/etc/x`: not owned \\| \\<b\\>\n" in text


def test_render_picks_the_format() -> None:
    built = drift_and_new()
    assert plan_format.render(built, "text") == plan_format.text(built)
    assert plan_format.render(built, "json") == plan_format.as_json(built)
    assert plan_format.render(built, "markdown") == plan_format.markdown(built)


def test_apply_report_text_and_json() -> None:
    report = Report(
        results=(
            Result("write", PC1, Status.ok, "FileWritten", "new", {"hash_after": "ab"}),
            Result("reload", "dnsmasq", Status.failed, "ReloadFailed", "exit 1"),
            Result("reload", "dnsmasq", Status.rolled_back, "RolledBack", "1 file restored"),
        ),
        inventory=Inventory(),
    )
    assert plan_format.report_text(report) == (
        f"ok          write         {PC1}: FileWritten: new\n"
        "failed      reload        dnsmasq: ReloadFailed: exit 1\n"
        "rolled-back reload        dnsmasq: RolledBack: 1 file restored\n"
        "Apply FAILED: 1 failed, 1 ok, 1 rolled-back\n"
    )
    body = json.loads(plan_format.report_json(report))
    assert body["ok"] is False and body["changed"] is True
    assert body["results"][0] == {
        "action": "write",
        "target": PC1,
        "status": "ok",
        "reason": "FileWritten",
        "message": "new",
        "details": {"hash_after": "ab"},
    }
    assert plan_format.report_text(Report((), Inventory())) == "Apply: nothing to do\n"
