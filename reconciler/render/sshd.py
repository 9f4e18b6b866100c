"""sshd: a drop-in that allows public-key logins only, and no root login.

Written only when site.ssh.harden is on. sshd takes the first value it reads for each
keyword, and Debian's sshd_config includes sshd_config.d/*.conf at its top, in file-name
order: a drop-in that sorts before this one (e.g. 50-cloud-init.conf) wins over it.

Purely computational.
"""

from __future__ import annotations

from reconciler.desired import Site
from reconciler.layout import Layout
from reconciler.render._lines import Lines
from reconciler.rendered import Artifact, Check, Effect, Service

SETTINGS = (
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PermitRootLogin", "no"),
    ("PubkeyAuthentication", "yes"),
    ("AuthenticationMethods", "publickey"),
)


def artifacts(site: Site, layout: Layout) -> list[Artifact]:
    if not site.ssh.harden:
        return []
    lines = Lines()
    lines.header()
    lines.note("Public keys only; no passwords, no keyboard-interactive, no root login.")
    for keyword, value in SETTINGS:
        lines.add(f"{keyword} {value}", "site.ssh.harden")
    # A reload (SIGHUP) makes sshd re-execute and read it; open sessions stay.
    return [
        lines.artifact(
            layout.sshd_dropin,
            Service.sshd,
            on_add=Effect.reload,
            on_change=Effect.reload,
            on_remove=Effect.reload,
            check=Check.sshd,
        )
    ]
