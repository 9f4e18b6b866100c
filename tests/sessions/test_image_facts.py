"""Image facts for the deployments, from the real Clonezilla image: cheap every pass, its
checksums verified only when a batch with declared integrity is about to arm, and that
verdict kept until the image's files change."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler import image_store
from reconciler.clock import FixedClock
from reconciler.deploy_shell import DeployShell
from reconciler.deployment_state import DeploymentState
from reconciler.desired import Batch, Department, Desired, Image, Site
from reconciler.layout import Layout
from tests.fixtures import clonezilla

OPEN = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BEFORE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def desired(image: clonezilla.ClonezillaImage, *, integrity: bool = True) -> Desired:
    site = Site.model_validate(
        {
            "kind": "Site",
            "name": "lab",
            "timezone": "UTC",
            "server": {"hostname": "kit01", "interface": "e0", "address": "192.168.100.1"},
            "network": {
                "subnet": "192.168.100.0/24",
                "dhcp": {"pool": {"start": "192.168.100.100", "end": "192.168.100.150"}},
            },
        }
    )
    doc: dict[str, Any] = {"kind": "Image", "name": image.name, "disk": {"device": image.disk}}
    if integrity:
        doc["integrity"] = {"source": "clonezilla"}
    lab = Department.model_validate(
        {
            "kind": "Department",
            "name": "lab",
            "pcs": [{"hostname": "pc01", "macs": ["02:00:00:00:00:01"]}],
        }
    )
    batch = Batch.model_validate(
        {
            "kind": "Batch",
            "name": "spring",
            "image": image.name,
            "targets": {"departments": ["lab"]},
            "window": {"start": "2026-03-02T09:00", "end": "2026-03-02T12:00"},
        }
    )
    return Desired(
        site=site,
        images={image.name: Image.model_validate(doc)},
        departments={"lab": lab},
        batches={"spring": batch},
    )


@pytest.fixture
def root(tmp_path: Path, clonezilla_image: clonezilla.ClonezillaImage) -> Path:
    clonezilla.copy_image(clonezilla_image, tmp_path / "root" / "home" / "partimag")
    return tmp_path / "root"


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image directories whose files were read in full."""
    calls: list[str] = []
    real = image_store.hash_files

    def counting(directory: str, plan: Mapping[str, frozenset[str]], *, within: str) -> Any:
        calls.append(Path(directory).name)
        return real(directory, plan, within=within)

    monkeypatch.setattr(image_store, "hash_files", counting)
    return calls


def test_verified_once_when_about_to_arm_and_again_after_a_change(
    root: Path, clonezilla_image: clonezilla.ClonezillaImage, hashed: list[str]
) -> None:
    image = clonezilla_image
    want = desired(image)
    shell = DeployShell(str(root), Layout(), FixedClock(OPEN))
    try:
        facts = shell.images(want, DeploymentState(), BEFORE)
        assert hashed == []  # the window is not open: nothing is read in full
        found = facts[image.name]
        assert (found.problem, found.reason) == ("", "")
        folder = f"/home/partimag/{image.name}"
        assert [(p.name, p.chunks) for p in found.partitions] == [
            (image.parts[0], (f"{folder}/{image.parts[0]}.vfat-ptcl-img.gz.aa",)),
            (
                image.parts[1],
                tuple(
                    f"{folder}/{image.parts[1]}.ntfs-ptcl-img.gz.{s}"
                    for s in ("aa", "ab", "ac", "ad")
                ),
            ),
        ]

        assert shell.images(want, DeploymentState(), OPEN)[image.name].problem == ""
        assert shell.images(want, DeploymentState(), OPEN)[image.name].problem == ""
        assert hashed == [image.name]  # verified once, the verdict kept

        chunk = root / "home/partimag" / image.name / f"{image.parts[1]}.ntfs-ptcl-img.gz.ab"
        data = bytearray(chunk.read_bytes())
        data[1000] ^= 0xFF  # same size: only the checksums can tell
        chunk.write_bytes(bytes(data))
        broken = shell.images(want, DeploymentState(), OPEN)[image.name]
        assert broken.reason == "IntegrityMismatch"
        assert chunk.name in broken.problem
        assert hashed == [image.name, image.name]
        # without declared integrity nothing is read in full, even in the window
        assert (
            shell.images(desired(image, integrity=False), DeploymentState(), OPEN)[
                image.name
            ].problem
            == ""
        )
        assert len(hashed) == 2
    finally:
        shell.close()
