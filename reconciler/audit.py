"""The audit log: one hash-chained JSON line per action, linked to the commit that caused it.

File: ROOT/var/lib/kitting/audit.jsonl (`log_path`). Each line is canonical JSON (sorted
keys, no spaces, UTF-8) ending in a newline, with the fields

    seq      1, 2, 3 ... (equal to the line number in an intact log)
    time     ISO 8601 with offset, from the clock seam
    event    what was done (`Event`)
    target   what it was done to (a path, a service, a PC, a commit)
    result   {"status": "ok" | "failed", "message": "..."}
    details  anything that helps a reader later (path, hash_before, hash_after, diff ...)
    commit   the commit behind the action and its metadata (`CommitInfo`), or null
    prev     sha256 of the previous line's exact bytes, newline included (the first line
             has 64 zeros), so `sed -n 4p audit.jsonl | sha256sum` is line 5's prev
    hash     sha256 of the line's canonical JSON without the `hash` key (so a changed line
             is named by itself, not only by the broken link after it)

Writing (`AuditLog`): one writer at a time (flock on the log file, queued through
`audit.jsonl.gate` so a busy writer cannot starve the others); the line is written in one
O_APPEND write and fsynced, and the directory fsynced when the file is new, before `append`
returns, so each line is on disk before the next action starts (as far as the disk honours
flushes: the tests prove the order of write, fsync and return, not survival of a power cut).
A line cut short by a crash (no newline) is found by the next writer, copied to
`audit.jsonl.torn-SEQ-HASH`, removed from the log and recorded as `torn_tail_recovered`:
its bytes are kept, and the chain stays whole.

The head record (ROOT/var/lib/kitting/audit.head: last seq and the sha256 of the last line)
is replaced atomically after every append, after the line is on disk, so it can lag the log
but never lead it. What it can and cannot prove:

- It catches a tail that was cut off (the file ends before the head's seq), and an edit of
  the last lines, including a forged tail whose hash chain was recomputed, as long as the
  head itself was left alone. That covers accidents (an old backup restored, a careless
  `head -n`, a file system that lost the end) and people who did not know it was there.
- It proves nothing against someone who can write the state directory (root on this
  server): they rewrite the head together with a re-chained log, and nothing stored here
  can tell. The defence is an anchor kept elsewhere: `verify` prints "SEQ:SHA256" of the
  last line; give it back later as `--anchor` (from a git note, a ticket, a remote syslog)
  and any rewrite of lines up to SEQ is found. Lines after the newest anchor, or forged
  lines appended at the end, stay undetectable; only sending each line off the machine as
  it is written would close that.
- The head lags the log by one line when a writer dies between the two writes; that is
  consistent (the head witnessed a prefix) and is repaired by the next append.

When a writer opens a log that disagrees with its head it does not refuse to work (the
server must keep converging): it records `head_mismatch` in the chain with both sides, so
the incident stays in the log; `verify` lists recorded incidents as warnings.

The format, the chain check and the selection helpers are purely computational; `AuditLog`,
`verify`, `read` and the path helpers are the shell that touches files.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import hashlib
import json
import os
import re
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

from loguru import logger

from reconciler.clock import Clock
from reconciler.layout import Layout

JSON: TypeAlias = bool | int | float | str | Sequence["JSON"] | Mapping[str, "JSON"] | None

ZERO_HASH = "0" * 64
LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 64 * 1024


class Event(StrEnum):
    """What an audit line records."""

    file_written = "file_written"
    file_removed = "file_removed"
    service_reloaded = "service_reloaded"
    service_restarted = "service_restarted"
    firewall_applied = "firewall_applied"
    session_started = "session_started"
    session_stopped = "session_stopped"
    pc_armed = "pc_armed"
    pc_disarmed = "pc_disarmed"
    drift_repaired = "drift_repaired"
    commit_refused = "commit_refused"
    commit_applied = "commit_applied"
    rollback = "rollback"
    preflight_passed = "preflight_passed"
    preflight_rejected = "preflight_rejected"
    plan_blocked = "plan_blocked"
    inventory_recorded = "inventory_recorded"
    firewall_dropped = "firewall_dropped"
    # Deployments (reconciler.deploy_shell): what the state machine decided, and history.
    batch_blocked = "batch_blocked"
    batch_armed = "batch_armed"
    batch_finished = "batch_finished"
    batch_disarmed = "batch_disarmed"
    session_requested = "session_requested"
    session_adopted = "session_adopted"
    wake_requested = "wake_requested"
    pc_woken = "pc_woken"
    pc_joined = "pc_joined"
    pc_imaging = "pc_imaging"
    pc_succeeded = "pc_succeeded"
    pc_failed = "pc_failed"
    pc_missed = "pc_missed"
    pc_held = "pc_held"
    report_ignored = "report_ignored"
    sighting_ignored = "sighting_ignored"
    deployment_recorded = "deployment_recorded"
    image_captured = "image_captured"
    # Written by the log itself about itself.
    torn_tail_recovered = "torn_tail_recovered"
    head_mismatch = "head_mismatch"


# Events the log writes about its own incidents; `verify` surfaces them as warnings.
INCIDENTS = frozenset({Event.torn_tail_recovered, Event.head_mismatch})


class Status(StrEnum):
    ok = "ok"
    failed = "failed"


@dataclass(frozen=True)
class Result:
    """How the action went; `message` says why when it failed (or what was noteworthy)."""

    status: Status
    message: str = ""

    @classmethod
    def success(cls, message: str = "") -> Result:
        return cls(Status.ok, message)

    @classmethod
    def failure(cls, message: str) -> Result:
        return cls(Status.failed, message)

    def to_json(self) -> dict[str, JSON]:
        return {"status": self.status.value, "message": self.message}


@dataclass(frozen=True)
class CommitInfo:
    """A site-repo commit as the audit names it.

    `author` and `committer` are "Name <email>"; `date` is the commit date in ISO 8601;
    `review` lists what the history shows of the review behind it (e.g. "merge request !12",
    "Reviewed-by: Ann <ann@example.org>"), empty when it shows none.
    """

    sha: str
    author: str
    committer: str
    date: str
    subject: str
    review: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JSON]:
        return {
            "sha": self.sha,
            "author": self.author,
            "committer": self.committer,
            "date": self.date,
            "subject": self.subject,
            "review": list(self.review),
        }

    @classmethod
    def from_json(cls, value: object) -> CommitInfo:
        if not isinstance(value, dict) or set(value) != _COMMIT_KEYS:
            raise ValueError(f"commit must be an object with keys {sorted(_COMMIT_KEYS)}")
        texts = {k: value[k] for k in _COMMIT_KEYS - {"review"}}
        if not all(isinstance(v, str) for v in texts.values()):
            raise ValueError("commit fields must be strings")
        review = value["review"]
        if not isinstance(review, list) or not all(isinstance(r, str) for r in review):
            raise ValueError("commit.review must be a list of strings")
        return cls(review=tuple(review), **texts)


_COMMIT_KEYS = frozenset({"sha", "author", "committer", "date", "subject", "review"})
_LINE_KEYS = frozenset(
    {"seq", "time", "event", "target", "result", "details", "commit", "prev", "hash"}
)


@dataclass(frozen=True)
class Entry:
    """One decoded audit line. `event` is a plain string so a newer writer's events still read."""

    line: int
    seq: int
    time: datetime
    event: str
    target: str
    result: Result
    details: Mapping[str, Any]
    commit: CommitInfo | None
    prev: str
    hash: str
    raw: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        """The hash the next line's `prev` must carry."""
        return line_hash(self.raw)


