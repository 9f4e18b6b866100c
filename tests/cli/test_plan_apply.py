"""`kitctl plan` and `kitctl apply` end to end, through the real command line entry point,
on a copy of the example site and a sandbox root.

Expected values are worked out by hand from site-repo-example and docs/rendered-files.md:
40 PCs (SALES-PC-01..20 without fixed IPs, ACC-PC-01..20 with .121-.140) give 40
reservation files; the other files are dnsmasq's drop-in, the two PXE menus, the kernel NFS
export and its nfs.conf drop-in (backend: kernel), the nftables table and the sshd drop-in
(ssh.harden: true): 7. dnsmasq's drop-in needs a restart, and so does nfs.conf (mountd reads
its port at start); the sshd drop-in a reload. The nftables file has 15 rule statements: 1
in `input`, 12 in `kitting_interface`, 2 in `forward`.

Apply runs the real checkers (dnsmasq --test, nft -c, sshd -t) in preflight: those tests are
marked integration and need the programs; plan alone runs none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "site-repo-example"

HOSTS = "etc/kitting/dhcp-hosts"
OTHER_FILES = (
    "etc/dnsmasq.d/kitting.conf",
    "etc/exports.d/kitting.exports",
    "etc/nfs.conf.d/kitting.conf",
    "etc/nftables.d/kitting.nft",
    "etc/ssh/sshd_config.d/00-kitting.conf",
    "srv/tftp/grub/grub.cfg",
    "srv/tftp/pxelinux.cfg/default",
)
HOSTNAMES = [f"SALES-PC-{n:02d}" for n in range(1, 21)] + [f"ACC-PC-{n:02d}" for n in range(1, 21)]
RENDERED = sorted([f"{HOSTS}/{name}.hosts" for name in HOSTNAMES] + list(OTHER_FILES))
STATE = "var/lib/kitting"
FIRST_SUMMARY = (
    "+40 reservations, +7 files, firewall: 15 rules changed (+15 -0), "
    "dnsmasq: restart, nfs-kernel-server: restart, sshd: reload"
)
CONVERGED = "Plan: no changes: all 47 files match; inventory clean"
HEADER = "# managed by kitctl; edits are reverted\n"
CHECKERS = ("dnsmasq", "nft", "sshd")

RequirePrograms = Callable[..., None]
"""The shared `require_programs` fixture (tests/conftest.py)."""


def kitctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def quiet_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command logs one line per action to stderr; these tests read only what it says
    itself (warnings and errors still show)."""
    monkeypatch.setenv("KITCTL_LOG_LEVEL", "WARNING")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(EXAMPLE, copy)
    return copy


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def checkers(require_programs: RequirePrograms) -> None:
    """Apply's preflight runs the programs that read the files."""
    require_programs(*CHECKERS)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def fingerprint(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Inode, mtime (ns), size and mode of every file and folder under `root`."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        found[path.relative_to(root).as_posix()] = (
            info.st_ino,
            info.st_mtime_ns,
            info.st_size,
            info.st_mode,
        )
    return found


def audit_entries(capsys: pytest.CaptureFixture[str], root: Path) -> list[dict[str, Any]]:
    code, out, _ = kitctl(capsys, "audit", "log", "--root", str(root), "--format", "json")
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


# ---------------------------------------------------------------------------- plan


