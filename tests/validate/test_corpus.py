"""The bad-input corpus: one small site repo per case, with the exact `kitctl validate` output.

Each directory in tests/cases/validate/ (except _base) holds only the files that differ from
the tiny valid site in _base/: a case file replaces the base file of the same path, and a
file named `X.delete` removes base file X. `expected.txt` is the output worked out by hand;
an optional `args.txt` adds command-line arguments (e.g. --strict). The exit code is derived
from the expected output, so it is checked too. See tests/cases/validate/README.md.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from reconciler import cli

CASES = Path(__file__).resolve().parent.parent / "cases" / "validate"
BASE = CASES / "_base"
CONTROL = {"expected.txt", "args.txt"}


def _case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def build(case: Path, target: Path) -> None:
    """The base site with the case's files laid over it."""
    shutil.copytree(BASE, target)
    for source in sorted(case.rglob("*")):
        relative = source.relative_to(case)
        if source.is_dir() or relative.as_posix() in CONTROL:
            continue
        if source.name.endswith(".delete"):
            doomed = target / relative.with_name(source.name.removesuffix(".delete"))
            assert doomed.is_file(), f"{source}: there is no base file {doomed.name} to delete"
            doomed.unlink()
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / relative)


def expected_exit(expected: str, args: list[str]) -> int:
    """1 when the hand-written output reports an error (or a warning under --strict)."""
    if "--format" in args and args[args.index("--format") + 1] == "json":
        return 0 if json.loads(expected)["valid"] else 1
    summary = re.search(r"^(\d+) errors?, (\d+) warnings?$", expected, re.MULTILINE)
    if summary is None:
        return 0  # no problem at all: only the "valid" line
    errors, warnings = int(summary.group(1)), int(summary.group(2))
    return 1 if errors or ("--strict" in args and warnings) else 0


@pytest.mark.parametrize("name", _case_names())
def test_case(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES / name
    build(case, tmp_path / "site")
    args_file = case / "args.txt"
    args = args_file.read_text(encoding="utf-8").split() if args_file.exists() else []
    expected = (case / "expected.txt").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # messages name files relative to the repo, which is "site"

    code = cli.main(["validate", "--repo", "site", *args])

    assert capsys.readouterr().out == expected
    assert code == expected_exit(expected, args)


def test_corpus_is_large_enough() -> None:
    # The issue asks for at least 30 cases; this task for at least 35.
    assert len(_case_names()) >= 35


def test_deleting_a_file_the_base_lacks_is_a_broken_case(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    (case / "nothing-here.yaml.delete").write_text("", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"no base file nothing-here\.yaml"):
        build(case, tmp_path / "site")
