"""Where the reconciler's files live on a server (Debian/Ubuntu defaults).

Paths are absolute as the running programs see them. `--root` only changes where apply
writes them (a sandbox), never what the files say.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    dnsmasq_conf: str = "/etc/dnsmasq.d/kitting.conf"
    dhcp_hosts_dir: str = "/etc/kitting/dhcp-hosts"
    exports_file: str = "/etc/exports.d/kitting.exports"
    nfs_conf_file: str = "/etc/nfs.conf.d/kitting.conf"
    ganesha_conf: str = "/etc/ganesha/kitting.conf"
    nft_file: str = "/etc/nftables.d/kitting.nft"
    # sshd keeps the first value it reads and reads drop-ins in name order: "00-"
    # makes the hardening win over e.g. 50-cloud-init.conf.
    sshd_dropin: str = "/etc/ssh/sshd_config.d/00-kitting.conf"
    state_dir: str = "/var/lib/kitting"
    # dnsmasq writes its log here (log-facility); the controller reads its TFTP lines to
    # see which PC fetched its per-PC boot file (one-shot arming).
    dnsmasq_log: str = "/var/log/kitting/dnsmasq.log"
    # dnsmasq's lease file (rendered as dhcp-leasefile=; Debian's default path): the
    # controller reads it to tell which PC a multicast receiver with a pool address is.
    dhcp_leases: str = "/var/lib/misc/dnsmasq.leases"
