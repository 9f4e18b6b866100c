"""nftables parsers, on output captured from the real nft (see tests/cases/facts/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import nftables

CASES = Path(__file__).parent.parent / "cases" / "facts"


def capture(name: str) -> str:
    return (CASES / name).read_text()


def test_normalize_drops_handles_metainfo_and_counter_values() -> None:
    objects = nftables.normalize(capture("nft-list.json"))
    assert len(objects) == 9  # table, ct helper, set, 2 chains, 4 rules (metainfo dropped)
    assert objects[0] == '{"table": {"family": "inet", "name": "kitting"}}'
    assert json.loads(objects[8]) == {
        "rule": {
            "family": "inet",
            "table": "kitting",
            "chain": "forward",
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "e0"}},
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": {"prefix": {"addr": "10.0.0.0", "len": 8}},
                    }
                },
                {"drop": None},
            ],
        }
    }
    assert all('"handle"' not in o for o in objects)


def test_the_same_table_loaded_again_has_the_same_fingerprint() -> None:
    # The second capture has other handles and, without -s, counter values.
    first = nftables.normalize(capture("nft-list.json"))
    again = nftables.normalize(capture("nft-list-reloaded-with-counters.json"))
    assert '"handle": 2' in capture("nft-list.json")
    assert '"handle": 4' in capture("nft-list-reloaded-with-counters.json")
    assert nftables.fingerprint(first) == nftables.fingerprint(again)


def test_a_rule_added_by_hand_changes_the_fingerprint() -> None:
    before = nftables.normalize(capture("nft-list.json"))
    after = nftables.normalize(capture("nft-list-hand-rule.json"))
    assert nftables.fingerprint(before) != nftables.fingerprint(after)
    added = set(after) - set(before)
    assert len(added) == 1
    assert '"right": 2049' in added.pop()


def test_elements_of_sets_the_packet_path_fills_are_ignored() -> None:
    def listing(elements: list[object]) -> str:
        dynamic = {
            "family": "inet",
            "name": "seen",
            "table": "kitting",
            "type": "ipv4_addr",
            "handle": 9,
            "flags": ["dynamic", "timeout"],
            "elem": elements,
        }
        return json.dumps({"nftables": [{"set": dynamic}]})

    one = nftables.normalize(listing([{"elem": {"val": "10.0.0.1", "expires": 3}}]))
    other = nftables.normalize(listing([]))
    assert (
        one
        == other
        == (
            '{"set": {"family": "inet", "flags": ["dynamic", "timeout"], '
            '"name": "seen", "table": "kitting", "type": "ipv4_addr"}}',
        )
    )


@pytest.mark.parametrize("text", ["", "[]", '{"nftables": 3}', '{"nftables": [{"a": 1, "b": 2}]}'])
def test_garbage_is_not_a_listing(text: str) -> None:
    with pytest.raises(nftables.NftParseError):
        nftables.normalize(text)


def test_missing_table_is_recognised() -> None:
    assert nftables.is_missing_table(capture("nft-missing-table.stderr"))
    assert not nftables.is_missing_table("Error: Operation not permitted")


def test_rule_lines_of_a_source_file() -> None:
    assert nftables.rule_lines(capture("kitting.nft")) == [
        'iifname "e0" udp dport 69 ct helper set "tftp-69"',
        'iifname "e0" tcp dport 22 ip saddr @admins accept',
        'iifname "e0" tcp dport 22 counter drop',
        'iifname "e0" ip daddr 10.0.0.0/8 drop',
    ]


def test_rule_lines_skip_comments_but_not_hashes_in_strings() -> None:
    source = (
        "table inet kitting {\n"
        "  # a comment line\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy drop;\n"
        '    tcp dport { 22, 80 } accept comment "lab #3"  # trailing\n'
        "  }\n"
        "}\n"
    )
    assert nftables.rule_lines(source) == ['tcp dport { 22, 80 } accept comment "lab #3"']


def test_rule_changes_count_added_and_removed_lines() -> None:
    old = capture("kitting.nft")
    new = old.replace("tcp dport 22 counter drop", "tcp dport 22 drop").replace(
        '\t\tiifname "e0" ip daddr 10.0.0.0/8 drop\n',
        '\t\tiifname "e0" ip daddr 10.0.0.0/8 drop\n\t\tiifname "e0" ip daddr 172.16.0.0/12 drop\n',
    )
    assert nftables.rule_changes(old, new) == (2, 1)
    assert nftables.rule_changes(old, old) == (0, 0)
