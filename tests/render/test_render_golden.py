"""Golden files: every rendered artifact of every case, byte for byte.

Each golden file was read line by line when it was written (see docs/rendered-files.md for
why each line is there). Regenerate with UPDATE_GOLDENS=1 after an intended change, then
review the diff as carefully as code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import render
from reconciler.desired import Pc
from reconciler.render import pxe

from . import render_cases as rc


def _compare(path: Path, actual: bytes) -> None:
    if rc.UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        return
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDENS=1 and review it"
    assert actual.decode() == path.read_text()


def _golden_files(case: str) -> set[Path]:
    root = rc.CASES_DIR / case
    return {p for p in root.rglob("*") if p.is_file() and p.name != "SUMMARY"}


@pytest.mark.parametrize("case", sorted(rc.cases()))
def test_every_artifact_matches_its_golden_file(case: str) -> None:
    rendered = render.all(rc.cases()[case])
    written = set()
    for path, artifact in rendered.artifacts.items():
        golden = rc.golden_path(case, path)
        written.add(golden)
        _compare(golden, artifact.content)
    _compare(rc.CASES_DIR / case / "SUMMARY", rc.summary(rendered).encode())
    if not rc.UPDATE:
        assert _golden_files(case) == written, "golden files without a rendered artifact"


def _pc(case: str, hostname: str) -> Pc:
    return next(ref.pc for ref in rc.cases()[case].pcs() if ref.pc.hostname == hostname)


@pytest.mark.parametrize("name", sorted(rc.armed_jobs()))
def test_armed_pair_matches_its_golden_files(name: str) -> None:
    hostname, mac, job = rc.armed_jobs()[name]
    site = rc.cases()[rc.ARMED_SITE].site
    pair = pxe.armed(_pc(rc.ARMED_SITE, hostname), job, site, mac=mac, origin="batches.spring")
    written = set()
    for artifact in pair:
        golden = rc.golden_path(f"armed/{name}", artifact.path)
        written.add(golden)
        _compare(golden, artifact.content)
    if not rc.UPDATE:
        assert _golden_files(f"armed/{name}") == written
