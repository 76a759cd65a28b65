"""What a strict receiving MX decides about one message: SPF, DKIM, DMARC, FCrDNS.

Pure functions over one message and a resolver pointed at the lab DNS, so the
receiver and its tests share them.  Uses the libraries made for each check (pyspf,
dkimpy); DMARC alignment is small enough to evaluate here from the published record.
"""

from __future__ import annotations

import email
import email.utils
import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.resolver
import dns.reversename
import spf

_SPF_VALUES: dict[str, Any] = {
    "A": lambda r: r.address, "AAAA": lambda r: r.address, "MX": lambda r: (r.preference, r.exchange),
    "PTR": lambda r: r.target.to_text(True), "TXT": lambda r: r.strings, "SPF": lambda r: r.strings,
}


def _spf_lookup(name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30) -> list[Any]:
    """pyspf's DNS hook, on dnspython's resolve().  pyspf's own calls the deprecated query(), and its
    DeprecationWarning becomes an exception (a "500 Error" to the sender) whenever aiosmtpd, on another
    thread, briefly turns every warning into an error while it looks for an event loop."""
    try:
        answer = dns.resolver.resolve(name, qtype, lifetime=timeout)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        raise spf.TempError(f"DNS {error}") from None
    value = _SPF_VALUES.get(qtype)
    return [((name, qtype), value(rdata)) for rdata in answer] if value else []


spf.DNSLookup = _spf_lookup


def resolver_for(nameserver: str, port: int = 53) -> dns.resolver.Resolver:
    """A resolver that asks only the lab DNS; also made pyspf's default (it reads the module default)."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [nameserver]
    res.port = port
    res.lifetime = 5
    res.timeout = 2
    dns.resolver.default_resolver = res
    return res


@dataclass
class Verdicts:
    spf: str
    spf_helo: str
    dkim: str
    dkim_domain: str | None
    dmarc: str
    dmarc_policy: str | None
    fcrdns: str
    ptr: str | None
    helo_matches_ptr: bool
    dkim_selector: str | None = None  # s= of the signature judged (which key generation signed)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _txt(res: dns.resolver.Resolver, name: str) -> list[str]:
    try:
        answer = res.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(rdata.strings).decode() for rdata in answer]


def org_domain(name: str) -> str:
    """Organizational domain: the lab has no public suffix list, and all its names are under two-label zones."""
    labels = name.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(">").rstrip(".")


def check_spf(ip: str, mail_from: str, helo: str) -> tuple[str, str]:
    """SPF for the envelope sender, and for the HELO name (RFC 7208 section 2.3)."""
    sender = mail_from or f"postmaster@{helo}"
    result, _explanation = spf.check2(i=ip, s=sender, h=helo, timeout=10)
    helo_result, _ = spf.check2(i=ip, s=f"postmaster@{helo}", h=helo, timeout=10)
    return result, helo_result


def check_dkim(content: bytes, res: dns.resolver.Resolver) -> tuple[str, str | None, str | None]:
    """Verify the first DKIM-Signature against keys in the lab DNS; return (verdict, d= domain, s= selector)."""

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        values = _txt(res, qname)
        return values[0].encode() if values else None

    message = email.message_from_bytes(content)
    signature = message.get("DKIM-Signature")
    if signature is None:
        return "none", None, None
    tags = dict(
        part.strip().split("=", 1) for part in "".join(str(signature).split()).split(";") if "=" in part
    )
    domain = tags.get("d", "").lower() or None
    try:
        ok = dkim.verify(content, dnsfunc=dnsfunc)
    except Exception:  # dkimpy raises on malformed signatures: that is a failed verification
        ok = False
    return ("pass" if ok else "fail"), domain, tags.get("s") or None


def check_dmarc(
    header_from: str, spf_result: str, mail_from: str, dkim_result: str, dkim_domain: str | None,
    res: dns.resolver.Resolver,
) -> tuple[str, str | None]:
    """DMARC (RFC 7489): pass when SPF or DKIM passes for a domain aligned with the From header."""
    _, addr = email.utils.parseaddr(header_from)
    from_domain = domain_of(addr)
    record = None
    for name in (from_domain, org_domain(from_domain)):
        found = [v for v in _txt(res, f"_dmarc.{name}") if v.lower().startswith("v=dmarc1")]
        if found:
            record = found[0]
            break
    if record is None:
        return "none", None
    tags = {k.strip().lower(): v.strip() for k, _, v in (t.partition("=") for t in record.split(";")) if k.strip()}
    policy = tags.get("p")

    def aligned(domain: str, mode: str) -> bool:
        if mode == "s":
            return domain == from_domain
        return org_domain(domain) == org_domain(from_domain)

    spf_ok = spf_result == "pass" and aligned(domain_of(mail_from), tags.get("aspf", "r"))
    dkim_ok = dkim_result == "pass" and dkim_domain is not None and aligned(dkim_domain, tags.get("adkim", "r"))
    return ("pass" if spf_ok or dkim_ok else "fail"), policy


def check_fcrdns(ip: str, helo: str, res: dns.resolver.Resolver) -> tuple[str, str | None, bool]:
    """Forward-confirmed reverse DNS: the PTR name resolves back to the connecting address."""
    try:
        ptr_answer = res.resolve(dns.reversename.from_address(ip), "PTR")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
        return "none", None, False
    names = [str(r.target).rstrip(".").lower() for r in ptr_answer]
    family = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    confirmed = None
    for name in names:
        try:
            addresses = {ipaddress.ip_address(r.to_text()) for r in res.resolve(name, family)}
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        if ipaddress.ip_address(ip) in addresses:
            confirmed = name
            break
    ptr = confirmed or names[0]
    return ("pass" if confirmed else "fail"), ptr, helo.lower().rstrip(".") == ptr


def evaluate(ip: str, helo: str, mail_from: str, content: bytes, res: dns.resolver.Resolver) -> Verdicts:
    spf_result, helo_result = check_spf(ip, mail_from, helo)
    dkim_result, dkim_domain, selector = check_dkim(content, res)
    header_from = email.message_from_bytes(content).get("From", "")
    dmarc_result, policy = check_dmarc(str(header_from), spf_result, mail_from, dkim_result, dkim_domain, res)
    fcrdns, ptr, helo_ok = check_fcrdns(ip, helo, res)
    return Verdicts(spf_result, helo_result, dkim_result, dkim_domain, dmarc_result, policy, fcrdns, ptr, helo_ok,
                    selector)
