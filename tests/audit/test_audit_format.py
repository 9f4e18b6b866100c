"""The line format, the hashes, and the pure helpers (`--since`, commit prefixes, anchors)."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_fixtures import COMMIT_A, COMMIT_B, PLUS2, SHA_A, SHA_B, Sample

from reconciler import audit
from reconciler.clock import FixedClock

ZEROS = "0" * 64
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=PLUS2)


def test_a_line_is_canonical_json_with_its_own_hash() -> None:
    raw = audit.encode(
        seq=1,
        time=T0,
        event=audit.Event.file_written,
        target="/etc/x",
        result=audit.Result.success(),
        details={"path": "/etc/x", "hash_after": "ab"},
        commit=None,
        prev=ZEROS,
    )
    # Written out by hand: sorted keys, no spaces, the hash covers everything but itself.
    body = (
        '{"commit":null,"details":{"hash_after":"ab","path":"/etc/x"},"event":"file_written",'
        f'"prev":"{ZEROS}","result":{{"message":"","status":"ok"}},"seq":1,"target":"/etc/x",'
        '"time":"2024-05-01T10:00:00.000+02:00"}'
    )
    digest = hashlib.sha256(body.encode()).hexdigest()
    expected = (
        '{"commit":null,"details":{"hash_after":"ab","path":"/etc/x"},"event":"file_written",'
        f'"hash":"{digest}","prev":"{ZEROS}","result":{{"message":"","status":"ok"}},"seq":1,'
        '"target":"/etc/x","time":"2024-05-01T10:00:00.000+02:00"}\n'
    )
    assert raw == expected.encode()


def test_commit_metadata_and_failure_are_recorded() -> None:
    raw = audit.encode(
        seq=7,
        time=T0,
        event=audit.Event.commit_refused,
        target="main",
        result=audit.Result.failure("history rewritten"),
        details={},
        commit=COMMIT_B,
        prev="f" * 64,
    )
    assert json.loads(raw) | {"hash": "-"} == {
        "seq": 7,
        "time": "2024-05-01T10:00:00.000+02:00",
        "event": "commit_refused",
        "target": "main",
        "result": {"status": "failed", "message": "history rewritten"},
        "details": {},
        "commit": {
            "sha": SHA_B,
            "author": "Bob <bob@example.org>",
            "committer": "Bob <bob@example.org>",
            "date": "2024-05-01T11:00:00+02:00",
            "subject": "Open batch window",
            "review": [],
        },
        "prev": "f" * 64,
        "hash": "-",
    }


def test_prev_is_the_sha256_of_the_previous_line_as_stored(tmp_path: Path, sample: Sample) -> None:
    lines = sample(tmp_path)
    assert len(lines) == 5
    assert json.loads(lines[0])["prev"] == ZEROS
    for before, line in itertools.pairwise(lines):
        # What `sed -n Np audit.jsonl | sha256sum` prints: newline included.
        assert json.loads(line)["prev"] == hashlib.sha256(before).hexdigest()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert json.loads(lines[4])["time"] == "2024-05-01T10:04:00.000+02:00"


def test_text_stays_utf8_and_undecodable_names_still_round_trip() -> None:
    assert audit.canonical({"b": "é", "a": 1}) == b'{"a":1,"b":"\xc3\xa9"}'
    # A file name that is not UTF-8 (os.fsdecode gives a lone surrogate) is escaped.
    odd = {"path": "/srv/caf\udce9"}
    raw = audit.canonical(odd)
    assert raw == b'{"path":"/srv/caf\\udce9"}'
    assert audit.canonical(json.loads(raw)) == raw


def test_what_json_cannot_say_is_refused() -> None:
    with pytest.raises(ValueError):
        audit.canonical({"x": float("nan")})
    with pytest.raises(ValueError, match="offset"):
        audit.encode(
            seq=1,
            time=datetime(2024, 5, 1, 10, 0),  # naive on purpose
            event=audit.Event.rollback,
            target="t",
            result=audit.Result.success(),
            details={},
            commit=None,
            prev=ZEROS,
        )
    with pytest.raises(ValueError):
        audit.encode(
            seq=1,
            time=T0,
            event="not_an_event",  # type: ignore[arg-type]
            target="t",
            result=audit.Result.success(),
            details={},
            commit=None,
            prev=ZEROS,
        )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"{not json\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"seq":1}\n', "missing field"),
        (b'{"seq":NaN}\n', "not JSON"),
    ],
)
def test_decode_says_what_is_wrong(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        audit.decode(line, 1)


def test_decode_checks_types(tmp_path: Path, sample: Sample) -> None:
    good = json.loads(sample(tmp_path)[0])
    for key, value, why in (
        ("seq", True, "seq"),
        ("seq", 0, "seq"),
        ("time", "2024-05-01T10:00:00", "offset"),
        ("time", "yesterday", "ISO 8601"),
        ("result", {"status": "meh", "message": ""}, "result"),
        ("prev", "ABC", "prev"),
        ("commit", {"sha": "x"}, "commit"),
    ):
        with pytest.raises(ValueError, match=why):
            audit.decode(json.dumps(good | {key: value}).encode(), 1)


NOW = datetime(2024, 5, 3, 12, 30, tzinfo=PLUS2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", datetime(2024, 5, 3, 12, 28, 30, tzinfo=PLUS2)),
        ("15m", datetime(2024, 5, 3, 12, 15, tzinfo=PLUS2)),
        ("2h", datetime(2024, 5, 3, 10, 30, tzinfo=PLUS2)),
        ("3d", datetime(2024, 4, 30, 12, 30, tzinfo=PLUS2)),
        ("1w", datetime(2024, 4, 26, 12, 30, tzinfo=PLUS2)),
        ("2024-05-01", datetime(2024, 5, 1, 0, 0, tzinfo=PLUS2)),
        ("2024-05-01T08:00", datetime(2024, 5, 1, 8, 0, tzinfo=PLUS2)),
        ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
        ("2024-05-01T08:00:00-05:00", datetime(2024, 5, 1, 13, 0, tzinfo=UTC)),
    ],
)
def test_since_reads_ages_dates_and_times(text: str, expected: datetime) -> None:
    got = audit.parse_since(text, NOW)
    assert got == expected
    assert got.utcoffset() is not None


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "-2h", "5y", "2024-13-01"])
def test_since_refuses_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="age"):
        audit.parse_since(text, NOW)


def _entries(tmp_path: Path, sample: Sample) -> list[audit.Entry]:
    sample(tmp_path)
    entries, skipped = audit.read(audit.log_path(tmp_path))
    assert skipped == []
    return entries


def test_commit_prefixes_resolve_to_one_commit(tmp_path: Path, sample: Sample) -> None:
    entries = _entries(tmp_path, sample)
    assert audit.resolve_commit(entries, "A1A1") == SHA_A
    assert audit.resolve_commit(entries, SHA_B) == SHA_B
    with pytest.raises(audit.UnknownCommit):
        audit.resolve_commit(entries, "c0ffee")
    with pytest.raises(ValueError, match="4-64 hex"):
        audit.resolve_commit(entries, "a1a")
    with pytest.raises(ValueError, match="4-64 hex"):
        audit.resolve_commit(entries, "a1a1; rm")


def test_a_prefix_shared_by_two_commits_is_ambiguous(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        for sha in ("abcd" + "0" * 36, "abcd" + "1" * 36):
            commit = audit.CommitInfo(sha, "a", "a", "2024-05-01T09:00:00+02:00", "s")
            log.append(audit.Event.commit_applied, sha, audit.Result.success(), commit=commit)
    entries, _ = audit.read(audit.log_path(tmp_path))
    with pytest.raises(audit.AmbiguousCommit, match="abcd00000000, abcd11111111"):
        audit.resolve_commit(entries, "abcd")
    assert audit.resolve_commit(entries, "abcd1") == "abcd" + "1" * 36


def test_select_by_commit_and_time(tmp_path: Path, sample: Sample) -> None:
    entries = _entries(tmp_path, sample)
    assert [e.seq for e in audit.select(entries, commit=SHA_A)] == [1, 2, 3, 4]
    assert [e.seq for e in audit.select(entries, commit=SHA_B)] == [5]
    since = datetime(2024, 5, 1, 10, 2, tzinfo=PLUS2)
    assert [e.seq for e in audit.select(entries, since=since)] == [3, 4, 5]
    # The same instant written in UTC selects the same lines.
    utc = datetime(2024, 5, 1, 8, 2, tzinfo=UTC)
    assert [e.seq for e in audit.select(entries, commit=SHA_A, since=utc)] == [3, 4]
    assert audit.select(entries, since=since + timedelta(hours=1)) == []
    assert entries[0].commit == COMMIT_A


def test_anchors_parse() -> None:
    assert audit.Anchor.parse(" 42:" + "AB" * 32) == audit.Anchor(42, "ab" * 32)
    for bad in ("42", "0:" + "ab" * 32, "x:" + "ab" * 32, "42:abc"):
        with pytest.raises(ValueError, match="SEQ:SHA256"):
            audit.Anchor.parse(bad)


def test_head_record_parses_only_its_own_shape() -> None:
    assert audit.Head.parse(b'{"seq":3,"sha256":"' + b"e" * 64 + b'"}\n') == audit.Head(3, "e" * 64)
    assert audit.Head(3, "e" * 64).to_bytes() == b'{"seq":3,"sha256":"' + b"e" * 64 + b'"}\n'
    for bad in (b"", b"{}", b'{"seq":-1,"sha256":"' + b"e" * 64 + b'"}', b'{"seq":1,"sha256":"x"}'):
        with pytest.raises(ValueError):
            audit.Head.parse(bad)
