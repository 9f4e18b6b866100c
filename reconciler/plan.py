"""Plan: compare the rendered artifacts with the facts; say what will change and why.

Every action carries a reason, and so does every no-op. Ownership rules:
- only files in the inventory are ever removed;
- a rendered path that exists but is not owned is a blocking Conflict, unless `adopt`;
- an owned file whose content is not what the reconciler wrote is drift, shown with its
  diff, and the write restores it.
A service is asked for the strongest Effect among its changed files (Effect.none: the
program notices by itself, so nothing is signalled). The nftables table is loaded rather
than "reloaded", and its live state is compared with what was loaded last (see nftables).

Purely computational: values in, values out.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Literal

from reconciler import nftables
from reconciler.facts import Facts, FileState, ServiceState
from reconciler.inventory import Entry, digest
from reconciler.layout import Layout
from reconciler.rendered import Artifact, Effect, Rendered, Service


@dataclass(frozen=True)
class WriteFile:
    artifact: Artifact
    reason: str
    previous: bytes | None
    """What the server holds now (None: absent); apply rolls back to it."""
    previous_mode: int | None
    diff: str
    drift: bool = False
    adopt: bool = False
    kind: Literal["write"] = "write"

    @property
    def path(self) -> str:
        return self.artifact.path

    @property
    def create(self) -> bool:
        return self.previous is None

    @property
    def effect(self) -> Effect:
        if self.previous == self.artifact.content:
            return Effect.none  # only the mode changes; the program reads the same bytes
        return self.artifact.on_add if self.create else self.artifact.on_change


@dataclass(frozen=True)
class RemoveFile:
    path: str
    reason: str
    previous: bytes
    previous_mode: int | None
    diff: str
    service: Service | None = None
    effect: Effect = Effect.none
    drift: bool = False
    temp: bool = False
    """A temporary file of ours left by an interrupted write (never in the inventory)."""
    kind: Literal["remove"] = "remove"


@dataclass(frozen=True)
class RecordFile:
    """An inventory-only change: the file on disk is already right (or already gone)."""

    path: str
    entry: Entry | None
    reason: str
    kind: Literal["record"] = "record"


@dataclass(frozen=True)
class ReloadService:
    service: Service
    reason: str
    paths: tuple[str, ...]
    kind: Literal["reload"] = "reload"


@dataclass(frozen=True)
class RestartService:
    service: Service
    reason: str
    paths: tuple[str, ...]
    kind: Literal["restart"] = "restart"


@dataclass(frozen=True)
class ApplyFirewall:
    path: str
    reason: str
    drift: bool = False
    diff: str = ""
    file_changed: bool = False
    rules_added: int = 0
    rules_removed: int = 0
    kind: Literal["firewall"] = "firewall"


@dataclass(frozen=True)
class DropFirewall:
    reason: str
    kind: Literal["drop-firewall"] = "drop-firewall"


@dataclass(frozen=True)
class Conflict:
    """A blocking problem: apply refuses the whole plan while any is present."""

    path: str
    reason: str
    diff: str


@dataclass(frozen=True)
class NoOp:
    subject: str
    reason: str


ServiceAction = ReloadService | RestartService
FirewallAction = ApplyFirewall | DropFirewall
Action = WriteFile | RemoveFile | RecordFile | ServiceAction | FirewallAction


@dataclass(frozen=True)
class Plan:
    writes: tuple[WriteFile, ...] = ()
    removes: tuple[RemoveFile, ...] = ()
    records: tuple[RecordFile, ...] = ()
    services: tuple[ServiceAction, ...] = ()
    firewall: tuple[FirewallAction, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    noops: tuple[NoOp, ...] = ()
    notes: tuple[str, ...] = ()
    summary: str = ""

    @property
    def changes(self) -> bool:
        return bool(self.writes or self.removes or self.records or self.services or self.firewall)

    @property
    def blocked(self) -> bool:
        return bool(self.conflicts)

    @property
    def actions(self) -> tuple[Action, ...]:
        return (*self.writes, *self.removes, *self.records, *self.firewall, *self.services)


def entry_for(artifact: Artifact) -> Entry:
    """The inventory entry that records `artifact` as written."""
    return Entry(
        sha256=digest(artifact.content),
        mode=artifact.mode,
        service=artifact.service,
        on_remove=artifact.on_remove,
    )


def unified_diff(old: bytes | None, new: bytes | None, path: str, old_label: str = "server") -> str:
    """A unified diff for people; "/dev/null" stands for an absent side."""
    before = [] if old is None else old.decode("utf-8", "replace").splitlines()
    after = [] if new is None else new.decode("utf-8", "replace").splitlines()
    lines = difflib.unified_diff(
        before,
        after,
        fromfile="/dev/null" if old is None else f"{path} ({old_label})",
        tofile="/dev/null" if new is None else f"{path} (desired)",
        lineterm="",
    )
    return "\n".join(lines)


DEFAULT_LAYOUT = Layout()


def build(
    rendered: Rendered, facts: Facts, *, layout: Layout = DEFAULT_LAYOUT, adopt: bool = False
) -> Plan:
    """Everything that must change for the server to match `rendered`, and why."""
    writes: list[WriteFile] = []
    records: list[RecordFile] = []
    conflicts: list[Conflict] = []
    for path in sorted(rendered.artifacts):
        decision = _decide_file(rendered.artifacts[path], facts, adopt=adopt)
        if decision is None:
            continue
        if isinstance(decision, WriteFile):
            writes.append(decision)
        elif isinstance(decision, RecordFile):
            records.append(decision)
        else:
            conflicts.append(decision)
    removes, forgotten = _prune(rendered, facts)
    records.extend(forgotten)
    services, service_noops = _services(writes, removes, facts)
    firewall, firewall_noops = _firewall(rendered, writes, removes, facts, layout)
    notes = list(rendered.notes)
    for service, state in sorted(facts.services.items()):
        if state in {ServiceState.inactive, ServiceState.failed, ServiceState.not_found}:
            notes.append(f"{service.value} is {state.value} on the server")
    plan = Plan(
        writes=tuple(writes),
        removes=tuple(removes),
        records=tuple(records),
        services=services,
        firewall=firewall,
        conflicts=tuple(conflicts),
        noops=(*service_noops, *firewall_noops),
        notes=tuple(notes),
    )
    return _with_summary(plan, layout, total=len(rendered.artifacts))


def _decide_file(
    artifact: Artifact, facts: Facts, *, adopt: bool
) -> WriteFile | RecordFile | Conflict | None:
    path = artifact.path
    state = facts.file(path)
    entry = facts.inventory.files.get(path)
    wanted = digest(artifact.content)
    same_content = state.sha256 == wanted
    same_mode = state.mode == artifact.mode

    def write(reason: str, *, drift: bool = False, adopted: bool = False) -> WriteFile:
        diff = "" if same_content else unified_diff(state.content, artifact.content, path)
        return WriteFile(
            artifact, reason, state.content, state.mode, diff, drift=drift, adopt=adopted
        )

    if entry is None:
        if not state.exists:
            return write("new")
        if not adopt:
            matches = " (its content already matches desired)" if same_content else ""
            return Conflict(
                path,
                "exists but is not owned by the reconciler (not in its inventory), so it is "
                f"never overwritten silently{matches}: move it away, or plan with adopt",
                "" if same_content else unified_diff(state.content, artifact.content, path),
            )
        if same_content and same_mode:
            return RecordFile(path, entry_for(artifact), "adopt: unowned file already matches")
        return write(
            "adopt: take over the unowned file; " + _difference(state, artifact), adopted=True
        )

    if same_content:
        if not same_mode:
            assert state.mode is not None
            by_hand = entry.mode == artifact.mode
            prefix = "drift: mode changed by hand; " if by_hand else ""
            return write(prefix + _difference(state, artifact), drift=by_hand)
        if entry == entry_for(artifact):
            return None
        if entry.pending_from is not None:
            why = "an interrupted apply had already written it; settle its inventory entry"
        elif entry.sha256 != wanted:
            why = "already matches desired; refresh its recorded hash"
        else:
            why = "its service or removal effect changed; refresh its inventory entry"
        return RecordFile(path, entry_for(artifact), why)

    accepted = entry.accepts(state.sha256)
    if not state.exists:
        if accepted:
            return write("new (an interrupted apply had not written it yet)")
        return write("drift: owned file was deleted by hand", drift=True)
    if not accepted:
        return write("drift: owned file edited by hand", drift=True)
    if entry.pending_from is not None and state.sha256 == entry.pending_from:
        return write("content differs from desired (an interrupted apply had not replaced it)")
    return write("content differs from desired")


def _difference(state: FileState, artifact: Artifact) -> str:
    if state.sha256 != digest(artifact.content):
        return "content differs from desired"
    return f"mode {state.mode or 0:04o} differs from desired {artifact.mode:04o}"


def _prune(rendered: Rendered, facts: Facts) -> tuple[list[RemoveFile], list[RecordFile]]:
    removes: list[RemoveFile] = []
    forgotten: list[RecordFile] = []
    for path in sorted(set(facts.inventory.files) - set(rendered.artifacts)):
        entry = facts.inventory.files[path]
        state = facts.file(path)
        if state.content is None:
            forgotten.append(RecordFile(path, None, "no longer rendered and already gone"))
            continue
        drift = not entry.accepts(state.sha256)
        reason = "no longer rendered"
        if drift:
            reason += "; drift: it was edited by hand since the reconciler wrote it"
        removes.append(
            RemoveFile(
                path,
                reason,
                state.content,
                state.mode,
                unified_diff(state.content, None, path),
                service=entry.service,
                effect=entry.on_remove,
                drift=drift,
            )
        )
    for temp in facts.stale_temps:
        state = facts.file(temp)
        removes.append(
            RemoveFile(
                temp,
                "temporary file left by an interrupted write",
                state.content or b"",
                state.mode,
                "",
                temp=True,
            )
        )
    return removes, forgotten


def _services(
    writes: list[WriteFile], removes: list[RemoveFile], facts: Facts
) -> tuple[tuple[ServiceAction, ...], list[NoOp]]:
    changed: dict[Service, list[tuple[Effect, str]]] = defaultdict(list)
    for write in writes:
        if write.artifact.service is not None:
            changed[write.artifact.service].append((write.effect, write.path))
    for remove in removes:
        if remove.service is not None:
            changed[remove.service].append((remove.effect, remove.path))
    actions: list[ServiceAction] = []
    noops: list[NoOp] = []
    for service in sorted(set(changed) | set(facts.services)):
        if service is Service.nftables:
            continue  # the table is loaded, not reloaded: see _firewall
        items = sorted(changed.get(service, []))
        if not items:
            noops.append(NoOp(service.value, "none of its files changed"))
            continue
        need = max(effect for effect, _ in items)
        paths = tuple(path for _, path in items)
        count = f"{len(items)} changed file{'s' * (len(items) != 1)}"
        if need is Effect.none:
            noops.append(NoOp(service.value, f"{count}, all noticed without a signal"))
            continue
        state = facts.services.get(service, ServiceState.unknown)
        if need is Effect.reload and state in {ServiceState.inactive, ServiceState.failed}:
            actions.append(
                RestartService(service, f"{count}; it is {state.value}: a restart starts it", paths)
            )
        elif need is Effect.reload:
            verb = "needs" if len(items) == 1 else "need"
            actions.append(ReloadService(service, f"{count} {verb} a reload", paths))
        else:
            needing = [path for effect, path in items if effect is Effect.restart]
            actions.append(
                RestartService(
                    service, f"{', '.join(needing)} changed; only a restart re-reads it", paths
                )
            )
    return tuple(actions), noops


def _firewall(
    rendered: Rendered,
    writes: list[WriteFile],
    removes: list[RemoveFile],
    facts: Facts,
    layout: Layout,
) -> tuple[tuple[FirewallAction, ...], list[NoOp]]:
    nft_files = sorted(p for p, a in rendered.artifacts.items() if a.service is Service.nftables)
    live = facts.firewall
    changed = [
        w for w in writes if w.artifact.service is Service.nftables and w.effect > Effect.none
    ]
    if changed:
        return tuple(_load_changed(w) for w in changed), []
    if not nft_files:
        dropped = any(r.service is Service.nftables for r in removes)
        if not dropped:
            return (), []
        if live.observed and not live.present:
            return (), [NoOp("firewall", "table already absent")]
        return (DropFirewall("its file is no longer rendered: delete the table"),), []
    path = layout.nft_file if layout.nft_file in nft_files else nft_files[0]
    recorded = facts.inventory.firewall
    table = f"table {nftables.FAMILY} {nftables.TABLE}"
    if not live.observed:
        return (), [NoOp("firewall", f"live table not observed: {live.error or 'no reader'}")]
    if not live.present:
        reason = f"drift: live {table} is missing (flushed, or not loaded since boot)"
        return (ApplyFirewall(path, reason, drift=True),), []
    if recorded is None:
        reason = f"live {table} was never recorded by the reconciler: load it to a known state"
        return (ApplyFirewall(path, reason),), []
    if live.fingerprint != recorded.fingerprint:
        diff = _listing_diff(recorded.listing, live.listing)
        reason = f"drift: live {table} differs from what the reconciler loaded"
        return (ApplyFirewall(path, reason, drift=True, diff=diff),), []
    return (), [NoOp("firewall", f"live {table} matches what was loaded")]


def _load_changed(write: WriteFile) -> ApplyFirewall:
    added, removed = nftables.rule_changes(
        (write.previous or b"").decode("utf-8", "replace"),
        write.artifact.content.decode("utf-8", "replace"),
    )
    what = "new" if write.create else "changed"
    return ApplyFirewall(
        write.path,
        f"rendered firewall file {what} (+{added} -{removed} rules)",
        file_changed=True,
        rules_added=added,
        rules_removed=removed,
    )


def _listing_diff(loaded: str, live: str) -> str:
    return "\n".join(
        difflib.unified_diff(
            loaded.splitlines(),
            live.splitlines(),
            fromfile="loaded by the reconciler",
            tofile="live now",
            lineterm="",
        )
    )


def _plural(count: int, word: str, words: str = "") -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def _with_summary(plan: Plan, layout: Layout, *, total: int) -> Plan:
    hosts = layout.dhcp_hosts_dir.rstrip("/") + "/"
    counts: dict[str, int] = defaultdict(int)
    for write in plan.writes:
        noun = "reservation" if write.path.startswith(hosts) else "file"
        counts[("+" if write.create else "~") + noun] += 1
    for remove in plan.removes:
        noun = "temp" if remove.temp else "reservation" if remove.path.startswith(hosts) else "file"
        counts["-" + noun] += 1
    parts: list[str] = []
    for key in ("+reservation", "~reservation", "-reservation", "+file", "~file", "-file"):
        if counts[key]:
            parts.append(key[0] + _plural(counts[key], key[1:]))
    if counts["-temp"]:
        parts.append(f"-{_plural(counts['-temp'], 'leftover temp file')}")
    drifted = sum(w.drift for w in plan.writes) + sum(r.drift for r in plan.removes)
    if drifted:
        parts.append(f"{drifted} drifted")
    if plan.records:
        parts.append(f"inventory: {_plural(len(plan.records), 'entry', 'entries')}")
    for action in plan.firewall:
        parts.append(_firewall_summary(action))
    parts.extend(f"{a.service.value}: {a.kind}" for a in plan.services)
    if plan.conflicts:
        parts.append(f"{_plural(len(plan.conflicts), 'conflict')} (blocked)")
    if not parts:
        summary = f"no changes: all {_plural(total, 'file')} match; inventory clean"
    else:
        summary = ", ".join(parts)
    return replace(plan, summary=summary)


def _firewall_summary(action: FirewallAction) -> str:
    if isinstance(action, DropFirewall):
        return "firewall: drop table"
    if action.file_changed:
        plus, minus = action.rules_added, action.rules_removed
        return f"firewall: {_plural(plus + minus, 'rule')} changed (+{plus} -{minus})"
    if action.drift:
        return "firewall: live table drifted"
    return "firewall: load table"
