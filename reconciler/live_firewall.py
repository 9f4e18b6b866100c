"""Firewall readers: the seam through which observe sees the live nftables table."""

from __future__ import annotations

from reconciler import nftables
from reconciler.facts import LiveFirewall
from reconciler.runner import Runner, run


class NoFirewall:
    """For sandboxes: the kernel's tables are not looked at."""

    def read(self) -> LiveFirewall:
        return LiveFirewall(observed=False, error="the live firewall is not observed here")


class NftReader:
    """Reads the live table with `nft` (through a Runner, so tests can enter a netns).

    `-s` (stateless) keeps counter values out of both listings.
    """

    def __init__(self, runner: Runner = run):
        self._run = runner

    def read(self) -> LiveFirewall:
        table = ["list", "table", nftables.FAMILY, nftables.TABLE]
        text = self._run(["nft", "-s", *table])
        if not text.ok:
            if nftables.is_missing_table(text.output):
                return LiveFirewall(observed=True, present=False)
            return LiveFirewall(observed=False, error=text.output or "nft failed")
        as_json = self._run(["nft", "-s", "-j", *table])
        if not as_json.ok:
            return LiveFirewall(observed=False, error=as_json.output or "nft -j failed")
        try:
            objects = nftables.normalize(as_json.stdout)
        except nftables.NftParseError as error:
            return LiveFirewall(observed=False, error=str(error))
        return LiveFirewall(
            observed=True,
            present=True,
            listing=text.stdout,
            fingerprint=nftables.fingerprint(objects),
        )
