"""The writer: durability, one writer at a time, torn tails kept, head disagreements recorded."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from audit_fixtures import COMMIT_A, Sample

from reconciler import audit
from reconciler.clock import FixedClock


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _lines(root: Path) -> list[bytes]:
    return audit.log_path(root).read_bytes().splitlines(keepends=True)


def _verify(root: Path) -> audit.Report:
    return audit.verify(audit.log_path(root), audit.head_path(root))


def test_append_returns_the_entry_and_moves_the_head(tmp_path: Path, clock: FixedClock) -> None:
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        entry = log.append(
            audit.Event.file_written,
            "/etc/dnsmasq.d/kitting.conf",
            audit.Result.success(),
            details={"path": "/etc/dnsmasq.d/kitting.conf", "hash_before": None},
            commit=COMMIT_A,
        )
    path = tmp_path / "var/lib/kitting/audit.jsonl"
    assert audit.log_path(tmp_path) == path
    (raw,) = path.read_bytes().splitlines(keepends=True)
    assert (entry.seq, entry.raw, entry.commit, entry.prev) == (1, raw, COMMIT_A, "0" * 64)
    assert entry.details == {"path": "/etc/dnsmasq.d/kitting.conf", "hash_before": None}
    assert entry.time.isoformat() == "2024-05-01T10:00:00+02:00"
    head = (tmp_path / "var/lib/kitting/audit.head").read_bytes()
    assert head == b'{"seq":1,"sha256":"' + _sha(raw).encode() + b'"}\n'


def test_a_new_writer_continues_the_chain(
    tmp_path: Path, clock: FixedClock, sample: Sample
) -> None:
    before = sample(tmp_path)
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        entry = log.append(audit.Event.rollback, "dnsmasq", audit.Result.failure("reload failed"))
    assert (entry.seq, entry.prev) == (6, _sha(before[4]))
    assert _lines(tmp_path)[:5] == before
    assert _verify(tmp_path).ok


def test_append_without_open_and_two_writers_in_one_process(
    tmp_path: Path, clock: FixedClock
) -> None:
    one = audit.AuditLog.at_root(tmp_path, clock)
    two = audit.AuditLog.at_root(tmp_path, clock)
    try:
        for i in range(3):
            one.append(audit.Event.pc_armed, f"pc-{i}a", audit.Result.success())
            two.append(audit.Event.pc_armed, f"pc-{i}b", audit.Result.success())
    finally:
        one.close()
        two.close()
    targets = [json.loads(raw)["target"] for raw in _lines(tmp_path)]
    assert targets == ["pc-0a", "pc-0b", "pc-1a", "pc-1b", "pc-2a", "pc-2b"]
    assert _verify(tmp_path).ok


def test_each_line_is_written_then_fsynced_before_append_returns(
    tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((target, os.fstat(fd).st_size if Path(target).is_file() else -1))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    state = tmp_path / "var/lib/kitting"
    log_file = str(state / "audit.jsonl")
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        opened = list(synced)
        first = log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        after_first = synced[len(opened) :]
        synced.clear()
        second = log.append(audit.Event.pc_disarmed, "pc-1", audit.Result.success())
    # Creating the log made its name durable: the new directories and the file's entry.
    assert (str(state), -1) in opened
    assert (str(tmp_path / "var/lib"), -1) in opened
    # The line was complete in the file when it was fsynced, before the head moved.
    size = len(first.raw)
    assert after_first[0] == (log_file, size)
    assert after_first[-1] == (str(state), -1)  # the head's rename made durable
    assert synced[0] == (log_file, size + len(second.raw))


def test_a_torn_tail_is_kept_aside_and_recorded(
    tmp_path: Path, clock: FixedClock, sample: Sample
) -> None:
    before = sample(tmp_path)
    torn = b'{"commit":null,"details":{"pa'  # a crash in the middle of line 6
    with audit.log_path(tmp_path).open("ab") as f:
        f.write(torn)
    with audit.AuditLog.at_root(tmp_path, clock):
        pass  # opening is enough
    aside = tmp_path / f"var/lib/kitting/audit.jsonl.torn-6-{_sha(torn)[:16]}"
    assert aside.read_bytes() == torn
    lines = _lines(tmp_path)
    assert lines[:5] == before
    record = json.loads(lines[5])
    assert (record["seq"], record["event"], record["prev"]) == (
        6,
        "torn_tail_recovered",
        _sha(before[4]),
    )
    assert record["details"] == {
        "files": [{"name": aside.name, "bytes": len(torn), "sha256": _sha(torn)}]
    }
    report = _verify(tmp_path)
    assert report.ok
    assert [(w.line, w.kind) for w in report.warnings] == [(6, audit.Kind.incident)]


def test_a_recovery_cut_short_by_a_crash_is_finished_later(
    tmp_path: Path, clock: FixedClock, sample: Sample
) -> None:
    sample(tmp_path)
    # The crash came after the torn bytes were set aside and cut, before the record.
    torn = b'{"seq":6'
    aside = tmp_path / f"var/lib/kitting/audit.jsonl.torn-6-{_sha(torn)[:16]}"
    aside.write_bytes(torn)
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(audit.Event.pc_armed, "pc-9", audit.Result.success())
    events = [json.loads(raw)["event"] for raw in _lines(tmp_path)]
    assert events[5:] == ["torn_tail_recovered", "pc_armed"]
    assert _verify(tmp_path).ok


def test_a_torn_tail_left_by_another_writer_is_recovered_before_the_next_line(
    tmp_path: Path, clock: FixedClock
) -> None:
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        with audit.log_path(tmp_path).open("ab") as f:  # another process died mid-write
            f.write(b'{"comm')
        log.append(audit.Event.pc_armed, "pc-2", audit.Result.success())
    events = [json.loads(raw)["event"] for raw in _lines(tmp_path)]
    assert events == ["pc_armed", "torn_tail_recovered", "pc_armed"]
    assert _verify(tmp_path).ok


def test_a_cut_tail_is_recorded_when_a_writer_opens(
    tmp_path: Path, clock: FixedClock, sample: Sample
) -> None:
    lines = sample(tmp_path)
    audit.log_path(tmp_path).write_bytes(b"".join(lines[:3]))
    with audit.AuditLog.at_root(tmp_path, clock):
        pass
    record = json.loads(_lines(tmp_path)[3])
    assert (record["seq"], record["event"], record["result"]["status"]) == (
        4,
        "head_mismatch",
        "failed",
    )
    assert record["details"] == {
        "head": {"seq": 5, "sha256": _sha(lines[4])},
        "log": {"seq": 3, "sha256": _sha(lines[2])},
    }
    # The log is consistent again, and the incident stays visible.
    report = _verify(tmp_path)
    assert report.ok
    assert [(w.line, w.kind) for w in report.warnings] == [(4, audit.Kind.incident)]


def test_a_lagging_head_is_not_an_incident(
    tmp_path: Path, clock: FixedClock, sample: Sample
) -> None:
    lines = sample(tmp_path)
    audit.head_path(tmp_path).write_bytes(audit.Head(4, _sha(lines[3])).to_bytes())
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
    assert [json.loads(raw)["event"] for raw in _lines(tmp_path)][5:] == ["pc_armed"]
    assert _verify(tmp_path).ok


def test_a_replaced_log_file_is_followed(tmp_path: Path, clock: FixedClock) -> None:
    path = audit.log_path(tmp_path)
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        saved = path.read_bytes()
        # An editor's save: a new file renamed over the old one.
        (path.parent / "edited").write_bytes(saved)
        os.replace(path.parent / "edited", path)
        log.append(audit.Event.pc_armed, "pc-2", audit.Result.success())
    assert [json.loads(raw)["target"] for raw in _lines(tmp_path)] == ["pc-1", "pc-2"]
    assert _verify(tmp_path).ok


def test_a_deleted_log_starts_again_and_says_so(tmp_path: Path, clock: FixedClock) -> None:
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        audit.log_path(tmp_path).unlink()
        log.append(audit.Event.pc_armed, "pc-2", audit.Result.success())
    records = [json.loads(raw) for raw in _lines(tmp_path)]
    assert [(r["seq"], r["event"]) for r in records] == [(1, "head_mismatch"), (2, "pc_armed")]


def test_a_held_lock_times_out_within_bounds(tmp_path: Path, clock: FixedClock) -> None:
    with audit.AuditLog.at_root(tmp_path, clock):
        pass
    fd = os.open(audit.log_path(tmp_path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        log = audit.AuditLog.at_root(tmp_path, clock, lock_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(audit.AuditLockTimeout):
            log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        assert 0.2 <= time.monotonic() - started < 2
        with pytest.raises(audit.AuditLockTimeout):  # readers wait for writers too
            audit.verify(audit.log_path(tmp_path), audit.head_path(tmp_path), lock_timeout=0.1)
        fcntl.flock(fd, fcntl.LOCK_UN)
        log.append(audit.Event.pc_armed, "pc-1", audit.Result.success())
        log.close()
    finally:
        os.close(fd)
    assert len(_lines(tmp_path)) == 1


def test_bad_input_writes_nothing(tmp_path: Path, clock: FixedClock) -> None:
    with audit.AuditLog.at_root(tmp_path, clock) as log:
        with pytest.raises(ValueError):
            log.append(
                audit.Event.pc_armed, "pc", audit.Result.success(), details={"x": float("inf")}
            )
        with pytest.raises(TypeError):
            log.append(audit.Event.pc_armed, "pc", audit.Result.success(), details={"x": object()})  # type: ignore[dict-item]
        clock.advance(timedelta(seconds=1))
        entry = log.append(audit.Event.pc_armed, "pc", audit.Result.success())
    assert entry.seq == 1
    assert _verify(tmp_path).ok


def test_a_symlinked_log_is_refused(tmp_path: Path, clock: FixedClock) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    path = audit.log_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    with pytest.raises(OSError), audit.AuditLog.at_root(tmp_path, clock):
        pass
    assert victim.read_bytes() == b"keep me\n"
