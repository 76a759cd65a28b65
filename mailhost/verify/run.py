"""Expected DNS state → lookups → verdicts → one report; the post-deploy step and the CLI share it.

All hosts and all checks run concurrently on one event loop; each lookup has its own
timeout, so one dead name server cannot stall the rest.  `verify` retries a failing report
until it passes or the wait runs out, for records that are still propagating.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailhost.records.expected import Expected, ExpectedHost
from mailhost.verify import checks as c
from mailhost.verify import dmarc
from mailhost.verify import requirements as rq
from mailhost.verify.checks import Answer, CheckResult
from mailhost.verify.dnsquery import Lookup, ResolverSpec, spf_evaluate, spf_routing
from mailhost.verify.dnssec import check_dnssec

RETRY_INTERVAL = 5.0
MAX_SPF_TREE = 40  # include:/redirect= targets fetched at most (a record needing more fails anyway)
MAX_SPF_QUESTIONS = 80  # a/mx/exists names (and MX hosts' addresses) fetched at most, for the void count


@dataclass(frozen=True)
class VerifyOptions:
    resolver: ResolverSpec = field(default_factory=ResolverSpec)
    dnsbl: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # check families to judge (the part of the id before ':'); empty: all


@dataclass
class Report:
    checks: list[CheckResult]
    attempts: int = 1
    seconds: float = 0.0
    queries: int = 0
    summary: bool = True  # judge the receivers' requirements (not for --only: most checks did not run)

    @property
    def requirements(self) -> list[rq.Judged]:
        return rq.evaluate(self.checks) if self.summary else []

    @property
    def receivers(self) -> list[rq.Receiver]:
        return rq.receivers(self.requirements)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == "fail"]

    @property
    def exit_code(self) -> int:
        """0 nothing failed; 1 DNS is wrong; 2 DNS could not be asked (and nothing else failed)."""
        if self.ok:
            return 0
        return 1 if any(not check.lookup_error for check in self.failures) else 2

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks],
                "requirements": [judged.to_dict() for judged in self.requirements],
                "receivers": [receiver.to_dict() for receiver in self.receivers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# -- one attempt ----------------------------------------------------------------------------------
async def verify_once(expected: Expected, options: VerifyOptions) -> Report:
    started = time.monotonic()
    lookup = Lookup(options.resolver)
    try:
        with spf_routing():
            parts = [_domain_checks(lookup, expected)]
            parts += [_host_checks(lookup, expected, host, options) for host in expected.hosts]
            limit = options.resolver.timeout * 8
            results = await asyncio.gather(*(_bounded(part, limit) for part in parts))
    finally:
        lookup.close()
    flat = [check for group in results for check in group]
    if options.only:  # judge the families asked for; a lookup error anywhere still counts (it may hide one)
        flat = [check for check in flat if check.id.split(":")[0] in options.only or check.lookup_error]
        if not any(check.id.split(":")[0] in options.only for check in flat):
            flat.append(CheckResult(f"{options.only[0]}:none", "fail", f"no {', '.join(options.only)} check ran",
                                    "the expected state names nothing of that kind: check the stack's hosts",
                                    lookup_error=True))
    return Report(_dedupe(flat), 1, time.monotonic() - started, lookup.queries, summary=not options.only)


async def verify(
    expected: Expected,
    options: VerifyOptions,
    wait: float = 0.0,
    on_retry: Callable[[Report, float], None] | None = None,
) -> Report:
    """Verify, and while something fails retry until `wait` seconds have passed (propagation)."""
    started = time.monotonic()
    deadline = started + wait
    attempts = 0
    while True:
        attempts += 1
        report = await verify_once(expected, options)
        remaining = deadline - time.monotonic()
        if report.ok or remaining <= 0:
            report.attempts = attempts
            report.seconds = time.monotonic() - started
            return report
        pause = min(RETRY_INTERVAL, remaining)
        if on_retry:
            on_retry(report, pause)
        await asyncio.sleep(pause)


def run(expected: Expected, options: VerifyOptions, wait: float = 0.0,
        on_retry: Callable[[Report, float], None] | None = None) -> Report:
    return asyncio.run(verify(expected, options, wait, on_retry))


async def _bounded(part: Awaitable[list[CheckResult]], limit: float) -> list[CheckResult]:
    try:
        return await asyncio.wait_for(part, limit)
    except TimeoutError:
        stuck = Answer("(several)", "any", "error", error=f"checks still waiting after {limit:g}s")
        return [c.lookup_error("timeout", stuck)]


def _dedupe(results: list[CheckResult]) -> list[CheckResult]:
    """Hosts sharing a name or address yield the same check twice; keep the first."""
    seen: set[str] = set()
    out = []
    for result in results:
        if result.id not in seen:
            seen.add(result.id)
            out.append(result)
    return out


# -- the domain: SPF, DKIM, DMARC, MX, DNSSEC --------------------------------------------------------
async def _domain_checks(lookup: Lookup, expected: Expected) -> list[CheckResult]:
    domain = expected.domain
    spf_answer, dmarc_results, mx, dkim, dnssec = await asyncio.gather(
        lookup.query(domain, "TXT"),
        _dmarc_checks(lookup, expected),
        _mx_check(lookup, domain),
        _dkim_checks(lookup, expected),
        _dnssec_check(lookup, domain),
    )
    out = [c.check_spf_count(domain, spf_answer), c.check_spf_split(domain, spf_answer)]
    texts = c.spf_texts(spf_answer)
    if len(texts) == 1:
        record = c.parse_spf(texts[0])
        out.append(c.check_spf_syntax(domain, record))
        if not record.errors:
            tree, answers = await _spf_tree(lookup, domain, spf_answer)
            cost = c.spf_lookup_cost(domain, tree, answers)
            out.append(c.check_spf_lookups(domain, cost))
            out.append(c.check_spf_voids(domain, cost, _families(expected)))
            out.append(c.check_spf_all(domain, record))
            out.append(c.check_spf_breadth(domain, record))
            if expected.spf_includes:
                out.append(c.check_spf_includes(domain, record, expected.spf_includes))
    return out + dkim + dmarc_results + [mx, dnssec]


def _families(expected: Expected) -> tuple[int, ...]:
    """The address families the hosts send over (both when the expected state names no address)."""
    found = {4 for h in expected.hosts if h.ipv4 and h.sends_ipv4} | {6 for h in expected.hosts
                                                                       if h.ipv6 and h.sends_ipv6}
    return tuple(sorted(found)) or (4, 6)


async def _spf_tree(lookup: Lookup, domain: str, first: Answer) -> tuple[dict[str, Answer],
                                                                          dict[tuple[str, str], Answer]]:
    """Fetch what evaluating the record may ask: the TXT of every include:/redirect= target (breadth first,
    each once), then the names its a/mx/exists terms ask about and the addresses of those MX hosts."""
    tree: dict[str, Answer] = {domain.lower(): first}
    questions = _term_questions(domain, first)
    frontier = _spf_targets(first)
    while frontier and len(tree) < MAX_SPF_TREE:
        todo = [t for t in dict.fromkeys(frontier) if t not in tree][: MAX_SPF_TREE - len(tree)]
        answers = await asyncio.gather(*(lookup.query(t, "TXT") for t in todo))
        frontier = []
        for target, answer in zip(todo, answers, strict=True):
            tree[target] = answer
            frontier += _spf_targets(answer)
            questions += _term_questions(target, answer)
    fetched = await _ask_all(lookup, list(dict.fromkeys(questions))[:MAX_SPF_QUESTIONS])
    hosts = [(host, kind) for (_, rdtype), answer in fetched.items() if rdtype == "MX"
             for host in c.mx_hosts(answer) for kind in ("A", "AAAA")]
    fetched.update(await _ask_all(lookup, [q for q in dict.fromkeys(hosts) if q not in fetched][:MAX_SPF_QUESTIONS]))
    return tree, fetched


async def _ask_all(lookup: Lookup, questions: list[tuple[str, str]]) -> dict[tuple[str, str], Answer]:
    answers = await asyncio.gather(*(lookup.query(name, rdtype) for name, rdtype in questions))
    return dict(zip(questions, answers, strict=True))


def _term_questions(domain: str, answer: Answer) -> list[tuple[str, str]]:
    texts = c.spf_texts(answer)
    return c.spf_term_lookups(domain, c.parse_spf(texts[0])) if len(texts) == 1 else []


def _spf_targets(answer: Answer) -> list[str]:
    texts = c.spf_texts(answer)
    if len(texts) != 1:
        return []
    record = c.parse_spf(texts[0])
    targets = [t.value for t in record.mechanisms("include")]
    redirect = record.modifier("redirect")
    if redirect:
        targets.append(redirect)
    return [t.rstrip(".").lower() for t in targets if "%" not in t]


async def _tree_walk(lookup: Lookup, domain: str) -> dmarc.TreeWalk:
    """RFC 9989's walk: every _dmarc name it may need, asked at once (at most eight)."""
    names = dmarc.walk_names(domain)
    answers = await asyncio.gather(*(lookup.query(f"_dmarc.{name}", "TXT") for name in names))
    return dmarc.TreeWalk(domain, tuple(zip(names, answers, strict=True)))


