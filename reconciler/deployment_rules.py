"""The rules of deployments: what a request is, what blocks a batch, which boot job and
session a batch gets, and when a PC may have its one retry. Purely computational.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address

from reconciler import fields
from reconciler.checks import Targets, window_bounds
from reconciler.deployment_facts import Backend, DeploymentFacts, Requirement
from reconciler.deployment_session import (
    MAX_PARTITIONS,
    SessionSpec,
    chunk_problem,
    drbl_ocs_argv,
    multicast_runs,
)
from reconciler.deployment_state import (
    BatchPhase,
    BatchRecord,
    Outcome,
    PcPhase,
    PcRecord,
    Reported,
    SessionPhase,
    request_key,
    utc,
)
from reconciler.desired import Action, Batch, Desired, Mode, OnFailure, Pc
from reconciler.render import pxe


def request_hash(desired: Desired, batch: Batch) -> str:
    """The content part of a request: the batch as written (defaults left out, so a new
    optional field or spelling out a default changes nothing; target lists as sets) plus
    its window resolved to UTC (so a site time zone change is a new request too)."""
    content = batch.model_dump(mode="json", exclude_defaults=True)
    targets = content.get("targets", {})
    for name in ("departments", "pcs"):
        if name in targets:
            targets[name] = sorted(set(targets[name]))
    bounds = window_bounds(desired, batch)
    content["resolved_window"] = [utc(b).isoformat() for b in bounds] if bounds else None
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"kitting-request-v1\0" + blob).hexdigest()[:16]


@dataclass(frozen=True)
class Request:
    key: str
    batch: Batch
    start: datetime
    end: datetime
    targets: dict[str, Pc]

    def open_at(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def requests(desired: Desired) -> dict[str, Request]:
    index = Targets(desired.pcs())
    found = {}
    for name in sorted(desired.batches):
        batch = desired.batches[name]
        bounds = window_bounds(desired, batch)
        if bounds is None or utc(bounds[1]) <= utc(bounds[0]):
            continue  # validation refuses these; nothing can be armed for them
        key = request_key(name, request_hash(desired, batch))
        targets = {pc.hostname: pc for pc in index.of(batch)}
        found[key] = Request(key, batch, utc(bounds[0]), utc(bounds[1]), targets)
    return found


def new_record(request: Request) -> BatchRecord:
    batch = request.batch
    return BatchRecord(
        name=batch.name,
        content=request.key.split("@", 1)[1],
        phase=BatchPhase.pending,
        window_start=request.start,
        window_end=request.end,
        action=batch.action,
        mode=batch.mode,
        on_failure=batch.on_failure,
        image=batch.image,
    )


def awaits_report(pc: PcRecord) -> bool:
    """Armed or seen running the job, and no report yet (a late one still counts)."""
    if pc.reported is not Reported.none:
        return False
    if pc.phase is PcPhase.waiting or pc.phase.booted:
        return True
    return pc.phase is PcPhase.missed and pc.booted_at is not None


def report_rank(pc: PcRecord) -> tuple[bool, datetime]:
    moment = pc.booted_at or pc.armed_at
    return (pc.booted_at is not None, moment or datetime.min.replace(tzinfo=UTC))


def retries(batch: Batch) -> bool:
    return batch.on_failure is OnFailure.retry_unicast and batch.action is Action.restore


def retry_allowed(pc: PcRecord) -> bool:
    """The one unicast retry: only for a first attempt that provably did not succeed: the
    PC reported a failed partition, or it never booted the job (the multicast session
    ended without it). A PC that booted and stayed silent may have succeeded: never."""
    if pc.attempt != 1:
        return False
    if pc.phase is PcPhase.failed and pc.reported is Reported.failed:
        return True
    return pc.phase is PcPhase.missed and pc.booted_at is None and pc.reason == "SessionEnded"


def receiver_host(
    ip: str,
    mac: str,
    by_mac: Mapping[str, str],
    by_ip: Mapping[IPv4Address, str],
    learned: Mapping[str, str],
) -> str | None:
    """Which PC a udp-sender receiver is. By its MAC first (the shell looks the IP up in
    dnsmasq's leases: whoever holds the address now), else by a fixed IP, else by the
    address the PC was seen with for this request (fetching its entry). A MAC that is no
    PC's is no PC, whatever the IP says: the address belongs to someone else now."""
    if mac:
        try:
            return by_mac.get(fields.mac(mac))
        except ValueError:
            pass
    try:
        address = IPv4Address(ip)
    except ValueError:
        return None
    return by_ip.get(address) or learned.get(str(address))


def needs_session(batch: Batch, backend: Backend) -> bool:
    if batch.action is not Action.restore:
        return False
    return backend is Backend.drbl or batch.mode is Mode.multicast


def session_over(record: BatchRecord) -> bool:
    return record.session is not None and record.session.phase is SessionPhase.over


def batch_outcome(pcs: Mapping[str, PcRecord]) -> Outcome:
    phases = [pc.phase for pc in pcs.values()]
    if phases and all(phase is PcPhase.succeeded for phase in phases):
        return Outcome.succeeded
    if PcPhase.succeeded in phases:
        return Outcome.partial
    return Outcome.failed


def pc_tally(pcs: Mapping[str, PcRecord]) -> str:
    counts: dict[str, int] = {}
    for pc in pcs.values():
        counts[pc.phase.value] = counts.get(pc.phase.value, 0) + 1
    return ", ".join(f"{counts[name]} {name}" for name in sorted(counts)) or "no PCs"


def target_disk(desired: Desired, batch: Batch, pc: Pc) -> str | None:
    if pc.disk is not None:
        return pc.disk.device
    image = desired.images.get(batch.image)
    return image.disk.device if image is not None else None


def portbase(desired: Desired, batch: Batch) -> int:
    return batch.multicast.port or desired.site.multicast.port


def boot_job(desired: Desired, batch: Batch, pc: Pc, mode: Mode) -> pxe.BootJob:
    disk = target_disk(desired, batch, pc)
    if disk is None:
        raise ValueError(f"no disk is known for {pc.hostname}")
    return pxe.BootJob(
        action=batch.action,
        mode=mode,
        image=batch.image,
        disk=disk,
        server=desired.site.server.address,
        mcast_port=portbase(desired, batch),
        after=batch.after_imaging,
    )


def requirements(batch: Batch, backend: Backend) -> list[Requirement]:
    needs = [Requirement.clonezilla_live, Requirement.nfs_export]
    if backend is Backend.drbl and batch.action is Action.restore:
        needs.append(Requirement.drbl_ocs)
    else:
        needs.append(Requirement.report_listener)
        if batch.action is Action.restore and batch.mode is Mode.multicast:
            needs.append(Requirement.udp_sender)
    return needs


def blocker(
    desired: Desired, request: Request, facts: DeploymentFacts, backend: Backend
) -> tuple[str, str] | None:
    """Why this batch cannot be armed now (reason, message), or None."""
    batch = request.batch
    if not request.targets:
        return "NoTargets", "the batch targets no PC"
    missing = [
        f"{need.value}: {facts.missing[need]}"
        for need in requirements(batch, backend)
        if need in facts.missing
    ]
    if missing:
        return "PrerequisiteMissing", "; ".join(missing)
    image = facts.images.get(batch.image)
    if batch.action is Action.capture:
        if image is not None and not batch.overwrite:
            return (
                "ImageExists",
                f"image {batch.image} exists and the batch does not say overwrite: true",
            )
    else:
        if batch.image not in desired.images:
            return "ImageUndefined", f"image {batch.image} is not defined in the site repo"
        if image is None:
            return "ImageMissing", f"image {batch.image} is not in {desired.site.images_root}"
        if image.problem:
            return image.reason or "ImageUnusable", image.problem
        if batch.mode is Mode.multicast or backend is Backend.drbl:
            if len(image.partitions) > MAX_PARTITIONS:
                return (
                    "TooManyPartitions",
                    f"image {batch.image} has {len(image.partitions)} partitions; a multicast "
                    f"session serves at most {MAX_PARTITIONS}",
                )
            problem = chunk_problem(desired.site.images_root, batch.image, image.partitions)
            if problem:
                return "ImageIncomplete", problem
    for host, pc in request.targets.items():
        try:
            job = boot_job(desired, batch, pc, batch.mode)
            pxe.kernel_options(job, desired.site)
        except ValueError as error:
            return "BootEntryInvalid", f"{host}: {error}"
    if backend is Backend.drbl and batch.action is Action.restore:
        without = sorted(host for host, pc in request.targets.items() if pc.ip is None)
        if without:
            return (
                "DrblNeedsFixedIp",
                f"drbl-ocs -h names PCs by address; {', '.join(without[:5])} "
                f"{'have' if len(without) > 1 else 'has'} no fixed IP",
            )
        disks = {target_disk(desired, batch, pc) for pc in request.targets.values()}
        if len(disks) > 1:
            return (
                "DrblNeedsOneDisk",
                f"drbl-ocs restores one disk name; targets use {sorted(d or '?' for d in disks)}",
            )
        port = portbase(desired, batch)
        if batch.mode is Mode.multicast and facts.drbl_port not in (None, port):
            return (
                "DrblPortMismatch",
                f"drbl-ocs sends on port {facts.drbl_port} (drbl-ocs.conf MULTICAST_PORT); "
                f"the batch tells its PCs port {port}",
            )
    return None


def session_spec(
    desired: Desired, request: Request, facts: DeploymentFacts, now: datetime, backend: Backend
) -> SessionSpec:
    batch = request.batch
    site = desired.site
    count = len(request.targets)
    clients = min(batch.clients_to_wait or count, count)
    left = max(1, math.floor((request.end - now).total_seconds()))
    start_timeout = min(batch.start_timeout or left, left)
    port = portbase(desired, batch)
    group = batch.multicast.group or site.multicast.group
    if backend is Backend.drbl:
        disk = target_disk(desired, batch, next(iter(request.targets.values()))) or ""
        hosts = [pc.ip for pc in request.targets.values() if pc.ip is not None]
        argv = drbl_ocs_argv(
            mode=batch.mode,
            image=batch.image,
            disk=disk,
            after=batch.after_imaging,
            interface=site.server.interface,
            hosts=hosts,
            clients_to_wait=clients if batch.mode is Mode.multicast else None,
            max_wait=batch.max_wait if batch.mode is Mode.multicast else None,
        )
        summary = f"drbl-ocs {batch.mode.value} restore of {batch.image} to {len(hosts)} PCs"
        return SessionSpec(request.key, batch.name, drbl_argv=argv, summary=summary)
    partitions = facts.images[batch.image].partitions
    runs = multicast_runs(
        partitions,
        interface=site.server.interface,
        portbase=port,
        data_group=group,
        ttl=site.multicast.ttl,
        min_receivers=clients,
        max_wait=batch.max_wait,
        start_timeout=start_timeout,
        max_bitrate=batch.multicast.max_bitrate or site.multicast.max_bitrate,
    )
    last = port + 2 * len(runs) - 1
    summary = (
        f"udp-sender on {site.server.interface} to {group}, ports {port}-{last}, "
        f"{len(runs)} partitions, waits for {clients} PCs"
    )
    return SessionSpec(request.key, batch.name, runs=runs, summary=summary)
