"""Value types of the desired state: hand-worked values, and properties over arbitrary text.

The properties are the security contract of `reconciler.fields`: whatever a validator
accepts can be written into a dnsmasq, exports, nftables or PXE file without starting a new
directive, closing a quote or leaving a directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from reconciler import fields
from reconciler.desired import Pc

# ----------------------------------------------------------------------------- MAC


@pytest.mark.parametrize(
    "given_mac",
    [
        "02:4B:49:54:01:0A",  # colon, upper case
        "02:4b:49:54:01:0a",  # colon, lower case
        "02-4b-49-54-01-0A",  # dash
        "024b.4954.010a",  # dot (Cisco)
        "024B4954010A",  # bare
        "  02:4b:49:54:01:0a  ",  # surrounding blanks
    ],
)
def test_mac_forms_are_stored_lower_case_with_colons(given_mac: str) -> None:
    assert fields.mac(given_mac) == "02:4b:49:54:01:0a"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("02:4b:49:54:01", "it has 10 hex digits"),
        ("02:4b:49:54:01:0a:0b", "it has 14 hex digits"),
        ("024b:4954:010a", "grouped wrongly"),
        ("02:4b-49:54:01:0a", "grouped wrongly"),  # mixed separators
        ("02:4b:49:54:01:0g", "is not a MAC address"),
        ("01:00:5e:00:00:01", "multicast (group) address"),  # odd first octet
        ("03:00:00:00:00:00", "multicast (group) address"),
        ("ff:ff:ff:ff:ff:ff", "broadcast address"),
        ("FF-FF-FF-FF-FF-FF", "broadcast address"),
        ("00:00:00:00:00:00", "all-zero"),
        ("0000.0000.0000", "all-zero"),
        ("", "is not a MAC address"),
    ],
)
def test_mac_refusals_say_why(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        fields.mac(bad)


def test_mac_read_as_a_number_asks_for_quotes() -> None:
    with pytest.raises(ValueError, match="read as a number: quote"):
        fields.mac(20000000101)  # YAML turns unquoted 020000000101 into this


def test_mac_every_message_names_the_valid_forms() -> None:
    for bad in ("02:4b:49:54:01", "zz", "024b:4954:010a"):
        with pytest.raises(ValueError, match=re.escape(fields.MAC_FORMS_HINT)):
            fields.mac(bad)


def test_mac_through_the_model_is_normalized() -> None:
    pc = Pc.model_validate({"hostname": "pc-01", "macs": ["02-4B-49-54-01-0A", "024b.4954.110a"]})
    assert pc.macs == ["02:4b:49:54:01:0a", "02:4b:49:54:11:0a"]


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("good", ["PC-01", "sales-pc-7", "a", "7a", "A" * 63, "x1-2-3"])
def test_hostname_accepts_rfc1123_labels(good: str) -> None:
    assert fields.hostname(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("pc_01", "use a hyphen: 'pc-01'"),
        ("-pc", "must not start or end with a hyphen"),
        ("pc-", "must not start or end with a hyphen"),
        ("1234", "all digits"),
        ("", "empty"),
        ("a" * 64, "64 characters long; at most 63"),
        ("pc.01", "only letters, digits and hyphens"),
        ("pc 01", "only letters, digits and hyphens"),
        ("pc01\n", "only letters, digits and hyphens"),
        ("pcé", "only letters, digits and hyphens"),
    ],
)
def test_hostname_refusals(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        fields.hostname(bad)


@pytest.mark.parametrize("good", ["sales", "spring-2026", "a", "0", "a" * 63])
def test_name_accepts_lower_case(good: str) -> None:
    assert fields.name(good) == good


@pytest.mark.parametrize("bad", ["Sales", "-a", "a-", "a_b", "a" * 64, "", "sales\n", "a.b"])
def test_name_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="lower-case letters, digits and inner hyphens"):
        fields.name(bad)


@pytest.mark.parametrize("good", ["win11-sales-2025", "Win11_Base.v2", "a", "A" * 100])
def test_image_name_accepts_directory_names(good: str) -> None:
    assert fields.image_name(good) == good


@pytest.mark.parametrize(
    "bad", ["../etc", "..", "a/b", ".hidden", "a..b", "", "A" * 101, "img\n", "-img", "a b"]
)
def test_image_name_cannot_leave_the_images_root(bad: str) -> None:
    with pytest.raises(ValueError, match="directly under the images root"):
        fields.image_name(bad)


@pytest.mark.parametrize("reserved", ["logs"])
def test_image_name_reserved(reserved: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        fields.image_name(reserved)


@pytest.mark.parametrize("good", ["enp1s0", "eth0.100", "br-kit", "wlp0s20f3", "a" * 15])
def test_interface_accepts(good: str) -> None:
    assert fields.interface(good) == good


@pytest.mark.parametrize("bad", ["a" * 16, "eth 0", "eth0\n", "", "-eth0", "eth0;", "eth/0"])
def test_interface_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a network interface name"):
        fields.interface(bad)


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("good", ["/srv/tftp", "/home/partimag", "/a", "/a/b.c/d-e_f+g"])
def test_absolute_path_accepts(good: str) -> None:
    assert fields.absolute_path(good) == good


@pytest.mark.parametrize(
    "bad", ["/", "/srv/", "srv", "/srv/./x", "/srv/../x", "/srv//x", "/srv/.x", "/s rv", "/x\n"]
)
def test_absolute_path_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe absolute path"):
        fields.absolute_path(bad)


@pytest.mark.parametrize("good", ["pxelinux.0", "clonezilla/vmlinuz", "a/b/c.img", "grub"])
def test_relative_path_accepts(good: str) -> None:
    assert fields.relative_path(good) == good


@pytest.mark.parametrize(
    "bad", ["/x", "./x", "x/../y", "..", ".x", "x/.y", "x/", "x//y", "", "x y", "x\n"]
)
def test_relative_path_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe relative path"):
        fields.relative_path(bad)


@pytest.mark.parametrize(
    "good", ["sda", "sdab", "vda", "hda", "xvdb", "nvme0n1", "nvme10n2", "mmcblk0", "loop3"]
)
def test_disk_device_accepts_whole_disks(good: str) -> None:
    assert fields.disk_device(good) == good


@pytest.mark.parametrize("bad", ["/dev/sda", "sda1", "nvme0n1p1", "sdabc", "SDA", "sda\n", ""])
def test_disk_device_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a whole-disk device name"):
        fields.disk_device(bad)


# ----------------------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("given_value", "seconds"),
    [(600, 600), ("90s", 90), ("10m", 600), ("12h", 43200), ("1d", 86400), (" 5 m ", 300)],
)
def test_duration(given_value: object, seconds: int) -> None:
    assert fields.duration(given_value) == seconds


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (0, "must be positive"),
        (-5, "must be positive"),
        ("0s", "must be positive"),
        (True, "a duration is"),
        ("10x", "not a duration"),
        ("1.5h", "not a duration"),
        (None, "not a duration"),
    ],
)
def test_duration_refuses(bad: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        fields.duration(bad)


@pytest.mark.parametrize(
    ("given_value", "size"),
    [
        (1000, 1000),
        ("256GB", 256_000_000_000),
        ("238GiB", 255_550_554_112),  # 238 * 1024**3
        ("500G", 500_000_000_000),
        ("1TB", 1_000_000_000_000),
        ("1.5KB", 1500),
        ("1.5KiB", 1536),
        ("4KiB", 4096),
        ("10B", 10),
        ("512", 512),
        ("512gb", 512_000_000_000),
    ],
)
def test_byte_size(given_value: object, size: int) -> None:
    assert fields.byte_size(given_value) == size


@pytest.mark.parametrize("bad", [0, "0GB", "1 PB", True, "GB", "-1GB", None])
def test_byte_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        fields.byte_size(bad)


@pytest.mark.parametrize(
    ("given_value", "rate"),
    [
        ("800m", 800_000_000),
        ("1g", 1_000_000_000),
        ("500000k", 500_000_000),
        ("800Mbps", 800_000_000),
        ("100 mbit/s", 100_000_000),
        (1000, 1000),
    ],
)
def test_bitrate(given_value: object, rate: int) -> None:
    assert fields.bitrate(given_value) == rate


@pytest.mark.parametrize("bad", ["0", 0, "fast", True, "1t"])
def test_bitrate_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="bitrate"):
        fields.bitrate(bad)


# ----------------------------------------------------------------------------- time


@pytest.mark.parametrize("good", ["Asia/Tokyo", "UTC", "Europe/Berlin", "America/Argentina/Salta"])
def test_timezone_accepts_iana_names(good: str) -> None:
    assert fields.timezone(good) == good


@pytest.mark.parametrize("bad", ["Mars/Olympus", "../etc/passwd", "Asia/Tokyo\n", "", "+09:00"])
def test_timezone_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        fields.timezone(bad)


def test_local_time_without_offset_stays_naive() -> None:
    assert fields.local_time("2026-12-07T09:00") == datetime(2026, 12, 7, 9, 0)
    assert fields.local_time("2026-12-07 09:00:30") == datetime(2026, 12, 7, 9, 0, 30)


def test_local_time_with_offset_is_aware() -> None:
    tokyo = fields.local_time("2026-12-07T09:00+09:00")
    assert tokyo.utcoffset() == timedelta(hours=9)
    assert tokyo == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    assert fields.local_time("2026-12-07T00:00Z") == tokyo


@pytest.mark.parametrize(
    ("bad", "says"),
    [("2026-13-01T00:00", "not a valid date and time"), ("09:00", "not a time"), (5, "not a time")],
)
def test_local_time_refuses(bad: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        fields.local_time(bad)


# ----------------------------------------------------------------------------- network, signers


@pytest.mark.parametrize(
    ("given_value", "stored"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.168.100.200-192.168.100.250", "192.168.100.200-192.168.100.250"),
        (" 192.168.100.200 - 192.168.100.250 ", "192.168.100.200-192.168.100.250"),
        ("192.168.100.7/32", "192.168.100.7/32"),
    ],
)
def test_ip_source(given_value: str, stored: str) -> None:
    assert fields.ip_source(given_value) == stored


@pytest.mark.parametrize(
    "bad", ["10.0.0.1/8", "10.0.0.5-10.0.0.1", "10.0.0.0/33", "any", 5, "10.0.0.0/8,1.2.3.4"]
)
def test_ip_source_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match=r"source|range|network"):
        fields.ip_source(bad)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkVfHbXnHhkP9M1p1c2x5dVqBq0y9hF1oFJ0B4m3xQK"


def test_signer_key_accepts_type_and_base64() -> None:
    assert fields.signer_key(KEY) == KEY


@pytest.mark.parametrize(
    "bad",
    [KEY + " alice@example.com", KEY + "\n", "ssh-dss AAAA", "AAAAC3Nz", f'command="x" {KEY}'],
)
def test_signer_key_refuses_options_comments_and_other_types(bad: str) -> None:
    with pytest.raises(ValueError, match="TYPE BASE64"):
        fields.signer_key(bad)


def test_openpgp_fingerprint_is_compacted_upper_case() -> None:
    spaced = "0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567"
    assert fields.openpgp_fingerprint(spaced) == "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.mark.parametrize("bad", ["0123456789ABCDEF", "G" * 40, "0" * 41])
def test_openpgp_fingerprint_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match=r"40 .* or 64"):
        fields.openpgp_fingerprint(bad)


@pytest.mark.parametrize("good", ["alice@example.com", "alice", "a.b+c@x-y.example"])
def test_principal_accepts(good: str) -> None:
    assert fields.principal(good) == good


@pytest.mark.parametrize("bad", ["alice bob", "a,b", "a@b@c", "", "alice\n", "..", ".alice"])
def test_principal_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="signer principal"):
        fields.principal(bad)


# ----------------------------------------------------------------------------- properties

# Characters that end or start something in the files values reach: dnsmasq (',' '#' and
# newline), exports and nftables ('{' '}' ';' '"'), shells and PXE menus ('$' '`' '\' quotes).
FORBIDDEN = set(" \t\r\n\v\f#,\"';{}$`\\") | {"\x00", "\x85", "\u2028"}
SAFE_CHARS = "abcXYZ019-_./+:"
ALPHABET = st.sampled_from(sorted(FORBIDDEN | set(SAFE_CHARS) | {"é", "@", "=", "*"}))
TEXT = st.one_of(st.text(), st.text(alphabet=ALPHABET, max_size=40))

Validator = Callable[[str], str]
VALIDATORS: dict[str, Validator] = {
    "hostname": fields.hostname,
    "name": fields.name,
    "image_name": fields.image_name,
    "interface": fields.interface,
    "absolute_path": fields.absolute_path,
    "relative_path": fields.relative_path,
    "mac": fields.mac,
    "disk_device": fields.disk_device,
    "principal": fields.principal,
}


def _accepted(validator: Validator, text: str) -> str | None:
    try:
        return validator(text)
    except ValueError:
        return None


def _assert_safe(kind: str, value: str) -> None:
    assert not FORBIDDEN & set(value), (kind, value)
    assert value.isascii() and value.isprintable(), (kind, value)
    assert ".." not in value.split("/"), (kind, value)
    if kind == "image_name":
        assert "/" not in value and ".." not in value, value
    if kind == "mac":
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", value), value


# Text near the accepted forms: the shape each validator looks for, with anything around it
# (hypothesis also puts a newline after a pattern's '$', the classic hole of re.match).
NEAR = {
    "hostname": r"[A-Za-z0-9][A-Za-z0-9-]{0,8}[A-Za-z0-9]$",
    "name": r"[a-z0-9][a-z0-9-]{0,8}[a-z0-9]$",
    "image_name": r"[A-Za-z0-9][A-Za-z0-9._/-]{0,12}$",
    "interface": r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}$",
    "absolute_path": r"(/[A-Za-z0-9_.+-]{1,5}){1,4}$",
    "relative_path": r"[A-Za-z0-9_.+-]{1,5}(/[A-Za-z0-9_.+-]{1,5}){0,3}$",
    "mac": r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$",
    "disk_device": r"(sd[a-z]|nvme[0-9]n[0-9]|loop[0-9])$",
    "principal": r"[a-z.+]{1,6}@[a-z.-]{1,8}$",
}


@pytest.mark.parametrize("kind", sorted(VALIDATORS))
@settings(max_examples=150)
@given(data=st.data())
def test_whatever_is_accepted_is_safe(kind: str, data: st.DataObject) -> None:
    text = data.draw(st.one_of(TEXT, st.from_regex(NEAR[kind])), label="text")
    value = _accepted(VALIDATORS[kind], text)
    if value is not None:
        _assert_safe(kind, value)


# Values each validator accepts, so that the test below starts from accepted text.
ACCEPTED = {
    "hostname": "SALES-PC-01",
    "name": "sales",
    "image_name": "win11-sales-2025",
    "interface": "enp1s0",
    "absolute_path": "/srv/tftp",
    "relative_path": "clonezilla/vmlinuz",
    "disk_device": "nvme0n1",
    "principal": "alice@example.com",
}


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_a_forbidden_character_anywhere_is_refused(kind: str) -> None:
    """Every forbidden character at every position: few enough to try them all."""
    good = ACCEPTED[kind]
    assert VALIDATORS[kind](good) == good
    accepted = [
        (at, char)
        for at in range(len(good) + 1)
        for char in sorted(FORBIDDEN)
        if _accepted(VALIDATORS[kind], good[:at] + char + good[at:]) is not None
    ]
    assert accepted == []


@settings(max_examples=100)
@given(data=st.data())
def test_a_dot_dot_segment_anywhere_is_refused(data: st.DataObject) -> None:
    parts = data.draw(st.lists(st.sampled_from(["srv", "tftp", "a.b", "x-y"]), max_size=4))
    at = data.draw(st.integers(min_value=0, max_value=len(parts)))
    with_dots = [*parts[:at], "..", *parts[at:]]
    with pytest.raises(ValueError):
        fields.absolute_path("/" + "/".join(with_dots))
    with pytest.raises(ValueError):
        fields.relative_path("/".join(with_dots))
    with pytest.raises(ValueError):
        fields.image_name("..".join(parts) if len(parts) > 1 else "..")


@settings(max_examples=150)
@given(text=TEXT)
def test_whatever_a_pc_model_accepts_is_safe(text: str) -> None:
    """The same contract through pydantic, as validation uses it."""
    try:
        pc = Pc.model_validate({"hostname": text, "macs": [text]})
    except ValidationError:
        return
    _assert_safe("hostname", pc.hostname)
    _assert_safe("mac", pc.macs[0])


@settings(max_examples=100)
@given(text=TEXT)
def test_whatever_the_image_name_type_accepts_stays_under_the_root(text: str) -> None:
    try:
        value = TypeAdapter(fields.ImageName).validate_python(text)
    except ValidationError:
        return
    _assert_safe("image_name", value)