async def _dmarc_checks(lookup: Lookup, expected: Expected) -> list[CheckResult]:
    """The record that applies, its tags, and whether each report address outside the organization agreed
    (that needs the report domain's own tree walk, so it is asked only for rua domains other than ours)."""
    walk = await _tree_walk(lookup, expected.domain)
    out = [dmarc.check_dmarc(expected.domain, walk, expected.production, expected.dmarc_policy)]
    tags = dmarc.check_dmarc_tags(expected.domain, walk, expected.production, expected.dmarc_testing)
    found = walk.policy
    if tags is None or found is None or not found.record.report_domains():
        return out + ([tags] if tags else [])
    destinations = []
    for report_domain in found.record.report_domains():
        external = report_domain != found.domain and not dmarc.same_organization(
            walk, await _tree_walk(lookup, report_domain))
        authorization = None
        if external:
            authorization = await lookup.query(dmarc.report_name(found.domain, report_domain), "TXT")
        destinations.append(dmarc.Destination(report_domain, external, authorization))
    return [*out, tags, dmarc.check_dmarc_rua(found.domain, destinations)]


async def _mx_check(lookup: Lookup, domain: str) -> CheckResult:
    """The MX, and only when there is none the domain's own addresses (the implicit MX)."""
    answer = await lookup.query(domain, "MX")
    if answer.failed or answer.status == "nxdomain" or not answer.empty:
        return c.check_mx(domain, answer)
    a, aaaa = await asyncio.gather(lookup.query(domain, "A"), lookup.query(domain, "AAAA"))
    return c.check_mx(domain, answer, a, aaaa)


