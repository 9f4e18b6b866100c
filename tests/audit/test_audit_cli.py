"""`kitctl audit verify|log|show`, through the real command line entry point."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
from audit_fixtures import PLUS2, SHA_A, SHA_B, Sample

from reconciler import audit
from reconciler.cli import main
from reconciler.clock import FixedClock
from reconciler.commands import audit as audit_command


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_a_clean_log_prints_its_anchor(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample(tmp_path)
    code, out, _ = _run(capsys, "verify", "--root", str(tmp_path))
    anchor = f"5:{hashlib.sha256(lines[4]).hexdigest()}"
    assert code == 0
    assert out == (
        f"{audit.log_path(tmp_path)}: ok, 5 line(s), chain intact; anchor {anchor} "
        "(keep it off this server to detect a rewrite later with --anchor)\n"
    )
    assert _run(capsys, "verify", "--root", str(tmp_path), "--anchor", anchor)[0] == 0


def test_verify_names_the_tampered_lines_and_fails(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample(tmp_path)
    lines[1] = lines[1].replace(b'"dnsmasq"', b'"sshd"')
    audit.log_path(tmp_path).write_bytes(b"".join(lines))
    code, out, _ = _run(capsys, "verify", "--root", str(tmp_path))
    assert code == 1
    printed = out.splitlines()
    assert printed[0].startswith("line 2: edited: content changed after writing")
    assert printed[1].startswith("line 3: chain_broken: prev ")
    assert printed[2] == f"{audit.log_path(tmp_path)}: 2 problems in 5 line(s)"


def test_verify_as_json(tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    lines = sample(tmp_path)
    audit.log_path(tmp_path).write_bytes(b"".join(lines[:4]))
    code, out, _ = _run(capsys, "verify", "--root", str(tmp_path), "--format", "json")
    body = json.loads(out)
    assert code == 1
    assert (body["ok"], body["lines"], body["last_seq"]) == (False, 4, 4)
    assert [(p["line"], p["kind"]) for p in body["problems"]] == [(0, "truncated")]


def test_verify_with_a_stale_anchor_or_a_bad_one(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    code, out, _ = _run(capsys, "verify", "--root", str(tmp_path), "--anchor", f"2:{'0' * 64}")
    assert code == 1
    assert out.startswith("line 2: anchor_mismatch: seq 2 hashes to ")
    code, _, err = _run(capsys, "verify", "--root", str(tmp_path), "--anchor", "2:zz")
    assert code == 2
    assert "SEQ:SHA256" in err


def test_verify_a_server_with_an_empty_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "var" / "lib" / "kitting").mkdir(parents=True)
    code, out, _ = _run(capsys, "verify", "--root", str(tmp_path))
    assert (code, out) == (0, f"{tmp_path}/var/lib/kitting/audit.jsonl: ok, empty\n")


def test_a_root_that_does_not_exist_is_an_error_not_an_empty_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo"
    for argv in (["verify"], ["log"], ["show", "a1a1a1a1"]):
        code, out, err = _run(capsys, *argv, "--root", str(typo))
        assert (code, out) == (1, "")
        assert err == f"kitctl audit {argv[0]}: --root {typo}: no such directory\n"
    assert not typo.exists()  # read-only: nothing made


def test_show_head_says_the_log_knows_commits_by_sha(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    code, out, err = _run(capsys, "show", "HEAD", "--root", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith("kitctl audit: 'HEAD' is not a commit SHA or prefix (4-64 hex digits)")
    assert "not by names like HEAD" in err
    assert "git rev-parse NAME" in err


def test_a_root_without_state_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "verify", "--root", str(tmp_path))
    assert (code, out) == (1, "")
    assert err == (
        f"kitctl audit verify: --root {tmp_path}: no reconciler state here "
        f"({tmp_path}/var/lib/kitting does not exist): nothing has been applied to this "
        "root; is --root right?\n"
    )


LOG_TEXT = [
    "     1 2024-05-01T10:00:00.000+02:00 file_written        ok     "
    "/etc/dnsmasq.d/kitting.conf a1a1a1a1a1a1",
    "     2 2024-05-01T10:01:00.000+02:00 service_restarted   ok     dnsmasq a1a1a1a1a1a1",
    "     3 2024-05-01T10:02:00.000+02:00 file_written        ok     "
    "/etc/nftables.d/kitting.nft a1a1a1a1a1a1",
    "     4 2024-05-01T10:03:00.000+02:00 firewall_applied    ok     inet kitting a1a1a1a1a1a1",
    "     5 2024-05-01T10:04:00.000+02:00 session_started     ok     batch lab3-monday "
    "b2b2b2b2b2b2",
]


def test_log_lists_every_entry(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    code, out, err = _run(capsys, "log", "--root", str(tmp_path))
    assert (code, err) == (0, "")
    assert out.splitlines() == LOG_TEXT


def test_log_filters_by_commit_prefix_and_time(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    root = str(tmp_path)
    assert _run(capsys, "log", "--root", root, "--commit", "B2B2")[1].splitlines() == LOG_TEXT[4:]
    out = _run(capsys, "log", "--root", root, "--commit", "a1a1", "--since", "2024-05-01T08:02Z")
    assert out[1].splitlines() == LOG_TEXT[2:4]
    code, out_text, err = _run(capsys, "log", "--root", root, "--commit", "c0ffee")
    assert (code, out_text) == (0, "")
    assert "no audit entry names a commit starting with c0ffee" in err


def test_log_since_an_age_uses_the_clock_seam(
    tmp_path: Path,
    sample: Sample,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample(tmp_path)
    monkeypatch.setattr(
        audit_command, "CLOCK", FixedClock(datetime(2024, 5, 1, 10, 5, 30, tzinfo=PLUS2))
    )
    code, out, _ = _run(capsys, "log", "--root", str(tmp_path), "--since", "4m")
    assert code == 0
    assert out.splitlines() == LOG_TEXT[2:]  # from 10:01:30 on


def test_log_refuses_an_unreadable_since(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    code, out, err = _run(capsys, "log", "--root", str(tmp_path), "--since", "last tuesday")
    assert (code, out) == (2, "")
    assert err.startswith("kitctl audit: --since: cannot read 'last tuesday' as a time")


def test_log_as_json_gives_the_stored_lines(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample(tmp_path)
    code, out, _ = _run(
        capsys, "log", "--root", str(tmp_path), "--format", "json", "--commit", SHA_A
    )
    assert code == 0
    assert out.encode() == b"".join(lines[:4])


def test_log_skips_and_mentions_damaged_lines(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample(tmp_path)
    audit.log_path(tmp_path).write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[3:]]))
    code, out, err = _run(capsys, "log", "--root", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [LOG_TEXT[0], LOG_TEXT[1], LOG_TEXT[3], LOG_TEXT[4]]
    assert "skipped line 3: malformed" in err
    assert "kitctl audit verify" in err


def test_show_lists_what_one_commit_did(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    sample(tmp_path)
    code, out, _ = _run(capsys, "show", "a1a1a1", "--root", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        f"commit {SHA_A}",
        "Author:    Ann Admin <ann@example.org>",
        "Committer: Ann Admin <ann@example.org>",
        "Date:      2024-05-01T09:00:00+02:00",
        "Review:    GitHub pull request #12; Reviewed-by: Bob <bob@example.org>",
        "",
        "    Add lab 3",
        "",
        "4 action(s) on this server:",
        *(line.removesuffix(" a1a1a1a1a1a1") for line in LOG_TEXT[:4]),
    ]


def test_show_as_json_and_unknown_or_ambiguous_commits(
    tmp_path: Path, sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sample(tmp_path)
    root = str(tmp_path)
    assert _run(capsys, "show", SHA_B, "--root", root, "--format", "json")[1].encode() == lines[4]
    code, _, err = _run(capsys, "show", "c0ffee", "--root", root)
    assert code == 1
    assert "no audit entry names a commit starting with c0ffee" in err
    assert _run(capsys, "show", "xyz!", "--root", root)[0] == 2


def test_text_output_escapes_control_characters(
    tmp_path: Path, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(
            audit.Event.file_written,
            "/etc/x\n     2 forged line\x1b[2K",
            audit.Result.failure("bad\rthing"),
        )
    code, out, _ = _run(capsys, "log", "--root", str(tmp_path))
    assert code == 0
    assert out == (
        "     1 2024-05-01T10:00:00.000+02:00 file_written        failed "
        "/etc/x\\n     2 forged line\\x1b[2K - (bad\\rthing)\n"
    )
