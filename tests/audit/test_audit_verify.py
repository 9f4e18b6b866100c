"""`verify` names each kind of tampering, and says honestly what it cannot see."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from audit_fixtures import Sample

from reconciler import audit

Kinds = set[tuple[int, audit.Kind]]


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _rehash(record: dict[str, object]) -> bytes:
    """Forge a line the way a careful attacker would: recompute its own hash."""
    body = {k: v for k, v in record.items() if k != "hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    record = body | {"hash": hashlib.sha256(blob.encode()).hexdigest()}
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Renumber and re-link every line from index `start` on (a full re-chain)."""
    out = lines[:start]
    for raw in lines[start:]:
        record = json.loads(raw) | {
            "seq": len(out) + 1,
            "prev": _sha(out[-1]) if out else "0" * 64,
        }
        out.append(_rehash(record) + b"\n")
    return out


def _check(
    root: Path, lines: list[bytes], *, anchors: tuple[audit.Anchor, ...] = ()
) -> audit.Report:
    audit.log_path(root).write_bytes(b"".join(lines))
    return audit.verify(audit.log_path(root), audit.head_path(root), anchors)


def _kinds(report: audit.Report) -> Kinds:
    return {(f.line, f.kind) for f in report.problems}


def _message(report: audit.Report, line: int, kind: audit.Kind) -> str:
    return next(f.message for f in report.problems if (f.line, f.kind) == (line, kind))


def test_an_untouched_log_verifies(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    report = audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path))
    assert report.ok
    assert (report.lines, report.last_seq, report.last_sha256) == (5, 5, _sha(lines[4]))
    assert report.warnings == ()
    head = json.loads(audit.head_path(tmp_path).read_bytes())
    assert head == {"seq": 5, "sha256": _sha(lines[4])}


def test_an_empty_or_absent_log_verifies(tmp_path: Path) -> None:
    report = audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path))
    assert report.ok and report.lines == 0


def test_an_edited_field_names_the_line(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[2] = lines[2].replace(b"kitting.nft", b"kitting.nfX")
    report = _check(tmp_path, lines)
    assert _kinds(report) == {(3, audit.Kind.edited), (4, audit.Kind.chain_broken)}
    assert "content changed after writing" in _message(report, 3, audit.Kind.edited)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    tmp_path: Path, sample: Sample
) -> None:
    lines = sample(tmp_path)
    lines[2] = _rehash(json.loads(lines[2]) | {"target": "/etc/elsewhere"}) + b"\n"
    report = _check(tmp_path, lines)
    assert _kinds(report) == {(4, audit.Kind.chain_broken)}
    assert f"not the hash of line 3 ({_sha(lines[2])[:12]}" in _message(
        report, 4, audit.Kind.chain_broken
    )