# ---------------------------------------------------------------- format (pure)


def canonical(value: JSON) -> bytes:
    """Sorted keys, no spaces, UTF-8. Lone surrogates (undecodable file names) cannot be
    UTF-8, so such a value is written with \\u escapes instead; both forms read back to
    the same value and re-encode to the same bytes."""
    try:
        text = json.dumps(value, ensure_ascii=False, **_CANONICAL)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, **_CANONICAL).encode("ascii")


_CANONICAL: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), "allow_nan": False}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity (they have no canonical form), bounded nesting."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None


def line_hash(raw: bytes) -> str:
    """sha256 of a line's exact bytes (newline included): the next line's `prev`."""
    return hashlib.sha256(raw).hexdigest()


def _body_hash(record: Mapping[str, JSON]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def encode(
    *,
    seq: int,
    time: datetime,
    event: Event,
    target: str,
    result: Result,
    details: Mapping[str, JSON],
    commit: CommitInfo | None,
    prev: str,
) -> bytes:
    """The exact bytes of one audit line, newline included. Purely computational."""
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("audit times must carry an offset")
    record: dict[str, JSON] = {
        "seq": seq,
        "time": time.isoformat(timespec="milliseconds"),
        "event": Event(event).value,
        "target": target,
        "result": result.to_json(),
        "details": dict(details),
        "commit": commit.to_json() if commit else None,
        "prev": prev,
    }
    record["hash"] = _body_hash(record)
    return canonical(record) + b"\n"


def decode(raw: bytes, line: int) -> Entry:
    """Read one line (with or without its newline); ValueError says what is wrong."""
    obj = _parse(raw)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    missing = _LINE_KEYS - set(obj)
    if missing:
        raise ValueError(f"missing field(s) {', '.join(sorted(missing))}")
    seq, stamp, result = obj["seq"], obj["time"], obj["result"]
    if type(seq) is not int or seq < 1:
        raise ValueError(f"seq must be a positive integer, found {seq!r}")
    if not isinstance(stamp, str):
        raise ValueError("time must be a string")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(f"time is not ISO 8601: {stamp!r}") from None
    if when.utcoffset() is None:
        raise ValueError(f"time has no offset: {stamp!r}")
    for key in ("event", "target"):
        if not isinstance(obj[key], str):
            raise ValueError(f"{key} must be a string")
    if (
        not isinstance(result, dict)
        or set(result) != {"status", "message"}
        or result["status"] not in set(Status)
        or not isinstance(result["message"], str)
    ):
        raise ValueError('result must be {"status": "ok"|"failed", "message": TEXT}')
    if not isinstance(obj["details"], dict):
        raise ValueError("details must be an object")
    for key in ("prev", "hash"):
        if not isinstance(obj[key], str) or not _HEX64.fullmatch(obj[key]):
            raise ValueError(f"{key} must be 64 lowercase hex digits")
    return Entry(
        line=line,
        seq=seq,
        time=when,
        event=obj["event"],
        target=obj["target"],
        result=Result(Status(result["status"]), result["message"]),
        details=obj["details"],
        commit=None if obj["commit"] is None else CommitInfo.from_json(obj["commit"]),
        prev=obj["prev"],
        hash=obj["hash"],
        raw=raw,
    )


# ---------------------------------------------------------------- head record (pure)


@dataclass(frozen=True)
class Head:
    """The last line as a writer last left it: its seq and its `line_hash`."""

    seq: int
    sha256: str

    def to_bytes(self) -> bytes:
        return canonical({"seq": self.seq, "sha256": self.sha256}) + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Head:
        try:
            obj = _parse(data)
        except ValueError:
            raise ValueError("head record is not JSON") from None
        if (
            not isinstance(obj, dict)
            or set(obj) != {"seq", "sha256"}
            or type(obj["seq"]) is not int
            or obj["seq"] < 0
            or not isinstance(obj["sha256"], str)
            or not _HEX64.fullmatch(obj["sha256"])
        ):
            raise ValueError('head record must be {"seq": N, "sha256": HEX64}')
        return cls(obj["seq"], obj["sha256"])


@dataclass(frozen=True)
class Anchor:
    """A line hash kept off the server: line `seq` must still hash to `sha256`."""

    seq: int
    sha256: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        match = re.fullmatch(r"([1-9][0-9]*):([0-9a-f]{64})", text.strip().lower())
        if match is None:
            raise ValueError(f"anchor must be SEQ:SHA256 (e.g. 42:{'ab' * 32}), got {text!r}")
        return cls(int(match.group(1)), match.group(2))


# ---------------------------------------------------------------- verification (pure)


class Kind(StrEnum):
    """What kind of damage a finding points at."""

    malformed = "malformed"
    edited = "edited"
    chain_broken = "chain_broken"
    removed = "removed"
    inserted = "inserted"
    reordered = "reordered"
    torn_tail = "torn_tail"
    truncated = "truncated"
    head_missing = "head_missing"
    head_mismatch = "head_mismatch"
    anchor_mismatch = "anchor_mismatch"
    incident = "incident"


@dataclass(frozen=True, order=True)
class Finding:
    """One thing `verify` found; `line` is 1-based, 0 when it is about the whole file."""

    line: int
    kind: Kind
    message: str

    def text(self) -> str:
        where = f"line {self.line}" if self.line else "log"
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class Report:
    """What `verify` found. `last_seq:last_sha256` is the anchor to keep off the server."""

    lines: int
    last_seq: int
    last_sha256: str
    problems: tuple[Finding, ...]
    warnings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(digest: str) -> str:
    return digest[:12] + "…"


def _ranges(numbers: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9" (at most five ranges, then "...")."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts[:5]) + (", ..." if len(parts) > 5 else "")


def verify_lines(
    lines: Iterable[bytes], head: bytes | None, anchors: Sequence[Anchor] = ()
) -> Report:
    """Check a log's lines (as read, newline included) against its chain, its head record
    (`head` = the head file's bytes, None if absent) and anchors. Purely computational."""
    problems: list[Finding] = []
    warnings: list[Finding] = []
    wanted = {a.seq for a in anchors}
    head_value: Head | None = None
    if head is not None:
        try:
            head_value = Head.parse(head)
            wanted.add(head_value.seq)
        except ValueError as exc:
            problems.append(Finding(0, Kind.head_mismatch, f"{exc}: truncation is not checked"))
    found_hash: dict[int, tuple[int, str]] = {}  # seq -> (line, line_hash), first occurrence
    order: list[tuple[int, int | None]] = []  # (line, seq or None when unreadable)
    expected_prev, complete, last_sha = ZERO_HASH, 0, ZERO_HASH
    for number, raw in enumerate(lines, start=1):
        sha = line_hash(raw)
        if not raw.endswith(b"\n"):
            problems.append(
                Finding(
                    number,
                    Kind.torn_tail,
                    f"the last {len(raw)} bytes have no newline: a write was cut short; "
                    "the next writer moves them to a .torn file and records it",
                )
            )
            break
        complete, last_sha = number, sha
        try:
            entry = decode(raw, number)
        except ValueError as exc:
            problems.append(Finding(number, Kind.malformed, str(exc)))
            order.append((number, None))
            expected_prev = sha
            continue
        order.append((number, entry.seq))
        if entry.seq in wanted and entry.seq not in found_hash:
            found_hash[entry.seq] = (number, sha)
        record = _parse(raw)
        computed = _body_hash(record)
        if computed != entry.hash:
            problems.append(
                Finding(
                    number,
                    Kind.edited,
                    f"content changed after writing: stored hash {_short(entry.hash)}, "
                    f"content hashes to {_short(computed)}",
                )
            )
        elif canonical(record) + b"\n" != raw:
            problems.append(
                Finding(number, Kind.edited, "bytes changed after writing (not canonical JSON)")
            )
        if entry.prev != expected_prev:
            what = (
                "the first line's prev must be 64 zeros: lines before it were removed"
                if number == 1
                else (
                    f"prev {_short(entry.prev)} is not the hash of line {number - 1} "
                    f"({_short(expected_prev)}): a line before it was edited, removed, "
                    "inserted or moved"
                )
            )
            problems.append(Finding(number, Kind.chain_broken, what))
        if entry.event in INCIDENTS:
            note = entry.result.message or entry.event
            warnings.append(Finding(number, Kind.incident, f"recorded {entry.event}: {note}"))
        expected_prev = sha
    problems.extend(_sequence_findings(order))
    seqs = [s for _, s in order if s is not None]
    last_seq = max(seqs, default=0)
    problems.extend(
        _head_findings(
            head, head_value, last_seq=last_seq, lines=complete, found=found_hash, warnings=warnings
        )
    )
    for anchor in anchors:
        problems.extend(_anchor_findings(anchor, last_seq, found_hash))
    return Report(complete, last_seq, last_sha, tuple(sorted(problems)), tuple(warnings))


def _sequence_findings(order: Sequence[tuple[int, int | None]]) -> Iterator[Finding]:
    """Name removed, inserted and reordered lines from the seq numbers alone."""
    lines_of: dict[int, list[int]] = {}
    for line, seq in order:
        if seq is not None:
            lines_of.setdefault(seq, []).append(line)
    present = sorted(lines_of)
    before: int | None = 0  # seq of the previous readable line; None after an unreadable one
    for line, seq in order:
        if seq is None:
            before = None
            continue
        if before is not None and seq != before + 1:
            head = f"seq expected {before + 1}, found {seq}"
            if seq > before + 1:
                lo, hi = bisect.bisect_right(present, before), bisect.bisect_left(present, seq)
                elsewhere = present[lo:hi]
                absent = seq - before - 1 - len(elsewhere)
                if absent:
                    # islice: a forged seq of 10**12 must not make us count to it.
                    gaps = list(
                        islice((s for s in range(before + 1, seq) if s not in lines_of), 5000)
                    )
                    more = ", ..." if absent > len(gaps) else ""
                    yield Finding(
                        line, Kind.removed, f"{head}: seq {_ranges(gaps)}{more} missing (removed)"
                    )
                if elsewhere:
                    where = ", ".join(f"{s} at line {lines_of[s][0]}" for s in elsewhere[:5])
                    yield Finding(line, Kind.reordered, f"{head}: seq {where} (moved)")
            else:
                others = [other for other in lines_of[seq] if other != line]
                if others:
                    yield Finding(
                        line,
                        Kind.inserted,
                        f"{head}: seq {seq} is also line {others[0]}: a line was inserted "
                        "or copied",
                    )
                else:
                    yield Finding(line, Kind.reordered, f"{head}: out of order (moved)")
        before = seq


def _head_findings(
    raw_head: bytes | None,
    head: Head | None,
    *,
    last_seq: int,
    lines: int,
    found: Mapping[int, tuple[int, str]],
    warnings: list[Finding],
) -> Iterator[Finding]:
    if raw_head is None:
        if lines:
            yield Finding(0, Kind.head_missing, "no head record: a cut-off tail would go unseen")
        return
    if head is None:
        return  # unreadable: already reported
    if head.seq > last_seq:
        yield Finding(
            0,
            Kind.truncated,
            f"the head record says the log reached seq {head.seq}, the file ends at seq "
            f"{last_seq}: {head.seq - last_seq} line(s) missing at the end",
        )
    elif head.seq not in found and head.seq != 0:
        yield Finding(0, Kind.head_mismatch, f"no line has the head record's seq {head.seq}")
    else:
        line, sha = found.get(head.seq, (0, ZERO_HASH))
        if sha != head.sha256:
            yield Finding(
                line,
                Kind.head_mismatch,
                f"seq {head.seq} hashes to {_short(sha)}, the head record says "
                f"{_short(head.sha256)}: this line was edited or the tail re-chained",
            )
        elif head.seq < last_seq:
            warnings.append(
                Finding(
                    0,
                    Kind.head_mismatch,
                    f"head record lags at seq {head.seq} of {last_seq} (a writer stopped "
                    "between its append and the head update)",
                )
            )


def _anchor_findings(
    anchor: Anchor, last_seq: int, found: Mapping[int, tuple[int, str]]
) -> Iterator[Finding]:
    if anchor.seq > last_seq:
        yield Finding(
            0,
            Kind.truncated,
            f"anchor {anchor.seq}:{_short(anchor.sha256)} is past the end (seq {last_seq})",
        )
    elif anchor.seq not in found:
        yield Finding(0, Kind.anchor_mismatch, f"no line has the anchor's seq {anchor.seq}")
    elif found[anchor.seq][1] != anchor.sha256:
        line, sha = found[anchor.seq]
        yield Finding(
            line,
            Kind.anchor_mismatch,
            f"seq {anchor.seq} hashes to {_short(sha)}, the anchor says "
            f"{_short(anchor.sha256)}: the log was rewritten up to here",
        )


# ---------------------------------------------------------------- selection (pure)

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an age (90s, 15m, 2h, 3d, 1w), a date (midnight), or an ISO 8601 time.
    A time without an offset is read in `now`'s offset. Purely computational."""
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        return now - timedelta(**{_UNIT[age.group(2)]: int(age.group(1))})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use an age (90s, 15m, 2h, 3d, 1w), a date "
            "(2024-05-01) or an ISO 8601 time (2024-05-01T08:00:00+02:00)"
        ) from None
    return when if when.utcoffset() is not None else when.replace(tzinfo=now.tzinfo)


