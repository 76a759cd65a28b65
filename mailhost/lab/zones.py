"""The lab's DNS world before any deploy: who the names and addresses belong to.

The sender zone starts empty apart from its nameserver (the program publishes the
rest); the recipient zone has the MX and the smarthost; the reverse zones already
name the lab's own servers, so the receiver and smarthost pass FCrDNS like real MXs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailhost.records import dnstext

SENDER_DOMAIN = "example.com"
RECIPIENT_DOMAIN = "example.net"
OTHER_DOMAIN = "example.org"  # a recipient domain the lab does not serve (reroute tests)
# Customer domains as real Jira traffic has them: some share the lab MX, some have a second MX
# (mx2, a receiver on the smarthost's addresses; started by the TLS-reuse benchmark).
SAME_MX_DOMAINS = (f"eu.{RECIPIENT_DOMAIN}", f"us.{RECIPIENT_DOMAIN}", f"apac.{RECIPIENT_DOMAIN}")
SECOND_MX_DOMAINS = (f"partner.{RECIPIENT_DOMAIN}", f"vendor.{RECIPIENT_DOMAIN}")
# Judged like Gmail/Yahoo/Microsoft by the lab MX (mailhost.lab.receiver); strict6's MX has only an IPv6 address.
STRICT_DOMAIN = f"strict.{RECIPIENT_DOMAIN}"
STRICT6_DOMAIN = f"strict6.{RECIPIENT_DOMAIN}"
# A domain whose MX has only an IPv4 address (the lab MX's): mail to it can only leave over IPv4, as mail to
# strict6 can only leave over IPv6, so a test of both sending paths does not hang on Postfix's random pick.
IPV4_ONLY_DOMAIN = f"v4only.{RECIPIENT_DOMAIN}"
# DNSSEC as receivers publish it: the lab root and the recipient zone are signed (Knot's keys), so a validating
# resolver with the lab root's DS as its trust anchor proves the MX's TLSA record (DANE); the sender zone and the
# reverse zones stay unsigned (insecure delegations), as most are.  BOGUS_ZONE is signed, but its parent publishes
# a DS for no key of it (dnssec-failed.org's trick): a validating resolver answers SERVFAIL for every name there.
BOGUS_ZONE = f"dnssec-failed.{RECIPIENT_DOMAIN}"
SIGNED_ZONES = ("", RECIPIENT_DOMAIN, BOGUS_ZONE)  # "" is the root
# unbound answers the reverse zones of the documentation ranges itself (RFC 6303) unless told otherwise.
DOC_REVERSE_ZONES = ("100.51.198.in-addr.arpa", "113.0.203.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
_NO_SUCH_KEY_DS = "12345 13 2 " + "00" * 32
FORWARD_ID, REVERSE4_ID, REVERSE6_ID = "ZLABFWD", "ZLABREV4", "ZLABREV6"  # shaped like Route53 ids (config checks them)


@dataclass(frozen=True)
class Addr:
    v4: str
    v6: str


@dataclass(frozen=True)
class World:
    net4: ipaddress.IPv4Network
    net6: ipaddress.IPv6Network
    dns: Addr
    mx: Addr
    smarthost: Addr

    @property
    def reverse4(self) -> str:
        """The in-addr.arpa zone of a /24."""
        octets = str(self.net4.network_address).split(".")[:3]
        return ".".join(reversed(octets)) + ".in-addr.arpa"

    @property
    def reverse6(self) -> str:
        """The ip6.arpa zone of the /64 (16 nibbles)."""
        nibbles = self.net6.network_address.exploded.replace(":", "")[:16]
        return ".".join(reversed(nibbles)) + ".ip6.arpa"

    @property
    def zone_ids(self) -> dict[str, str]:
        """Route53 zone ids of the lab stack → Knot zone names."""
        return {FORWARD_ID: SENDER_DOMAIN, REVERSE4_ID: self.reverse4, REVERSE6_ID: self.reverse6}

    def zones(self, mx_tlsa: str = "") -> dict[str, str]:
        """Every lab zone but the root.  mx_tlsa: the MX certificate's '3 1 1 <sha-256>' TLSA data, if any."""
        ns = f"ns.{SENDER_DOMAIN}."
        mx, smtp = f"mx.{RECIPIENT_DOMAIN}.", f"smtp.{RECIPIENT_DOMAIN}."
        return {
            # The company's mailboxes (bounces to Jira's sender address) are at the lab MX, as at a provider.
            SENDER_DOMAIN: _zone(SENDER_DOMAIN, [f"ns A {self.dns.v4}", f"ns AAAA {self.dns.v6}", f"@ MX 10 {mx}"]),
            RECIPIENT_DOMAIN: _zone(RECIPIENT_DOMAIN, [
                f"@ MX 10 {mx}",
                f"mx A {self.mx.v4}", f"mx AAAA {self.mx.v6}",
                f"smtp A {self.smarthost.v4}", f"smtp AAAA {self.smarthost.v6}",
                'smtp TXT "v=spf1 a -all"',  # SPF for the smarthost's HELO name
                # the MX sends too (the lab's DMARC reports, from reporting.py); nothing else may send as example.net
                f'@ TXT "v=spf1 ip4:{self.mx.v4} ip6:{self.mx.v6} -all"',
                f"mx2 A {self.smarthost.v4}", f"mx2 AAAA {self.smarthost.v6}",
                *(f"{d.removesuffix('.' + RECIPIENT_DOMAIN)} MX 10 {mx}" for d in SAME_MX_DOMAINS),
                *(f"{d.removesuffix('.' + RECIPIENT_DOMAIN)} MX 10 mx2.{RECIPIENT_DOMAIN}." for d in SECOND_MX_DOMAINS),
                f"strict MX 10 {mx}", f"strict6 MX 10 mx6.{RECIPIENT_DOMAIN}.", f"mx6 AAAA {self.mx.v6}",
                f"{IPV4_ONLY_DOMAIN.removesuffix('.' + RECIPIENT_DOMAIN)} MX 10 mx4.{RECIPIENT_DOMAIN}.",
                f"mx4 A {self.mx.v4}",
                '_dmarc TXT "v=DMARC1; p=reject"',  # mail claiming to be from here fails DMARC at strict MXs
                *([f"_25._tcp.mx TLSA {mx_tlsa}"] if mx_tlsa else []),
                f"{BOGUS_ZONE.removesuffix('.' + RECIPIENT_DOMAIN)} NS {ns}",
                f"{BOGUS_ZONE.removesuffix('.' + RECIPIENT_DOMAIN)} DS {_NO_SUCH_KEY_DS}",
            ]),
            BOGUS_ZONE: _zone(BOGUS_ZONE, [f"@ A {self.mx.v4}"]),
            self.reverse4: _zone(self.reverse4, [
                f"{_ptr(self.dns.v4)} PTR {ns}", f"{_ptr(self.mx.v4)} PTR {mx}",
                f"{_ptr(self.smarthost.v4)} PTR {smtp}",
            ]),
            self.reverse6: _zone(self.reverse6, [
                f"{_ptr(self.dns.v6)} PTR {ns}", f"{_ptr(self.mx.v6)} PTR {mx}",
                f"{_ptr(self.smarthost.v6)} PTR {smtp}",
            ]),
        }


    def root_zone(self, ds: dict[str, str]) -> str:
        """The lab root: a delegation for each top lab zone (the lab DNS serves them all), glue, and the DS
        records given (zone → 'zone. DS …' as Knot's keymgr prints it); what unbound's root hints lead to."""
        ns = f"ns.{SENDER_DOMAIN}."
        tops = [z for z in self.zones() if not any(z.endswith("." + other) for other in self.zones())]
        return _zone(".", [f"{ns} A {self.dns.v4}", f"{ns} AAAA {self.dns.v6}",
                           *(f"{zone}. NS {ns}" for zone in sorted(tops)),
                           *(ds[zone] for zone in sorted(ds))])

    def root_hints(self) -> str:
        """unbound's root-hints file for the lab: the lab DNS is the one root server."""
        ns = f"ns.{SENDER_DOMAIN}."
        return f". 3600000 NS {ns}\n{ns} 3600000 A {self.dns.v4}\n{ns} 3600000 AAAA {self.dns.v6}\n"


def _ptr(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer + "."


def _zone(origin: str, lines: list[str]) -> str:
    head = [
        f"$ORIGIN {origin.rstrip('.')}.",
        "$TTL 60",
        f"@ SOA ns.{SENDER_DOMAIN}. hostmaster.{SENDER_DOMAIN}. 1 60 30 3600 30",
        f"@ NS ns.{SENDER_DOMAIN}.",
    ]
    return "\n".join(head + lines) + "\n"


def route53_to_rdata(record_type: str, value: str) -> str:
    """A Route53 `records` entry as zone-file RDATA: TXT chunks joined by "" become quoted strings."""
    return dnstext.route53_to_zone(value) if record_type == "TXT" else value
