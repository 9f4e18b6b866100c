"""The deployments' memory: every request, how far each PC got, and each batch's session.

The controller keeps this across restarts (one JSON file, replaced atomically) and hands it
to `deployments.step`, which returns the next one. It is what makes "never twice for one
request" hold: a PC that was seen booting its restore entry, or that finished, is recorded
here and is never armed again for the same request.

A missing file is an empty state. An unreadable or unknown-version file is an error and
must never be taken for an empty state: that would forget who was imaged already.

Purely computational: values in, bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import AwareDatetime, ConfigDict, TypeAdapter, ValidationError

from reconciler.desired import Action, Mode, OnFailure

VERSION = 1
"""Bump when a saved state could be misread by the new code; `loads` refuses other versions."""

_STRICT: ConfigDict = ConfigDict(extra="forbid")


class BatchPhase(StrEnum):
    pending = "pending"
    """The window has not opened yet."""
    blocked = "blocked"
    """The window is open but something the batch needs is missing (see the reason)."""
    armed = "armed"
    """The window is open and the PCs' restore entries are out; nobody booted one yet."""
    running = "running"
    """At least one PC booted its entry (or joined the session)."""
    finished = "finished"
    """Every PC has an outcome and no session runs; `outcome` says how it went."""
    disarmed = "disarmed"
    """The window closed or the request was withdrawn: no entry, no session. Final."""


class Outcome(StrEnum):
    succeeded = "succeeded"
    partial = "partial"
    failed = "failed"


class PcPhase(StrEnum):
    waiting = "waiting"
    """Armed: the PC's restore entry is out."""
    joined = "joined"
    """Seen booting its restore entry (one-shot: the entry is already withdrawn)."""
    imaging = "imaging"
    """Seen receiving the multicast stream."""
    succeeded = "succeeded"
    failed = "failed"
    missed = "missed"

    @property
    def final(self) -> bool:
        return self in (PcPhase.succeeded, PcPhase.failed, PcPhase.missed)

    @property
    def booted(self) -> bool:
        """Seen running the job, so a job report is expected."""
        return self in (PcPhase.joined, PcPhase.imaging)


class Reported(StrEnum):
    """What the PC's own job report said about the current attempt."""

    none = ""
    succeeded = "succeeded"
    failed = "failed"
    unreadable = "unreadable"


class SessionPhase(StrEnum):
    requested = "requested"
    """A start command was handed out; its outcome is reported in the next step's facts."""
    running = "running"
    stopping = "stopping"
    """Stop requested; asked again on every step while the sender is seen alive."""
    over = "over"
    """Exited, stopped, failed to start or lost (`reason` says which). Never started again."""


@dataclass(frozen=True)
class PcRecord:
    """One PC's progress for one request."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    phase: PcPhase
    mode: Mode
    """How the current attempt restores (a retry is always unicast)."""
    attempt: int = 1
    """1, or 2 for the one unicast retry that `on_failure: retry-unicast` allows."""
    reason: str = ""
    """CamelCase reason of the last change, e.g. Booted, ReportedSuccess, WindowClosed."""
    armed_at: AwareDatetime | None = None
    """When the current attempt's entry went out; older sightings are not about it."""
    booted_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    reported: Reported = Reported.none
    report: str = ""
    """The job report's partitions and status, as a person reads them."""
    first_attempt: str = ""
    """After a retry: how the first attempt ended (phase and reason)."""
    flags: tuple[str, ...] = ()
    """Things an operator should look at, e.g. RefetchedEntry."""
    entries: tuple[str, ...] = ()
    """The per-PC boot files of the current attempt. Kept after disarming, so that a late
    fetch of one is recognized as this PC booting the job again."""
    address: str = ""
    """The IPv4 address this PC was last seen with for this request (fetching its entry, or
    in its job report): how a receiver from a pool address is known to be this PC."""


@dataclass(frozen=True)
class SessionRecord:
    """The sender (native udpcast) or drbl-ocs run of one request."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    phase: SessionPhase
    requested_at: AwareDatetime
    pid: int | None = None
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    reason: str = ""
    returncode: int | None = None
    summary: str = ""
    """What was started, e.g. 'udp-sender on enp3s0, ports 2232-2235, waits for 20 PCs'."""


@dataclass(frozen=True)
class BatchRecord:
    """One request batch: a batch name with one content hash, and its PCs' records."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str
    content: str
    """Hash of the batch's content and resolved window (see `deployments.request_hash`)."""
    phase: BatchPhase
    window_start: AwareDatetime
    window_end: AwareDatetime
    action: Action
    mode: Mode
    on_failure: OnFailure
    image: str
    reason: str = ""
    message: str = ""
    pcs: Mapping[str, PcRecord] = field(default_factory=dict)
    """By hostname, sorted."""
    session: SessionRecord | None = None
    outcome: Outcome | None = None
    withdrawn: bool = False
    """The merged desired state no longer asks for this request (removed or changed)."""

    @property
    def key(self) -> str:
        return request_key(self.name, self.content)


@dataclass(frozen=True)
class DeploymentState:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    version: int = VERSION
    batches: Mapping[str, BatchRecord] = field(default_factory=dict)
    """By request key (`name@content`), sorted."""


def request_key(name: str, content: str) -> str:
    return f"{name}@{content}"


class StateError(ValueError):
    """The saved state cannot be read; never treat it as empty."""


_ADAPTER: TypeAdapter[DeploymentState] = TypeAdapter(DeploymentState)


def dumps(state: DeploymentState) -> bytes:
    """Versioned JSON, byte-identical for equal states (keys in a fixed order)."""
    ordered = DeploymentState(
        version=state.version,
        batches={key: _sorted_pcs(state.batches[key]) for key in sorted(state.batches)},
    )
    return _ADAPTER.dump_json(ordered, indent=2) + b"\n"


def loads(data: bytes) -> DeploymentState:
    """The state saved by `dumps`; StateError when it is damaged or of another version."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateError(f"deployment state is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise StateError("deployment state must be a JSON object")
    version = raw.get("version")
    if version != VERSION:
        raise StateError(
            f"deployment state has version {version!r}; this reconciler reads version {VERSION}"
        )
    try:
        state = _ADAPTER.validate_python(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StateError(f"deployment state is damaged at {where}: {first['msg']}") from None
    for key, record in state.batches.items():
        if key != record.key:
            raise StateError(f"deployment state lists {record.key} under the key {key}")
    return state


def _sorted_pcs(record: BatchRecord) -> BatchRecord:
    return replace(record, pcs={name: record.pcs[name] for name in sorted(record.pcs)})


def utc(moment: datetime) -> datetime:
    """The same instant in UTC. Compare and subtract only these: Python compares two times
    of one ZoneInfo by wall clock, which is wrong across a DST change."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"times must carry an offset, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)