_SHA_PREFIX = re.compile(r"[0-9a-f]{4,64}")


class UnknownCommit(LookupError):
    """No audit entry names a commit with this prefix."""


class AmbiguousCommit(LookupError):
    """Several commits in the log share this prefix."""


def resolve_commit(entries: Iterable[Entry], prefix: str) -> str:
    """The one full commit SHA in the log that starts with `prefix`.

    ValueError for a prefix that is not 4-64 hex digits; UnknownCommit or AmbiguousCommit
    when none or several commits match. Purely computational."""
    wanted = prefix.strip().lower()
    if not _SHA_PREFIX.fullmatch(wanted):
        raise ValueError(
            f"{prefix!r} is not a commit SHA or prefix (4-64 hex digits); the audit log "
            "knows commits only by SHA, not by names like HEAD or a branch "
            "(`git rev-parse NAME` in the site repo gives the SHA)"
        )
    shas = sorted({e.commit.sha for e in entries if e.commit and e.commit.sha.startswith(wanted)})
    if not shas:
        raise UnknownCommit(f"no audit entry names a commit starting with {wanted}")
    if len(shas) > 1:
        raise AmbiguousCommit(f"{wanted} is ambiguous: {', '.join(s[:12] for s in shas)}")
    return shas[0]


def select(
    entries: Iterable[Entry], *, commit: str | None = None, since: datetime | None = None
) -> list[Entry]:
    """Entries of one commit (full SHA) and/or at or after a time, in log order."""
    return [
        e
        for e in entries
        if (commit is None or (e.commit is not None and e.commit.sha == commit))
        and (since is None or e.time >= since)
    ]


