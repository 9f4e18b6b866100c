"""Constrained value types of the desired state.

Every string that can reach a rendered file (dnsmasq, exports, nftables, PXE menus, sshd)
passes one of these validators first. They accept only a small, safe character set, so no
value from the site repo can start a new directive, close a quoted string, or leave a
directory. Purely computational: no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_MAC_FORMS = (
    re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$"),
    re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$"),
    re.compile(r"^[0-9a-fA-F]{12}$"),
)
# The same forms in one pattern: one match per MAC (validation meets tens of thousands).
_MAC_FORM = re.compile("|".join(f"(?:{form.pattern})" for form in _MAC_FORMS))
MAC_FORMS_HINT = "6 bytes as aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff"


def mac(value: object) -> str:
    """Normalize a MAC address to lower-case colon form; refuse group and null addresses."""
    if isinstance(value, int | float):  # YAML read bare digits as a number
        raise ValueError(
            f'{value!r} was read as a number: quote a MAC address, e.g. "020000000101" '
            f"({MAC_FORMS_HINT})"
        )
    if not isinstance(value, str):
        raise ValueError(f"a MAC address must be a string ({MAC_FORMS_HINT})")
    text = value.strip()
    if _MAC_FORM.match(text) is None:
        if re.fullmatch(r"[0-9a-fA-F:.-]+", text):
            count = len(re.sub(r"[^0-9a-fA-F]", "", text))
            problem = (
                f"it has {count} hex digits" if count != 12 else "its digits are grouped wrongly"
            )
            raise ValueError(
                f"{value!r} is not a MAC address: {problem}; expected {MAC_FORMS_HINT}"
            )
        raise ValueError(f"{value!r} is not a MAC address (expected {MAC_FORMS_HINT})")
    digits = text.replace(":", "").replace("-", "").replace(".", "").lower()
    octets = [digits[i : i + 2] for i in range(0, 12, 2)]
    normalized = ":".join(octets)
    if digits == "0" * 12:
        raise ValueError(
            f"{value!r} is the all-zero MAC address, which no NIC has; use the NIC's own address"
        )
    if digits == "f" * 12:
        raise ValueError(
            f"{value!r} is the broadcast address, not a NIC's MAC address; use the NIC's own address"
        )
    if int(octets[0], 16) & 1:
        raise ValueError(
            f"{value!r} is a multicast (group) address: its first octet is odd; "
            "a NIC's MAC address has an even first octet"
        )
    return normalized


_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def hostname(value: str) -> str:
    """One RFC 1123 label: letters, digits and inner hyphens, not all digits, ≤ 63."""
    if "_" in value:
        suggestion = value.replace("_", "-")
        raise ValueError(
            f"hostname {value!r} contains '_', which RFC 1123 does not allow; "
            f"use a hyphen: {suggestion!r}"
        )
    if not value:
        raise ValueError("hostname is empty")
    if len(value) > 63:
        raise ValueError(f"hostname {value!r} is {len(value)} characters long; at most 63")
    if value.startswith("-") or value.endswith("-"):
        raise ValueError(f"hostname {value!r} must not start or end with a hyphen")
    if _LABEL.fullmatch(value) is None:
        raise ValueError(
            f"hostname {value!r} may contain only letters, digits and hyphens (RFC 1123, one label)"
        )
    if value.isdigit():
        raise ValueError(f"hostname {value!r} is all digits; it needs at least one letter")
    return value


_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def name(value: str) -> str:
    """A name of a site, department or batch: lower-case letters, digits, inner hyphens."""
    if _NAME.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lower-case letters, digits and inner "
            "hyphens (e.g. 'sales', 'spring-2026')"
        )
    return value


_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED_IMAGE_NAMES = frozenset({"logs", "lost+found"})


def image_name(value: str) -> str:
    """A directory directly under the images root; never '..', a path, or a reserved name."""
    if _IMAGE.fullmatch(value) is None or ".." in value:
        raise ValueError(
            f"{value!r} is not a valid image name: it is a directory directly under the images "
            "root, so use 1-100 letters, digits, '.', '_' and '-', starting with a letter or "
            "digit, and no '..'"
        )
    if value in RESERVED_IMAGE_NAMES:
        raise ValueError(f"{value!r} is reserved under the images root (deployment history)")
    return value


_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")


def interface(value: str) -> str:
    if _IFNAME.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a network interface name: 1-15 letters, digits, '.', '_', '-'"
        )
    return value


_SEGMENT = r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*"
_ABS = re.compile(rf"^(?:/{_SEGMENT})+$")
_REL = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")


def _no_dot_segments(value: str) -> bool:
    return all(part not in {".", ".."} for part in value.split("/"))


def absolute_path(value: str) -> str:
    if _ABS.fullmatch(value) is None or not _no_dot_segments(value):
        raise ValueError(
            f"{value!r} is not a safe absolute path: start with '/', use letters, digits, "
            "'.', '_', '+', '-' in each part, no '..' and no trailing '/'"
        )
    return value


def relative_path(value: str) -> str:
    if _REL.fullmatch(value) is None or not _no_dot_segments(value):
        raise ValueError(
            f"{value!r} is not a safe relative path: letters, digits, '.', '_', '+', '-' in "
            "each '/'-separated part, not starting with '/' or '.', no '..'"
        )
    return value


_DEVICE = re.compile(
    r"^(?:sd[a-z]{1,2}|vd[a-z]{1,2}|hd[a-z]|xvd[a-z]{1,2}|nvme[0-9]{1,2}n[0-9]{1,2}"
    r"|mmcblk[0-9]{1,2}|loop[0-9]{1,3})$"
)


def disk_device(value: str) -> str:
    if _DEVICE.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a whole-disk device name: expected e.g. sda, nvme0n1, vda, "
            "mmcblk0 (no /dev/ prefix, no partition number)"
        )
    return value


_DURATION = re.compile(r"^([0-9]{1,9})\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: object) -> int:
    """Seconds, from an integer or a string like '90s', '10m', '12h', '1d'."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(
            f"{value!r} is not a duration: give seconds (600) or a number with a unit "
            "s, m, h or d ('90s', '10m', '12h', '1d')"
        )
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


