"""The rehearsal: a kitting day on simulated PCs, against the real reconciler and programs.

`run(Options(pcs=4))`:

1. builds the virtual network (`build_network`): the kitting switch, the server (`srv`,
   192.168.100.1, and 198.19.0.1 on its uplink: it routes the kitting network there, so
   the reconciler's forward chain is what keeps PCs off production), the router (`rtr`)
   between the uplink and the production network, the admin terminal (`adm`,
   192.168.100.200, in the admin range), the production host (`prodsrv`, 198.18.0.10),
   the site's PCs and one PC the site does not know (`stray`);
2. writes the lab directory: the server tree, the real boot loaders in the TFTP root, the
   image in the images root (by default the lab's Clonezilla image, saved by `ocs-sr
   savedisk` and cached, `fixture_image`; `--image DIR` another; `--no-image` a small
   stand-in, and nobody is imaged), and the lab site repo as a git commit (`labsite`);
3. shows that the admin terminal reaches production through the server (the control);
4. runs the real controller for one pass: `Controller` with the lab's settings (every
   path under the lab directory) and seams whose service manager is `LabServices`, and
   whose firewall reader and preflight run inside the server's namespace. The programs
   therefore run exactly as the reconciler configured them. A plan right after must be
   empty;
5. lets every PC play its steps (`pcsteps`): with an image, the site has a multicast batch
   open now, the pass armed every lab PC, and all of them image at once while the
   controller's passes take their reports (`kitting_day`), then reboot to local boot; the
   first PC runs Clonezilla's own client (`ocs-sr ... multicast_restoredisk`, on the loop
   device named like the image's disk), the others the lab's (udp-receiver | decompress |
   partclone). Without an image the PCs play the steps of a day with nothing armed, a
   bounded number at a time;
6. runs the lab-wide checks (`security`);
7. reports (`report`) and tears everything down, unless kept for exploration.

Every failure path tears down too: programs by PID, then the run's namespaces; the logs
and report stay in the run directory until `kitctl lab down`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from loguru import logger

from reconciler import logs, preflight, reconcile, snapshot
from reconciler.clock import SystemClock
from reconciler.controller import Controller
from reconciler.desired import Desired
from reconciler.host import LocalHost
from reconciler.lab import (
    fixture_image,
    imaging,
    kitting_day,
    labsite,
    netns,
    ocs_client,
    pcsteps,
    security,
    workspace,
)
from reconciler.lab.netns import (
    KITTING_SWITCH,
    PRODUCTION_SWITCH,
    UPLINK_SWITCH,
    Host,
    NicSpec,
    VirtualNetwork,
)
from reconciler.lab.nsrunner import NetnsRunner
from reconciler.lab.procs import ProcessRegistry
from reconciler.lab.report import (
    CheckResult,
    PcResult,
    Report,
    StepResult,
    progress_line,
    to_json,
)
from reconciler.lab.services import LabServices
from reconciler.layout import Layout
from reconciler.live_firewall import NftReader
from reconciler.rendered import Service
from reconciler.settings import Settings
from reconciler.status import READY

Progress = Callable[[str], None]
MAX_PARALLEL = 8
LOG_FILE = "kitctl.log"
"""The run's own log (in its logs/ directory): every line, the controller's included."""
LOOP_WAIT = 120.0
"""Seconds to wait for the loop device Clonezilla's client needs, while another run holds
it (an ocs-sr restore holds it for about 35 s)."""
IMAGING_START_TIMEOUT = 120
"""Seconds the lab's udp-receivers wait for the sender, which waits for every PC (ocs-sr
joins last)."""
CLIENT_LAB = "lab"
CLIENT_OCS_SR = "ocs-sr"


class RehearsalError(RuntimeError):
    """The lab could not be set up (the site, the network, a missing program)."""


@dataclass(frozen=True)
class Options:
    pcs: int = 4
    keep: bool = False
    base: Path = workspace.LAB_BASE
    image: Path | None = None
    """A Clonezilla image directory to serve and restore onto every lab PC (a multicast
    batch, open now); None: the lab's own image, from `image_cache` (built there first
    when missing), unless `stand_in`."""
    stand_in: bool = False
    """Serve a small stand-in image and arm nobody: the quick run (`--no-image`)."""
    image_cache: Path = fixture_image.LAB_CACHE
    """Where the lab's own image is cached."""
    ocs_sr: bool = True
    """While imaging, the first PC runs Clonezilla's own client instead of the lab's."""
    parallel: int = 4
    """PCs playing at the same time."""
    prefix: str | None = None
    """The run's prefix (tests choose it); None: a fresh one."""