# ---------------------------------------------------------------- shell: paths and reading


def log_path(root: str | os.PathLike[str] = "/", layout: Layout | None = None) -> Path:
    return Path(root) / (layout or Layout()).state_dir.lstrip("/") / LOG_NAME


def head_path(root: str | os.PathLike[str] = "/", layout: Layout | None = None) -> Path:
    return Path(root) / (layout or Layout()).state_dir.lstrip("/") / HEAD_NAME


class AuditLockTimeout(TimeoutError):
    """Another writer held the log longer than allowed."""


def _lock(fd: int, mode: int, deadline: float, path: Path) -> None:
    # Polling with a deadline rather than a blocking flock: a stuck writer must not hang
    # every other command forever.
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if _time.monotonic() >= deadline:
                raise AuditLockTimeout(f"{path} stayed locked too long") from None
            _time.sleep(0.002)


@contextmanager
def _turn(log: Path, deadline: float) -> Iterator[None]:
    """Wait at a gate before waiting for the log's lock, and hold it only until then.

    Without it a writer doing a burst of appends re-takes the lock microseconds after
    releasing it, and a polling waiter almost never finds it free (measured: two writers ran
    strictly one after the other). Whoever holds the gate is next, so turns alternate."""
    gate = log.with_name(f"{log.name}.gate")
    try:
        fd = os.open(gate, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    except OSError:  # e.g. a reader without write access: no fairness, still correct
        yield
        return
    try:
        _lock(fd, fcntl.LOCK_EX, deadline, gate)
        yield
    finally:
        os.close(fd)  # releases the gate


@contextmanager
def _shared(path: Path, timeout: float) -> Iterator[int | None]:
    """The log opened for reading under a shared lock (no half-written line seen), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield None
        return
    try:
        deadline = _time.monotonic() + timeout
        with _turn(path, deadline):
            _lock(fd, fcntl.LOCK_SH, deadline, path)
        yield fd
    finally:
        os.close(fd)


def _lines(fd: int) -> Iterator[bytes]:
    """The file's lines, newline kept; the last one may lack it (torn)."""
    offset, parts = 0, []
    while chunk := os.pread(fd, _CHUNK, offset):
        offset += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start) + 1) > 0:
            parts.append(chunk[start:end])
            yield b"".join(parts)
            parts, start = [], end
        parts.append(chunk[start:])
    if rest := b"".join(parts):
        yield rest


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def verify(
    log: Path, head: Path, anchors: Sequence[Anchor] = (), *, lock_timeout: float = 10.0
) -> Report:
    """Check the log file against its chain, its head record and the anchors given."""
    with _shared(log, lock_timeout) as fd:
        # Read the head under the same lock: writers update it while they hold the log.
        head_bytes = _read_optional(head)
        return verify_lines(_lines(fd) if fd is not None else (), head_bytes, anchors)


