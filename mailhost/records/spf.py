"""Building the one SPF record of the sender domain, and counting its DNS lookups.

RFC 7208 §4.6.4 allows at most 10 mechanisms/modifiers that cause DNS lookups
(include, a, mx, ptr, exists, redirect); more is a permerror at every receiver.
Here only the record's own terms are counted; `mailhost verify` follows includes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from mailhost.records import grammar

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


_TERM = re.compile(r"(?P<q>[+?~-]?)(?P<name>[a-z0-9]+)(?P<rest>[:/=].*)?", re.IGNORECASE)
_DUAL_CIDR = re.compile(r"(?:/(?P<v4>[0-9]{1,2}))?(?://(?P<v6>[0-9]{1,3}))?")
MIN_PREFIX = 8  # an SPF term wider than a /8 authorises far more than one organisation's senders
_MERGE_HINT = ("list only mechanisms such as 'include:_spf.relay.example' or 'ip4:198.51.100.0/24' "
               "(v=spf1 and the final all come from spfAll)")


def _cidr_lengths(text: str, term: str) -> None:
    found = _DUAL_CIDR.fullmatch(text)
    if not found:
        raise ValueError(f"{term!r}: bad CIDR suffix {text!r}; {_MERGE_HINT}")
    for group, limit in (("v4", 32), ("v6", 128)):
        if found.group(group) is not None and not MIN_PREFIX <= int(found.group(group)) <= limit:
            raise ValueError(f"{term!r} covers more than a /{MIN_PREFIX} (or is not a prefix length); "
                             "list the networks your senders really use")


def check_term(term: str) -> str:
    """One spfExtra term, parsed per RFC 7208 §5; refuses what would authorise more than named senders.

    Accepted: ip4/ip6 networks of /8 or narrower, include:, exists:, a and mx (with optional domain and
    CIDR suffixes), each with an optional qualifier.  Refused: all (spfAll sets it), redirect= and other
    modifiers, ptr (RFC 7208 §5.5: do not use), macros, and networks wider than /8.
    """
    grammar.printable(term, "an spfExtra term")
    found = _TERM.fullmatch(term)
    if not found or " " in term:
        raise ValueError(f"{term!r} is not one SPF term; {_MERGE_HINT}")
    name, rest = found.group("name").lower(), found.group("rest") or ""
    if name == "all" or name == "v" or rest.startswith("="):
        raise ValueError(f"{term!r} is not merged: the record's v=spf1 and all come from spfAll, and modifiers "
                         f"such as redirect= would hand the whole record to another domain; {_MERGE_HINT}")
    if "%" in term:
        raise ValueError(f"{term!r} uses SPF macros, which this program does not merge; {_MERGE_HINT}")
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            example = "198.51.100.0/24" if name == "ip4" else "2001:db8::/48"
            raise ValueError(f"{term!r} needs an address, e.g. '{name}:{example}'")
        text = rest[1:]
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise ValueError(f"{term!r} is not an {name} network without host bits; {_MERGE_HINT}") from None
        if net.version != int(name[2]) or ("/" in text and net.prefixlen < MIN_PREFIX):
            raise ValueError(f"{term!r} covers more than a /{MIN_PREFIX} or has the wrong family; list the "
                             "networks your senders really use")
        return term
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise ValueError(f"{term!r} needs a domain, e.g. '{name}:_spf.relay.example'")
        grammar.fqdn(rest[1:], f"the domain of {term!r}", service_labels=True)
        return term
    if name in ("a", "mx"):
        domain, slash, cidr = rest.removeprefix(":").partition("/")
        if rest.startswith(":"):
            grammar.fqdn(domain, f"the domain of {term!r}", service_labels=True)
        elif domain:
            raise ValueError(f"{term!r} is not one SPF term; {_MERGE_HINT}")
        _cidr_lengths(slash + cidr, term)
        return term
    if name == "ptr":
        raise ValueError(f"{term!r}: ptr is slow and RFC 7208 §5.5 says not to use it; list ip4:/ip6: or a instead")
    raise ValueError(f"{term!r} is not an SPF mechanism; {_MERGE_HINT}")
