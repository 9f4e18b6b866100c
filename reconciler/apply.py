"""Apply: carry out a Plan on the server, safely, and say what happened to each action.

Order of one apply:
1. a plan with conflicts is refused whole; an empty plan does nothing at all;
2. preflight: every file about to be written is checked by the program that will read it,
   on a temporary copy; one rejection and nothing is changed;
3. write-ahead intent: every path about to be written is recorded in the inventory as
   pending (new hash, and the hash it replaces) before the first file is touched, so a
   crash anywhere later leaves only files we recognise as ours (old or new content) and
   the next apply completes the job;
4. per service, in a fixed order: write its files atomically, remove its pruned files,
   then ask the service for the strongest effect the plan named (reload / restart / load
   the firewall); if that fails, put the previous content back (kept in memory from the
   facts), ask again, and report "rolled back"; then settle that service's inventory;
5. inventory-only records; the last applied commit.
Each result is logged (one line, commit and target bound) and handed to `on_result` before
the next action starts, so an audit log can make it durable first. If `on_result` raises,
the exception ends the apply right there: better to stop than to act unrecorded, and the
pending intents let the next apply finish the job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from loguru import logger

from reconciler import inventory as inventory_store
from reconciler.facts import Facts, FirewallReader
from reconciler.host import Host
from reconciler.inventory import ABSENT, Entry, FirewallRecord, Inventory, digest
from reconciler.layout import Layout
from reconciler.plan import (
    ApplyFirewall,
    DropFirewall,
    FirewallAction,
    Plan,
    RemoveFile,
    RestartService,
    ServiceAction,
    WriteFile,
    entry_for,
)
from reconciler.preflight import Outcome, Preflight
from reconciler.rendered import Rendered, Service
from reconciler.services import ServiceError, ServiceManager


class Status(StrEnum):
    ok = "ok"
    failed = "failed"
    rolled_back = "rolled-back"
    refused = "refused"


@dataclass(frozen=True)
class Result:
    action: str
    """write, remove, record, reload, restart, firewall, drop-firewall, preflight, plan."""
    target: str
    """A server path, a service name, or "firewall"."""
    status: Status
    reason: str
    """CamelCase condition, e.g. FileWritten, ReloadFailed, RolledBack, PreflightRejected."""
    message: str
    details: Mapping[str, str] = field(default_factory=dict)
    """For an audit trail: hash_before / hash_after / diff where they apply."""


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]
    inventory: Inventory

    @property
    def ok(self) -> bool:
        return all(r.status is Status.ok for r in self.results)

    @property
    def changed(self) -> bool:
        """Did the server end up different (rolled-back actions do not count)?"""
        return any(r.status is Status.ok and r.action != "preflight" for r in self.results)


OnResult = Callable[[Result], None]

# Files that no program watches (boot menus) first; then the services; the firewall after
# the services whose ports it opens; sshd last, so that if anything locks admins out it is
# the final step and every other change has already landed.
SERVICE_ORDER: tuple[Service | None, ...] = (
    None,
    Service.dnsmasq,
    Service.nfs_kernel,
    Service.nfs_ganesha,
    Service.nftables,
    Service.sshd,
)


@dataclass
class _Group:
    service: Service | None
    writes: list[WriteFile] = field(default_factory=list)
    removes: list[RemoveFile] = field(default_factory=list)
    service_action: ServiceAction | None = None
    firewall_action: FirewallAction | None = None


class _Applier:
    def __init__(
        self,
        facts: Facts,
        *,
        host: Host,
        services: ServiceManager,
        layout: Layout,
        firewall: FirewallReader | None,
        commit: str,
        on_result: OnResult | None,
    ):
        self.facts = facts
        self.host = host
        self.services = services
        self.layout = layout
        self.firewall = firewall
        self.commit = commit
        self.on_result = on_result
        self.results: list[Result] = []
        self.inventory = facts.inventory
        self.saved = inventory_store.to_json(facts.inventory)

    def emit(self, result: Result) -> None:
        log = logger.bind(commit=self.commit, target=result.target)
        level = "INFO" if result.status is Status.ok else "ERROR"
        words = f"{result.action} {result.target}: {result.status.value} {result.reason}"
        log.log(level, f"{words}: {result.message}")
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def save(self) -> None:
        encoded = inventory_store.to_json(self.inventory)
        if encoded != self.saved:
            inventory_store.save(self.host, self.layout, self.inventory)
            self.saved = encoded

    # ------------------------------------------------------------------ files

    def write(self, write: WriteFile) -> bool:
        artifact = write.artifact
        try:
            self.host.write_atomic(artifact.path, artifact.content, artifact.mode)
        except (OSError, ValueError) as error:
            self.emit(Result("write", write.path, Status.failed, "WriteFailed", str(error)))
            return False
        before = ABSENT if write.previous is None else digest(write.previous)
        details = {
            "hash_before": before,
            "hash_after": digest(artifact.content),
            "diff": write.diff,
        }
        reason = "DriftRepaired" if write.drift else "FileWritten"
        self.emit(Result("write", write.path, Status.ok, reason, write.reason, details))
        return True

    def remove(self, remove: RemoveFile) -> bool:
        try:
            self.host.remove(remove.path)
        except (OSError, ValueError) as error:
            self.emit(Result("remove", remove.path, Status.failed, "RemoveFailed", str(error)))
            return False
        details = {"hash_before": digest(remove.previous), "hash_after": ABSENT}
        self.emit(Result("remove", remove.path, Status.ok, "FileRemoved", remove.reason, details))
        return True

    def restore(self, writes: Sequence[WriteFile], removes: Sequence[RemoveFile]) -> bool:
        """Put back what the facts saw before this apply touched these files."""
        restored = True
        for write in reversed(writes):
            try:
                if write.previous is None:
                    self.host.remove(write.path)
                else:
                    mode = (
                        write.artifact.mode if write.previous_mode is None else write.previous_mode
                    )
                    self.host.write_atomic(write.path, write.previous, mode)
            except (OSError, ValueError) as error:
                self.emit(Result("write", write.path, Status.failed, "RollbackFailed", str(error)))
                restored = False
        for remove in reversed(removes):
            try:
                mode = 0o644 if remove.previous_mode is None else remove.previous_mode
                self.host.write_atomic(remove.path, remove.previous, mode)
            except (OSError, ValueError) as error:
                message = str(error)
                self.emit(Result("remove", remove.path, Status.failed, "RollbackFailed", message))
                restored = False
        return restored

    def forget_group(self, group: _Group) -> None:
        """Inventory entries of the group's paths go back to what they were."""
        old = self.facts.inventory.files
        paths = [w.path for w in group.writes] + [r.path for r in group.removes if not r.temp]
        self.inventory = self.inventory.with_entries({p: old.get(p) for p in paths})

    # ------------------------------------------------------------------ services

    def ask(self, group: _Group) -> tuple[str, str] | None:
        """Perform the group's service or firewall action; (action, target) it was, if any."""
        if group.firewall_action is not None:
            action = group.firewall_action
            if isinstance(action, ApplyFirewall):
                self.services.apply_firewall(action.path)
                return ("firewall", "firewall")
            self.services.drop_firewall()
            return ("drop-firewall", "firewall")
        if group.service_action is not None:
            service = group.service_action.service
            if isinstance(group.service_action, RestartService):
                self.services.restart(service)
                return ("restart", service.value)
            self.services.reload(service)
            return ("reload", service.value)
        return None

    def run_group(self, group: _Group) -> None:
        written: list[WriteFile] = []
        removed: list[RemoveFile] = []
        for write in group.writes:
            if not self.write(write):
                self.roll_back(group, written, removed, "a file could not be written")
                return
            written.append(write)
        for remove in group.removes:
            if not self.remove(remove):
                self.roll_back(group, written, removed, "a file could not be removed")
                return
            removed.append(remove)
        try:
            asked = self.ask(group)
        except ServiceError as error:
            kind, target = _describe(group)
            self.emit(Result(kind, target, Status.failed, _failed_reason(kind), str(error)))
            self.roll_back(group, written, removed, f"{kind} failed", ask_again=True)
            return
        if asked is not None:
            kind, target = asked
            self.emit(Result(kind, target, Status.ok, _done_reason(kind), _action_reason(group)))
        self.settle(group)

    def roll_back(
        self,
        group: _Group,
        written: Sequence[WriteFile],
        removed: Sequence[RemoveFile],
        why: str,
        *,
        ask_again: bool = False,
    ) -> None:
        """Restore the group's files; after a failed reload/restart, ask once more so the
        program runs on the previous files again."""
        restored = self.restore(written, removed)
        self.forget_group(group)
        self.save()
        count = len(written) + len(removed)
        message = f"{why}; {count} file{'s' * (count != 1)} " + (
            "restored" if restored else "could not all be restored"
        )
        kind, target = _describe(group) if ask_again else ("write", _group_name(group))
        if ask_again and group.firewall_action is not None:
            message += "; nft -f is all-or-nothing, so the kernel kept its previous table"
        elif ask_again:
            try:
                self.ask(group)
            except ServiceError as error:
                message += f", but the {kind} with the previous files failed too: {error}"
                self.emit(Result(kind, target, Status.failed, "RollbackFailed", message))
                return
            message += f", {kind} done again with the previous files"
        else:
            message += f"; {_group_name(group)} was not asked to re-read anything"
        status = Status.rolled_back if restored else Status.failed
        reason = "RolledBack" if restored else "RollbackFailed"
        self.emit(Result(kind, target, status, reason, message))

    def settle(self, group: _Group) -> None:
        entries: dict[str, Entry | None] = {w.path: entry_for(w.artifact) for w in group.writes}
        entries.update({r.path: None for r in group.removes if not r.temp})
        self.inventory = self.inventory.with_entries(entries)
        if isinstance(group.firewall_action, DropFirewall):
            self.inventory = replace(self.inventory, firewall=None)
        elif group.firewall_action is not None and self.firewall is not None:
            live = self.firewall.read()
            if live.observed and live.present:
                record = FirewallRecord(live.fingerprint, live.listing)
                self.inventory = replace(self.inventory, firewall=record)
        self.save()