def read(log: Path, *, lock_timeout: float = 10.0) -> tuple[list[Entry], list[Finding]]:
    """Every readable entry in order, and what could not be read (for a note to the user)."""
    entries: list[Entry] = []
    skipped: list[Finding] = []
    with _shared(log, lock_timeout) as fd:
        for number, raw in enumerate(_lines(fd) if fd is not None else (), start=1):
            if not raw.endswith(b"\n"):
                skipped.append(Finding(number, Kind.torn_tail, "cut-short last line skipped"))
                continue
            try:
                entries.append(decode(raw, number))
            except ValueError as exc:
                skipped.append(Finding(number, Kind.malformed, str(exc)))
    return entries, skipped


# ---------------------------------------------------------------- shell: writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p, making each new directory's entry durable in its parent."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir(mode=0o750)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # pragma: no cover - regular files report an error instead
            raise OSError(errno.EIO, "write returned 0")
        view = view[written:]


@dataclass(frozen=True)
class _Seen:
    """The file as this writer last saw it under the lock: if it still matches, no re-read."""

    ino: int
    size: int
    mtime_ns: int
    seq: int
    sha256: str


@dataclass(frozen=True)
class _Tail:
    last: bytes | None  # last complete line, newline included
    torn: bytes  # bytes after the last newline
    torn_at: int  # their offset


