"""deploy/demo.sh (`make demo DEMO_ROOT=...`) empties its sandbox root first: only a folder
that is empty or that an earlier demo made (its marker file), never anyone else's folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.unitfile import REPO

DEMO = REPO / "deploy" / "demo.sh"
KITCTL = Path(sys.executable).parent / "kitctl"
MARKER = ".kitting-demo-root"


def _demo(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEMO), str(KITCTL), "site-repo-example", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_folder_with_someone_elses_files_is_refused_and_kept(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("x\n", encoding="utf-8")
    result = _demo(precious)
    assert result.returncode == 1
    assert f"refusing to delete {precious}" in result.stderr
    assert MARKER in result.stderr  # says how it recognises a demo root
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    assert (precious / "notes.txt").read_text(encoding="utf-8") == "x\n"


def test_a_file_is_refused_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep\n", encoding="utf-8")
    result = _demo(target)
    assert result.returncode == 1
    assert "not a folder" in result.stderr
    assert target.read_text(encoding="utf-8") == "keep\n"


@pytest.mark.slow
def test_an_empty_folder_is_used_and_a_rerun_deletes_what_the_demo_made(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    first = _demo(root)
    assert first.returncode == 0, first.stderr
    assert (root / MARKER).is_file()
    conf = root / "etc" / "dnsmasq.d" / "kitting.conf"
    assert conf.is_file()
    # A leftover of the first run is gone after the second: the root was emptied, not merged.
    leftover = root / "etc" / "leftover.txt"
    leftover.write_text("from the first run\n", encoding="utf-8")
    second = _demo(root)
    assert second.returncode == 0, second.stderr
    assert not leftover.exists()
    assert conf.is_file() and (root / MARKER).is_file()


@pytest.mark.slow
def test_a_new_folder_is_made(tmp_path: Path) -> None:
    root = tmp_path / "new" / "demo-root"
    result = _demo(root)
    assert result.returncode == 0, result.stderr
    assert (root / MARKER).is_file()
    assert (root / "etc" / "dnsmasq.d" / "kitting.conf").is_file()