def test_an_edited_last_line_is_caught_by_the_head_record(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[4] = _rehash(json.loads(lines[4]) | {"result": {"status": "failed", "message": ""}})
    report = _check(tmp_path, [*lines[:4], lines[4] + b"\n"])
    assert _kinds(report) == {(5, audit.Kind.head_mismatch)}


def test_a_whitespace_edit_is_an_edit(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[1] = lines[1].replace(b'"seq":2', b'"seq": 2')
    report = _check(tmp_path, lines)
    assert _kinds(report) == {(2, audit.Kind.edited), (3, audit.Kind.chain_broken)}
    assert "not canonical" in _message(report, 2, audit.Kind.edited)


def test_a_removed_line_is_named(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    del lines[2]
    report = _check(tmp_path, lines)
    assert _kinds(report) == {(3, audit.Kind.removed), (3, audit.Kind.chain_broken)}
    assert _message(report, 3, audit.Kind.removed) == (
        "seq expected 3, found 4: seq 3 missing (removed)"
    )


def test_removed_first_lines_are_named(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    report = _check(tmp_path, lines[2:])
    assert _kinds(report) == {(1, audit.Kind.removed), (1, audit.Kind.chain_broken)}
    assert "seq 1-2 missing" in _message(report, 1, audit.Kind.removed)


def test_a_naively_inserted_line_is_named(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    # A forged line that fits after line 2 perfectly; the real seq 3 now follows it.
    forged = _rehash(json.loads(lines[2]) | {"target": "/etc/forged", "prev": _sha(lines[1])})
    report = _check(tmp_path, [*lines[:2], forged + b"\n", *lines[2:]])
    assert _kinds(report) == {(4, audit.Kind.inserted), (4, audit.Kind.chain_broken)}
    assert "seq 3 is also line 3" in _message(report, 4, audit.Kind.inserted)


def test_a_huge_forged_seq_is_reported_quickly(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[2] = _rehash(json.loads(lines[2]) | {"seq": 10**12}) + b"\n"
    report = _check(tmp_path, lines)
    assert _kinds(report) == {
        (3, audit.Kind.removed),
        (3, audit.Kind.reordered),
        (4, audit.Kind.reordered),
        (4, audit.Kind.chain_broken),
    }
    removed = _message(report, 3, audit.Kind.removed)
    assert removed.startswith(f"seq expected 3, found {10**12}: seq 3, 6-5004, ... missing")


def test_a_swap_is_named_as_reordering(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[2], lines[3] = lines[3], lines[2]
    report = _check(tmp_path, lines)
    assert _kinds(report) == {
        (3, audit.Kind.reordered),
        (3, audit.Kind.chain_broken),
        (4, audit.Kind.reordered),
        (4, audit.Kind.chain_broken),
        (5, audit.Kind.reordered),
        (5, audit.Kind.chain_broken),
    }
    assert _message(report, 3, audit.Kind.reordered) == (
        "seq expected 3, found 4: seq 3 at line 4 (moved)"
    )
    assert _message(report, 4, audit.Kind.reordered) == (
        "seq expected 5, found 3: out of order (moved)"
    )


def test_a_cut_off_tail_is_caught_by_the_head_record(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    report = _check(tmp_path, lines[:3])
    assert _kinds(report) == {(0, audit.Kind.truncated)}
    assert "reached seq 5, the file ends at seq 3: 2 line(s)" in report.problems[0].message


def test_an_emptied_or_deleted_log_is_caught_by_the_head_record(
    tmp_path: Path, sample: Sample
) -> None:
    sample(tmp_path)
    assert _kinds(_check(tmp_path, [])) == {(0, audit.Kind.truncated)}
    audit.log_path(tmp_path).unlink()
    report = audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path))
    assert _kinds(report) == {(0, audit.Kind.truncated)}


def test_without_a_head_record_a_cut_tail_cannot_be_seen(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    audit.head_path(tmp_path).unlink()
    # Said as a problem, because the chain alone cannot prove nothing was cut.
    assert _kinds(_check(tmp_path, lines[:3])) == {(0, audit.Kind.head_missing)}


def test_an_unreadable_head_record_is_a_problem(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    audit.head_path(tmp_path).write_bytes(b"garbage")
    assert _kinds(_check(tmp_path, lines)) == {(0, audit.Kind.head_mismatch)}


def test_a_head_one_behind_is_consistent(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    # What a writer killed between its append and its head update leaves behind.
    audit.head_path(tmp_path).write_bytes(audit.Head(4, _sha(lines[3])).to_bytes())
    report = _check(tmp_path, lines)
    assert report.ok
    assert [w.kind for w in report.warnings] == [audit.Kind.head_mismatch]
    assert "lags at seq 4 of 5" in report.warnings[0].message


def test_a_garbage_line_is_malformed(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    lines[2] = b'{"seq": 3, oops\n'
    report = _check(tmp_path, lines)
    assert _kinds(report) == {(3, audit.Kind.malformed), (4, audit.Kind.chain_broken)}


def test_a_torn_last_line_is_reported(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    report = _check(tmp_path, [*lines, b'{"commit":null,"det'])
    assert _kinds(report) == {(6, audit.Kind.torn_tail)}
    assert report.lines == 5


# --- a forged line with the whole tail re-chained after it: what can and cannot be seen


def _forge_and_rechain(lines: list[bytes]) -> list[bytes]:
    forged = json.loads(lines[2]) | {"event": "file_removed", "target": "/etc/ssh/sshd_config"}
    return _rechain([*lines[:2], _rehash(forged) + b"\n", *lines[2:]], 2)


def test_a_rechained_forgery_passes_the_chain_but_not_the_untouched_head(
    tmp_path: Path, sample: Sample
) -> None:
    lines = sample(tmp_path)
    report = _check(tmp_path, _forge_and_rechain(lines))
    # The chain itself is perfect; only the head record (seq 5 = the old last line) knows.
    assert _kinds(report) == {(5, audit.Kind.head_mismatch)}
    assert "edited or the tail re-chained" in report.problems[0].message


def test_a_rechained_forgery_with_a_rewritten_head_is_not_detectable_on_the_server(
    tmp_path: Path, sample: Sample
) -> None:
    """The honest limit: whoever can write the state directory can rewrite both."""
    lines = sample(tmp_path)
    forged = _forge_and_rechain(lines)
    audit.head_path(tmp_path).write_bytes(audit.Head(6, _sha(forged[5])).to_bytes())
    assert _check(tmp_path, forged).ok


def test_an_anchor_kept_elsewhere_catches_the_rewrite(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    kept = audit.Anchor(5, _sha(lines[4]))  # printed by verify earlier, stored off the server
    forged = _forge_and_rechain(lines)
    audit.head_path(tmp_path).write_bytes(audit.Head(6, _sha(forged[5])).to_bytes())
    report = _check(tmp_path, forged, anchors=(kept,))
    assert _kinds(report) == {(5, audit.Kind.anchor_mismatch)}
    # An anchor older than the forgery cannot see it: lines up to seq 2 are unchanged.
    assert _check(tmp_path, forged, anchors=(audit.Anchor(2, _sha(lines[1])),)).ok


def test_an_anchor_past_the_end_means_truncation(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    audit.head_path(tmp_path).write_bytes(audit.Head(3, _sha(lines[2])).to_bytes())
    report = _check(tmp_path, lines[:3], anchors=(audit.Anchor(5, _sha(lines[4])),))
    assert _kinds(report) == {(0, audit.Kind.truncated)}


@pytest.mark.parametrize("count", [0, 1, 2])
def test_verify_lines_is_pure_over_bytes(count: int, tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)[:count]
    head = audit.Head(count, _sha(lines[-1])).to_bytes() if lines else None
    report = audit.verify_lines(lines, head)
    assert report.ok and report.lines == count