def _read_tail(fd: int, size: int) -> _Tail:
    start, buf, newlines = size, b"", 0
    while start > 0 and newlines < 2:  # two newlines bound the last complete line
        n = min(_CHUNK, start)
        start -= n
        chunk = os.pread(fd, n, start)
        newlines += chunk.count(b"\n")
        buf = chunk + buf
    body_end = buf.rfind(b"\n") + 1
    begin = buf.rfind(b"\n", 0, body_end - 1) + 1 if body_end else 0
    return _Tail(buf[begin:body_end] or None, buf[body_end:], start + body_end)


class AuditLog:
    """The writer. Use as a context manager; `append` returns once the line is on disk.

    Several AuditLog objects (in one or many processes) may append to the same file: each
    append takes the lock, catches up with what others wrote, then writes.
    """

    def __init__(self, log: Path, head: Path, clock: Clock, *, lock_timeout: float = 10.0) -> None:
        self.log = log
        self.head = head
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._fd: int | None = None
        self._seen: _Seen | None = None

    @classmethod
    def at_root(
        cls,
        root: str | os.PathLike[str],
        clock: Clock,
        *,
        layout: Layout | None = None,
        lock_timeout: float = 10.0,
    ) -> AuditLog:
        return cls(
            log_path(root, layout), head_path(root, layout), clock, lock_timeout=lock_timeout
        )

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the log if needed, recover a torn tail and check the head record now,
        rather than at the first action."""
        with self._locked():
            self._catch_up(force=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._seen = None, None

    def append(
        self,
        event: Event,
        target: str,
        result: Result,
        *,
        details: Mapping[str, JSON] | None = None,
        commit: CommitInfo | None = None,
    ) -> Entry:
        """Write one line and make it durable before returning it."""
        with self._locked():
            self._catch_up()
            return self._write(event, target, result, details or {}, commit)

    # -- internals; all run under the lock

    def _open_fd(self) -> int:
        if self._fd is None:
            _make_dirs(self.log.parent)
            flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                self._fd = os.open(self.log, flags | os.O_CREAT | os.O_EXCL, 0o640)
                _fsync_dir(self.log.parent)  # the new name must survive a crash too
            except FileExistsError:
                self._fd = os.open(self.log, flags)
            self._seen = None
        return self._fd

    @contextmanager
    def _locked(self) -> Iterator[int]:
        deadline = _time.monotonic() + self._lock_timeout
        while True:
            fd = self._open_fd()
            with _turn(self.log, deadline):
                _lock(fd, fcntl.LOCK_EX, deadline, self.log)
            if self._still_the_log(fd):
                break
            # Replaced or removed while we waited (an editor's save, a `mv`): our lock and
            # descriptor belong to a file nobody reads any more. Start again on the new one.
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.close()
            if _time.monotonic() >= deadline:
                raise AuditLockTimeout(f"{self.log} kept being replaced")
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _still_the_log(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.log, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    def _catch_up(self, *, force: bool = False) -> None:
        """Learn the last seq and hash; recover a torn tail; check the head record."""
        assert self._fd is not None
        st = os.fstat(self._fd)
        seen = self._seen
        if (
            not force
            and seen is not None
            and (seen.ino, seen.size, seen.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
        ):
            return
        tail = _read_tail(self._fd, st.st_size)
        seq, sha = self._last_of(tail.last)
        if tail.torn:
            self._set_aside(tail, seq + 1)
            st = os.fstat(self._fd)
        self._seen = _Seen(st.st_ino, st.st_size, st.st_mtime_ns, seq, sha)
        head_trouble = self._head_trouble(seq, sha)
        torn_files = sorted(self.log.parent.glob(f"{self.log.name}.torn-{seq + 1}-*"))
        if torn_files:
            self._record_torn(torn_files)
        if head_trouble is not None:
            self._record_head_mismatch(head_trouble, seq, sha)

    def _last_of(self, last: bytes | None) -> tuple[int, str]:
        if last is None:
            return 0, ZERO_HASH
        try:
            seq = decode(last, 0).seq
        except ValueError:
            # Damaged by hand: carry on numbering by position; verify will say what is wrong.
            assert self._fd is not None
            seq = sum(1 for raw in _lines(self._fd) if raw.endswith(b"\n"))
        return seq, line_hash(last)

    def _set_aside(self, tail: _Tail, seq: int) -> None:
        """Keep a cut-short line's bytes beside the log, then cut them from the log.

        The name holds their hash, so redoing this after a crash finds the same file; a
        file for `seq` that the chain does not yet mention is recorded by `_catch_up`."""
        assert self._fd is not None
        digest = hashlib.sha256(tail.torn).hexdigest()
        aside = self.log.with_name(f"{self.log.name}.torn-{seq}-{digest[:16]}")
        if not aside.exists():
            _write_atomically(aside, tail.torn)
        os.ftruncate(self._fd, tail.torn_at)
        os.fsync(self._fd)
        logger.bind(target=str(self.log), commit=None).warning(
            "audit log: moved a cut-short line ({} bytes) to {}", len(tail.torn), aside.name
        )

    def _head_trouble(self, seq: int, sha: str) -> dict[str, JSON] | None:
        """None when the head record witnessed this file (all of it, or a prefix of it)."""
        raw = _read_optional(self.head)
        if raw is None:
            return None if seq == 0 else {"head": None}
        try:
            head = Head.parse(raw)
        except ValueError:
            return {"head": "unreadable"}
        if head.seq == seq and head.sha256 == sha:
            return None
        if head.seq < seq and self._hash_of_seq(head.seq) == head.sha256:
            return None  # a writer died between its append and its head update
        return {"head": {"seq": head.seq, "sha256": head.sha256}}

    def _hash_of_seq(self, seq: int) -> str | None:
        if seq == 0:
            return ZERO_HASH
        assert self._fd is not None
        for raw in _lines(self._fd):
            try:
                if decode(raw, 0).seq == seq:
                    return line_hash(raw)
            except ValueError:
                continue
        return None

    def _record_torn(self, files: Sequence[Path]) -> None:
        kept: list[JSON] = []
        for path in files:
            data = path.read_bytes()
            kept.append(
                {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
        self._write(
            Event.torn_tail_recovered,
            self.log.name,
            Result.success(
                f"a line cut short by a crash was kept in {', '.join(p.name for p in files)}"
            ),
            {"files": kept},
            None,
        )

    def _record_head_mismatch(self, trouble: dict[str, JSON], seq: int, sha: str) -> None:
        logger.bind(target=str(self.log), commit=None).warning(
            "audit log disagrees with its head record {}; recorded and re-anchored", trouble
        )
        self._write(
            Event.head_mismatch,
            self.log.name,
            Result.failure(
                "the log does not contain what its head record last saw: the tail was cut "
                "off or rewritten, the file replaced, or the head removed"
            ),
            {**trouble, "log": {"seq": seq, "sha256": sha}},
            None,
        )

    def _write(
        self,
        event: Event,
        target: str,
        result: Result,
        details: Mapping[str, JSON],
        commit: CommitInfo | None,
    ) -> Entry:
        assert self._fd is not None and self._seen is not None
        seen = self._seen
        raw = encode(
            seq=seen.seq + 1,
            time=self._clock.now(),
            event=event,
            target=target,
            result=result,
            details=details,
            commit=commit,
            prev=seen.sha256,
        )
        self._seen = None  # if the write fails half-way, the next append re-reads the tail
        _write_all(self._fd, raw)
        os.fsync(self._fd)
        st = os.fstat(self._fd)
        sha = line_hash(raw)
        self._seen = _Seen(st.st_ino, st.st_size, st.st_mtime_ns, seen.seq + 1, sha)
        _write_atomically(self.head, Head(seen.seq + 1, sha).to_bytes())
        return decode(raw, seen.seq + 1)