_SIZE = re.compile(r"^([0-9]{1,7}(?:\.[0-9]{1,3})?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def byte_size(value: object) -> int:
    """Bytes, from an integer or '256GB' / '238GiB' / '500G' (decimal unless 'i')."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '256GB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value.strip())):
        number, unit = match.group(1), (match.group(2) or "").lower()
        factor = _SIZE_FACTORS[unit[:1]] if unit else 1
        if "i" in unit:
            factor = 1024 ** "bkmgt".index(unit[0])
        size = int(float(number) * factor)
    else:
        raise ValueError(f"{value!r} is not a size: use bytes or e.g. '256GB', '238GiB', '1TB'")
    if size <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return size


_BITRATE = re.compile(r"^([0-9]{1,6})\s*([kmg]?)(?:bps|bit/s)?$", re.IGNORECASE)


def bitrate(value: object) -> int:
    """Bits per second, from an integer or '800m' / '1g' / '500000k'."""
    if isinstance(value, bool):
        raise ValueError("a bitrate is bits per second or a string like '800m'")
    if isinstance(value, int):
        rate = value
    elif isinstance(value, str) and (match := _BITRATE.match(value.strip())):
        rate = (
            int(match.group(1))
            * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
        )
    else:
        raise ValueError(f"{value!r} is not a bitrate: e.g. '800m' (Mbit/s), '1g', 500000000")
    if rate <= 0:
        raise ValueError("a bitrate must be positive")
    return rate


def timezone(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+){0,2}", value):
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. 'Asia/Tokyo')")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a known IANA time zone (e.g. 'Asia/Tokyo', 'Europe/Berlin', 'UTC')"
        ) from None
    return value


_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?$")


def local_time(value: object) -> datetime:
    """A wall-clock time, with or without an offset; the zone is applied later."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _LOCAL_TIME.match(value.strip()) is None:
        raise ValueError(
            f"{value!r} is not a time: use 'YYYY-MM-DDTHH:MM' in the window's time zone, "
            "or add an offset ('2026-12-07T09:00+09:00')"
        )
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date and time: {exc}") from None


def ip_source(value: object) -> str:
    """A firewall source: a CIDR network or an inclusive 'A-B' range of IPv4 addresses."""
    if not isinstance(value, str):
        raise ValueError(
            "a source is a string: '192.168.100.0/24' or '192.168.100.200-192.168.100.250'"
        )
    text = value.strip()
    try:
        if "-" in text:
            first, last = (IPv4Address(part.strip()) for part in text.split("-", 1))
            if first > last:
                raise ValueError(f"range {value!r} starts after it ends")
            return f"{first}-{last}"
        return str(IPv4Network(text, strict=True))
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IPv4 network or range ({exc}); e.g. '10.0.0.0/8' or "
            "'192.168.100.200-192.168.100.250'"
        ) from None


