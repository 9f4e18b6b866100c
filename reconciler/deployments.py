"""Deployments: a merged batch turns into PCs restored in its window, each at most once.

The controller calls `step(desired, state, facts, now)` on every pass. It returns the next
state (persist it before anything else), the per-PC PXE files to merge into the rendered set
(so plan/apply write and remove them atomically and the audit log records them), the session
commands to run, and events for the audit log. `preview(desired, state, at)` says what the
deployments would do at a given time, for `kitctl plan --at`.

The first safety property: a PC is imaged only when the merged desired state asks for it, and
never twice for one request. A request is (batch name, batch content hash, PC); the hash
covers the batch's content and its resolved window, so re-merging the same batch is the same
request and changing it is a new one. Arming is one-shot: the step that sees a PC fetch its
restore entry (or join the stream, or report) withdraws that PC's entry, and nothing re-arms
it for the same request, except the single unicast retry that `on_failure: retry-unicast`
states for a PC whose first attempt provably did not succeed. Outside an armed batch's window
no per-PC entry exists. docs/deployments.md explains the design.

Contract with the shell (the controller and the session runner):
- Persist the returned state before running its commands or applying its files.
- StartSession is handed out once per request; report its outcome in the next step's facts
  (SessionStarted with the PID, or SessionFailed). A start whose outcome never arrives is
  taken as lost and never retried. StopSession repeats while the sender is seen alive.
- WakePcs (a batch with `wake_on_lan`) is handed out once per request, in the step that
  arms it; sending it is best effort and reports nothing back.
- `facts.alive_pids` covers every PID in the state and in this step's SessionStarted facts.
- Observations are what happened since the last step; duplicates are harmless.
- Wake a step promptly when dnsmasq sends a per-PC file: the time until that step is the
  only time a PC could fetch its entry twice (and then it is flagged, not re-armed).

Module map: deployment_facts (inputs), deployment_rules (requests, blockers, jobs, sessions),
deployment_machine (the pass), deployment_state (what persists), deployment_session (command
lines), deployment_report (the job report line). Purely computational.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reconciler import deployment_rules as rules
from reconciler.checks import window_bounds
from reconciler.deployment_facts import (
    Backend,
    DeploymentFacts,
    ImageFacts,
    MenuFetched,
    Observation,
    PartitionStream,
    ReceiverJoined,
    ReportOrigin,
    ReportReceived,
    Requirement,
    SessionExited,
    SessionFailed,
    SessionStarted,
)
from reconciler.deployment_machine import (
    REFETCH_GRACE,
    RETENTION,
    Command,
    DeploymentEvent,
    EventKind,
    Pass,
    StartSession,
    Step,
    StopSession,
    WakePcs,
    earlier_boot,
)
from reconciler.deployment_rules import request_hash
from reconciler.deployment_state import (
    BatchPhase,
    BatchRecord,
    DeploymentState,
    PcPhase,
    PcRecord,
    utc,
)
from reconciler.desired import Batch, Desired, Mode, Pc

__all__ = [
    "REFETCH_GRACE",
    "RETENTION",
    "Backend",
    "Command",
    "DeploymentEvent",
    "DeploymentFacts",
    "DeploymentState",
    "EventKind",
    "ImageFacts",
    "MenuFetched",
    "Observation",
    "PartitionStream",
    "ReceiverJoined",
    "ReportOrigin",
    "ReportReceived",
    "Requirement",
    "SessionExited",
    "SessionFailed",
    "SessionStarted",
    "StartSession",
    "Step",
    "StopSession",
    "WakePcs",
    "preview",
    "request_hash",
    "step",
]


def step(
    desired: Desired,
    state: DeploymentState,
    facts: DeploymentFacts,
    now: datetime,
    *,
    backend: Backend = Backend.native,
) -> Step:
    """One pass of the deployments. Purely computational."""
    work = Pass(desired, state, facts, utc(now), backend)
    work.run()
    return work.result()


def preview(
    desired: Desired,
    state: DeploymentState,
    at: datetime,
    facts: DeploymentFacts | None = None,
    *,
    backend: Backend = Backend.native,
) -> list[str]:
    """What the deployments will do at `at`, if no PC boots or reports before then: which
    batches are armed and which PCs get which entry. Without facts, images and
    prerequisites are assumed ready (and the output says so). Purely computational."""
    moment = utc(at)
    lines = [f"Deployments at {at.isoformat()}:"]
    if facts is None:
        lines.append("  (assuming every image is complete and every prerequisite is there)")
    requests = rules.requests(desired)
    by_name = {request.batch.name: request for request in requests.values()}
    for name in sorted(desired.batches):
        request = by_name.get(name)
        if request is None:
            lines.append(f"  batch {name}: its window cannot be resolved; nothing is armed")
            continue
        record = state.batches.get(request.key)
        lines += _batch_lines(
            desired, record, request, moment, facts, backend=backend, state=state.batches
        )
    for key in sorted(state.batches):
        record = state.batches[key]
        if key not in requests and record.window_start <= moment < record.window_end:
            lines.append(
                f"  batch {record.name} (earlier content {record.content}): withdrawn; "
                "no entries, its session is stopped"
            )
    lines.append("  Every other PC boots its local disk.")
    return lines


def _batch_lines(
    desired: Desired,
    record: BatchRecord | None,
    request: rules.Request,
    moment: datetime,
    facts: DeploymentFacts | None,
    *,
    backend: Backend,
    state: Mapping[str, BatchRecord],
) -> list[str]:
    batch = request.batch
    bounds = window_bounds(desired, batch)
    assert bounds is not None  # rules.requests keeps only resolvable windows
    start, end = bounds
    what = f"{batch.action.value} {batch.image} by {batch.mode.value}"
    head = f"  batch {batch.name}"
    if moment < request.start:
        wake = "; its PCs are woken (Wake-on-LAN) then" if batch.wake_on_lan else ""
        return [f"{head}: pending ({what}); window opens {start.isoformat()}{wake}"]
    if moment >= request.end:
        outcome = record.outcome.value if record is not None and record.outcome else "no outcome"
        return [f"{head}: window closed {end.isoformat()}; disarmed ({outcome})"]
    if record is not None and (record.withdrawn or record.phase is BatchPhase.disarmed):
        return [f"{head}: this content was withdrawn earlier; it is not armed again"]
    if record is None or record.phase in (BatchPhase.pending, BatchPhase.blocked):
        found = rules.blocker(desired, request, facts, backend) if facts is not None else None
        if found is not None:
            return [f"{head}: blocked ({found[0]}: {found[1]}); no entries"]
    port = f", port {rules.portbase(desired, batch)}" if batch.mode is Mode.multicast else ""
    lines = [f"{head}: window open until {end.isoformat()}: {what}{port}"]
    over = record is not None and rules.session_over(record)
    for host, pc in request.targets.items():
        known = record.pcs.get(host) if record is not None else None
        earlier = earlier_boot(
            state, request.key, host, name=batch.name, action=batch.action, image=batch.image
        )
        if known is None and earlier is not None:
            line = f"local boot (ran this batch's job before it was edited: {earlier.phase.value})"
        else:
            line = _pc_line(desired, batch, pc, known, session_over=over)
        lines.append(f"    {host}: {line}")
    return lines


def _pc_line(
    desired: Desired, batch: Batch, pc: Pc, known: PcRecord | None, *, session_over: bool
) -> str:
    def entry(mode: Mode) -> str:
        job = rules.boot_job(desired, batch, pc, mode)
        return f"restore entry: {job.describe()} ({', '.join(pc.macs)})"

    if known is None:
        if batch.mode is Mode.multicast and session_over:
            if rules.retries(batch):
                return entry(Mode.unicast) + " [added after the multicast session]"
            return "local boot (added after the multicast session)"
        return entry(batch.mode)
    if known.phase is PcPhase.waiting:
        return entry(known.mode)
    if rules.retries(batch) and rules.retry_allowed(known):
        return entry(Mode.unicast) + f" [retry after {known.phase.value}: {known.reason}]"
    if known.phase.booted:
        since = known.booted_at.isoformat() if known.booted_at else "?"
        return f"local boot ({known.phase.value} since {since})"
    return f"local boot ({known.phase.value}: {known.reason})"
