"""DNS lookups feeding mailhost.verify.checks: async, bounded, asked of the server you mean.

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
import ipaddress
import secrets
import socket
import threading
import time
import typing
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from mailhost.verify.checks import Answer

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
    max_in_flight: int = 256  # outstanding queries; spread over the socket pool, Knot on 2 cores drops none


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


class _AskFailed(dns.exception.DNSException):
    """Every server asked answered with an error rcode or not at all."""


def _make_query(name: str, rdtype: str, recursion: bool) -> dns.message.QueryMessage:
    """EDNS0 with 1232-byte answers (the DNS flag day size); RD only when asking a cache."""
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    if not recursion:
        query.flags &= ~dns.flags.RD
    return query


class _Mux(asyncio.DatagramProtocol):
    """One UDP socket, many queries in flight; dnspython parses each datagram and decides
    whether it answers the query waiting under its id (and it must come from the server asked)."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[asyncio.Future[dns.message.Message], tuple[str, int], dns.message.Message]] = {}

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get(int.from_bytes(data[:2], "big"))
        if entry is None:
            return
        future, server, query = entry
        source = (str(ipaddress.ip_address(str(addr[0]).split("%")[0])), int(addr[1]))
        if source != server or future.done():
            return
        try:
            response = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # malformed: keep waiting for the real answer
        if query.is_response(response):
            future.set_result(response)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors: the affected query times out and is retried or reported


class _Udp:
    """Multiplexed UDP queries over a small pool of sockets per address family, not one per
    query (per-query sockets are most of a lookup's CPU when hundreds run at once, see
    bench/verify_scale.py).  Each query takes a random socket of the pool, so answers must
    match a random id and one of several random ports."""

    POOL = 8

    def __init__(self) -> None:
        self._endpoints: dict[int, list[tuple[asyncio.DatagramTransport, _Mux]]] = {}
        self._lock = asyncio.Lock()

    async def _endpoint(self, family: int) -> tuple[asyncio.DatagramTransport, _Mux]:
        async with self._lock:
            pool = self._endpoints.setdefault(family, [])
            if len(pool) < self.POOL:
                loop = asyncio.get_running_loop()
                local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
                pool.append(await loop.create_datagram_endpoint(_Mux, local_addr=local, family=family))
            return secrets.choice(pool)

    async def exchange(self, query: dns.message.Message, server: str, port: int, timeout: float) -> dns.message.Message:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        transport, mux = await self._endpoint(family)
        qid = secrets.randbelow(65536)
        while qid in mux.pending:
            qid = secrets.randbelow(65536)
        query.id = qid
        future: asyncio.Future[dns.message.Message] = asyncio.get_running_loop().create_future()
        mux.pending[qid] = (future, (str(ipaddress.ip_address(server)), port), query)
        try:
            transport.sendto(query.to_wire(), (server, port))
            return await asyncio.wait_for(future, timeout)
        finally:
            mux.pending.pop(qid, None)

    def close(self) -> None:
        for pool in self._endpoints.values():
            for transport, _ in pool:
                transport.close()
        self._endpoints.clear()


