"""deploy/systemd/kitting-reconciler.service: the essential directives, and the writable
paths kept in step with reconciler/layout.py and what render writes, so that the unit and
the code cannot drift apart."""

from __future__ import annotations

import dataclasses
import inspect
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import render, runner, settings, snapshot, source
from reconciler.desired import Boot, Site
from reconciler.layout import Layout
from tests.deploy import unitfile
from tests.deploy.unitfile import RequirePrograms

SERVICE = "Service"

# Worked out by hand from Layout, Boot.tftp_root, Site.images_root and exportfs's state file.
EXPECTED_WRITABLE = {
    "/etc/dnsmasq.d",
    "/etc/kitting/dhcp-hosts",
    "/etc/exports.d",
    "/etc/nfs.conf.d",
    "/etc/ganesha",
    "/etc/nftables.d",
    "/etc/ssh/sshd_config.d",
    "/srv/tftp",
    "/var/lib/kitting",
    "/var/lib/nfs",
    "/home/partimag",
}
# Not the reconciler's to create: exportfs's state (nfs-utils) and the operator's images.
NOT_CREATED = {"/var/lib/nfs", "/home/partimag"}
# Layout paths the controller only reads: dnsmasq writes its log and leases, the controller
# reads them.
READ_ONLY_LAYOUT = {"dnsmasq_log", "dhcp_leases"}
DNSMASQ_LOG_DIR = "/var/log/kitting"


def _covered(path: str, writable: set[str]) -> bool:
    return any(path == entry or path.startswith(entry.rstrip("/") + "/") for entry in writable)


def _writable() -> set[str]:
    entries = unitfile.words(unitfile.load(), SERVICE, "ReadWritePaths")
    return {entry.removeprefix("-") for entry in entries}


def _layout_paths() -> list[str]:
    """Every path of the default Layout the controller writes: the files' directories and
    the state directory (not the dnsmasq log, which it only reads)."""
    layout = Layout()
    paths = []
    for field in dataclasses.fields(layout):
        if field.name in READ_ONLY_LAYOUT:
            continue
        value = getattr(layout, field.name)
        paths.append(value if field.name.endswith("_dir") else posixpath.dirname(value))
    return paths


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", text)
    assert match, text
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_runs_the_controller_as_root_with_the_operator_settings() -> None:
    unit = unitfile.load()
    assert unitfile.single(unit, SERVICE, "ExecStart") == (
        "/opt/kitting/bin/kitctl run --config /etc/kitting/reconciler.yaml"
    )
    assert settings.DEFAULT_PATH == "/etc/kitting/reconciler.yaml"
    assert unitfile.single(unit, SERVICE, "User") == "root"
    assert unitfile.single(unit, SERVICE, "Type") == "exec"
    assert unitfile.single(unit, "Install", "WantedBy") == "multi-user.target"
    assert unitfile.single(unit, SERVICE, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # gpg writes its trustdb while verifying: the keyring must be in a writable place.
    assert unitfile.single(unit, SERVICE, "Environment") == "GNUPGHOME=/var/lib/kitting/gnupg"


def test_sandbox_directives() -> None:
    unit = unitfile.load()
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "SystemCallErrorNumber": "EPERM",
        "UMask": "0022",
    }
    assert {key: unitfile.single(unit, SERVICE, key) for key in expected} == expected
    assert set(unitfile.words(unit, SERVICE, "RestrictAddressFamilies")) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    assert set(unitfile.words(unit, SERVICE, "CapabilityBoundingSet")) == {
        "CAP_NET_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_CHOWN",
    }
    assert unitfile.words(unit, SERVICE, "SystemCallFilter") == ["@system-service"]


def test_stops_gracefully_and_restarts_with_a_limit() -> None:
    unit = unitfile.load()
    assert unitfile.single(unit, SERVICE, "Restart") == "on-failure"
    assert _seconds(unitfile.single(unit, SERVICE, "RestartSec")) >= 5
    assert unitfile.single(unit, SERVICE, "KillSignal") == "SIGTERM"
    assert unitfile.single(unit, SERVICE, "KillMode") == "mixed"
    assert unitfile.single(unit, "Unit", "StartLimitBurst") == "5"
    assert _seconds(unitfile.single(unit, "Unit", "StartLimitIntervalSec")) == 15 * 60
    # The action in flight is at most one git fetch or one program run: both must fit.
    stop = _seconds(unitfile.single(unit, SERVICE, "TimeoutStopSec"))
    program_timeout = inspect.signature(runner.run).parameters["timeout"].default
    assert stop == 180
    assert stop > source.FETCH_TIMEOUT
    assert stop > program_timeout


