"""What the reconciler reads of DRBL's own files, with the DRBL backend.

drbl-ocs starts DRBL's ocsmgrd for every session; ocsmgrd owns TCP port 6461, takes the
clients' job reports and logs each in its job log (`joblogfile` in /usr/sbin/ocsmgrd,
`/var/log/clonezilla/clonezilla-jobs.log`, removed and started afresh by each ocsmgrd):

    2026-0302-0815, client 192.168.100.11 (52:54:00:00:00:11) finished restoring. Stats: ...
    2026-0302-0800, Start clonezilla logging.

The stamp is the server's local time to the minute (`%Y-%m%d-%H%M`). drbl-ocs's udp-sender
uses drbl-ocs.conf's `MULTICAST_PORT="2232"`, which the PCs' `--mcast-port` must match.
Purely computational: the caller reads the files and says what "now" is and how a local
wall-clock time becomes an instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.tftp_log import Localize

JOB_LOG = "/var/log/clonezilla/clonezilla-jobs.log"
"""ocsmgrd's `joblogfile`: one line per job report it received."""
DRBL_OCS_CONF = "/etc/drbl/drbl-ocs.conf"
"""MULTICAST_PORT and the other settings of drbl-ocs."""
DRBL_DEPLOY_CONF = "/etc/drbl/drbl_deploy.conf"
"""Written by drblpush when DRBL is set up; drbl-ocs sources it to start a session."""
DRBL_PXE_DEFAULT = "/tftpboot/nbi_img/pxelinux.cfg/default"
"""DRBL's PXE menu (drbl.conf PXE_CONF_DEF), made by drblpush; drbl-ocs copies and edits it."""
DRBL_TFTP_ROOT = "/tftpboot"
"""DRBL's boot files live under it; the reconciler's TFTP root must be elsewhere."""

LATEST_IN_MINUTE = timedelta(minutes=1) - timedelta(microseconds=1)

_JOB = re.compile(
    r"^(?P<y>\d{4})-(?P<mo>\d\d)(?P<d>\d\d)-(?P<h>\d\d)(?P<mi>\d\d), (?P<text>client .*)$"
)
_PORT = re.compile(r"""^\s*MULTICAST_PORT=["']?(?P<port>\d{1,5})["']?\s*(#.*)?$""")


@dataclass(frozen=True)
class JobLine:
    text: str
    """`client IP (MAC) finished restoring. Stats: ...` for deployment_report.parse_joblog."""
    at: datetime


def job_line(line: str, *, now: datetime, localize: Localize) -> JobLine | None:
    """A client line of ocsmgrd's job log, or None (its start line, garbage). `at` is the
    last instant of the logged minute, never after `now`: a report in the very minute its
    PC was armed must not look older than the arming."""
    found = _JOB.match(line.rstrip("\r\n"))
    if found is None:
        return None
    try:
        naive = datetime(
            int(found["y"]), int(found["mo"]), int(found["d"]), int(found["h"]), int(found["mi"])
        )
    except ValueError:
        return None
    return JobLine(found["text"], min(localize(naive) + LATEST_IN_MINUTE, now))


def multicast_port(conf: str) -> int | None:
    """drbl-ocs.conf's MULTICAST_PORT (the last assignment, as the shell reads it), or None."""
    port = None
    for line in conf.splitlines():
        found = _PORT.match(line)
        if found is not None:
            port = int(found["port"])
    return port if port is not None and 1 <= port <= 65535 else None