@dataclass
class Lab:
    """A lab being rehearsed: its directory, network, hosts and server programs."""

    run: workspace.RunDir
    net: VirtualNetwork
    pcs: tuple[labsite.LabPc, ...]
    hosts: dict[str, Host] = field(default_factory=dict)
    services: LabServices | None = None
    layout: Layout | None = None
    controller: Controller | None = None
    shell: kitting_day.LabDeployShell | None = None


def run(options: Options, progress: Progress = lambda line: None) -> Report:
    """Rehearse; return the report (also written to the run directory's report.json)."""
    labsite.check_count(options.pcs)
    if not 1 <= options.parallel <= MAX_PARALLEL:
        raise ValueError(f"parallel must be 1..{MAX_PARALLEL}, got {options.parallel}")
    if options.stand_in and options.image is not None:
        raise ValueError("an image to serve and no imaging at all: choose one")
    started = time.monotonic()
    netns.cleanup_stale()  # the leftovers of crashed runs (their owners are gone)
    prefix = options.prefix or _fresh_prefix(options.base)
    run_dir = workspace.create(options.base, prefix)
    # Every log line of the run, the controller's included, in the run's own file: the
    # terminal shows the progress lines and the summary (and warnings).
    run_dir.logs.mkdir(parents=True, exist_ok=True)
    logger.configure(extra={"commit": "-", "target": "-"})  # lines bound to neither show '-'
    sink = logger.add(run_dir.logs / LOG_FILE, level="DEBUG", format=logs.FORMAT)
    report = Report(prefix=prefix, run_dir=str(run_dir.path))
    kept = False
    net = VirtualNetwork.create(log_dir=run_dir.logs, prefix=prefix)
    pcs = (*labsite.lab_pcs(prefix, options.pcs), labsite.stray_pc(prefix))
    lab = Lab(run_dir, net, pcs)
    try:
        report = _rehearse(lab, options, report, progress)
        if options.keep:
            kept = _keep(lab)
    except Exception as error:
        logger.bind(target=prefix, commit=None).exception("rehearsal failed")
        report = replace(report, error=f"{type(error).__name__}: {error}")
        progress(f"error: {report.error}")
    finally:
        if not kept:
            _tear_down(lab)
        report = replace(report, seconds=time.monotonic() - started, kept=kept)
        run_dir.report.write_text(to_json(report))
        logger.remove(sink)
    return report


def _rehearse(lab: Lab, options: Options, report: Report, progress: Progress) -> Report:
    tree = lab.run.server
    workspace.place_boot_files(tree)
    served = _image_source(options, progress)
    image_files = workspace.place_image(tree, served.directory)
    site_pcs = tuple(pc for pc in lab.pcs if pc.in_site)
    batch = None
    ocs_pcs: frozenset[str] = frozenset()
    if served.directory is not None:  # the lab clock is the real clock
        disk = image_files.get("disk", b"").decode(errors="replace").split()
        if not disk:
            raise RehearsalError(f"{served.directory}: the image names no disk")
        if options.ocs_sr:
            wait_for_loop(disk[0], progress)
            ocs_pcs = frozenset({site_pcs[0].hostname})
        batch = kitting_day.batch_window(datetime.now(UTC), disk[0], slow_client=bool(ocs_pcs))
    files = labsite.site_files(site_pcs, tree, batch)
    validation = snapshot.validate_files("kitting-lab", files)
    if validation.desired is None:
        problems = "; ".join(p.text() for p in validation.problems)
        raise RehearsalError(f"the generated lab site is invalid: {problems}")
    if batch is not None:
        _place_live_stand_ins(Path(tree.tftp_root), validation.desired)
    commit = workspace.commit_site(lab.run.site_repo, files, f"Kitting lab: {len(site_pcs)} PCs")
    facts = _facts(lab) | {"image": served.describe()}
    report = replace(report, commit=commit, facts=facts)
    _build_network(lab)
    progress(f"network {lab.run.prefix}: server, router, admin, production, {len(lab.pcs)} PCs")

    checks: list[CheckResult] = []
    roles = _roles(lab)
    checks.append(_checked(lab, "control", lambda p: security.production_control(p, roles)))
    _say(progress, checks[-1])

    passed = _controller_pass(lab, commit, validation.desired, imaging=batch is not None)
    checks.extend(passed)
    for check in passed:
        _say(progress, check)
    if not all(check.ok for check in passed):
        return replace(report, checks=tuple(checks), pcs=tuple(_not_run(pc) for pc in lab.pcs))

    bench = pcsteps.Bench(
        net=lab.net,
        server=labsite.SERVER,
        tftp_root=Path(tree.tftp_root),
        images_root=Path(tree.images_root),
        image=labsite.IMAGE,
        image_files=image_files,
    )
    if batch is None:
        pcs = _play_all(lab, bench, options, progress)
    else:
        # every PC must be playing for the sender to start: all of them at once
        options = replace(options, parallel=len(lab.pcs))
        pcs, day = _image_all(lab, bench, options, progress, served=served, ocs_pcs=ocs_pcs)
        checks.append(day)
        _say(progress, day)

    checks.extend(_security_checks(lab, validation.desired, progress))
    for check in pc_checks(pcs):
        checks.append(check)
        _say(progress, check)
    return replace(report, pcs=pcs, checks=tuple(checks))


