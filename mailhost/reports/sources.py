"""Which report sources SPF authorizes: the domain's published record, includes resolved, like a receiver.

A source that is not one of our hosts but passes the domain's SPF is a sender the admin allowed
through `spfExtra` (a relay, a newsletter service); any other source sends as the domain unasked.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

from mailhost.records.expected import Expected
from mailhost.reports import judge
from mailhost.reports.store import Counted
from mailhost.verify.dnsquery import Lookup, ResolverSpec, spf_evaluate, spf_routing


def our_addresses(expected: Expected) -> set[str]:
    """Every address of the stack's hosts, written the way the reports are read (canonical form)."""
    out = set()
    for host in expected.hosts:
        for address in (host.ipv4, host.ipv6):
            if address:
                out.add(str(ipaddress.ip_address(address)))
    return out


def spf_authorized(domain: str, ips: Iterable[str], spec: ResolverSpec) -> set[str]:
    """The sources for which the domain's SPF says pass (MAIL FROM postmaster@domain)."""
    asked = sorted(set(ips))

    async def evaluate() -> set[str]:
        lookup = Lookup(spec)
        try:
            with spf_routing():
                results = await asyncio.gather(*(spf_evaluate(lookup, ip, f"postmaster@{domain}", domain)
                                                 for ip in asked))
        finally:
            lookup.close()
        return {ip for ip, (result, _why) in zip(asked, results, strict=True) if result == "pass"}

    return asyncio.run(evaluate()) if asked else set()


def summarize(rows: list[Counted], expected: Expected, spec: ResolverSpec, since: float, now: float) -> judge.Summary:
    """The window's reports judged against the stack: ours, SPF-authorized, or unknown (`reports` and `status`
    both read them so)."""
    ours = our_addresses(expected)
    authorized = spf_authorized(expected.domain, {r.source_ip for r in rows} - ours, spec)
    return judge.summarize(rows, since, now, expected.dmarc_policy or "none",
                           judge.classifier(ours, authorized.__contains__))