def run(
    plan: Plan,
    facts: Facts,
    rendered: Rendered,
    *,
    host: Host,
    services: ServiceManager,
    layout: Layout,
    preflight: Preflight,
    firewall: FirewallReader | None = None,
    commit: str = "",
    on_result: OnResult | None = None,
) -> Report:
    """Carry out `plan` (built from `facts` and `rendered`). A failed action does not
    raise: every outcome is a Result. Only a failure to write the inventory itself (or an
    exception from `on_result`) propagates, and stops the apply there: acting without
    recording ownership is not allowed. `firewall` reads the table back after loading it,
    so the next observe can tell a hand edit from our own load."""
    applier = _Applier(
        facts,
        host=host,
        services=services,
        layout=layout,
        firewall=firewall,
        commit=commit,
        on_result=on_result,
    )
    if plan.blocked:
        for conflict in plan.conflicts:
            applier.emit(
                Result("plan", conflict.path, Status.refused, "PlanBlocked", conflict.reason)
            )
        return Report(tuple(applier.results), applier.inventory)
    if not plan.changes:
        return Report((), facts.inventory)

    candidates = [w.artifact for w in plan.writes]
    if candidates:
        outcome = preflight(candidates, rendered.artifacts)
        if not _preflight_passed(applier, outcome):
            return Report(tuple(applier.results), applier.inventory)

    intents = {w.path: _intent(w) for w in plan.writes}
    applier.inventory = applier.inventory.with_entries(intents)
    applier.save()

    for remove in plan.removes:
        if remove.temp:
            applier.remove(remove)
    for group in _groups(plan):
        applier.run_group(group)

    for record in plan.records:
        applier.inventory = applier.inventory.with_entries({record.path: record.entry})
        applier.emit(Result("record", record.path, Status.ok, "InventoryRecorded", record.reason))
    if all(r.status is Status.ok for r in applier.results):
        applier.inventory = replace(applier.inventory, commit=commit)
    applier.save()
    return Report(tuple(applier.results), applier.inventory)