@dataclass(frozen=True)
class ServedImage:
    """The image a run serves: its directory (None: the stand-in) and, when known, the
    files every restored disk must hold (partition number -> path -> content)."""

    directory: Path | None
    expected_files: dict[int, dict[str, bytes]] = field(default_factory=dict)
    origin: str = ""

    def describe(self) -> str:
        if self.directory is None:
            return "a stand-in (nobody is imaged)"
        return f"{self.directory} ({self.origin})" if self.origin else str(self.directory)


def _image_source(options: Options, progress: Progress) -> ServedImage:
    """What to serve: the stand-in, the caller's image, or the lab's own Clonezilla image
    (built into the cache when this machine has none yet: about 25 s)."""
    if options.stand_in:
        return ServedImage(None)
    if options.image is not None:
        return ServedImage(options.image, origin="--image")
    home = fixture_image.home_dir(options.image_cache)
    if not (home / "recipe.json").is_file():
        progress(f"image: building the lab's Clonezilla image in {home} (ocs-sr savedisk)")
    try:
        built = fixture_image.build_or_reuse(options.image_cache)
    except fixture_image.FixtureUnavailable as error:
        raise RehearsalError(f"{error}; or run without imaging: --no-image") from None
    origin = f"saved by ocs-sr savedisk from /dev/{built.disk}, cached"
    progress(f"image: {built.image_dir} ({origin})")
    return ServedImage(built.image_dir, fixture_image.expected_files(), origin)


def wait_for_loop(disk: str, progress: Progress) -> None:
    """Clonezilla's multicast restore needs the disk name of the save (FIELD_NOTES): the
    ocs-sr PC restores onto /dev/DISK, which must be a loop device, and a free one. Another
    run may hold it for a while: wait, bounded."""
    try:
        ocs_client.check_loop_name(disk)
    except imaging.ImagingError as error:
        raise RehearsalError(
            f"{error}; or image with the lab's client only (--no-ocs-sr)"
        ) from None
    deadline = time.monotonic() + LOOP_WAIT
    said = False
    while (holder := ocs_client.backing_file(disk)) is not None:
        if time.monotonic() > deadline:
            raise RehearsalError(
                f"/dev/{disk}, the image's disk name, is still in use (by {holder}) after "
                f"{LOOP_WAIT:g} s: Clonezilla's client needs it (or use --no-ocs-sr)"
            )
        if not said:
            progress(f"image: waiting for /dev/{disk}, in use by {holder}")
            said = True
        time.sleep(1.0)


def _place_live_stand_ins(tftp_root: Path, desired: Desired) -> None:
    """The server arms nobody without Clonezilla live in its TFTP root; the lab's PCs never
    boot it (they play its client's part), so stand-ins do."""
    live = desired.site.boot.clonezilla
    for name in (live.kernel, live.initrd, live.rootfs):
        path = tftp_root / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(b"stand-in for Clonezilla live\n")
        path.chmod(0o644)