def test_writable_paths_are_exactly_the_expected_ones() -> None:
    assert _writable() == EXPECTED_WRITABLE


def test_every_layout_path_is_writable() -> None:
    writable = _writable()
    paths = _layout_paths()
    assert len(paths) == len(dataclasses.fields(Layout)) - len(READ_ONLY_LAYOUT)
    assert [p for p in paths if not _covered(p, writable)] == []


def test_default_tftp_and_images_roots_are_writable() -> None:
    writable = _writable()
    assert Boot().tftp_root == "/srv/tftp"
    assert Site.model_fields["images_root"].default == "/home/partimag"
    assert _covered(Boot().tftp_root, writable)
    assert _covered(Site.model_fields["images_root"].default, writable)


def test_every_writable_path_is_needed() -> None:
    needed = [
        *_layout_paths(),
        Boot().tftp_root,
        Site.model_fields["images_root"].default,
        "/var/lib/nfs/etab",  # exportfs -ra rewrites it
    ]
    unused = [entry for entry in _writable() if not any(_covered(p, {entry}) for p in needed)]
    assert unused == []


def test_the_dnsmasq_log_is_read_not_written() -> None:
    assert posixpath.dirname(Layout().dnsmasq_log) == DNSMASQ_LOG_DIR
    assert not _covered(Layout().dnsmasq_log, _writable())


def test_the_settings_file_stays_read_only() -> None:
    assert not _covered(settings.DEFAULT_PATH, _writable())
    assert not _covered("/etc/kitting", _writable())


def test_every_file_rendered_for_the_example_site_is_writable() -> None:
    result = snapshot.validate_directory(unitfile.REPO / "site-repo-example")
    assert result.desired is not None
    rendered = render.all(result.desired)
    assert len(rendered.artifacts) > 40  # 40 reservations + the server's files
    writable = _writable()
    assert [path for path in rendered.artifacts if not _covered(path, writable)] == []


def test_directories_are_created_before_the_namespace_needs_them() -> None:
    unit = unitfile.load()
    pre = [value for key, value in unit[SERVICE] if key == "ExecStartPre"]
    # "+": outside the sandbox, where /etc is still writable.
    assert len(pre) == 3
    assert pre[0].startswith("+/usr/bin/mkdir -p /")
    assert set(pre[0].split()[2:]) == EXPECTED_WRITABLE - NOT_CREATED
    # dnsmasq's log directory: dnsmasq will not start without it.
    assert pre[1] == f"+/usr/bin/mkdir -p {DNSMASQ_LOG_DIR}"
    # gpg's home, private; gpg will not create it in batch mode.
    assert pre[2] == "+/usr/bin/mkdir -p -m 0700 /var/lib/kitting/gnupg"
    # Without "-", a missing path fails the start (226/NAMESPACE) even for the "+" command.
    entries = unitfile.words(unit, SERVICE, "ReadWritePaths")
    assert [entry for entry in entries if not entry.startswith("-")] == []


def test_parser_joins_continuations_and_rejects_garbage() -> None:
    parsed = unitfile.parse("[A]\n# c\nX=1 \\\n  2\nX=3\n")
    assert parsed == {"A": [("X", "1 2"), ("X", "3")]}
    with pytest.raises(unitfile.UnitError):
        unitfile.parse("X=1\n")
    with pytest.raises(unitfile.UnitError):
        unitfile.single(parsed, "A", "X")


def test_systemd_analyze_verify_accepts_the_unit(
    tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("systemd-analyze")
    kitctl = Path(sys.executable).parent / "kitctl"
    if not kitctl.exists():
        kitctl = Path(shutil.which("kitctl") or "/bin/true")
    # verify insists that ExecStart exists; /opt/kitting is not installed here.
    text = unitfile.UNIT.read_text(encoding="utf-8").replace("/opt/kitting/bin/kitctl", str(kitctl))
    copy = tmp_path / "kitting-reconciler.service"
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    ours = [line for line in (done.stdout + done.stderr).splitlines() if copy.name in line]
    assert (done.returncode, ours) == (0, []), done.stdout + done.stderr