class Lookup:
    """Memoised async lookups for one verification attempt (one event loop)."""

    def __init__(self, spec: ResolverSpec) -> None:
        self.spec = spec
        self._memo: dict[tuple[str, str], asyncio.Future[_Raw]] = {}
        self._boot: dict[tuple[str, str], asyncio.Future[_Raw]] = {}
        self._zones: dict[str, asyncio.Future[str]] = {}
        self._servers: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._parent: dict[tuple[str, str], asyncio.Future[_Raw]] = {}
        self._nameservers = spec.nameservers or _system_nameservers()
        self._udp = _Udp()
        self._slots = asyncio.Semaphore(spec.max_in_flight)
        self.queries = 0

    def close(self) -> None:
        self._udp.close()

    async def query(self, name: str, rdtype: str) -> Answer:
        return _to_answer(name, rdtype, await self.raw(name, rdtype))

    def done(self, name: str, rdtype: str) -> _Raw | None:
        """The finished answer to a question, or None if it was not asked or is still in flight."""
        future = self._memo.get((name.rstrip(".").lower(), rdtype.upper()))
        return future.result() if future is not None and future.done() else None

    async def raw(self, name: str, rdtype: str) -> _Raw:
        """The answer as the checks should see it: from the cache asked, or the zone's own servers."""
        ask = self._ask_authoritative if self.spec.authoritative else self._ask_recursive
        return await _memoised(self._memo, name, rdtype, lambda n, t: self._bounded(ask(n, t)))

    async def zone(self, name: str) -> tuple[str | None, str]:
        """The zone a name lives in, asked of the configured resolvers; (None, why) when none answered."""
        try:
            return await asyncio.wait_for(self._zone_of(name), self.spec.timeout * 4), ""
        except (TimeoutError, dns.exception.Timeout):
            return None, f"no answer within {self.spec.timeout:g}s from {self._where()}"
        except (dns.exception.DNSException, OSError, ValueError) as error:
            return None, str(error) or type(error).__name__

    async def parent_side(self, name: str, rdtype: str) -> Answer:
        """What the parent zone publishes about a child's apex (DS).  In authoritative mode the parent's
        servers are asked: the child's own would answer from the wrong side of the zone cut."""
        if not self.spec.authoritative:
            return await self.query(name, rdtype)
        raw = await _memoised(self._parent, name, rdtype, lambda n, t: self._bounded(self._ask_parent(n, t)))
        return _to_answer(name, rdtype, raw)

    async def _ask_parent(self, name: str, rdtype: str) -> _Raw:
        qname = dns.name.from_text(name)
        servers = await self._zone_servers(await self._zone_of(qname.parent().to_text(omit_final_dot=True)))
        response = await self._exchange(servers, name, rdtype, recursion=False)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return _Raw("nxdomain")
        rrset = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        return _Raw("ok", tuple(rrset)) if rrset is not None else _Raw("nodata")

    async def _recursive(self, name: str, rdtype: str) -> _Raw:
        """Bootstrap lookups (zone discovery) always go to the configured resolver."""
        return await _memoised(self._boot, name, rdtype, lambda n, t: self._bounded(self._ask_recursive(n, t)))

    async def _bounded(self, ask: Awaitable[_Raw]) -> _Raw:
        self.queries += 1
        try:
            return await asyncio.wait_for(ask, self.spec.timeout * 2)
        except (TimeoutError, dns.exception.Timeout):
            return _Raw("error", (), f"no answer within {self.spec.timeout:g}s from {self._where()}")
        except _AskFailed as error:
            return _Raw("error", (), str(error))
        except (dns.exception.DNSException, OSError, ValueError) as error:
            return _Raw("error", (), f"{type(error).__name__}: {error}")

    def _where(self) -> str:
        if self.spec.authoritative:
            return "the zone's authoritative servers"
        return ", ".join(self.spec.nameservers) or "the system resolver"

    async def _exchange(self, servers: Sequence[str], name: str, rdtype: str, recursion: bool) -> dns.message.Message:
        """Ask the servers in turn until one answers NOERROR/NXDOMAIN, retrying lost datagrams."""
        deadline = time.monotonic() + self.spec.timeout
        per_try = max(0.2, self.spec.timeout / 3)
        problems: dict[str, str] = {}
        while time.monotonic() < deadline:
            for server in servers:
                if server in problems and problems[server] != "timeout":
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                query = _make_query(name, rdtype, recursion)
                try:
                    async with self._slots:
                        response = await self._udp.exchange(query, server, self.spec.port, min(per_try, left))
                except TimeoutError:
                    problems[server] = "timeout"
                    continue
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(query, server, timeout=max(0.2, left), port=self.spec.port)
                if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return response
                problems[server] = f"answered {dns.rcode.to_text(response.rcode())}"
            if all(problem != "timeout" for problem in problems.values()) and len(problems) == len(servers):
                break
        if problems and all(problem == "timeout" for problem in problems.values()):
            raise dns.exception.Timeout()
        raise _AskFailed("; ".join(f"{server} {problem}" for server, problem in problems.items()) or "no server")

    async def _ask_recursive(self, name: str, rdtype: str) -> _Raw:
        response = await self._exchange(self._nameservers, name, rdtype, recursion=True)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return _Raw("nxdomain")
        chain = typing.cast(dns.message.QueryMessage, response).resolve_chaining()
        return _Raw("ok", tuple(chain.answer) if chain.answer is not None else ())

    # -- authoritative mode --------------------------------------------------------------------
    async def _zone_of(self, name: str) -> str:
        """The zone a name lives in: the SOA owner in the answer, or in the authority section."""
        key = name.rstrip(".").lower()
        future = self._zones.get(key)
        if future is None:
            future = asyncio.ensure_future(self._find_zone(key))
            self._zones[key] = future
        return await asyncio.shield(future)

    async def _find_zone(self, name: str) -> str:
        qname = dns.name.from_text(name)
        response = await self._exchange(self._nameservers, name, "SOA", recursion=True)
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA and (qname == rrset.name or qname.is_subdomain(rrset.name)):
                    return str(rrset.name.to_text(omit_final_dot=True).lower())
        if qname == dns.name.root or qname.parent() == dns.name.root:
            raise _AskFailed(f"found no zone for {name}")
        return await self._zone_of(qname.parent().to_text(omit_final_dot=True))

    async def _zone_servers(self, zone: str) -> tuple[str, ...]:
        future = self._servers.get(zone)
        if future is None:
            future = asyncio.ensure_future(self._find_servers(zone))
            self._servers[zone] = future
        return await asyncio.shield(future)

    async def _find_servers(self, zone: str) -> tuple[str, ...]:
        ns = await self._recursive(zone, "NS")
        names = [rd.target.to_text(omit_final_dot=True) for rd in ns.rdatas]  # type: ignore[attr-defined]
        answers = await asyncio.gather(*(self._recursive(n, t) for n in names for t in ("A", "AAAA")))
        found = [str(rd.address) for answer in answers for rd in answer.rdatas]  # type: ignore[attr-defined]
        if not found:
            raise _AskFailed(f"no address for the nameservers of {zone} ({', '.join(names) or 'no NS records'})")
        return tuple(dict.fromkeys(found))

    async def _ask_authoritative(self, name: str, rdtype: str) -> _Raw:
        qname = name
        for _ in range(MAX_CNAME):
            servers = await self._zone_servers(await self._zone_of(qname))
            response = await self._exchange(servers, qname, rdtype, recursion=False)
            if response.rcode() == dns.rcode.NXDOMAIN:
                return _Raw("nxdomain")
            owner = dns.name.from_text(qname)
            rrset = response.get_rrset(response.answer, owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            if rrset is not None:
                return _Raw("ok", tuple(rrset))
            cname = response.get_rrset(response.answer, owner, dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                return _Raw("nodata")
            qname = next(iter(cname)).target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
        return _Raw("error", (), f"CNAME chain longer than {MAX_CNAME} at {name}")


async def _memoised(
    memo: dict[tuple[str, str], asyncio.Future[_Raw]],
    name: str,
    rdtype: str,
    make: Callable[[str, str], Awaitable[_Raw]],
) -> _Raw:
    """Each question is asked once per attempt; later askers share the answer (or the wait)."""
    key = (name.rstrip(".").lower(), rdtype.upper())
    future = memo.get(key)
    if future is None:
        future = asyncio.ensure_future(make(*key))
        memo[key] = future
    return await asyncio.shield(future)


def _system_nameservers() -> tuple[str, ...]:
    try:
        return tuple(dns.resolver.Resolver(configure=True).nameservers)  # type: ignore[arg-type]
    except dns.resolver.NoResolverConfiguration:
        return ()


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
