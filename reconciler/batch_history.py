"""Deployment history: one JSON document per batch request, kept when the batch ends.

Written under the images root's `logs/` directory (where Clonezilla SE keeps its own
records), one file per request (`deployment-NAME@CONTENT.json`), and rewritten when a late
job report changes an ended batch's outcome. It says what happened to each PC (phase,
reason, attempts, the job report, timings) and what the session streamed (per partition:
bytes, receivers, exit status).

A PC's `bytes` is what the multicast session streamed to it: the partitions whose sender
saw the PC's address connect, or every partition for a PC that reported success by
multicast; None when no stream reached it (unicast PCs read over NFS, which nothing here
counts).

Purely computational.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.deployment_state import (
    BatchPhase,
    BatchRecord,
    PcPhase,
    PcRecord,
    SessionPhase,
)
from reconciler.desired import Mode

VERSION = 1
LOGS_DIR = "logs"
PREFIX = "deployment-"


@dataclass(frozen=True)
class PartitionUsage:
    """One udp-sender run, as the session feeder's events tell it."""

    partition: str
    portbase: int
    bytes: int = 0
    started_at: str = ""
    ended_at: str = ""
    returncode: int | None = None
    transferred: bool = False
    receivers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """What one session streamed (empty for unicast and captures: no sender)."""

    partitions: tuple[PartitionUsage, ...] = ()
    exit_code: int | None = None


def path(images_root: str, record: BatchRecord) -> str:
    return posixpath.join(images_root, LOGS_DIR, f"{PREFIX}{record.key}.json")


def ended(record: BatchRecord) -> bool:
    """Over for good: finished or disarmed, and its sender (if any) gone, so that the
    history is written once, with the session's end in it."""
    if record.phase not in (BatchPhase.finished, BatchPhase.disarmed):
        return False
    return record.session is None or record.session.phase is SessionPhase.over


def document(
    record: BatchRecord, usage: Usage, *, commit: str, addresses: Mapping[str, str]
) -> bytes:
    """The history document of one request. `addresses`: hostname -> fixed IP, to match
    the sender's receivers to PCs."""
    session = record.session
    streamed = sum(p.bytes for p in usage.partitions)
    body: dict[str, Any] = {
        "version": VERSION,
        "batch": record.name,
        "content": record.content,
        "commit": commit,
        "action": record.action.value,
        "mode": record.mode.value,
        "image": record.image,
        "window": {"start": _iso(record.window_start), "end": _iso(record.window_end)},
        "phase": record.phase.value,
        "outcome": record.outcome.value if record.outcome else None,
        "reason": record.reason,
        "withdrawn": record.withdrawn,
        "session": None,
        "pcs": {
            host: _pc(pc, usage, streamed, addresses.get(host, ""))
            for host, pc in sorted(record.pcs.items())
        },
        "tally": _tally(record.pcs),
    }
    if session is not None:
        body["session"] = {
            "phase": session.phase.value,
            "summary": session.summary,
            "pid": session.pid,
            "requested_at": _iso(session.requested_at),
            "started_at": _iso(session.started_at),
            "ended_at": _iso(session.ended_at),
            "reason": session.reason,
            "returncode": session.returncode,
            "bytes": streamed,
            "partitions": [
                {
                    "partition": p.partition,
                    "portbase": p.portbase,
                    "bytes": p.bytes,
                    "started_at": p.started_at,
                    "ended_at": p.ended_at,
                    "returncode": p.returncode,
                    "transferred": p.transferred,
                    "receivers": sorted(set(p.receivers)),
                }
                for p in usage.partitions
            ],
        }
    return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def _pc(pc: PcRecord, usage: Usage, streamed: int, address: str) -> dict[str, Any]:
    seen = sum(p.bytes for p in usage.partitions if address and address in p.receivers)
    if not seen and pc.phase is PcPhase.succeeded and pc.mode is Mode.multicast:
        seen = streamed
    seconds = None
    if pc.booted_at is not None and pc.finished_at is not None:
        seconds = round((pc.finished_at - pc.booted_at).total_seconds(), 3)
    return {
        "phase": pc.phase.value,
        "mode": pc.mode.value,
        "attempt": pc.attempt,
        "reason": pc.reason,
        "reported": pc.reported.value or None,
        "report": pc.report,
        "first_attempt": pc.first_attempt,
        "flags": list(pc.flags),
        "armed_at": _iso(pc.armed_at),
        "booted_at": _iso(pc.booted_at),
        "finished_at": _iso(pc.finished_at),
        "seconds": seconds,
        "bytes": seen or None,
    }


def _tally(pcs: Mapping[str, PcRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pc in pcs.values():
        counts[pc.phase.value] = counts.get(pc.phase.value, 0) + 1
    return dict(sorted(counts.items()))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
