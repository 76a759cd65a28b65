"""Building the one SPF record of the sender domain, and counting its DNS lookups.

RFC 7208 §4.6.4 allows at most 10 mechanisms/modifiers that cause DNS lookups
(include, a, mx, ptr, exists, redirect); more is a permerror at every receiver.
Here only the record's own terms are counted; `mailhost verify` follows includes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
LOOKUP_MODIFIERS = ("redirect",)
MAX_LOOKUPS = 10


def costs_lookup(term: str) -> bool:
    """Whether one term of a record costs a DNS lookup (mechanism with any qualifier, or redirect=)."""
    bare = term.lstrip("+-~?").lower()
    if bare.partition("=")[0] in LOOKUP_MODIFIERS and "=" in bare:
        return True
    name = re.split(r"[:/]", bare, maxsplit=1)[0]
    return name in LOOKUP_MECHANISMS


def lookup_terms(record: str) -> list[str]:
    """The terms of a record that each cost one DNS lookup, in order."""
    return [term for term in record.split()[1:] if costs_lookup(term)]


def address_term(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"ip{ip.version}:{ip}"


def build_spf(addresses: Iterable[str], extra: Iterable[str], all_term: str) -> str:
    """`v=spf1`, each sending address once (sorted, IPv4 first), the user's terms, then all."""
    ips = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda ip: (ip.version, ip))
    terms = ["v=spf1", *(address_term(str(ip)) for ip in ips)]
    for term in extra:
        if term not in terms:
            terms.append(term)
    terms.append(all_term)
    record = " ".join(terms)
    count = len(lookup_terms(record))
    if count > MAX_LOOKUPS:
        raise ValueError(
            f"the SPF record needs {count} DNS lookups ({', '.join(lookup_terms(record))}); receivers allow "
            f"{MAX_LOOKUPS}: replace includes in spfExtra by the ip4:/ip6: ranges they stand for"
        )
    return record
