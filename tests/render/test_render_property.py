"""Any PC the models accept renders into reservation lines the renderer meant, and nothing
else: no injected newline, comment, option or path. A few examples also go through the
real `dnsmasq --test`."""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reconciler.desired import Department, Pc, Site
from reconciler.layout import Layout
from reconciler.render import dnsmasq

from . import render_cases as rc

LAYOUT = Layout()
MAC = r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}"
HOSTNAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTS_LINE = re.compile(
    rf"(?P<macs>{MAC}(?:,{MAC})*)(?:,(?P<ip>192\.168\.100\.\d{{1,3}}))?"
    rf",(?P<host>{HOSTNAME})"
)
# Characters that would split or extend a dnsmasq line if they ever got through.
NASTY = "\n\r\t ,#=:;/._-\x00\"'$"


def _mac_text(raw: bytes, form: int, upper: bool) -> str:
    # A NIC's address: the group bit (lowest bit of the first octet) clear.
    digits = bytes([raw[0] & 0xFE, *raw[1:]]).hex()
    text = [
        ":".join(digits[i : i + 2] for i in range(0, 12, 2)),
        "-".join(digits[i : i + 2] for i in range(0, 12, 2)),
        ".".join(digits[i : i + 4] for i in range(0, 12, 4)),
        digits,
    ][form]
    return text.upper() if upper else text


macs_valid = st.builds(
    _mac_text,
    st.binary(min_size=6, max_size=6),
    st.integers(0, 3),
    st.booleans(),
)
macs_nasty = st.text(alphabet="0123456789abcdefABCDEF" + NASTY, max_size=20)
# Mostly well-formed MACs, sometimes one injection attempt among them.
mac_lists = st.builds(
    lambda macs, extra, at: [*macs[:at], extra, *macs[at:]] if extra is not None else macs,
    st.lists(macs_valid, min_size=1, max_size=7, unique=True),
    st.one_of(st.none(), st.none(), st.none(), macs_nasty),
    st.integers(0, 7),
)
hostnames_valid = st.from_regex(rf"\A{HOSTNAME}\Z")
hostnames = st.one_of(
    hostnames_valid,
    hostnames_valid,
    hostnames_valid,
    st.text(alphabet="abcXYZ019-" + NASTY, min_size=1, max_size=70),
)
addresses = st.one_of(st.none(), st.integers(2, 254).map(lambda n: f"192.168.100.{n}"))


def _pc(hostname: str, macs: list[str], ip: str | None) -> Pc:
    doc: dict[str, Any] = {"hostname": hostname, "macs": macs}
    if ip is not None:
        doc["ip"] = ip
    try:
        return Pc.model_validate(doc)
    except ValidationError:
        assume(False)
        raise  # unreachable: assume(False) stops the example


@functools.cache
def _site(proxy: bool) -> Site:
    return rc.site(network={"dhcp": {"mode": "proxy"}}) if proxy else rc.site()


def _hosts_lines(pc: Pc, proxy: bool = False) -> tuple[str, list[str]]:
    dept = Department(kind="Department", name="lab", pcs=[pc])
    artifacts, _ = dnsmasq.artifacts(rc.desired(_site(proxy), [dept]), LAYOUT)
    hosts = [a for a in artifacts if a.path.startswith(LAYOUT.dhcp_hosts_dir + "/")]
    assert len(hosts) == 1
    return hosts[0].path, hosts[0].content.decode("ascii").split("\n")


@settings(
    max_examples=100,
    deadline=None,
    # Rejected inputs are the point: injection attempts the validators must refuse.
    suppress_health_check=[HealthCheck.filter_too_much],
)
@given(hostnames, mac_lists, addresses, st.booleans())
def test_every_accepted_pc_renders_only_the_lines_meant(
    hostname: str, macs: list[str], ip: str | None, proxy: bool
) -> None:
    pc = _pc(hostname, macs, ip)
    path, lines = _hosts_lines(pc, proxy)
    assert path == f"{LAYOUT.dhcp_hosts_dir}/{pc.hostname}.hosts"
    assert lines[0] == "# managed by kitctl; edits are reverted"
    assert lines[-1] == ""  # the file ends with a newline, and only one
    body = lines[1:-1]
    fixed = pc.ip is not None and not proxy
    assert len(body) == (1 if fixed else len(pc.macs))
    seen: list[str] = []
    for line in body:
        match = HOSTS_LINE.fullmatch(line)
        assert match is not None, line
        assert match["host"] == pc.hostname
        assert match["ip"] == (str(pc.ip) if fixed else None)
        seen += match["macs"].split(",")
    assert seen == list(pc.macs)


def _dnsmasq_accepts(lines: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "hosts-as-options.conf"
        conf.write_text("".join(f"dhcp-host={t}\n" for t in lines))
        return subprocess.run(
            ["dnsmasq", "--test", f"--conf-file={conf}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )


@pytest.mark.integration
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(hostnames_valid, st.lists(macs_valid, min_size=1, max_size=4, unique=True), addresses)
def test_real_dnsmasq_accepts_what_random_pcs_render(
    require_programs: Callable[..., None], hostname: str, macs: list[str], ip: str | None
) -> None:
    require_programs("dnsmasq")
    pc = _pc(hostname, macs, ip)
    _, lines = _hosts_lines(pc)
    done = _dnsmasq_accepts([t for t in lines[1:] if t])
    assert done.returncode == 0, (lines, done.stderr)