def _play_all(
    lab: Lab, bench: pcsteps.Bench, options: Options, progress: Progress, *, armed: bool = False
) -> tuple[PcResult, ...]:
    workers = min(options.parallel, len(lab.pcs))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-pc") as pool:
        futures = [pool.submit(_play, lab, bench, pc, progress, armed) for pc in lab.pcs]
        return tuple(future.result() for future in futures)


def _image_all(
    lab: Lab,
    bench: pcsteps.Bench,
    options: Options,
    progress: Progress,
    *,
    served: ServedImage,
    ocs_pcs: frozenset[str],
) -> tuple[tuple[PcResult, ...], CheckResult]:
    """The armed PCs image while the controller's passes take their reports; each PC then
    reboots and must find local boot. The PCs named in `ocs_pcs` run Clonezilla's own
    client; every disk is verified against the image restored with no network."""
    if lab.controller is None or lab.shell is None or lab.layout is None:
        raise RehearsalError("imaging needs the controller's pass first")
    reference = lab.run.private / "reference.img"
    restored = imaging.restore_local(
        lab.net.procs, lab.hosts["srv"].netns, bench.images_root / bench.image, reference
    )
    if not restored.ok:
        raise RehearsalError(f"the reference restore failed: {restored.problems()}")
    armed = {pc.hostname: bench.image for pc in lab.pcs if pc.in_site}
    with kitting_day.ServerLoop(lab.controller, lab.shell, lab.layout) as loop:
        setup = pcsteps.ImagingBench(
            reference=reference,
            expected_files=served.expected_files,
            clonezilla_clients=ocs_pcs,
            start_timeout=IMAGING_START_TIMEOUT if ocs_pcs else imaging.START_TIMEOUT,
            settled=loop.settled,
        )
        pcs = _play_all(lab, replace(bench, armed=armed, imaging=setup), options, progress,
                        armed=True)  # fmt: skip
    phases = loop.phases()
    done = sorted(armed) == sorted(h for h, phase in phases.items() if phase == kitting_day.SETTLED)
    words = ", ".join(f"{host}: {phase}" for host, phase in sorted(phases.items()))
    detail = f"{words or 'no PC in the batch'}; {loop.passes} passes" + (
        f"; {loop.error}" if loop.error else ""
    )
    return pcs, CheckResult("deployment", done and not loop.error, detail)


def client_of(pc: labsite.LabPc, *, armed: bool, ocs_pcs: frozenset[str]) -> str:
    """Which imaging client a PC runs: Clonezilla's own (`ocs-sr`), the lab's (`lab`:
    udp-receiver | decompress | partclone), or none ("") when it is not imaged. Pure."""
    if not armed or not pc.in_site:
        return ""
    return CLIENT_OCS_SR if pc.hostname in ocs_pcs else CLIENT_LAB


def pc_checks(pcs: tuple[PcResult, ...]) -> list[CheckResult]:
    """The security facts the PCs' own steps showed, as checks of their own: declared PCs
    fetched their files over TFTP through the live firewall; undeclared PCs got an address
    and no boot file. Pure."""
    declared = [pc for pc in pcs if pc.in_site]
    fetched = [step for pc in declared for step in pc.steps if step.name in ("boot-file", "loader")]
    tftp_ok = bool(declared) and all(
        any(step.name == "boot-file" and step.ok for step in pc.steps) for pc in declared
    )
    tftp = CheckResult(
        "tftp-through-firewall",
        tftp_ok,
        f"declared PCs: {len(declared)}; boot files fetched: {sum(s.ok for s in fetched)} "
        f"({sum(s.bytes for s in fetched)} bytes), with the firewall live",
    )
    strangers = [pc for pc in pcs if not pc.in_site]
    unknown_ok = bool(strangers) and all(pc.ok and not pc.boot_file for pc in strangers)
    words = ", ".join(
        f"{pc.name}: {pc.address or 'no address'}, boot file {pc.boot_file or 'none'}"
        for pc in strangers
    )
    unknown = CheckResult("unknown-pc-no-boot-file", unknown_ok, words or "no unknown PC ran")
    return [tftp, unknown]


