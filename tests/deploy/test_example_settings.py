"""deploy/reconciler.example.yaml: valid through reconciler.settings.read, every field of
Settings written out (so a new field cannot be forgotten), and each one explained."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler import settings
from reconciler.desired import AllowedSigner
from reconciler.layout import Layout
from tests.deploy.unitfile import REPO

EXAMPLE = REPO / "deploy" / "reconciler.example.yaml"


def _data() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(EXAMPLE.read_text(encoding="utf-8"))
    return data


def test_loads_and_validates_with_the_values_written() -> None:
    loaded = settings.read(EXAMPLE)
    assert loaded.source == "git@git.example.com:kitting/site-tokyo.git"
    assert loaded.branch == "main"
    assert loaded.root == "/"
    assert loaded.services == "auto"
    assert loaded.backend == "native"
    assert loaded.interval == 60.0
    assert loaded.drift_interval == 300.0
    assert loaded.allow_rewrite is False
    assert loaded.require_signed is False
    assert [s.principal for s in loaded.signers] == [
        "kitting-lead@example.com",
        "kitting-ops@example.com",
    ]
    assert loaded.signers[0].ssh_key == (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGouqGYgHS4k+dUTkaQp9wDFR29ZwfDvCqXKrPDbEgeR"
    )
    # Written with spaces in groups of four; stored compact and upper-case.
    assert loaded.signers[1].openpgp_fingerprint == "67897258F010681EC0C812F1F3B459C8CEFADCA9"
    assert (loaded.notes.enabled, loaded.notes.push) == (True, False)
    assert loaded.paths == {}
    assert loaded.layout() == Layout()  # the paths the systemd unit may write


def test_flags_override_the_file() -> None:
    loaded = settings.read(EXAMPLE, {"branch": "release", "interval": 5, "root": None})
    assert (loaded.branch, loaded.interval, loaded.root) == ("release", 5.0, "/")


def test_every_field_is_written_out() -> None:
    data = _data()
    assert set(data) == set(settings.Settings.model_fields)
    assert set(data["notes"]) == set(settings.Notes.model_fields)
    signer_keys = {key for signer in data["signers"] for key in signer}
    assert signer_keys == set(AllowedSigner.model_fields)


def test_every_field_has_a_comment_right_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    key = re.compile(r"^\s*(?:- )?([a-z_]+):")
    explained: set[str] = set()
    seen: set[str] = set()
    for before, line in zip(["", *lines], lines, strict=False):
        match = key.match(line)
        if match:
            seen.add(match[1])
            if before.lstrip().startswith("#"):
                explained.add(match[1])
    assert seen == explained
    fields = (
        set(settings.Settings.model_fields)
        | set(settings.Notes.model_fields)
        | set(AllowedSigner.model_fields)
    )
    assert seen == fields


def test_direct_services_only_for_the_live_root() -> None:
    for services in ("direct", "systemd"):
        with pytest.raises(settings.SettingsError, match=f"services: {services} acts on this"):
            settings.read(EXAMPLE, {"services": services, "root": "/srv/sandbox"})
    assert settings.read(EXAMPLE, {"services": "direct"}).services == "direct"


def test_backend_is_native_or_drbl() -> None:
    assert settings.read(EXAMPLE, {"backend": "drbl"}).backend == "drbl"
    with pytest.raises(settings.SettingsError, match="backend"):
        settings.read(EXAMPLE, {"backend": "udpcast"})
