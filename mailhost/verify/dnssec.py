"""The sender zone's DNSSEC state, for information: signed or not, and whether its parent vouches for it.

Never a failure: mail from unsigned zones is accepted everywhere.  Said in words because two states
matter to a sender: a signed zone without a DS at its parent is unsigned to every validator, and a
DS that matches none of the zone's keys makes validating resolvers answer SERVFAIL for every name
in it (SPF, DKIM and DMARC included).  Pure: takes the answers mailhost.verify.run fetched.
"""

from __future__ import annotations

import dns.dnssec
import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from mailhost.verify.checks import Answer, CheckResult

SIGN = ("sign it (Route53: enable DNSSEC signing, then add its DS record at the registrar) so validating "
        "receivers can trust its SPF, DKIM and DMARC answers")


def key_tags(dnskey: Answer) -> set[int]:
    """The key tags of the zone's DNSKEY records (what a DS names)."""
    tags = set()
    for text in dnskey.values:
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, text)
        except (dns.exception.DNSException, ValueError):
            continue
        tags.add(dns.dnssec.key_id(rdata))  # type: ignore[arg-type]
    return tags


def ds_tags(ds: Answer) -> set[int]:
    return {int(v.split()[0]) for v in ds.values if v.split() and v.split()[0].isdigit()}


def check_dnssec(domain: str, zone: str | None, dnskey: Answer | None, ds: Answer | None,
                 why: str = "") -> CheckResult:
    """DNSKEY at the apex of the zone holding `domain`, and the DS its parent publishes; status info."""
    if zone is None or dnskey is None:
        return CheckResult("dnssec", "info", f"DNSSEC of {domain} not determined: could not find its zone ({why})")
    if dnskey.failed:
        return CheckResult("dnssec", "info", f"DNSSEC of zone {zone} not determined: DNSKEY lookup failed "
                           f"({dnskey.error or 'no answer'})")
    keys = key_tags(dnskey)
    parent = ds_tags(ds) if ds is not None and not ds.failed else None
    if not dnskey.values:
        if parent:
            return CheckResult(
                "dnssec", "info",
                f"zone {zone} is not signed (no DNSKEY) but its parent publishes a DS (key tag "
                f"{', '.join(map(str, sorted(parent)))}): validating resolvers answer SERVFAIL for every name in it",
                f"remove the DS of {zone} at the parent (the registrar), or sign the zone with that key")
        return CheckResult("dnssec", "info", f"zone {zone} is not signed (no DNSKEY at its apex): receivers see its "
                           "answers unvouched, and its MX could not use DANE (TLSA records need a signed zone)",
                           f"optional: {SIGN}")
    signed = f"zone {zone} is signed ({len(dnskey.values)} DNSKEY, key tag {', '.join(map(str, sorted(keys)))})"
    if parent is None:
        error = ds.error if ds is not None else "not asked"
        return CheckResult("dnssec", "info", f"{signed}; its parent's DS could not be asked ({error or 'no answer'})")
    if not parent:
        return CheckResult("dnssec", "info", f"{signed} but its parent has no DS for it: validators treat it as "
                           "unsigned", f"add the DS of {zone}'s key-signing key at the parent (the registrar)")
    if not parent & keys:
        return CheckResult(
            "dnssec", "info",
            f"{signed} but no DS at its parent matches its keys (DS key tag {', '.join(map(str, sorted(parent)))}): "
            "validating resolvers answer SERVFAIL for every name in it",
            f"replace the DS of {zone} at the parent by the one of its current key-signing key")
    return CheckResult("dnssec", "info", f"{signed}, and its parent's DS (key tag "
                       f"{', '.join(map(str, sorted(parent & keys)))}) vouches for it: validating receivers check it, "
                       "and its MX hosts could publish TLSA records (DANE) so that DANE senders reach them only over "
                       "TLS they verify")