# ---------------------------------------------------------------- the network


def _build_network(lab: Lab) -> None:
    lab.hosts.update(build_network(lab.net, lab.pcs))


def build_network(net: VirtualNetwork, pcs: Sequence[labsite.LabPc]) -> dict[str, Host]:
    """The lab's network in `net` (empty so far); returns its hosts by node name: `srv`,
    `rtr`, `adm`, `prodsrv` and each PC's node.

        kitting switch:    srv e0 (.1), adm (.200), the PCs
        uplink switch:     srv e1 (198.19.0.1), rtr e0 (198.19.0.254)
        production switch: rtr e1 (198.18.0.1), prodsrv (198.18.0.10)

    The server routes the kitting network to its uplink (its default route is the
    router), so its firewall's forward chain sees everything a PC sends towards
    production; the router knows the kitting network is behind the server.
    """

    def mac(node: int, nic: int = 0) -> str:
        return netns.lab_mac(net.prefix, node, nic)

    net.add_switch(KITTING_SWITCH)
    net.add_switch(UPLINK_SWITCH)
    net.add_switch(PRODUCTION_SWITCH)
    hosts: dict[str, Host] = {}
    server = labsite.SERVER_NODE
    hosts["srv"] = net.add_router(
        "srv",
        legs=(
            NicSpec(KITTING_SWITCH, mac=mac(server), address=str(labsite.SERVER_KITTING)),
            NicSpec(UPLINK_SWITCH, mac=mac(server, 1), address=str(labsite.SERVER_UPLINK)),
        ),
        gateway=str(labsite.ROUTER_UPLINK.ip),
    )
    router = labsite.ROUTER_NODE
    hosts["rtr"] = net.add_router(
        "rtr",
        legs=(
            NicSpec(UPLINK_SWITCH, mac=mac(router), address=str(labsite.ROUTER_UPLINK)),
            NicSpec(PRODUCTION_SWITCH, mac=mac(router, 1), address=str(labsite.ROUTER_PRODUCTION)),
        ),
    )
    net.add_route(hosts["rtr"], str(netns.KITTING_NET), via=str(labsite.SERVER_UPLINK.ip))
    hosts["adm"] = net.add_host(
        "adm",
        nics=(NicSpec(mac=mac(labsite.ADMIN_NODE), address=str(labsite.ADMIN_HOST)),),
        gateway=str(labsite.SERVER),
    )
    hosts["prodsrv"] = net.add_host(
        "prodsrv",
        nics=(
            NicSpec(
                PRODUCTION_SWITCH,
                mac=mac(labsite.PRODUCTION_NODE),
                address=str(labsite.PRODUCTION_HOST),
            ),
        ),
        gateway=str(labsite.ROUTER_PRODUCTION.ip),
    )
    for pc in pcs:
        hosts[pc.node] = net.add_host(pc.node, nics=tuple(NicSpec(mac=m) for m in pc.macs))
    return hosts


def _roles(lab: Lab) -> security.Roles:
    return security.Roles(
        server=lab.hosts["srv"],
        admin=lab.hosts["adm"],
        production=lab.hosts["prodsrv"],
        pc=lab.hosts[lab.pcs[0].node],
        router=lab.hosts["rtr"],
    )


# ---------------------------------------------------------------- the controller


