"""Planning: from settings and the addresses a deploy produced to DNS records and expectations.

Pure data in, pure data out.  Which records exist depends only on the settings (so a
`pulumi preview` shows them all); their values may depend on addresses known after
deploy, which enter here as plain strings through one `apply` in a component.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from mailhost.records import dkim, dnstext, spf
from mailhost.records.expected import Expected, ExpectedError, ExpectedHost
from mailhost.settings.config import Host, PtrSource, Settings

Zone = Literal["forward", "reverse4", "reverse6"]
DEFAULT_TTL = 300


@dataclass(frozen=True)
class Addresses:
    ipv4: str
    ipv6: str | None = None


@dataclass(frozen=True)
class Record:
    """One DNS record set: the zone it belongs to, its name, type and logical value."""

    key: str  # stable resource name suffix, e.g. "jira-a", "spf"
    zone: Zone
    name: str
    type: str
    value: str
    ttl: int = DEFAULT_TTL

    @property
    def route53_records(self) -> list[str]:
        return [dnstext.route53_value(self.value)] if self.type == "TXT" else [self.value]

    @property
    def zone_line(self) -> str:
        rdata = dnstext.zone_value(self.value) if self.type == "TXT" else self.value
        return f"{self.name}. {self.ttl} IN {self.type} {rdata}"


def stated_addresses(settings: Settings) -> dict[str, Addresses]:
    """The addresses the stack file itself gives: those of adopted hosts (EC2 ones exist after deploy)."""
    return {h.name: Addresses(h.existing.ipv4, h.existing.ipv6) for h in settings.hosts if h.existing}


def placeholder_addresses(settings: Settings) -> dict[str, Addresses]:
    """Known addresses for adopted hosts; 192.0.2.x / 2001:db8::x stand-ins for EC2 ones (known after deploy)."""
    out = stated_addresses(settings)
    for index, host in enumerate(settings.hosts, start=1):
        if host.name not in out:
            out[host.name] = Addresses(f"192.0.2.{index}", f"2001:db8::{index}" if settings.has_ipv6(host) else None)
    return out


def inet_protocols(settings: Settings, host: Host) -> str:
    """Postfix's inet_protocols: only the families whose address has forward-confirmed PTR."""
    v4, v6 = settings.sends_over(host, 4), settings.sends_over(host, 6)
    if v4 and v6:
        return "all"
    if v6:
        return "ipv6"
    return "ipv4"  # relay mode without any PTR still reaches the smarthost over IPv4


def sending_addresses(settings: Settings, host: Host, addresses: Addresses) -> list[str]:
    out = []
    if settings.sends_over(host, 4):
        out.append(addresses.ipv4)
    if settings.sends_over(host, 6) and addresses.ipv6:
        out.append(addresses.ipv6)
    if not out:  # relay without PTR: the host still connects from its IPv4
        out.append(addresses.ipv4)
    return out


def host_addresses(settings: Settings, host: Host, addresses: Addresses) -> list[str]:
    """Every address the host has, PTR or not: SPF lists them all, so no change of
    inet_protocols can ever send from an address SPF has just dropped."""
    return [addresses.ipv4] + ([addresses.ipv6] if settings.has_ipv6(host) and addresses.ipv6 else [])


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def spf_record(settings: Settings, addresses: dict[str, Addresses]) -> Record:
    every = [a for host in settings.hosts for a in host_addresses(settings, host, addresses[host.name])]
    value = spf.build_spf(every, settings.spf_extra, settings.spf_all)
    return Record("spf", "forward", settings.domain, "TXT", value)


def dmarc_record(settings: Settings) -> Record:
    """RFC 9989: no pct (removed); t=y while the stack tests its policy."""
    terms = [f"v=DMARC1; p={settings.dmarc.policy}"]
    if settings.dmarc.testing:
        terms.append("t=y")
    if settings.dmarc.rua:
        terms.append(f"rua=mailto:{settings.dmarc.rua}")
    terms.append("adkim=r; aspf=r")
    return Record("dmarc", "forward", f"_dmarc.{settings.domain}", "TXT", "; ".join(terms))


def host_records(settings: Settings, host: Host, addresses: Addresses) -> list[Record]:
    """A, AAAA, SPF of the HELO name, and PTRs published in Route53 reverse zones (DKIM: dkim_record).

    Each record's resource is named after its record set (the HELO name, or the address a PTR maps), so
    two resources can never claim one set: a host renamed with its fqdn or address kept keeps the same
    resources, and Route53 never sees a CREATE for a set that a resource deleted later in the `up` holds.
    Only the PTR of an address known after creation (an EC2 host's IPv6) is named after the host: a new
    instance has a new address."""
    fqdn = settings.fqdn(host)
    records = [Record(f"{fqdn}-a", "forward", fqdn, "A", addresses.ipv4)]
    if settings.has_ipv6(host) and addresses.ipv6:
        records.append(Record(f"{fqdn}-aaaa", "forward", fqdn, "AAAA", addresses.ipv6))
    if fqdn != settings.domain:  # at the apex the domain's own SPF record already covers the HELO name
        helo_spf = spf.build_spf(host_addresses(settings, host, addresses), [], "-all")
        records.append(Record(f"{fqdn}-spf", "forward", fqdn, "TXT", helo_spf))
    reverse: tuple[tuple[Literal[4, 6], Zone, str | None], ...] = (
        (4, "reverse4", addresses.ipv4),
        (6, "reverse6", addresses.ipv6),
    )
    for family, zone, address in reverse:
        if address and settings.ptr_source(host, family) is PtrSource.ZONE:
            key = f"{address.replace(':', '-')}-ptr" if host.existing else f"{host.name}-ptr{family}"
            records.append(Record(key, zone, reverse_name(address), "PTR", f"{fqdn}."))
    return records


