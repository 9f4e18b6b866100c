"""Pure parsers for nftables: the live table as the kernel reports it, and rule lines.

Drift detection compares the kernel with the kernel: right after apply loads our table, the
normalized `nft -j list table inet kitting` is fingerprinted and stored in the inventory;
observing later computes the same fingerprint from the live table. We never compare the
rendered file's text with a listing, because nft rewrites what it loads (it adds
`l3proto inet` to a ct helper, prints `priority filter` for 0, reorders declarations) and
that rewriting changes between nft versions. The JSON form is the machine interface, and
normalizing it drops what changes without anyone editing the rules: object handles (new on
every load), counter and quota values, element expiry times, and the elements of sets the
packet path fills itself (dynamic / timeout sets). An nft upgrade that changes the JSON can
at worst cause one needless reload of an identical table, never a missed edit.

Purely computational.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

FAMILY = "inet"
TABLE = "kitting"


class NftParseError(ValueError):
    pass


def normalize(listing_json: str) -> tuple[str, ...]:
    """The table's objects as canonical JSON strings, in the kernel's order."""
    try:
        body = json.loads(listing_json)
        items = body["nftables"]
    except (ValueError, KeyError, TypeError) as error:
        raise NftParseError(f"not an nft JSON listing: {error}") from error
    if not isinstance(items, list):
        raise NftParseError("not an nft JSON listing: 'nftables' is not a list")
    objects: list[str] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise NftParseError(f"unexpected item in nft JSON listing: {item!r}")
        ((kind, value),) = item.items()
        if kind == "metainfo":
            continue  # nft's own version, not the table
        objects.append(json.dumps({kind: _strip(kind, value)}, sort_keys=True))
    return tuple(objects)


def _strip(kind: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kept = {k: v for k, v in value.items() if k not in {"handle", "packets", "bytes", "used"}}
    if kind == "set" and {"dynamic", "timeout"} & set(value.get("flags", [])):
        kept.pop("elem", None)
    if "elem" in kept:
        kept["elem"] = [_without_expiry(e) for e in kept["elem"]]
    if kind == "rule":
        kept["expr"] = [_quiet_counter(e) for e in kept.get("expr", [])]
    return kept


def _without_expiry(element: Any) -> Any:
    if isinstance(element, dict) and isinstance(element.get("elem"), dict):
        inner = {k: v for k, v in element["elem"].items() if k != "expires"}
        return {"elem": inner}
    return element


def _quiet_counter(expression: Any) -> Any:
    if isinstance(expression, dict) and "counter" in expression:
        return {"counter": None}
    return expression


def fingerprint(objects: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(objects).encode()).hexdigest()


_MISSING = re.compile(r"No such file or directory")


def is_missing_table(output: str) -> bool:
    """nft's answer when the table does not exist (exit status 1)."""
    return _MISSING.search(output) is not None


_CHAIN_OPEN = re.compile(r"^chain\s+\S+\s*\{$")
_DECLARATION = re.compile(r"^(type|policy|comment|devices|priority)\b")


def rule_lines(source: str) -> list[str]:
    """The rule statements of an nft source file: lines inside a chain block that are not
    its type/policy declarations, comments or braces (whitespace-normalized)."""
    rules: list[str] = []
    depth = 0
    chain_depth: int | None = None
    for raw in source.splitlines():
        line = " ".join(_without_comment(raw).split())
        if not line:
            continue
        opens, closes = line.count("{"), line.count("}")
        if _CHAIN_OPEN.match(line):
            chain_depth = depth + 1
        elif depth == chain_depth and opens == closes and not _DECLARATION.match(line):
            rules.append(line)
        depth += opens - closes
        if chain_depth is not None and depth < chain_depth:
            chain_depth = None
    return rules


def _without_comment(line: str) -> str:
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def rule_changes(old: str, new: str) -> tuple[int, int]:
    """How many rule lines the new source adds and removes (as multisets)."""
    before, after = Counter(rule_lines(old)), Counter(rule_lines(new))
    return sum((after - before).values()), sum((before - after).values())