def _controller_pass(
    lab: Lab, commit: str, desired: Desired, *, imaging: bool = False
) -> list[CheckResult]:
    """One pass of the real controller against the lab server, then a plan that must be
    empty (the server matches the commit; nothing would be written or reloaded)."""
    tree = lab.run.server
    settings = Settings(source=str(lab.run.site_repo), branch="main", paths=tree.layout_paths())
    layout = settings.layout()
    server_ns = lab.hosts["srv"].netns
    services = LabServices(lab.net.procs, server_ns, layout, lab.run.private)
    lab.services, lab.layout = services, layout
    in_server = NetnsRunner(server_ns)
    seams = reconcile.Seams(
        host=LocalHost("/"),
        services=services,
        firewall=NftReader(in_server),
        preflight=partial(preflight.check, layout=layout, runner=in_server),
    )
    clock = SystemClock()
    if imaging:  # the sessions and the report listener live in the server's namespace
        lab.shell = kitting_day.deployments(layout, clock, server_ns)
    controller = Controller(
        settings, clock=clock, layout=layout, seams=seams, deployments=lab.shell
    )
    lab.controller = controller
    outcome = controller.pass_once("lab")
    ready = outcome.status.condition(READY)
    asked = ", ".join(f"{verb} {what}" for verb, what in services.calls) or "nothing"
    applied = (
        outcome.applied
        and ready is not None
        and ready.status
        and outcome.status.last_applied == commit
    )
    message = ready.message if ready is not None else "no Ready condition"
    results = [CheckResult("controller-pass", applied, f"{message}; asked: {asked}")]
    if not applied:
        return results
    before = len(services.calls)
    shell = lab.shell
    plan = reconcile.plan_for(
        desired,
        "/",
        layout,
        seams=seams,
        extra=shell.last_artifacts if shell is not None else (),
        nfs_writers=shell.nfs_writers(desired) if shell is not None else (),
    )
    idle = not plan.changes and len(services.calls) == before
    results.append(CheckResult("plan-after-pass", idle, plan.summary or "no changes"))
    return results


# ---------------------------------------------------------------- the PCs


def _play(
    lab: Lab, bench: pcsteps.Bench, pc: labsite.LabPc, progress: Progress, armed: bool
) -> PcResult:
    host = lab.hosts[pc.node]
    with ProcessRegistry(lab.run.logs / pc.node) as procs:
        session = pcsteps.PcSession(pc, host, procs)

        def said(step: StepResult) -> None:
            progress(progress_line(pc.node, step))

        steps = pcsteps.play(bench, session, pcsteps.steps_for(pc, armed=armed, reboot=armed), said)
    lease = session.lease
    ocs_pcs = bench.imaging.clonezilla_clients if bench.imaging is not None else frozenset()
    return replace(
        _not_run(pc),
        address=str(lease.address.ip) if lease is not None else "",
        boot_file=(lease.boot_file or "") if lease is not None else "",
        menu=session.menu_file,
        steps=steps,
        client=client_of(pc, armed=armed, ocs_pcs=ocs_pcs),
    )


def _not_run(pc: labsite.LabPc) -> PcResult:
    return PcResult(
        name=pc.node,
        hostname=pc.hostname,
        firmware=pc.firmware.value,
        macs=pc.macs,
        in_site=pc.in_site,
        expected_address=str(pc.fixed_ip) if pc.fixed_ip is not None else "pool",
    )


# ---------------------------------------------------------------- lab-wide checks


def _security_checks(lab: Lab, desired: Desired, progress: Progress) -> list[CheckResult]:
    roles = _roles(lab)
    first = lab.pcs[0]
    # The PC keeps its reserved address and tries production through the server, as a
    # PC that set its own route would (the site hands out no gateway).
    address = f"{first.fixed_ip}/{labsite.SERVER_KITTING.network.prefixlen}"
    lab.net.assign(roles.pc, address, gateway=str(labsite.SERVER))
    if lab.services is None or lab.layout is None:
        raise RehearsalError("the lab-wide checks need the controller's pass first")
    host_key, layout = lab.services.host_key, lab.layout
    checks: list[tuple[str, Callable[[ProcessRegistry], CheckResult]]] = [
        ("production", lambda p: security.production_blocked(p, roles)),
        ("ssh", lambda p: security.ssh_admin_only(p, roles, host_key)),
        ("ports", lambda p: security.closed_port(p, roles)),
        ("firewall", lambda p: security.firewall_live(roles)),
        ("kernel-nfs", lambda p: security.kernel_nfs_files(desired, layout, roles.server.netns)),
    ]
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="lab-check") as pool:
        futures = [pool.submit(_checked, lab, name, check) for name, check in checks]
        results = [future.result() for future in futures]
    for result in results:
        _say(progress, result)
    return results


def _checked(lab: Lab, name: str, check: Callable[[ProcessRegistry], CheckResult]) -> CheckResult:
    """Run one check with its own process registry (threads do not share one)."""
    with ProcessRegistry(lab.run.logs / "checks" / name) as procs:
        try:
            return check(procs)
        except Exception as error:
            logger.bind(target=lab.run.prefix, commit=None).exception(f"check {name} raised")
            return CheckResult(name, False, f"error: {type(error).__name__}: {error}")


