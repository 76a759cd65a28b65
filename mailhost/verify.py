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

from mailhost import checks as c
from mailhost.checks import Answer, CheckResult
from mailhost.dnsquery import Lookup, ResolverSpec, spf_evaluate, spf_routing
from mailhost.expected import Expected, ExpectedHost

RETRY_INTERVAL = 5.0
MAX_SPF_TREE = 40  # include:/redirect= targets fetched at most (a record needing more fails anyway)


class ExpectedError(ValueError):
    """The expected state could not be built from what the user gave (exit code 2)."""


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
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks]}

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
    return Report(_dedupe(flat), 1, time.monotonic() - started, lookup.queries)


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


# -- the domain: SPF, DKIM, DMARC, MX -------------------------------------------------------------
async def _domain_checks(lookup: Lookup, expected: Expected) -> list[CheckResult]:
    domain = expected.domain
    spf_answer, dmarc_answer, mx_answer, dkim = await asyncio.gather(
        lookup.query(domain, "TXT"),
        lookup.query(f"_dmarc.{domain}", "TXT"),
        lookup.query(domain, "MX"),
        _dkim_checks(lookup, expected),
    )
    out = [c.check_spf_count(domain, spf_answer), c.check_spf_split(domain, spf_answer)]
    texts = c.spf_texts(spf_answer)
    if len(texts) == 1:
        record = c.parse_spf(texts[0])
        out.append(c.check_spf_syntax(domain, record))
        if not record.errors:
            tree = await _spf_tree(lookup, domain, spf_answer)
            out.append(c.check_spf_lookups(domain, c.spf_lookup_cost(domain, tree)))
            out.append(c.check_spf_all(domain, record))
            out.append(c.check_spf_breadth(domain, record))
            if expected.spf_includes:
                out.append(c.check_spf_includes(domain, record, expected.spf_includes))
    out += dkim
    out.append(c.check_dmarc(domain, dmarc_answer, expected.production, expected.dmarc_policy))
    out.append(c.check_mx(domain, mx_answer))
    return out


async def _spf_tree(lookup: Lookup, domain: str, first: Answer) -> dict[str, Answer]:
    """Fetch the TXT records of every include:/redirect= target, breadth first, each once."""
    tree: dict[str, Answer] = {domain.lower(): first}
    frontier = _spf_targets(first)
    while frontier and len(tree) < MAX_SPF_TREE:
        todo = [t for t in dict.fromkeys(frontier) if t not in tree][: MAX_SPF_TREE - len(tree)]
        answers = await asyncio.gather(*(lookup.query(t, "TXT") for t in todo))
        frontier = []
        for target, answer in zip(todo, answers, strict=True):
            tree[target] = answer
            frontier += _spf_targets(answer)
    return tree


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


# -- where the expected state comes from -----------------------------------------------------------
def expected_from_outputs(outputs: dict[str, Any]) -> Expected:
    """From `pulumi stack output --json`: the `verification` output, a JSON string or an object."""
    if "verification" not in outputs:
        raise ExpectedError("the outputs have no 'verification' key; was the stack deployed with this program?")
    value = outputs["verification"]
    if value == "[secret]":
        raise ExpectedError("'verification' is shown as [secret]; run `pulumi stack output --json --show-secrets`")
    try:
        data = json.loads(value) if isinstance(value, str) else value
        return Expected.from_dict(data)
    except (ValueError, TypeError, KeyError) as error:
        raise ExpectedError(f"'verification' is not an expected-state object: {error}") from None


def expected_from_settings(settings: Any) -> Expected:
    """From a stack file: possible only for adopted hosts, whose addresses the file states.

    Built by mailhost.plan.expected, the same function the program exports from, so the
    flags of a stack mean the same thing here as after `pulumi up` (DKIM key unknown here).
    """
    from mailhost import plan

    unknown = [host.name for host in settings.hosts if host.existing is None]
    if unknown:
        raise ExpectedError(
            f"host(s) {', '.join(unknown)} are EC2 instances whose addresses exist only after deploy; "
            "use `pulumi stack output --json > out.json` and `mailhost verify --outputs out.json`"
        )
    return plan.expected(settings, plan.stated_addresses(settings), {})
