"""A document with field errors still takes part in the checks across documents.

Positions and field paths are worked out from the layout of the texts below (line numbers
counted by hand), never taken from the validator's output.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import validate
from reconciler.snapshot import from_files

SITE = """\
kind: Site
name: lab
timezone: Europe/Berlin
server:
  hostname: kit01
  interface: eth0
  address: 10.1.0.1
network:
  subnet: 10.1.0.0/24
  dhcp:
    pool:
      start: 10.1.0.10
      end: 10.1.0.99
"""


def _problems(files: dict[str, str]) -> list[str]:
    loaded = from_files("repo", {path: text.encode() for path, text in files.items()})
    return [p.text() for p in validate.run(loaded).problems]


def _department(broken: list[bool]) -> str:
    """PC i takes lines 4+3i to 6+3i; its MAC is at column 12 of line 5+3i. The last PC
    repeats the MAC of the first PC that is not broken."""
    first_good = broken.index(False)
    lines = ["kind: Department", "name: hr", "pcs:"]
    for i, bad in enumerate([*broken, False]):
        mac = first_good if i == len(broken) else i
        lines += [
            f"  - hostname: HR-{i:02d}",
            f'    macs: ["02:00:00:00:03:{mac:02x}"]',
            "    colour: red" if bad else "    # fine",
        ]
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12).filter(lambda b: not all(b)))
def test_checks_name_each_pc_by_its_place_in_the_document(broken: list[bool]) -> None:
    last = len(broken)
    first_good = broken.index(False)
    found = _problems({"site.yaml": SITE, "departments/hr.yaml": _department(broken)})

    unknown = [
        f"departments/hr.yaml:{6 + 3 * i}:5: error: unknown field 'colour'; valid fields here: "
        f"disk, firmware, hostname, ip, macs (pcs[{i}].colour)"
        for i, bad in enumerate(broken)
        if bad
    ]
    duplicate = (
        f"departments/hr.yaml:{5 + 3 * last}:12: error: MAC 02:00:00:00:03:{first_good:02x} is "
        f"also listed for HR-{first_good:02d} at departments/hr.yaml:{5 + 3 * first_good}:12; "
        f"a MAC belongs to one PC, once (pcs[{last}].macs[0])"
    )
    assert sorted(found) == sorted([*unknown, duplicate])


HR = """\
kind: Department
name: hr
pcs:
  - hostname: HR-01
    macs: ["02:00:00:00:03:01"]
"""

BATCH = """\
kind: Batch
name: hr-master
image: hr-2026
action: capture
mode: unicast
targets:
  pcs: [HR-01]
window:
  start: 2026-03-29T02:30
  end: 2026-03-29T09:00
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            # The site's zone is broken: a window read in it is not judged (02:30 on that
            # day does not exist in Berlin, but the zone meant is not known).
            {"site.yaml": SITE.replace("Europe/Berlin", "Europe/Berln")},
            [
                "site.yaml:3:11: error: 'Europe/Berln' is not a known IANA time zone "
                "(e.g. 'Asia/Tokyo', 'Europe/Berlin', 'UTC') (timezone)"
            ],
            id="site-zone-guessed",
        ),
        pytest.param(
            # A typo of mode would leave mode at multicast: the batch is not checked further,
            # so no "a capture writes over NFS" comes from a value nobody wrote.
            {"batches/b.yaml": BATCH.replace("mode:", "mdoe:")},
            [
                "batches/b.yaml:5:1: error: unknown field 'mdoe' (did you mean 'mode'?); valid "
                "fields here: action, after_imaging, clients_to_wait, image, kind, max_wait, mode, "
                "multicast, name, on_failure, overwrite, start_timeout, targets, wake_on_lan, "
                "window (mdoe)"
            ],
            id="typo-of-a-checked-field",
        ),
        pytest.param(
            # A typo of a field no check reads: the rest of the batch is checked (the window).
            {"batches/b.yaml": BATCH + "wake_on_lna: true\n", "departments/hr.yaml": HR},
            [
                "batches/b.yaml:9:10: error: 2026-03-29T02:30 does not exist in Europe/Berlin: "
                "clocks skip it at a DST change; use a time after the change, e.g. "
                "2026-03-29T03:30 (window.start)",
                "batches/b.yaml:11:1: error: unknown field 'wake_on_lna' (did you mean "
                "'wake_on_lan'?); valid fields here: action, after_imaging, clients_to_wait, "
                "image, kind, max_wait, mode, multicast, name, on_failure, overwrite, "
                "start_timeout, targets, wake_on_lan, window (wake_on_lna)",
            ],
            id="typo-of-an-unchecked-field",
        ),
        pytest.param(
            # A department's broken image: its PCs still meet the others (and the batch that
            # targets HR-01 finds it).
            {
                "departments/hr.yaml": (
                    "kind: Department\n"
                    "name: hr\n"
                    "image: 'bad image'\n"
                    "pcs:\n"
                    "  - hostname: HR-01\n"
                    '    macs: ["02:00:00:00:03:01"]\n'
                    "  - hostname: HR-02\n"
                    '    macs: ["02:00:00:00:03:01"]\n'
                ),
                "batches/b.yaml": BATCH.replace("02:30", "08:30"),
            },
            [
                "departments/hr.yaml:3:8: error: 'bad image' is not a valid image name: it is a "
                "directory directly under the images root, so use 1-100 letters, digits, '.', "
                "'_' and '-', starting with a letter or digit, and no '..' (image)",
                "departments/hr.yaml:8:12: error: MAC 02:00:00:00:03:01 is also listed for HR-01 "
                "at departments/hr.yaml:6:12; a MAC belongs to one PC, once (pcs[1].macs[0])",
            ],
            id="department-image-broken",
        ),
    ],
)
def test_no_check_reports_what_a_salvaged_document_does_not_say(
    files: dict[str, str], expected: list[str]
) -> None:
    assert _problems({"site.yaml": SITE, **files}) == expected