def _say(progress: Progress, check: CheckResult) -> None:
    progress(f"{'check':<6} {check.name:<24} {'ok  ' if check.ok else 'FAIL'} {check.detail}")


# ---------------------------------------------------------------- ending


_KEPT: list[ProcessRegistry] = []
"""The programs of labs kept running by this process. Their handles stay referenced: they
outlive `run` on purpose, and `down` reaps them by PID when it ends them."""


def _keep(lab: Lab) -> bool:
    """Leave the lab running: its dnsmasq owns the run from now on, so sweeps of stale
    runs leave it alone until `kitctl lab down`."""
    pid = lab.services.pid(Service.dnsmasq) if lab.services is not None else None
    if pid is None:
        return False
    netns.hand_over(lab.run.prefix, pid, state_dir=lab.net.state_dir)
    lab.run.mark("kept", pid)
    _KEPT.append(lab.net.procs)
    return True


def _tear_down(lab: Lab) -> None:
    try:
        _close_controller(lab)
        lab.net.teardown()
    finally:
        workspace.detach_loops(lab.run)
        workspace.remove_server(lab.run)
        workspace.remove_disks(lab.run)
        lab.run.mark("finished", os.getpid())


def _close_controller(lab: Lab) -> None:
    """The controller's source, then its shell: the listener and every session by PID."""
    try:
        if lab.controller is not None:
            lab.controller.source.close()
    finally:
        if lab.shell is not None:
            lab.shell.close()
        lab.controller = lab.shell = None


def _facts(lab: Lab) -> dict[str, str]:
    tree = lab.run.server
    return {
        "server_netns": netns.namespace_name(lab.run.prefix, "srv"),
        "server": str(labsite.SERVER),
        "admin": str(labsite.ADMIN_HOST.ip),
        "production": str(labsite.PRODUCTION_HOST.ip),
        "site_repo": str(lab.run.site_repo),
        "server_root": str(tree.root),
        "tftp_root": str(tree.tftp_root),
        "images_root": str(tree.images_root),
        "logs": str(lab.run.logs),
        "report": str(lab.run.report),
    }


def _fresh_prefix(base: Path) -> str:
    taken = {netns.prefix_of(name) for name in netns.list_namespaces()}
    for _ in range(16):
        prefix = netns.make_prefix(secrets.token_bytes(3))
        unused = prefix not in taken and not netns.record_path(netns.STATE_DIR, prefix).exists()
        if unused and not workspace.run_dir(base, prefix).path.exists():
            return prefix
    raise RehearsalError("no unused lab prefix after 16 tries")


# ---------------------------------------------------------------- kitctl lab down


@dataclass(frozen=True)
class Removed:
    prefix: str
    namespaces: int
    loops: tuple[str, ...] = ()
    files: bool = False
    """Was its run directory removed too?"""


def down(base: Path = workspace.LAB_BASE) -> tuple[list[Removed], list[str]]:
    """Remove every lab run under `base` that is kept or whose owner is gone (namespaces,
    processes, loop devices, files), and any other crashed lab run's namespaces.

    Returns (what was removed, runs left alone because their `kitctl lab run` is still
    going)."""
    removed: list[Removed] = []
    busy: list[str] = []
    while _KEPT:  # labs this process kept: end (and reap) their programs by PID first
        _KEPT.pop().stop_all()
    for found in workspace.runs(base):
        state = found.record().get("state")
        if state == "running" and _owner_alive(found.prefix):
            busy.append(found.prefix)
            continue
        namespaces = netns.teardown(found.prefix)
        loops = workspace.detach_loops(found)
        workspace.remove(found)
        removed.append(Removed(found.prefix, len(namespaces), tuple(loops), files=True))
    for prefix in netns.cleanup_stale():  # crashed runs of tests or other tools
        removed.append(Removed(prefix, 0))
    return removed, busy


def _owner_alive(prefix: str) -> bool:
    path = netns.record_path(netns.STATE_DIR, prefix)
    try:
        record = netns.OwnerRecord.decode(path.read_bytes())
        stat = Path(f"/proc/{record.pid}/stat").read_text()
        return netns.start_time_from_stat(stat) == record.start_time
    except (OSError, ValueError, IndexError):
        return False
