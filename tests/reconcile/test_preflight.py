"""Preflight: parsers of the checkers' messages, our own syntax checks, and (integration)
the real dnsmasq, nft and sshd rejecting real broken files with line and origin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler import preflight
from reconciler.preflight import Outcome, Rejection
from reconciler.rendered import Artifact, Check, Service
from reconciler.runner import NOT_FOUND, Completed

from .helpers import (
    HOSTS,
    LAYOUT,
    MAIN,
    NFT,
    RequirePrograms,
    in_fresh_netns,
    main_conf,
    nft_file,
    reservation,
)

SSHD_DROPIN = LAYOUT.sshd_dropin


# ---------------------------------------------------------------- parsers (captured words)


def test_parse_dnsmasq() -> None:
    # Words of dnsmasq 2.90 --test, as captured on the build machine.
    assert preflight.parse_dnsmasq(
        "dnsmasq: bad option at line 4 of /tmp/w/00000-kitting.conf\n"
    ) == [(4, "bad option")]
    assert preflight.parse_dnsmasq(
        "dnsmasq: duplicate dhcp-host IP address 192.168.100.5 at line 3 of dup.conf"
    ) == [(3, "duplicate dhcp-host IP address 192.168.100.5")]
    assert preflight.parse_dnsmasq("dnsmasq: syntax check OK.") == []


def test_parse_nft_keeps_only_the_candidate_errors() -> None:
    output = (
        "/tmp/w/c.nft:5:20-25: Error: syntax error, unexpected string\n"
        '\t\tiifname "e0" tcp dportx 23 drop\n'
        "\t\t                 ^^^^^^\n"
        "/tmp/w/c.nft:4:38-47: Error: Could not resolve hostname: Name or service not known\n"
        "/etc/other.nft:1:1: Error: not ours\n"
    )
    assert preflight.parse_nft(output, "/tmp/w/c.nft") == [
        (5, "syntax error, unexpected string"),
        (4, "Could not resolve hostname: Name or service not known"),
    ]


def test_parse_sshd_both_spellings() -> None:
    output = (
        "/tmp/w/c.conf: line 2: Bad configuration option: BogusOption\n"
        '/tmp/w/c.conf line 3: unsupported option "maybe".\n'
        "/tmp/w/other line 9: not ours\n"
    )
    assert preflight.parse_sshd(output, "/tmp/w/c.conf") == [
        (2, "Bad configuration option: BogusOption"),
        (3, 'unsupported option "maybe".'),
    ]


# ---------------------------------------------------------------- our own checkers

GOOD_EXPORTS = (
    "# kitting images, read-only for the kitting network\n"
    "/home/partimag 192.168.100.0/24(ro,no_subtree_check,all_squash,anonuid=65534,fsid=1)\n"
    "/srv/x \\\n"
    "    10.0.0.1(rw,sync) @lab(ro,sec=krb5p)\n"
)


def test_good_exports_pass() -> None:
    assert preflight.check_exports(GOOD_EXPORTS) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "/a host (rw)\n",
            [
                (1, "'host' has no options (exportfs would warn and guess)"),
                (1, "'(rw)' has options but no client: a space before '('?"),
            ],
        ),
        ("/a\n", [(1, "/a names no client (it would go to every host)")]),
        ("a *(ro)\n", [(1, "export path 'a' is not absolute")]),
        ("/a *(ro,fast)\n", [(1, "unknown export option 'fast'")]),
        ("/a *(ro,anonuid=x)\n", [(1, "bad value 'x' for export option 'anonuid'")]),
        ("/a *(ro,color=red)\n", [(1, "unknown export option 'color'")]),
        (
            "\n# c\n/a \\\n  h;rm(ro)\n",
            [(3, "'h;rm' is not a host, network, wildcard or @netgroup")],
        ),
    ],
)
def test_bad_exports_are_named_by_line(text: str, expected: list[tuple[int, str]]) -> None:
    assert preflight.check_exports(text) == expected


GOOD_GANESHA = (
    "EXPORT {\n"
    "    Export_Id = 1;\n"
    '    Path = "/home/partimag";  # images\n'
    "    Pseudo = /partimag;\n"
    "    Access_Type = RO;\n"
    "    FSAL {\n"
    "        Name = VFS;\n"
    "    }\n"
    "}\n"
)


def test_good_ganesha_passes() -> None:
    assert preflight.check_ganesha(GOOD_GANESHA) == []


def test_ganesha_problems_are_named_by_line() -> None:
    assert preflight.check_ganesha(GOOD_GANESHA.replace("RO;", "RO")) == [
        (5, "missing ';' after 'Access_Type = RO'")
    ]
    assert preflight.check_ganesha(GOOD_GANESHA.removesuffix("}\n")) == [
        (1, "block opened here is never closed")
    ]
    # The quote never closes on line 2 (quotes do not span lines), so its ';' is quoted.
    assert preflight.check_ganesha('EXPORT {\n  Path = "/a;\n}\n') == [
        (2, "unterminated quoted string"),
        (2, "missing ';' after 'Path = \"/a;'"),
    ]
    assert preflight.check_ganesha("}\n") == [(1, "'}' closes no block")]


# ---------------------------------------------------------------- check() with a fake runner


@dataclass
class FakeTools:
    """Plays the checkers: returns canned answers and keeps each candidate's content."""

    answers: dict[str, Completed] = field(default_factory=dict)
    seen: list[tuple[tuple[str, ...], str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
        args = tuple(argv)
        path = args[-1].removeprefix("--conf-file=")
        self.seen.append((args, Path(path).read_text()))
        for program, done in self.answers.items():
            if args[0] == program:
                return Completed(args, done.returncode, done.stdout, done.stderr)
        return Completed(args, 0, "", "")


def hosts_pair() -> dict[str, Artifact]:
    one = reservation("pc-1", "aa:bb:cc:dd:ee:01,192.168.100.5,pc-1", "lab.yaml: pcs[0]")
    two = Artifact(
        path=f"{HOSTS}/pc-2",
        content=b"# pc-2\naa:bb:cc:dd:ee:02,192.168.100.5,pc-2\n",
        service=Service.dnsmasq,
        check=None,  # judged all the same: dnsmasq reads it
        origins=("", "lab.yaml: pcs[1]"),
    )
    return {one.path: one, two.path: two}


def test_hosts_files_are_judged_as_dhcp_host_lines_and_mapped_back() -> None:
    everything = hosts_pair()
    tools = FakeTools(
        {
            "dnsmasq": Completed(
                (), 1, "", "dnsmasq: duplicate dhcp-host IP address 192.168.100.5 at line 2 of X"
            )
        }
    )
    # Only pc-2 changed, but every reservation is judged together (duplicates span files).
    outcome = preflight.check(
        [everything[f"{HOSTS}/pc-2"]], everything, layout=LAYOUT, runner=tools
    )
    ((argv, content),) = tools.seen
    assert argv[:2] == ("dnsmasq", "--test")
    assert content == (
        "dhcp-host=aa:bb:cc:dd:ee:01,192.168.100.5,pc-1\n"
        "dhcp-host=aa:bb:cc:dd:ee:02,192.168.100.5,pc-2\n"
    )
    assert outcome == Outcome(
        rejections=(
            Rejection(
                f"{HOSTS}/pc-2",
                2,
                "lab.yaml: pcs[1]",
                "dnsmasq",
                "duplicate dhcp-host IP address 192.168.100.5",
            ),
        ),
        checked=(f"{HOSTS}/pc-2",),
    )
    assert outcome.rejections[0].text() == (
        f"{HOSTS}/pc-2:2: dnsmasq rejected it: duplicate dhcp-host IP address 192.168.100.5 "
        "(from lab.yaml: pcs[1])"
    )


def test_a_missing_checker_rejects_rather_than_waving_through() -> None:
    tools = FakeTools({"dnsmasq": Completed((), NOT_FOUND, "", "dnsmasq: program not found")})
    main = main_conf("port=0\n")
    outcome = preflight.check([main], {MAIN: main}, layout=LAYOUT, runner=tools)
    assert outcome.rejections == (
        Rejection(
            MAIN, 0, "", "dnsmasq", "dnsmasq is not installed, so the file cannot be checked"
        ),
    )


def sshd_dropin(text: str) -> Artifact:
    return Artifact(
        path=SSHD_DROPIN,
        content=text.encode(),
        service=Service.sshd,
        check=Check.sshd,
        origins=("", "site.yaml: ssh.harden"),
    )


def test_sshd_not_installed_is_a_note() -> None:
    tools = FakeTools({"sshd": Completed((), NOT_FOUND, "", "")})
    dropin = sshd_dropin("PasswordAuthentication no\n")
    outcome = preflight.check([dropin], {SSHD_DROPIN: dropin}, layout=LAYOUT, runner=tools)
    assert outcome.ok
    assert outcome.notes == (f"{SSHD_DROPIN}: not checked: sshd is not installed here",)


def test_sshd_wrapper_only_includes_the_candidate() -> None:
    tools = FakeTools()
    dropin = sshd_dropin("PasswordAuthentication no\n")
    preflight.check([dropin], {SSHD_DROPIN: dropin}, layout=LAYOUT, runner=tools)
    ((argv, wrapper),) = tools.seen
    assert argv[:3] == ("sshd", "-t", "-f")
    assert wrapper.startswith("Include /") and wrapper.endswith("-kitting.conf\n")
    assert wrapper.count("\n") == 1


def test_files_without_a_check_are_not_run_through_anything() -> None:
    tools = FakeTools()
    plain = Artifact(path="/srv/tftp/menu", content=b"x", service=None)
    assert preflight.check([plain], {plain.path: plain}, layout=LAYOUT, runner=tools) == Outcome()
    assert tools.seen == []


# ---------------------------------------------------------------- the real programs


@pytest.mark.integration
def test_real_dnsmasq_names_the_line_and_origin(require_programs: RequirePrograms) -> None:
    require_programs("dnsmasq", "unshare")
    main = main_conf(
        "port=0\ninterface=e0\ndhcp-range=192.168.100.50,192.168.100.99,12h\nlease-tiem=5\n",
        origins=(
            "",
            "site.yaml: server.interface",
            "site.yaml: network.dhcp.pool",
            "site.yaml: network.dhcp.lease_time",
        ),
    )
    outcome = preflight.check([main], {MAIN: main}, layout=LAYOUT, runner=in_fresh_netns)
    assert outcome.rejections == (
        Rejection(MAIN, 4, "site.yaml: network.dhcp.lease_time", "dnsmasq", "bad option"),
    )


@pytest.mark.integration
def test_real_dnsmasq_judges_reservations_across_files(require_programs: RequirePrograms) -> None:
    require_programs("dnsmasq", "unshare")
    everything = hosts_pair()
    outcome = preflight.check(
        list(everything.values()), everything, layout=LAYOUT, runner=in_fresh_netns
    )
    assert outcome.rejections == (
        Rejection(
            f"{HOSTS}/pc-2",
            2,
            "lab.yaml: pcs[1]",
            "dnsmasq",
            "duplicate dhcp-host IP address 192.168.100.5",
        ),
    )
    bad_mac = reservation("pc-3", "aa:bb:cc:zz:ee:03,pc-3", "lab.yaml: pcs[2].macs[0]")
    outcome = preflight.check(
        [bad_mac], {bad_mac.path: bad_mac}, layout=LAYOUT, runner=in_fresh_netns
    )
    assert outcome.rejections == (
        Rejection(bad_mac.path, 1, "lab.yaml: pcs[2].macs[0]", "dnsmasq", "bad hex constant"),
    )


@pytest.mark.integration
def test_real_nft_names_the_line_and_origin(require_programs: RequirePrograms) -> None:
    require_programs("nft", "unshare")
    text = (
        "table inet kitting {\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        '\t\tiifname "e0" tcp dport 22 accept\n'
        '\t\tiifname "e0" tcp dportx 23 drop\n'
        "\t}\n"
        "}\n"
    )
    origins = (
        "",
        "",
        "",
        "site.yaml: firewall.ssh_sources",
        "site.yaml: firewall.production_networks[0]",
    )
    artifact = nft_file(text, origins)
    outcome = preflight.check([artifact], {NFT: artifact}, layout=LAYOUT, runner=in_fresh_netns)
    assert outcome.rejections == (
        Rejection(
            NFT,
            5,
            "site.yaml: firewall.production_networks[0]",
            "nft",
            "syntax error, unexpected string",
        ),
    )


@pytest.mark.integration
def test_real_sshd_names_the_line_and_origin(require_programs: RequirePrograms) -> None:
    require_programs("sshd", "unshare")
    bad = sshd_dropin("PasswordAuthentication no\nPermitRootLogin maybe\n")
    outcome = preflight.check([bad], {SSHD_DROPIN: bad}, layout=LAYOUT, runner=in_fresh_netns)
    assert outcome.rejections == (
        Rejection(SSHD_DROPIN, 2, "site.yaml: ssh.harden", "sshd", 'unsupported option "maybe".'),
    )


@pytest.mark.integration
def test_real_checkers_accept_good_files(require_programs: RequirePrograms) -> None:
    require_programs("dnsmasq", "nft", "sshd", "unshare")
    good = [
        main_conf("port=0\ninterface=e0\ndhcp-range=192.168.100.50,192.168.100.99,12h\n"),
        reservation("pc-1", "aa:bb:cc:dd:ee:01,192.168.100.11,pc-1"),
        nft_file((Path(__file__).parent.parent / "cases/facts/kitting.nft").read_text()),
        sshd_dropin("PasswordAuthentication no\nPermitRootLogin no\n"),
    ]
    everything = {a.path: a for a in good}
    outcome = preflight.check(good, everything, layout=LAYOUT, runner=in_fresh_netns)
    assert outcome.rejections == ()
    assert outcome.checked == tuple(sorted(everything))
