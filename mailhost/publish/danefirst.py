#!/usr/bin/python3
"""DANE before MTA-STS: a Postfix socketmap that answers `dane` for a destination whose receiver publishes TLSA.

Pushed to hosts with delivery.outboundTls: dane+mta-sts and run by Postfix itself (a spawn service in
master.cf: one process per connection, the connection on stdin and stdout).  Postfix asks the TLS policy
tables in order: delivery.tlsPolicy's own table, then this one, then postfix-mta-sts-resolver's.  RFC 8461
section 2 says a receiver's DANE (RFC 7672) wins over its MTA-STS policy; the resolver alone does not know
about DANE, so a policy that accepts a certificate the receiver's TLSA rejects would let mail through.  This
map answers first:

  - `OK dane` when the destination's MX records are DNSSEC-validated and one of its MX hosts has a validated
    TLSA record set (or its TLSA lookup failed: Postfix's own DANE then decides that host, and defers);
  - `NOTFOUND` when DANE does not apply (an unsigned zone, no TLSA): the MTA-STS table decides next;
  - `TEMP` when the validating resolver cannot answer: Postfix defers the mail, it never goes weaker.

Only the host's validating resolver on 127.0.0.1 is asked; its AD flag is the proof.  Standard library and
Debian's python3-dnspython only.  Every request is hostile until the domain grammar accepts it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

RESOLVER = ("127.0.0.1", 53)
MAX_REQUEST = 1024  # a socketmap request is "name key"; a domain is at most 253 characters
MAX_MX_HOSTS = 10  # enough for any real receiver; bounds the lookups one request can cause
LOOKUP_TIMEOUT = 4.0  # per query: Postfix's socketmap client waits 100 s for the whole reply
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
MAX_NAME = 253  # a domain name's text, without the root's trailing dot
DOMAIN = re.compile(rf"(?=.{{1,{MAX_NAME}}}$){_LABEL}(\.{_LABEL})*\.[a-z][a-z0-9-]*[a-z0-9]")
_REQUEST = re.compile(rb"([a-z0-9_-]{1,32}) ([\x21-\x7e]{1,300})")


@dataclass(frozen=True)
class Answer:
    """What the resolver said: its rcode name (or 'TIMEOUT'), whether it vouched for it, the records' data."""

    rcode: str
    ad: bool
    records: tuple[str, ...] = ()


Lookup = Callable[[str, str], Answer]


def _failed(answer: Answer) -> bool:
    return answer.rcode not in ("NOERROR", "NXDOMAIN")


def mx_hosts(domain: str, answer: Answer) -> list[str] | None:
    """The MX host names by preference, [domain] itself when it has no MX (RFC 5321 5.1), None for a null MX."""
    pairs = []
    for data in answer.records:
        parts = data.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pairs.append((int(parts[0]), parts[1].lower().rstrip(".")))
    if not pairs:
        return [domain]
    if any(host == "" for _, host in pairs):
        return None
    return [host for _, host in sorted(pairs)][:MAX_MX_HOSTS]


def decide(domain: str, lookup: Lookup) -> str:
    """The socketmap reply (without its netstring frame) for one destination domain."""
    if not DOMAIN.fullmatch(domain):
        return "NOTFOUND "  # an address literal, a parent-domain probe (".example.com"), anything else
    mx = lookup(domain, "MX")
    if _failed(mx):
        return f"TEMP the validating resolver gave no answer for {domain} MX ({mx.rcode}); the mail waits"
    if mx.rcode == "NXDOMAIN" or not mx.ad:
        return "NOTFOUND "  # no such domain (Postfix bounces it), or an unsigned zone: no DANE
    hosts = mx_hosts(domain, mx)
    if hosts is None:
        return "NOTFOUND "
    for host in hosts:
        # a TLSA name past DNS's 253 characters cannot exist: DANE cannot apply to that host
        if not DOMAIN.fullmatch(host) or len(f"_25._tcp.{host}") > MAX_NAME:
            continue
        tlsa = lookup(f"_25._tcp.{host}", "TLSA")
        if _failed(tlsa) or (tlsa.ad and tlsa.rcode == "NOERROR" and tlsa.records):
            return "OK dane"
    return "NOTFOUND "


def reply(request: bytes, lookup: Lookup) -> bytes:
    """One request ("name key") to one reply; a request of another shape is answered PERM."""
    match = _REQUEST.fullmatch(request)
    if not match:
        return b"PERM malformed request"
    return decide(match.group(2).decode("ascii").lower(), lookup).encode("ascii")


def read_netstring(stream: BinaryIO) -> bytes | None:
    """The next netstring's payload; None at the end of the stream or on anything that is not one."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == b":":
            break
        if not char.isdigit() or len(digits) >= 4:
            return None
        digits += char
    if not digits:
        return None
    size = int(digits)
    if size > MAX_REQUEST:
        return None
    payload = stream.read(size)
    if len(payload) != size or stream.read(1) != b",":
        return None
    return payload


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def dns_lookup(name: str, rdtype: str, resolver: tuple[str, int] = RESOLVER) -> Answer:
    """Ask the validating resolver with the DO bit; its AD flag says whether it vouched for the answer."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    try:  # a name dnspython refuses (too long) is no answer either, never a crash of the map
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD
        response = dns.query.udp(query, resolver[0], port=resolver[1], timeout=LOOKUP_TIMEOUT)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, resolver[0], port=resolver[1], timeout=LOOKUP_TIMEOUT)
    except (dns.exception.DNSException, OSError):
        return Answer("TIMEOUT", False)
    wanted = dns.rdatatype.from_text(rdtype)
    records = tuple(rdata.to_text() for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset)
    return Answer(dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AD), records)


def own_source() -> str:
    """This file's text: what the push installs on a host."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


def serve(stdin: BinaryIO, stdout: BinaryIO, lookup: Lookup) -> None:
    """Answer requests until Postfix hangs up (or sends something that is not a netstring)."""
    while (request := read_netstring(stdin)) is not None:
        stdout.write(netstring(reply(request, lookup)))
        stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    serve(sys.stdin.buffer, sys.stdout.buffer, dns_lookup)
