"""The reconcile step: the one module that knows the order of the stages.

    render (pure) -> observe (facts) -> plan (pure) -> [apply]

`kitctl plan` is `plan_for`; `kitctl apply` is `apply_for`; both take a validated
desired state. Which seams are real depends on where we write: on a server (root "/")
systemd and the live nftables table; in a sandbox root nothing is signalled and the
kernel's tables are not looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

from reconciler import apply, facts, inventory, plan, preflight, render
from reconciler.desired import Desired
from reconciler.facts import Facts, FirewallReader
from reconciler.host import Host, LocalHost
from reconciler.layout import Layout
from reconciler.live_firewall import NftReader, NoFirewall
from reconciler.rendered import Artifact, Rendered
from reconciler.services import NoServices, ServiceManager, SystemdServices

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


@dataclass(frozen=True)
class Seams:
    host: Host
    services: ServiceManager
    firewall: FirewallReader
    preflight: preflight.Preflight


def seams_for(root: str, layout: Layout) -> Seams:
    """Real services and firewall only when writing the live server itself."""
    check = partial(preflight.check, layout=layout)
    if root == "/":
        return Seams(LocalHost("/"), SystemdServices(), NftReader(), check)
    return Seams(LocalHost(root), NoServices(), NoFirewall(), check)


def observe(rendered: Rendered, seams: Seams, layout: Layout) -> Facts:
    owned = inventory.load(seams.host, layout)
    return facts.gather(
        seams.host,
        rendered,
        owned,
        seams.services,
        seams.firewall,
        scan_dirs=(layout.state_dir,),
    )


def plan_rendered(
    rendered: Rendered, seams: Seams, layout: Layout, *, adopt: bool = False
) -> tuple[plan.Plan, Facts]:
    observed = observe(rendered, seams, layout)
    return plan.build(rendered, observed, layout=layout, adopt=adopt), observed


def with_extra(rendered: Rendered, extra: Sequence[Artifact]) -> Rendered:
    """The rendered set plus files rendered elsewhere (the deployments' per-PC boot files),
    so that one plan and one apply write and prune them together. Purely computational."""
    if not extra:
        return rendered
    artifacts = dict(rendered.artifacts)
    for artifact in extra:
        if artifact.path in artifacts:
            raise ValueError(f"two rendered files share the path {artifact.path}")
        artifacts[artifact.path] = artifact
    return replace(rendered, artifacts={path: artifacts[path] for path in sorted(artifacts)})


def plan_for(
    desired: Desired,
    root: str,
    layout: Layout,
    *,
    adopt: bool = False,
    seams: Seams | None = None,
    extra: Sequence[Artifact] = (),
    nfs_writers: Sequence[render.nfs.Writer] = (),
) -> plan.Plan:
    """What `kitctl plan` shows: render, observe, compare. Writes nothing. `extra`: more
    artifacts for the same plan (see `with_extra`); `nfs_writers`: capturing master PCs."""
    rendered = with_extra(render.all(desired, layout, nfs_writers=nfs_writers), extra)
    built, _ = plan_rendered(rendered, seams or seams_for(root, layout), layout, adopt=adopt)
    return built


def apply_rendered(
    rendered: Rendered,
    seams: Seams,
    layout: Layout,
    *,
    adopt: bool = False,
    commit: str = "",
    on_result: apply.OnResult | None = None,
) -> tuple[plan.Plan, apply.Report]:
    built, observed = plan_rendered(rendered, seams, layout, adopt=adopt)
    report = apply.run(
        built,
        observed,
        rendered,
        host=seams.host,
        services=seams.services,
        layout=layout,
        preflight=seams.preflight,
        firewall=seams.firewall,
        commit=commit,
        on_result=on_result,
    )
    return built, report


def apply_for(
    desired: Desired,
    root: str,
    layout: Layout,
    *,
    adopt: bool = False,
    commit: str = "",
    seams: Seams | None = None,
    on_result: apply.OnResult | None = None,
    extra: Sequence[Artifact] = (),
    nfs_writers: Sequence[render.nfs.Writer] = (),
) -> tuple[plan.Plan, apply.Report]:
    """One pass of `kitctl apply`: render, observe, plan, apply. `extra`: more artifacts
    for the same plan and apply (see `with_extra`); `nfs_writers`: capturing master
    PCs, who may write the images export while their session is armed."""
    rendered = with_extra(render.all(desired, layout, nfs_writers=nfs_writers), extra)
    return apply_rendered(
        rendered,
        seams or seams_for(root, layout),
        layout,
        adopt=adopt,
        commit=commit,
        on_result=on_result,
    )


def plan_exit_code(built: plan.Plan, *, detailed: bool = False) -> int:
    """0: nothing to change; 2 (with --detailed-exitcode): changes; 1: blocked."""
    if built.blocked:
        return EXIT_ERROR
    if built.changes and detailed:
        return EXIT_CHANGES
    return EXIT_OK


def apply_exit_code(report: apply.Report, *, detailed: bool = False) -> int:
    """0: done (nothing or everything); 2 (with --detailed-exitcode): changed; 1: any
    action failed, was rolled back, or was refused."""
    if not report.ok:
        return EXIT_ERROR
    if report.changed and detailed:
        return EXIT_CHANGES
    return EXIT_OK