async def _dnssec_check(lookup: Lookup, domain: str) -> CheckResult:
    """DNSKEY at the apex of the zone holding the domain (which may be a parent), DS from its parent."""
    zone, why = await lookup.zone(domain)
    if zone is None:
        return check_dnssec(domain, None, None, None, why)
    dnskey, ds = await asyncio.gather(lookup.query(zone, "DNSKEY"), lookup.parent_side(zone, "DS"))
    return check_dnssec(domain, zone, dnskey, ds)


async def _dkim_checks(lookup: Lookup, expected: Expected) -> list[CheckResult]:
    selectors: dict[str, str | None] = {}
    for host in expected.hosts:
        if host.dkim_selector and (host.dkim_selector not in selectors or host.dkim_public_key):
            selectors[host.dkim_selector] = host.dkim_public_key
    if not selectors:
        return [c.check_dkim_unknown()]
    names = [f"{selector}._domainkey.{expected.domain}" for selector in selectors]
    answers = await asyncio.gather(*(lookup.query(name, "TXT") for name in names))
    return [
        c.check_dkim(selector, expected.domain, answer, key)
        for (selector, key), answer in zip(selectors.items(), answers, strict=True)
    ]


# -- one host: addresses, reverse DNS, SPF per address, HELO SPF, blocklists ---------------------
def _addresses(host: ExpectedHost) -> list[tuple[str, bool]]:
    out = []
    if host.ipv4:
        out.append((host.ipv4, host.sends_ipv4))
    if host.ipv6:
        out.append((str(ipaddress.IPv6Address(host.ipv6)), host.sends_ipv6))
    return out