_LEGACY_SUFFIX = {"A": "a", "AAAA": "aaaa", "TXT": "spf"}


def legacy_record_key(host: Host, record_type: str, zone: Zone) -> str:
    """The name a host record's resource had before records were named after their sets ("jira-a"): an
    alias, so a stack deployed then keeps every record's state."""
    return f"{host.name}-" + (_LEGACY_SUFFIX.get(record_type) or ("ptr4" if zone == "reverse4" else "ptr6"))


def dkim_record(settings: Settings, host: Host, generation: str, dkim_p: str) -> Record:
    """One key generation's record: its own resource per generation, so a rotation adds one and the
    retired one stays until its retention is over (Settings.dkim_generations)."""
    return Record(dkim_key(host, generation), "forward", dkim_record_name(settings, host, generation), "TXT",
                  dkim.txt_value(dkim_p))


def dkim_record_name(settings: Settings, host: Host, generation: str) -> str:
    """Known before the key is: the component names the record while the key is still an Output."""
    return dkim.record_name(settings.selector(host, generation), settings.domain)


def dkim_key(host: Host, generation: str) -> str:
    return f"{host.name}-dkim-{generation}"


LEGACY_DKIM_KEY = "{host}-dkim"  # the one DKIM record's resource name before generations: kept as an alias


def record_keys(settings: Settings, host: Host) -> list[tuple[str, Zone, str, str | None]]:
    """(key, zone, type, name) of each record a host gets, known before any address is.

    The name is None for a PTR: it is the reverse name of the host's own address."""
    if host.existing:  # known from the settings: a PTR's resource is named after its address
        placeholder = Addresses(host.existing.ipv4, host.existing.ipv6 if settings.has_ipv6(host) else None)
    else:
        placeholder = Addresses("192.0.2.1", "2001:db8::1" if settings.has_ipv6(host) else None)
    return [(r.key, r.zone, r.type, None if r.type == "PTR" else r.name)
            for r in host_records(settings, host, placeholder)]


def expected(settings: Settings, addresses: dict[str, Addresses], dkim_p: dict[str, str]) -> Expected:
    hosts = []
    for host in settings.hosts:
        addr = addresses[host.name]
        hosts.append(
            ExpectedHost(
                fqdn=settings.fqdn(host),
                ipv4=addr.ipv4,
                ipv6=addr.ipv6 if settings.has_ipv6(host) else None,
                sends_ipv4=inet_protocols(settings, host) in ("ipv4", "all"),
                sends_ipv6=inet_protocols(settings, host) in ("ipv6", "all"),
                dkim_selector=settings.selector(host),
                dkim_public_key=dkim_p.get(host.name),
            )
        )
    return Expected(
        domain=settings.domain,
        hosts=tuple(hosts),
        production=settings.production,
        spf_includes=tuple(settings.spf_extra),
        dmarc_policy=settings.dmarc.policy,
        dmarc_testing=settings.dmarc.testing,
    )


def zone_text(settings: Settings, addresses: dict[str, Addresses], dkim_p: dict[str, str]) -> str:
    """Every record the stack publishes, as zone-file lines (for `mailhost render`)."""
    records = [r for host in settings.hosts for r in host_records(settings, host, addresses[host.name])]
    records += [dkim_record(settings, host, settings.dkim_selector, dkim_p.get(host.name, ""))
                for host in settings.hosts]
    records += [spf_record(settings, addresses), dmarc_record(settings)]
    return "".join(f"; {r.zone}\n{r.zone_line}\n" for r in records)


def expected_from_settings(settings: Settings) -> Expected:
    """From a stack file: possible only for adopted hosts, whose addresses the file states.

    Built by `expected` here, the same function the program exports from, so the
    flags of a stack mean the same thing here as after `pulumi up` (DKIM key unknown here).
    """
    unknown = [host.name for host in settings.hosts if host.existing is None]
    if unknown:
        raise ExpectedError(
            f"host(s) {', '.join(unknown)} are EC2 instances whose addresses exist only after deploy; "
            "use `pulumi stack output --json > out.json` and `mailhost verify --outputs out.json`"
        )
    return expected(settings, stated_addresses(settings), {})
