"""`kitctl validate` end to end: exit codes, output formats, and that it writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import cli, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "site-repo-example"
EXAMPLE_SUMMARY = "valid (40 PCs in 2 departments, 3 images, 2 batches)"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["validate", *args])
    return code, capsys.readouterr().out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the example site that a test may break."""
    copy = tmp_path / "repo"
    shutil.copytree(EXAMPLE, copy)
    return copy


def test_the_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--repo", str(EXAMPLE)) == (0, f"{EXAMPLE}: {EXAMPLE_SUMMARY}\n")


def test_the_installed_command_validates_the_example() -> None:
    kitctl = Path(sys.executable).parent / "kitctl"
    assert kitctl.is_file(), f"{kitctl} is missing: run `make setup`"
    done = subprocess.run(
        [str(kitctl), "validate", "--repo", "site-repo-example"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"site-repo-example: {EXAMPLE_SUMMARY}\n",
        "",
    )


def test_a_bad_repo_fails_with_every_problem(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = repo / "site.yaml"
    site.write_text(
        site.read_text(encoding="utf-8").replace("hostname: kitting01 ", "hostname: kitting_01"),
        encoding="utf-8",
    )
    code, out = run(capsys, "--repo", str(repo))
    assert code == 1
    assert out.splitlines() == [
        "site.yaml:11:13: error: hostname 'kitting_01' contains '_', which RFC 1123 does not "
        "allow; use a hyphen: 'kitting-01' (server.hostname)",
        "1 error, 0 warnings",
    ]


def test_problems_are_reported_together_and_sorted(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "site.yaml").write_text(
        (repo / "site.yaml").read_text(encoding="utf-8").replace("port: 2232 ", "port: 2233 "),
        encoding="utf-8",
    )
    sales = repo / "departments" / "sales.yaml"
    sales.write_text(
        sales.read_text(encoding="utf-8").replace("SALES-PC-02", "SALES_PC_02"), encoding="utf-8"
    )
    code, out = run(capsys, "--repo", str(repo))
    assert code == 1
    assert [line.split(": error: ")[0] for line in out.splitlines()] == [
        "departments/sales.yaml:11:15",
        "site.yaml:48:9",
        "2 errors, 0 warnings",
    ]


def test_warnings_fail_only_under_strict(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = repo / "site.yaml"
    site.write_text(
        site.read_text(encoding="utf-8").replace("group: 239.192.0.1 ", "group: 233.1.2.3   "),
        encoding="utf-8",
    )
    warning = (
        "site.yaml:47:10: warning: 233.1.2.3 is outside 239.0.0.0/8, the organisation-local "
        "scope recommended here (multicast.group)"
    )
    assert run(capsys, "--repo", str(repo)) == (
        0,
        f"{warning}\n0 errors, 1 warning\n{repo}: {EXAMPLE_SUMMARY}\n",
    )
    assert run(capsys, "--repo", str(repo), "--strict") == (1, f"{warning}\n0 errors, 1 warning\n")


def test_json_output_of_a_valid_repo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--repo", str(EXAMPLE), "--format", "json")
    assert code == 0
    assert json.loads(out) == {"valid": True, "errors": 0, "warnings": 0, "problems": []}


def test_json_output_of_a_bad_repo(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "departments" / "sales.yaml").unlink()  # the sales batch now names no department
    code, out = run(capsys, "--repo", str(repo), "--format", "json")
    assert code == 1
    assert json.loads(out) == {
        "valid": False,
        "errors": 1,
        "warnings": 0,
        "problems": [
            {
                "file": "batches/2026-12-07-sales-multicast.yaml",
                "line": 11,
                "column": 17,
                "severity": "error",
                "message": "department 'sales' is not defined; defined departments: accounting",
                "field": "targets.departments[0]",
            }
        ],
    }


def test_a_huge_file_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (repo / "departments" / "huge.yaml").open("wb") as stream:
        stream.truncate(load.MAX_FILE_BYTES + 1)  # sparse: costs no disk and no time
    code, out = run(capsys, "--repo", str(repo))
    assert code == 1
    assert out == (
        f"departments/huge.yaml:1:1: error: file is {load.MAX_FILE_BYTES + 1} bytes; at most "
        f"{load.MAX_FILE_BYTES} are read (split it into several files)\n1 error, 0 warnings\n"
    )


def test_a_missing_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert run(capsys, "--repo", str(missing)) == (
        1,
        f"{missing}:1:1: error: the site repo directory does not exist\n1 error, 0 warnings\n",
    )


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry below root (hidden ones too): mode, mtime in ns, content."""
    found = {".": (root.stat().st_mode, root.stat().st_mtime_ns, b"")}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        found[path.relative_to(root).as_posix()] = (info.st_mode, info.st_mtime_ns, content)
    return found


@pytest.mark.parametrize("extra", [[], ["--format", "json"], ["--strict"]])
def test_validate_writes_nothing(
    repo: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".git").mkdir()  # a hidden folder, as in a real checkout
    (repo / "images.yaml").write_text("kind: Image\nname: [\n", encoding="utf-8")  # an error too
    before = snapshot(repo.parent)
    code, _ = run(capsys, "--repo", str(repo), *extra)
    assert code == 1
    assert snapshot(repo.parent) == before