def test_plan_on_an_empty_root_lists_every_file_and_writes_nothing(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kitctl(capsys, "plan", "--repo", str(repo), "--root", str(root))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"Plan: {FIRST_SUMMARY}"
    for path in RENDERED:
        assert f"  + /{path}: new" in lines
    assert (
        "  * dnsmasq: restart: /etc/dnsmasq.d/kitting.conf changed; only a restart re-reads it"
        in lines
    )
    assert "      +02:4b:49:54:02:01,192.168.100.121,ACC-PC-01" in lines
    assert not root.exists()

    code, _, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert code == 2
    assert not root.exists()


def test_plan_without_diffs_keeps_every_action(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = kitctl(capsys, "plan", "--repo", str(repo), "--root", str(root), "--no-diff")
    assert code == 0
    assert out.splitlines()[0] == f"Plan: {FIRST_SUMMARY}"
    assert "  + /etc/kitting/dhcp-hosts/ACC-PC-01.hosts: new" in out
    assert "/dev/null" not in out and "set:kitting-pc" not in out
    lines = out.splitlines()
    assert [line.startswith("  + /") for line in lines].count(True) == 47
    # the firewall load and three services
    assert [line.startswith("  * ") for line in lines].count(True) == 4


def test_plan_as_json_and_markdown(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--format", "json"
    )
    body = json.loads(out)
    assert code == 0
    assert (body["summary"], body["changes"], body["blocked"]) == (FIRST_SUMMARY, True, False)
    kinds = [action["kind"] for action in body["actions"]]
    assert (kinds.count("write"), kinds.count("firewall"), len(kinds)) == (47, 1, 51)
    services = {
        a["service"]: a["kind"] for a in body["actions"] if a["kind"] in ("reload", "restart")
    }
    assert services == {"dnsmasq": "restart", "nfs-kernel-server": "restart", "sshd": "reload"}
    modes = {a["mode"] for a in body["actions"] if a["kind"] == "write"}
    assert modes == {"0644"}

    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--format", "markdown"
    )
    assert code == 0
    assert out.startswith(f"## Plan\n\n**{FIRST_SUMMARY}**\n")
    assert "| + | `/etc/kitting/dhcp-hosts/SALES-PC-03.hosts` | new |" in out
    assert "### Diffs" in out

    code, out, _ = kitctl(
        capsys,
        "plan",
        "--repo",
        str(repo),
        "--root",
        str(root),
        "--format",
        "markdown",
        "--no-diff",
    )
    assert code == 0 and "### Diffs" not in out and f"**{FIRST_SUMMARY}**" in out


def test_an_invalid_repo_plans_and_writes_nothing(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounting = repo / "departments/accounting.yaml"
    text = accounting.read_text(encoding="utf-8")
    accounting.write_text(text.replace("ip: 192.168.100.122", "ip: 192.168.100.121"))
    for command in ("plan", "apply"):
        code, out, err = kitctl(
            capsys, command, "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
        )
        assert (code, out) == (1, ""), command
        # ACC-PC-02's ip: line 15, value in column 9.
        assert err.startswith("departments/accounting.yaml:15:9: error: IP 192.168.100.121 ")
        assert err.endswith(f"{repo}: invalid (1 error); nothing was planned or written\n")
    assert not root.exists()


def test_warnings_are_shown_and_do_not_stop_the_plan(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = repo / "site.yaml"
    text = site.read_text(encoding="utf-8")
    site.write_text(text.replace("gateway: 192.168.100.254", "gateway: 192.168.100.1"))
    code, out, err = kitctl(capsys, "plan", "--repo", str(repo), "--root", str(root))
    assert code == 0
    assert out.splitlines()[0] == f"Plan: {FIRST_SUMMARY}"
    # network.gateway: line 18 of site.yaml, value in column 12.
    assert err.startswith("site.yaml:18:12: warning: the gateway is the server's own address")
    assert err.endswith("\n0 errors, 1 warning\n")


def test_head_without_base_is_refused(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = kitctl(capsys, "plan", "--repo", str(repo), "--head", "HEAD")
    assert (code, out) == (1, "")
    assert err == "kitctl plan: --head needs --base (the revision it is compared with)\n"


# ---------------------------------------------------------------------------- apply


@pytest.mark.integration
def test_apply_writes_every_file_then_a_second_apply_writes_nothing(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str], checkers: None
) -> None:
    code, out, err = kitctl(
        capsys, "apply", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert (code, err) == (2, "")
    lines = out.splitlines()
    assert lines[0] == f"Plan: {FIRST_SUMMARY}"
    assert "47 files written (40 reservations)" in lines[2]
    # preflight, 47 writes, dnsmasq and nfs-kernel-server restarts, firewall, sshd reload
    assert "Apply succeeded: 52 actions, 52 ok" in lines
    assert lines[-1] == f"Audit log: 52 lines appended to {root}/{STATE}/audit.jsonl"

    written = [p for p in files_under(root) if not p.startswith(f"{STATE}/")]
    assert written == RENDERED
    for path in RENDERED:
        assert (root / path).stat().st_mode & 0o7777 == 0o644, path
        assert (root / path).read_text(encoding="utf-8").startswith(HEADER), path
    assert (root / STATE / "inventory.json").stat().st_mode & 0o777 == 0o600
    # A laptop with its dock: one line per MAC, no address (sales has no fixed IPs).
    assert (root / HOSTS / "SALES-PC-03.hosts").read_text(encoding="utf-8") == (
        HEADER + "02:4b:49:54:01:03,SALES-PC-03\n" + "02:4b:49:54:11:03,SALES-PC-03\n"
    )
    assert (root / HOSTS / "ACC-PC-20.hosts").read_text(encoding="utf-8") == (
        HEADER + "02:4b:49:54:02:14,192.168.100.140,ACC-PC-20\n"
    )
    exports = (root / "etc/exports.d/kitting.exports").read_text(encoding="utf-8")
    assert (
        "/home/partimag 192.168.100.0/24(ro,root_squash,sync,no_subtree_check,secure,sec=sys)\n"
        in exports
    )

    before = fingerprint(root)
    code, out, _ = kitctl(
        capsys, "apply", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert (code, out) == (0, f"{CONVERGED}\nApply: nothing to do\n")
    assert fingerprint(root) == before
    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert (code, out.splitlines()[0]) == (0, CONVERGED)

    code, out, _ = kitctl(capsys, "audit", "verify", "--root", str(root))
    assert code == 0 and ": ok, 52 line(s), chain intact;" in out
    entries = audit_entries(capsys, root)
    assert len(entries) == 52
    file_lines = [e["target"] for e in entries if e["event"] == "file_written"]
    assert sorted(file_lines) == [f"/{p}" for p in RENDERED]
    ok_new = {"status": "ok", "message": "new"}
    assert all(e["result"] == ok_new for e in entries if e["event"] == "file_written")
    events = [(e["event"], e["target"]) for e in entries if e["event"] != "file_written"]
    assert events == [
        ("preflight_passed", "candidates"),
        ("service_restarted", "dnsmasq"),
        ("service_restarted", "nfs-kernel-server"),
        ("firewall_applied", "firewall"),
        ("service_reloaded", "sshd"),
    ]
    code, out, _ = kitctl(capsys, "audit", "log", "--root", str(root))
    assert code == 0 and len(out.splitlines()) == 52


@pytest.mark.integration
def test_drift_is_shown_with_its_diff_and_repaired(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str], checkers: None
) -> None:
    assert kitctl(capsys, "apply", "--repo", str(repo), "--root", str(root))[0] == 0
    hosts = root / HOSTS / "SALES-PC-01.hosts"
    wanted = hosts.read_bytes()
    hosts.write_bytes(wanted + b"02:4b:49:54:99:99,SALES-PC-01\n")

    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "Plan: ~1 reservation, 1 drifted, dnsmasq: reload"
    assert (
        "  ~ /etc/kitting/dhcp-hosts/SALES-PC-01.hosts: drift: owned file edited by hand" in lines
    )
    assert "      -02:4b:49:54:99:99,SALES-PC-01" in lines
    assert "  * dnsmasq: reload: 1 changed file needs a reload" in lines

    code, out, _ = kitctl(capsys, "apply", "--repo", str(repo), "--root", str(root))
    assert code == 0
    assert (
        "ok          write         /etc/kitting/dhcp-hosts/SALES-PC-01.hosts: DriftRepaired: "
        "drift: owned file edited by hand"
    ) in out.splitlines()
    assert hosts.read_bytes() == wanted
    repaired = [e for e in audit_entries(capsys, root) if e["event"] == "drift_repaired"]
    assert len(repaired) == 1
    assert repaired[0]["target"] == "/etc/kitting/dhcp-hosts/SALES-PC-01.hosts"
    details = repaired[0]["details"]
    assert isinstance(details, dict)
    assert "-02:4b:49:54:99:99,SALES-PC-01" in details["diff"]
    assert kitctl(capsys, "audit", "verify", "--root", str(root))[0] == 0
    code, out, _ = kitctl(capsys, "plan", "--repo", str(repo), "--root", str(root))
    assert out.splitlines()[0] == CONVERGED


def test_an_unowned_file_blocks_apply(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = root / "etc/dnsmasq.d/kitting.conf"
    mine.parent.mkdir(parents=True)
    mine.write_text("# a hand-made dnsmasq file\n", encoding="utf-8")

    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(repo), "--root", str(root), "--detailed-exitcode"
    )
    assert code == 1
    assert out.splitlines()[0].endswith(", 1 conflict (blocked)")
    assert "  ! /etc/dnsmasq.d/kitting.conf: exists but is not owned" in out
    assert out.endswith("or take it over with `kitctl apply --adopt`.\n")

    code, out, _ = kitctl(capsys, "apply", "--repo", str(repo), "--root", str(root))
    assert code == 1
    assert "refused     plan          /etc/dnsmasq.d/kitting.conf: PlanBlocked: " in out
    assert (
        "Nothing was written. Move this file out of the way, or take it over with --adopt." in out
    )
    # Only the refusal itself was recorded: no target file, no inventory.
    assert [p for p in files_under(root) if not p.startswith(f"{STATE}/audit")] == [
        "etc/dnsmasq.d/kitting.conf"
    ]
    assert mine.read_text(encoding="utf-8") == "# a hand-made dnsmasq file\n"
    events = [(e["event"], e["target"]) for e in audit_entries(capsys, root)]
    assert events == [("plan_blocked", "/etc/dnsmasq.d/kitting.conf")]


@pytest.mark.integration
def test_adopt_takes_an_unowned_file_over(
    repo: Path, root: Path, capsys: pytest.CaptureFixture[str], checkers: None
) -> None:
    mine = root / "etc/dnsmasq.d/kitting.conf"
    mine.parent.mkdir(parents=True)
    mine.write_text("# a hand-made dnsmasq file\n", encoding="utf-8")
    code, out, _ = kitctl(capsys, "apply", "--repo", str(repo), "--root", str(root), "--adopt")
    assert code == 0
    assert out.splitlines()[0] == (
        "Plan: +40 reservations, +6 files, ~1 file, firewall: 15 rules changed (+15 -0), "
        "dnsmasq: restart, nfs-kernel-server: restart, sshd: reload"
    )
    assert mine.read_text(encoding="utf-8").startswith(HEADER + "# Kitting DHCP and TFTP.")
    code, out, _ = kitctl(capsys, "plan", "--repo", str(repo), "--root", str(root))
    assert (code, out.splitlines()[0]) == (0, CONVERGED)


# ---------------------------------------------------------------------------- review


@pytest.fixture
def git_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_programs: RequirePrograms
) -> None:
    """No system or global git settings: the repositories carry their own user."""
    require_programs("git")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def git(where: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


NEW_PC = '  - hostname: SALES-PC-21\n    macs: ["02:4b:49:54:01:15"]\n'
NEW_BATCH = """\
kind: Batch
name: sales-2026-12-09-pc21
image: win11-sales-2025
targets:
  pcs: [SALES-PC-21]
mode: unicast
window:
  start: 2026-12-09T10:00
  end: 2026-12-09T11:00
"""


def history(top: Path, site: Path) -> None:
    """Commit the example at `site` (inside the Git repo at `top`), then a second commit
    that adds SALES-PC-21 and a unicast batch for it."""
    shutil.copytree(EXAMPLE, site)
    git(top, "init", "--quiet", "--initial-branch=main")
    git(top, "config", "user.name", "Ann Author")
    git(top, "config", "user.email", "ann@example.org")
    git(top, "config", "commit.gpgsign", "false")
    git(top, "add", ".")
    git(top, "commit", "--quiet", "-m", "example site")
    with (site / "departments/sales.yaml").open("a", encoding="utf-8") as sales:
        sales.write(NEW_PC)
    (site / "batches/2026-12-09-sales-pc21.yaml").write_text(NEW_BATCH, encoding="utf-8")
    git(top, "add", ".")
    git(top, "commit", "--quiet", "-m", "SALES-PC-21 and its batch")


# The new batch: 1 PC, unicast, 10:00-11:00 on 2026-12-09 in the site's zone (Asia/Tokyo).
ADDED_ROW = (
    "| `sales-2026-12-09-pc21` | added | restore win11-sales-2025 to 1 PC by unicast, "
    "2026-12-09 10:00-11:00 UTC+09:00 |  |"
)
# The sales batch targets the whole department, so it gains the new PC.
CHANGED_ROW = (
    "| `sales-2026-12-07` | changed | restore win11-sales-2025 to 21 PCs by multicast, "
    "2026-12-07 09:00-12:00 UTC+09:00 | PCs: 20 -> 21 (+ SALES-PC-21) |"
)


def test_review_of_a_change_as_markdown(
    tmp_path: Path, git_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    history(site, site)
    head, base = git(site, "rev-parse", "HEAD"), git(site, "rev-parse", "HEAD~1")
    code, out, err = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD~1", "--format", "markdown"
    )
    assert (code, err) == (0, "")
    assert out.startswith(
        f"**kitctl plan**: merging `HEAD` (`{head[:12]}`) into `HEAD~1` (`{base[:12]}`)."
    )
    assert "\n## Plan\n\n**+1 reservation**\n" in out
    assert "| + | `/etc/kitting/dhcp-hosts/SALES-PC-21.hosts` | new |" in out
    assert "+02:4b:49:54:01:15,SALES-PC-21\n" in out
    # A new reservation file is noticed by dnsmasq without a signal.
    assert "- dnsmasq: 1 changed file, all noticed without a signal" in out
    assert "- firewall: rendered table unchanged" in out
    schedule = out[out.index("## Deployment schedule") :].splitlines()
    assert schedule[2:] == [
        "| Batch | Change | What | Differences |",
        "|---|---|---|---|",
        CHANGED_ROW,
        ADDED_ROW,
    ]
    code, _, _ = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD~1", "--detailed-exitcode"
    )
    assert code == 2
    code, _, _ = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD", "--detailed-exitcode"
    )
    assert code == 0


def test_review_as_json_names_both_commits(
    tmp_path: Path, git_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    history(site, site)
    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD~1", "--format", "json"
    )
    body = json.loads(out)
    assert code == 0
    assert body["summary"] == "+1 reservation"
    assert body["head"] == {
        "revision": "HEAD",
        "commit": git(site, "rev-parse", "HEAD"),
        "valid": True,
    }
    assert body["base"]["commit"] == git(site, "rev-parse", "HEAD~1")
    assert [(c["batch"], c["change"]) for c in body["schedule"]] == [
        ("sales-2026-12-07", "changed"),
        ("sales-2026-12-09-pc21", "added"),
    ]


def test_review_of_a_site_in_a_folder_of_a_bigger_repo(
    tmp_path: Path, git_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "infra"
    history(top, top / "kitting" / "site")
    (top / "README").write_text("not YAML\n", encoding="utf-8")
    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(top / "kitting" / "site"), "--base", "HEAD~1", "--no-diff"
    )
    assert code == 0
    assert out.splitlines()[1] == "Plan: +1 reservation"
    assert "  added    sales-2026-12-09-pc21: restore win11-sales-2025 to 1 PC by unicast" in out


def test_review_of_an_invalid_head(
    tmp_path: Path, git_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    history(site, site)
    sales = site / "departments/sales.yaml"
    sales.write_text(sales.read_text(encoding="utf-8").replace("SALES-PC-21", "SALES_PC_21"))
    git(site, "commit", "--quiet", "-am", "a hostname with an underscore")
    head = git(site, "rev-parse", "HEAD")

    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD~1", "--format", "markdown"
    )
    assert code == 1
    assert out.startswith(f"## Invalid desired state at `HEAD` (`{head[:12]}`)\n\n```\n")
    # The new PC is line 51 of sales.yaml; its hostname value starts in column 15.
    assert "\ndepartments/sales.yaml:51:15: error: hostname 'SALES_PC_21' " in out
    assert "Nothing would be applied." in out

    code, out, _ = kitctl(
        capsys, "plan", "--repo", str(site), "--base", "HEAD~1", "--format", "json"
    )
    body = json.loads(out)
    assert (code, body["valid"], body["head"]["commit"]) == (1, False, head)


def test_review_of_unknown_revisions_and_folders(
    tmp_path: Path, repo: Path, git_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    history(site, site)
    code, out, err = kitctl(capsys, "plan", "--repo", str(site), "--base", "no-such-branch")
    assert (code, out) == (1, "")
    assert err == f"kitctl plan: {site}: no revision 'no-such-branch' in this repository\n"
    code, out, err = kitctl(capsys, "plan", "--repo", str(repo), "--base", "HEAD")
    assert (code, out, err) == (1, "", f"kitctl plan: {repo}: not inside a Git repository\n")


def test_systemd_services_are_refused_for_a_sandbox_root(
    capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, out, err = kitctl(
        capsys, "apply", "--repo", str(repo), "--root", str(root), "--services", "systemd"
    )
    assert (code, out) == (1, "")
    assert err == (
        "kitctl apply: --services systemd reloads this machine's programs and loads its "
        f"firewall; it needs --root / (got {root}); a sandbox root takes --services none\n"
    )
    assert list(root.iterdir()) == []  # nothing written, no state either
