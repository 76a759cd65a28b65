"""DNS lookups feeding mailhost.checks: async, bounded, asked of the server you mean.

Two modes.  Recursive: ask a given nameserver (or the system's) with recursion.  Authoritative:
find the zone of each name and ask its own servers without recursion, so what you see is
what is published, not what a cache still remembers.  pyspf (sync, and wired to dnspython's
process-wide default resolver) is run on the event loop against the answers this Lookup
already holds; each name it still needs is fetched asynchronously and the evaluation rerun,
so SPF is evaluated against the same server as every other check, without threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver

from mailhost.checks import Answer

MAX_CNAME = 8
# pyspf calls the deprecated dns.resolver.query; the call is ours to route, the warning is noise.
warnings.filterwarnings("ignore", "please use dns.resolver.resolve", DeprecationWarning)


@dataclass(frozen=True)
class ResolverSpec:
    """Where to ask.  nameservers empty: the system resolver (/etc/resolv.conf)."""

    nameservers: tuple[str, ...] = ()
    port: int = 53  # also used for discovered authoritative servers (labs on a high port)
    authoritative: bool = False
    timeout: float = 5.0  # per lookup, all retries and servers included
    max_in_flight: int = 128  # queries outstanding at once: no bursts a server or relay drops or rate-limits


@dataclass(frozen=True)
class _Raw:
    status: str  # ok | nxdomain | nodata | error
    rdatas: tuple[dns.rdata.Rdata, ...] = ()
    error: str = ""


def _to_answer(name: str, rdtype: str, raw: _Raw) -> Answer:
    values: list[str] = []
    strings: list[tuple[str, ...]] = []
    for rd in raw.rdatas:
        if rdtype in ("A", "AAAA"):
            values.append(str(rd.address))  # type: ignore[attr-defined]
        elif rdtype in ("PTR", "NS", "CNAME"):
            values.append(rd.target.to_text(omit_final_dot=True).lower())  # type: ignore[attr-defined]
        elif rdtype == "MX":
            values.append(f"{rd.preference} {rd.exchange.to_text(omit_final_dot=True).lower()}")  # type: ignore[attr-defined]
        elif rdtype == "TXT":
            parts = tuple(s.decode("utf-8", "replace") for s in rd.strings)  # type: ignore[attr-defined]
            strings.append(parts)
            values.append("".join(parts))
        else:
            values.append(rd.to_text())
    status = "nodata" if raw.status == "ok" and not values else raw.status
    return Answer(name, rdtype, status, tuple(values), tuple(strings), raw.error)  # type: ignore[arg-type]


class Lookup:
    """Memoised async lookups for one verification attempt (one event loop)."""

    def __init__(self, spec: ResolverSpec) -> None:
        self.spec = spec
        self._memo: dict[tuple[str, str], asyncio.Future[_Raw]] = {}
        self._zones: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._bootstrap = self._make_resolver(spec.nameservers)
        self._slots = asyncio.Semaphore(spec.max_in_flight)
        self.queries = 0

    def _make_resolver(self, servers: Sequence[str]) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = list(servers)
            resolver.port = self.spec.port
        resolver.lifetime = self.spec.timeout
        resolver.timeout = max(0.5, self.spec.timeout / 3)
        resolver.cache = None  # a re-check after a fix must not see the old answer
        return resolver

    async def query(self, name: str, rdtype: str) -> Answer:
        return _to_answer(name, rdtype, await self.raw(name, rdtype))

    def done(self, name: str, rdtype: str) -> _Raw | None:
        """The finished answer to a question, or None if it was not asked or is still in flight."""
        future = self._memo.get((name.rstrip(".").lower(), rdtype.upper()))
        return future.result() if future is not None and future.done() else None

    async def raw(self, name: str, rdtype: str) -> _Raw:
        key = (name.rstrip(".").lower(), rdtype.upper())
        future = self._memo.get(key)
        if future is None:
            future = asyncio.ensure_future(self._bounded(*key))
            self._memo[key] = future
        return await asyncio.shield(future)

    async def _bounded(self, name: str, rdtype: str) -> _Raw:
        self.queries += 1
        try:
            async with self._slots:
                return await asyncio.wait_for(self._ask(name, rdtype), self.spec.timeout * 2)
        except (TimeoutError, dns.exception.Timeout):
            return _Raw("error", (), f"no answer within {self.spec.timeout:g}s from {self._where()}")
        except dns.resolver.NoNameservers as error:
            return _Raw("error", (), _no_nameservers(error))
        except (dns.exception.DNSException, OSError) as error:
            return _Raw("error", (), f"{type(error).__name__}: {error}")

    def _where(self) -> str:
        if self.spec.authoritative:
            return "the zone's authoritative servers"
        return ", ".join(self.spec.nameservers) or "the system resolver"

    async def _ask(self, name: str, rdtype: str) -> _Raw:
        if self.spec.authoritative:
            return await self._ask_authoritative(name, rdtype)
        try:
            answer = await self._bootstrap.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return _Raw("nxdomain")
        return _Raw("ok", tuple(answer.rrset) if answer.rrset is not None else ())

    # -- authoritative mode --------------------------------------------------------------------
    async def _servers_for(self, name: str) -> tuple[str, tuple[str, ...]]:
        zone = await dns.asyncresolver.zone_for_name(name, resolver=self._bootstrap)
        key = zone.to_text()
        future = self._zones.get(key)
        if future is None:
            future = asyncio.ensure_future(self._zone_servers(zone))
            self._zones[key] = future
        return key, await asyncio.shield(future)

    async def _zone_servers(self, zone: dns.name.Name) -> tuple[str, ...]:
        ns = await self._bootstrap.resolve(zone, "NS", search=False)
        names = [rd.target for rd in ns]  # type: ignore[attr-defined]
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            results = await asyncio.gather(
                *(self._bootstrap.resolve(n, rdtype, search=False, raise_on_no_answer=False) for n in names),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, dns.resolver.Answer) and result.rrset is not None:
                    found.extend(str(rd.address) for rd in result.rrset)  # type: ignore[attr-defined]
        if not found:
            raise dns.resolver.NoNameservers(request=None, errors=[])
        return tuple(dict.fromkeys(found))

    async def _ask_authoritative(self, name: str, rdtype: str) -> _Raw:
        qname = dns.name.from_text(name)
        for _ in range(MAX_CNAME):
            _zone, servers = await self._servers_for(qname.to_text())
            response = await self._ask_servers(servers, qname, rdtype)
            if response.rcode() == dns.rcode.NXDOMAIN:
                return _Raw("nxdomain")
            wanted = dns.rdatatype.from_text(rdtype)
            rrset = response.get_rrset(response.answer, qname, dns.rdataclass.IN, wanted)
            if rrset is not None:
                return _Raw("ok", tuple(rrset))
            cname = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                return _Raw("nodata")
            qname = next(iter(cname)).target  # type: ignore[attr-defined]
        return _Raw("error", (), f"CNAME chain longer than {MAX_CNAME} at {name}")

    async def _ask_servers(self, servers: Sequence[str], qname: dns.name.Name, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
        query.flags &= ~dns.flags.RD
        problems: list[str] = []
        per_server = max(0.5, self.spec.timeout / max(1, len(servers)))
        for server in servers:
            try:
                response = await dns.asyncquery.udp(query, server, timeout=per_server, port=self.spec.port)
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(query, server, timeout=per_server, port=self.spec.port)
            except (dns.exception.DNSException, OSError) as error:
                problems.append(f"{server}: {type(error).__name__}")
                continue
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            problems.append(f"{server}: {dns.rcode.to_text(response.rcode())}")
        raise _AskFailed("; ".join(problems) or "no server")


class _AskFailed(dns.exception.DNSException):
    pass


def _no_nameservers(error: dns.resolver.NoNameservers) -> str:
    text = str(error)
    for code in ("REFUSED", "SERVFAIL", "NOTAUTH"):
        if code in text:
            return f"the nameserver answered {code}"
    return text


# -- pyspf bridge --------------------------------------------------------------------------------
_route = threading.local()
_install_lock = threading.Lock()
_installed = 0
_previous: Any = None
MAX_SPF_ROUNDS = 64  # fetch rounds per evaluation; RFC 7208 limits make real records need far fewer


class _Need(Exception):
    """pyspf asked for a name this Lookup has not fetched yet."""


class _CacheRoute:
    """Answers pyspf from what the Lookup already fetched, and notes what it still needs.

    Noted even when pyspf swallows the signal (it wraps some lookups in a bare except)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.missing: set[tuple[str, str]] = set()

    def resolve(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        raw = self.lookup.done(name, rdtype)
        if raw is None:
            self.missing.add((name, rdtype))
            raise _Need(name, rdtype)
        if raw.status == "nxdomain":
            raise dns.resolver.NXDOMAIN()
        if raw.status == "error":
            raise dns.exception.Timeout(raw.error)  # pyspf turns it into temperror
        if not raw.rdatas:
            raise dns.resolver.NoAnswer()
        return list(raw.rdatas)


class _RoutedResolver:
    """Stands in for dnspython's default resolver: while an SPF evaluation runs on this thread its
    queries are answered by that evaluation's route; anything else goes to the previous resolver."""

    def resolve(self, qname: Any, rdtype: Any = "A", *args: Any, **kwargs: Any) -> list[dns.rdata.Rdata]:
        route: _CacheRoute | None = getattr(_route, "target", None)
        if route is None:
            fallback = _previous or dns.resolver.Resolver()
            return fallback.resolve(qname, rdtype, *args, **kwargs)  # type: ignore[no-any-return,return-value]
        name = qname.to_text() if isinstance(qname, dns.name.Name) else str(qname)
        kind = rdtype if isinstance(rdtype, str) else dns.rdatatype.to_text(rdtype)
        return route.resolve(name, kind)

    query = resolve


@contextlib.contextmanager
def spf_routing() -> Iterator[None]:
    """Install the routing resolver for as long as any verification runs (process-wide, counted)."""
    global _installed, _previous
    with _install_lock:
        if _installed == 0:
            _previous = dns.resolver.default_resolver
            dns.resolver.default_resolver = _RoutedResolver()  # type: ignore[assignment]
        _installed += 1
    try:
        yield
    finally:
        with _install_lock:
            _installed -= 1
            if _installed == 0:
                dns.resolver.default_resolver = _previous
                _previous = None


async def spf_evaluate(lookup: Lookup, ip: str, sender: str, helo: str) -> tuple[str, str]:
    """Evaluate SPF like a receiver (pyspf) for a connection from ip; returns (result, explanation).

    sender is the MAIL FROM address (postmaster@HELO for the HELO identity).  The routing
    resolver must be installed (spf_routing) while this runs.
    """
    import spf  # pyspf

    for _ in range(MAX_SPF_ROUNDS):
        route = _CacheRoute(lookup)
        _route.target = route
        try:
            result, _code, explanation = spf.query(i=ip, s=sender, h=helo).check()
            outcome = (str(result), str(explanation))
        except _Need:
            outcome = None
        except Exception as error:  # pyspf raises on odd input; a receiver would say temperror
            outcome = ("temperror", f"{type(error).__name__}: {error}")
        finally:
            _route.target = None
        if not route.missing and outcome is not None:
            return outcome
        await asyncio.gather(*(lookup.raw(name, rdtype) for name, rdtype in route.missing))
    return "temperror", f"SPF evaluation needed more than {MAX_SPF_ROUNDS} rounds of lookups"
