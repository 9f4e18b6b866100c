"""The lab transfer bench's figures (reconciler.lab.measure): counters, retransmissions,
medians, the issue's two targets and the table. Expected values are worked out by hand."""

from __future__ import annotations

import pytest

from reconciler.lab.measure import (
    Counter,
    MeasureError,
    Mode,
    Row,
    Trial,
    Verdict,
    judge,
    markdown,
    parse_counters,
    retransmissions,
    sent,
    summarize,
)


def test_counters_are_read_per_interface() -> None:
    text = "e0 8000 14\n\nlo 900 9\n"
    assert parse_counters(text) == {"e0": Counter(8000, 14), "lo": Counter(900, 9)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("e0 8000\n", "line 1: not 'IFACE TX_BYTES TX_PACKETS': 'e0 8000'"),
        ("lo 1 1\ne0 -5 2\n", "line 2: not 'IFACE TX_BYTES TX_PACKETS': 'e0 -5 2'"),
        ("e0 1 1\ne0 2 2\n", "line 2: interface e0 twice"),
    ],
)
def test_counters_that_are_not_counters_are_refused(text: str, message: str) -> None:
    with pytest.raises(MeasureError) as raised:
        parse_counters(text)
    assert str(raised.value) == message


def test_sent_is_every_interface_but_loopback() -> None:
    before = {"lo": Counter(100, 2), "e0": Counter(5000, 10), "e1": Counter(0, 0)}
    after = {"lo": Counter(900, 9), "e0": Counter(8000, 14), "e1": Counter(500, 1)}
    # e0: 8000 - 5000 = 3000 bytes, 4 packets; e1: 500 bytes, 1 packet; lo left out
    assert sent(before, after) == Counter(3500, 5)


def test_a_counter_going_back_or_a_new_interface_is_no_figure() -> None:
    with pytest.raises(MeasureError, match="e0: a transmit counter went back"):
        sent({"e0": Counter(5000, 10)}, {"e0": Counter(4000, 12)})
    with pytest.raises(MeasureError, match=r"\['e0'\] then \['e0', 'e1'\]"):
        sent({"e0": Counter(1, 1)}, {"e0": Counter(2, 2), "e1": Counter(0, 0)})


def test_retransmissions_are_the_last_count_of_each_sender_run() -> None:
    log = (
        "Udp-sender 20120424\nUDP sender for (stdin) at 192.168.100.1 on e0 \n"
        "Starting transfer: 00000009\n"
        "bytes=       3 328  re-xmits=0000000 (  0.0%) slice=0112 -   0\n"
        "Transfer complete.\n"
        "Udp-sender 20120424\nStarting transfer: 00000009\n"
        "bytes=  1 500 000  re-xmits=0000120 ( 11.0%) slice=0112 -   0\r"
        "bytes=  3 131 815  re-xmits=0000731 ( 33.9%) slice=0112 -   0\n"
        "Transfer complete.\n"
        "Udp-sender 20120424\nNo receivers, giving up\n"
    )
    assert retransmissions(log) == [0, 731, 0]
    assert retransmissions("") == []


def trial(mode: Mode, pcs: int, seconds: float, wire: int, resent: int = 0) -> Trial:
    return Trial(mode, pcs, seconds, wire, wire // 1000, 3000 * pcs, resent)


def test_rows_are_medians_in_mode_then_pc_order() -> None:
    trials = [
        trial("unicast", 1, 4.0, 3100),
        trial("multicast", 8, 9.0, 400, resent=7),
        trial("multicast", 8, 8.0, 100, resent=3),
        trial("multicast", 8, 10.0, 300, resent=5),
        trial("multicast", 1, 1.0, 100),
        trial("multicast", 1, 2.0, 200),
    ]
    rows = summarize(trials)
    assert rows == [
        # two trials: the mean of the times, the lower of the integers
        Row("multicast", 1, 2, 1.5, 100, 0, 3000, (1.0, 2.0), 0),
        # three trials: 9.0 s; bytes 100, 300, 400 -> 300; packets 0, 0, 0; re-sent 3, 5, 7 -> 5
        Row("multicast", 8, 3, 9.0, 300, 0, 24000, (8.0, 10.0), 5),
        Row("unicast", 1, 1, 4.0, 3100, 3, 3000, (4.0, 4.0), 0),
    ]


def row(mode: Mode, pcs: int, seconds: float, wire: int, resent: int = 0) -> Row:
    return Row(mode, pcs, 1, seconds, wire, 0, 0, (seconds, seconds), resent)


def test_targets_held() -> None:
    rows = [row("multicast", 1, 10.0, 1100), row("multicast", 8, 14.0, 1200)]
    rows.append(row("unicast", 8, 3.0, 8000))  # unicast is not judged
    assert judge(rows, 1000) == [
        Verdict(
            "multicast-bytes", True, "at most 1.20x the image's 1000 bytes (8 PCs), bound 1.25x"
        ),
        Verdict("multicast-time", True, "8 PCs 14.00 s / 1 PC(s) 10.00 s = 1.40, bound 1.5"),
    ]


def test_targets_on_their_bounds_hold_and_past_them_do_not() -> None:
    on = [row("multicast", 1, 10.0, 1250), row("multicast", 8, 15.0, 900)]
    assert [v.held for v in judge(on, 1000)] == [True, True]
    past = [row("multicast", 1, 10.0, 1251), row("multicast", 8, 15.1, 900)]
    verdicts = judge(past, 1000)
    assert [v.held for v in verdicts] == [False, False]
    assert verdicts[0].detail == "at most 1.25x the image's 1000 bytes (1 PCs), bound 1.25x"
    assert verdicts[1].detail == "8 PCs 15.10 s / 1 PC(s) 10.00 s = 1.51, bound 1.5"


def test_time_needs_two_numbers_of_pcs() -> None:
    assert judge([row("multicast", 2, 5.0, 900)], 1000)[1] == Verdict(
        "multicast-time", False, "needs two numbers of PCs"
    )
    with pytest.raises(MeasureError):
        judge([row("unicast", 1, 5.0, 900)], 1000)


def test_table() -> None:
    rows = [
        row("multicast", 1, 8.844, 3_950_000, resent=120),
        row("unicast", 1, 4.321, 3_153_200),
        row("unicast", 2, 4.35, 6_306_400),
    ]
    assert markdown(rows, 3_135_143) == (
        "| PCs | multicast time | multicast sent | x image | re-sent blocks "
        "| unicast time | unicast sent | x image |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        # 3950000 / 3135143 = 1.2599; 3153200 / 3135143 = 1.0058; 6306400 / 3135143 = 2.0115
        "| 1 | 8.84 s | 3.95 MB | 1.26 | 120 | 4.32 s | 3.15 MB | 1.01 |\n"
        "| 2 | - | - | - | - | 4.35 s | 6.31 MB | 2.01 |\n"
    )