def signer_key(value: str) -> str:
    """An OpenSSH public key line 'TYPE BASE64': no options, no comment-borne newlines."""
    if (
        re.fullmatch(
            r"(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com"
            r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}",
            value,
        )
        is None
    ):
        raise ValueError(
            "an SSH signing key is 'TYPE BASE64' as in a .pub file without its comment, "
            "e.g. 'ssh-ed25519 AAAAC3Nza...'"
        )
    return value


def openpgp_fingerprint(value: str) -> str:
    compact = value.replace(" ", "").upper()
    if re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", compact) is None:
        raise ValueError("an OpenPGP fingerprint is 40 (v4) or 64 (v6) hex digits")
    return compact


def principal(value: str) -> str:
    # starts with a letter, digit or _: never "." or "..", whatever a later use makes of it
    if re.fullmatch(r"[A-Za-z0-9_%+-][A-Za-z0-9._%+-]*(?:@[A-Za-z0-9.-]+)?", value) is None:
        raise ValueError(
            "a signer principal is an e-mail address or a user name, e.g. 'alice@example.com'"
        )
    return value


def _text(pattern: str, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description})


def _int_or_text(pattern: str, description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": pattern}],
            "description": description,
        }
    )


Mac = Annotated[
    str,
    BeforeValidator(mac),
    _text(
        r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$|^[0-9A-Fa-f]{12}$",
        "MAC address; stored as lower-case aa:bb:cc:dd:ee:ff",
    ),
]
Hostname = Annotated[
    str,
    AfterValidator(hostname),
    _text(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", "RFC 1123 host name (one label)"),
]
Name = Annotated[
    str, AfterValidator(name), _text(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "lower-case name")
]
ImageName = Annotated[
    str,
    AfterValidator(image_name),
    _text(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", "directory name under the images root"),
]
InterfaceName = Annotated[
    str, AfterValidator(interface), _text(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$", "interface name")
]
AbsolutePath = Annotated[
    str,
    AfterValidator(absolute_path),
    _text(r"^(/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)+$", "absolute path"),
]
RelativePath = Annotated[
    str,
    AfterValidator(relative_path),
    _text(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*(/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)*$", "relative path"),
]
DiskDevice = Annotated[
    str,
    AfterValidator(disk_device),
    _text(
        r"^(sd[a-z]{1,2}|vd[a-z]{1,2}|hd[a-z]|xvd[a-z]{1,2}|nvme[0-9]{1,2}n[0-9]{1,2}|mmcblk[0-9]{1,2}|loop[0-9]{1,3})$",
        "whole-disk device name without /dev/",
    ),
]
Duration = Annotated[
    int,
    BeforeValidator(duration),
    _int_or_text(r"^[0-9]{1,9}\s*[smhd]?$", "seconds, or a number with unit s/m/h/d"),
]
ByteSize = Annotated[
    int,
    BeforeValidator(byte_size),
    _int_or_text(
        r"^[0-9]{1,7}(\.[0-9]{1,3})?\s*([KMGTkmgt]i?[Bb]?|[Bb])?$", "bytes, or e.g. 256GB"
    ),
]
Bitrate = Annotated[
    int,
    BeforeValidator(bitrate),
    _int_or_text(r"^[0-9]{1,6}\s*[kmgKMG]?(bps|bit/s)?$", "bits per second, or e.g. 800m"),
]
TimeZone = Annotated[str, AfterValidator(timezone), _text(r"^[A-Za-z0-9_+/-]+$", "IANA time zone")]
LocalTime = Annotated[
    datetime,
    BeforeValidator(local_time),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    _text(
        r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})?$",
        "local date and time, optional offset",
    ),
]
IpSource = Annotated[
    str,
    BeforeValidator(ip_source),
    _text(r"^[0-9./-]+$", "IPv4 network (CIDR) or range A-B"),
]
SignerKey = Annotated[
    str, AfterValidator(signer_key), _text(r"^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}$", "SSH public key")
]
OpenPgpFingerprint = Annotated[
    str, AfterValidator(openpgp_fingerprint), _text(r"^[0-9A-Fa-f ]{40,80}$", "OpenPGP fingerprint")
]
Principal = Annotated[
    str,
    AfterValidator(principal),
    _text(r"^[A-Za-z0-9_%+@-][A-Za-z0-9._%+@-]*$", "signer principal"),
]


def _ip_text(value: object) -> object:
    """Addresses are written as text: YAML would turn `ip: 5` into the number 5, which
    ipaddress would quietly read as 0.0.0.5."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value!r} is a number; write the address as text, e.g. '192.168.100.21'")
    return value


Address = Annotated[IPv4Address, BeforeValidator(_ip_text)]
Network = Annotated[IPv4Network, BeforeValidator(_ip_text)]
