"""The incremental log reader: new lines once, across restarts, rotation and truncation."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.log_tail import LogTail, Position


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_new_complete_lines_once_and_an_unfinished_line_later(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("old line\n")
    inode = log.stat().st_ino
    tail = LogTail(log, Position(inode, 9))  # after "old line\n"
    assert not tail.has_news()
    append(log, "first\nsecond\nthird without newline")
    assert tail.has_news()
    lines, position = tail.read()
    assert lines == ["first", "second"]
    assert position == Position(inode, 9 + len("first\nsecond\n"))
    # not committed: the same lines again (a crash before the step recorded them)
    assert tail.read() == (lines, position)
    tail.commit(position)
    append(log, "\n")
    assert tail.read() == (["third without newline"], Position(inode, log.stat().st_size))


def test_without_a_saved_position_the_log_so_far_is_history(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("yesterday\n")
    tail = LogTail(log)
    assert not tail.has_news()
    lines, position = tail.read()
    assert lines == []
    assert position == Position(log.stat().st_ino, 10)


def test_a_restart_resumes_from_the_saved_position(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("a\nb\n")
    first = LogTail(log, Position(log.stat().st_ino, 0))
    lines, position = first.read()
    assert lines == ["a", "b"]
    saved = position.to_json() if position else b""
    append(log, "c\n")
    second = LogTail(log, Position.from_json(saved))
    assert second.read()[0] == ["c"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("one\n")
    tail = LogTail(log, Position(log.stat().st_ino, 4))
    append(log, "two\n")  # written before the rotation, not yet read
    os.rename(log, tmp_path / "dnsmasq.log.1")
    log.write_text("three\n")
    assert tail.has_news()
    lines, position = tail.read()
    assert lines == ["two", "three"]
    assert position == Position(log.stat().st_ino, 6)


def test_rotation_with_the_old_file_gone_starts_the_new_one_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("one\n")
    tail = LogTail(log, Position(log.stat().st_ino, 4))
    os.rename(log, tmp_path / "elsewhere")
    log.write_text("fresh\n")
    assert tail.read()[0] == ["fresh"]


def test_a_truncated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("a long first line\n")
    tail = LogTail(log, Position(log.stat().st_ino, 18))
    log.write_text("new\n")  # same inode, shorter: copytruncate
    assert tail.read()[0] == ["new"]


def test_a_log_that_does_not_exist_yet_is_read_from_its_start_once_created(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    tail = LogTail(log, Position(0, 0))
    assert not tail.has_news()
    assert tail.read() == ([], Position(0, 0))
    log.write_text("started\n")
    assert tail.has_news()
    assert tail.read()[0] == ["started"]


def test_reads_are_bounded_and_continue_where_they_stopped(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text("".join(f"line {i:03d}\n" for i in range(10)))  # 9 bytes each
    tail = LogTail(log, Position(log.stat().st_ino, 0))
    lines, position = tail.read(limit=30)
    assert lines == ["line 000", "line 001", "line 002"]
    tail.commit(position)
    lines, _ = tail.read(limit=30)
    assert lines == ["line 003", "line 004", "line 005"]


def test_a_damaged_saved_position_means_none() -> None:
    assert Position.from_json(b"not json") is None
    assert Position.from_json(b'{"inode": -1, "offset": 0}') is None
    assert Position.from_json(b'{"inode": true, "offset": 0}') is None
    assert Position.from_json(b'{"inode": 5, "offset": 7}') == Position(5, 7)