def _preflight_passed(applier: _Applier, outcome: Outcome) -> bool:
    for note in outcome.notes:
        logger.bind(commit=applier.commit, target="preflight").info(note)
    for rejection in outcome.rejections:
        applier.emit(
            Result(
                "preflight", rejection.path, Status.refused, "PreflightRejected", rejection.text()
            )
        )
    if outcome.ok and outcome.checked:
        count = len(outcome.checked)
        message = f"{count} file{'s' * (count != 1)} accepted by the programs that read them"
        applier.emit(Result("preflight", "candidates", Status.ok, "PreflightPassed", message))
    return outcome.ok


def _intent(write: WriteFile) -> Entry:
    before = ABSENT if write.previous is None else digest(write.previous)
    return replace(entry_for(write.artifact), pending_from=before)


def _groups(plan: Plan) -> list[_Group]:
    groups: dict[Service | None, _Group] = {}

    def group(service: Service | None) -> _Group:
        return groups.setdefault(service, _Group(service))

    # Within a service, the files that need only a reload go first and a file only a
    # restart re-reads (dnsmasq's main file) last: a crash in between leaves the running
    # program on its old main file with new entries it can already use.
    for write in sorted(plan.writes, key=lambda w: (w.effect, w.path)):
        group(write.artifact.service).writes.append(write)
    for remove in plan.removes:
        if not remove.temp:
            group(remove.service).removes.append(remove)
    for action in plan.services:
        group(action.service).service_action = action
    for firewall in plan.firewall:
        group(Service.nftables).firewall_action = firewall
    rank = {service: index for index, service in enumerate(SERVICE_ORDER)}
    return sorted(
        groups.values(),
        key=lambda g: (rank.get(g.service, len(rank)), "" if g.service is None else g.service),
    )


def _describe(group: _Group) -> tuple[str, str]:
    if isinstance(group.firewall_action, ApplyFirewall):
        return ("firewall", "firewall")
    if isinstance(group.firewall_action, DropFirewall):
        return ("drop-firewall", "firewall")
    if group.service_action is not None:
        return (group.service_action.kind, group.service_action.service.value)
    return ("write", "none" if group.service is None else group.service.value)


def _group_name(group: _Group) -> str:
    return "files without a service" if group.service is None else group.service.value


def _action_reason(group: _Group) -> str:
    if group.firewall_action is not None:
        return group.firewall_action.reason
    return "" if group.service_action is None else group.service_action.reason


_DONE = {
    "reload": "ServiceReloaded",
    "restart": "ServiceRestarted",
    "firewall": "FirewallApplied",
    "drop-firewall": "FirewallDropped",
}


def _done_reason(kind: str) -> str:
    return _DONE.get(kind, "Done")


def _failed_reason(kind: str) -> str:
    return {"reload": "ReloadFailed", "restart": "RestartFailed"}.get(kind, "FirewallFailed")