async def _host_checks(
    lookup: Lookup, expected: Expected, host: ExpectedHost, options: VerifyOptions
) -> list[CheckResult]:
    addresses = _addresses(host)
    forward = [_forward(lookup, host.fqdn, ip) for ip, _ in addresses]
    chains = [_reverse_chain(lookup, ip, host.helo_name, required) for ip, required in addresses]
    spf = [_spf_for(lookup, expected.domain, host.helo_name, ip, required) for ip, required in addresses]
    helo_spf = [_helo_spf(lookup, host)]
    lists = [_dnsbl(lookup, ip, zone) for ip, _ in addresses for zone in options.dnsbl]
    groups = await asyncio.gather(*forward, *chains, *spf, *helo_spf, *lists)
    return [check for group in groups for check in group]


async def _forward(lookup: Lookup, fqdn: str, ip: str) -> list[CheckResult]:
    answer = await lookup.query(fqdn, "AAAA" if ":" in ip else "A")
    return [c.check_address(fqdn, ip, answer)]


async def _reverse_chain(lookup: Lookup, ip: str, helo: str, required: bool) -> list[CheckResult]:
    ptr = await lookup.query(ipaddress.ip_address(ip).reverse_pointer, "PTR")
    out = [c.check_ptr(ip, ptr, helo, required)]
    names = sorted(set(ptr.values))
    if ptr.status == "ok" and len(names) == 1:
        forward = await lookup.query(names[0], "AAAA" if ":" in ip else "A")
        out.append(c.check_fcrdns(ip, names[0], forward, required))
        out.append(c.check_helo(ip, names[0], helo, required))
    return out


async def _spf_for(lookup: Lookup, domain: str, helo: str, ip: str, required: bool) -> list[CheckResult]:
    result, explanation = await spf_evaluate(lookup, ip, f"postmaster@{domain}", helo)
    return [c.check_spf_eval(ip, domain, result, explanation, required)]


async def _helo_spf(lookup: Lookup, host: ExpectedHost) -> list[CheckResult]:
    helo = host.helo_name
    answer = await lookup.query(helo, "TXT")
    sending = [ip for ip, required in _addresses(host) if required]
    if answer.failed or not c.spf_texts(answer) or not sending:
        return [c.check_spf_helo(helo, answer, None)]
    results = await asyncio.gather(*(spf_evaluate(lookup, ip, f"postmaster@{helo}", helo) for ip in sending))
    bad = [(ip, r, e) for ip, (r, e) in zip(sending, results, strict=True) if r != "pass"]
    if bad:
        ip, result, explanation = bad[0]
        return [c.check_spf_helo(helo, answer, result, f"for {ip}: {explanation}")]
    return [c.check_spf_helo(helo, answer, "pass")]


async def _dnsbl(lookup: Lookup, ip: str, zone: str) -> list[CheckResult]:
    name = c.dnsbl_name(ip, zone)
    answer = await lookup.query(name, "A")
    reason = await lookup.query(name, "TXT") if answer.status == "ok" else None
    return [c.check_dnsbl(ip, zone, answer, reason)]
