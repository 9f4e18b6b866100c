"""The controller's settings file, when wrong, is reported like the site repo: FILE:LINE:COL,
the field, what would be valid; a value from the command line is named by its flag; a
settings file the operator named must exist, the default one need not."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import settings
from reconciler.cli import main


def _errors(tmp_path: Path, text: str, overrides: dict[str, object] | None = None) -> list[str]:
    file = tmp_path / "kit.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(settings.SettingsError) as caught:
        settings.read(file, overrides)
    return str(caught.value).replace(f"{file}:", "F:").splitlines()


def test_a_value_outside_its_choices_lists_them_and_suggests_one(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "source: /srv/site\nservices: sytemd\n")
    assert lines == [
        "F:2:11: error: 'sytemd' is not allowed (did you mean 'systemd'?); "
        "expected 'auto', 'systemd', 'direct' or 'none' (services)"
    ]


def test_unknown_keys_are_placed_and_get_a_did_you_mean(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "source: /srv/site\nnotes:\n  pussh: true\nbrnch: main\n")
    fields = (
        "allow_rewrite, backend, branch, drift_interval, interval, notes, paths, "
        "require_signed, root, services, signers, source"
    )
    # In file order: line 3 before line 4.
    assert lines == [
        "F:3:3: error: unknown field 'pussh' (did you mean 'push'?); "
        "valid fields here: enabled, push (notes.pussh)",
        f"F:4:1: error: unknown field 'brnch' (did you mean 'branch'?); "
        f"valid fields here: {fields} (brnch)",
    ]


def test_an_error_about_the_whole_file_is_placed_at_the_field_it_names(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "source: /srv/site\nroot: /srv/sandbox\nservices: direct\n")
    assert len(lines) == 1
    assert lines[0].startswith("F:3:11: error: services: direct acts on this machine")
    assert lines[0].endswith("(services)")


def test_a_value_from_the_command_line_is_named_by_its_flag(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "source: /srv/site\n", {"interval": 0, "backend": "udpcast"})
    assert sorted(lines) == [
        "--backend: 'udpcast' is not allowed; expected 'native' or 'drbl'",
        "--interval: must be more than 0.0, got 0",
    ]


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert _errors(tmp_path, "- source\n") == [
        "F:1:1: error: expected a mapping of settings (key: value), got a list"
    ]


def test_a_named_file_must_exist_the_default_need_not(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist.yaml"
    with pytest.raises(settings.SettingsError) as caught:
        settings.read(missing, {"source": "/srv/site"}, required=True)
    assert str(caught.value) == f"{missing}: no such settings file"
    assert settings.read(missing, {"source": "/srv/site"}).source == "/srv/site"
    with pytest.raises(settings.SettingsError) as caught:
        settings.read(missing)
    assert str(caught.value) == (
        f"missing required field 'source': give --source or write it in {missing}"
    )


def test_kitctl_run_with_a_config_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexist.yaml"
    assert main(["run", "--once", "--config", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: {missing}: no such settings file\n"


def test_kitctl_run_without_config_reads_the_default_path_only_if_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    default = tmp_path / "etc" / "reconciler.yaml"
    monkeypatch.setattr(settings, "DEFAULT_PATH", str(default))
    # No file at the default path: not an error by itself; only the missing source is.
    assert main(["run", "--once", "--root", str(tmp_path / "root")]) == 1
    assert capsys.readouterr().err == (
        f"error: missing required field 'source': give --source or write it in {default}\n"
    )
    default.parent.mkdir()
    default.write_text("source: /srv/site\nbrnch: main\n", encoding="utf-8")
    assert main(["run", "--once", "--root", str(tmp_path / "root")]) == 1
    assert capsys.readouterr().err.startswith(
        f"{default}:2:1: error: unknown field 'brnch' (did you mean 'branch'?)"
    )
