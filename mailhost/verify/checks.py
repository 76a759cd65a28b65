"""Verdicts on looked-up DNS data: what a strict receiver will think of this host, and the fix.

No I/O here: every function takes answers that mailhost.verify.dnsquery fetched (or a test built)
and returns a CheckResult with a stable id, so the post-deploy step, the CLI and the tests
share one judgement.  Status is pass, warn (mail still arrives, but fix it) or fail (mail
will be rejected or junked by strict receivers).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mailhost.records.dnstext import MAX_STRING
from mailhost.records.spf import LOOKUP_MECHANISMS, MAX_LOOKUPS, MIN_PREFIX

Status = Literal["pass", "warn", "fail", "info"]  # info: reported, never judged
AnswerStatus = Literal["ok", "nxdomain", "nodata", "error"]

MAX_SPF_LOOKUPS = MAX_LOOKUPS  # RFC 7208 4.6.4: more is a permerror at every receiver
MAX_SPF_VOIDS = 2  # RFC 7208 4.6.4: lookups answering NXDOMAIN or nothing; more is a permerror where enforced
TXT_STRING_MAX = MAX_STRING


@dataclass(frozen=True)
class Answer:
    """One DNS question's outcome as plain data.

    values: canonical text per record (addresses; target names lower-case without the final
    dot; MX as 'PREF NAME'; TXT as the record's strings joined).  strings: TXT only, each
    record's character-strings as published.  error: why the lookup gave no verdict.
    """

    name: str
    rdtype: str
    status: AnswerStatus
    values: tuple[str, ...] = ()
    strings: tuple[tuple[str, ...], ...] = ()
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "error"

    @property
    def empty(self) -> bool:
        return self.status in ("nxdomain", "nodata") or (self.status == "ok" and not self.values)

    def describe_empty(self) -> str:
        return "the name does not exist (NXDOMAIN)" if self.status == "nxdomain" else f"no {self.rdtype} record"


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    detail: str
    fix: str = ""
    lookup_error: bool = False  # no verdict: DNS did not answer (exit code 2, retried by --wait)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status, "detail": self.detail, "fix": self.fix}


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def lookup_error(check_id: str, answer: Answer, why: str = "") -> CheckResult:
    """The lookup itself failed (timeout, SERVFAIL, REFUSED): say so instead of guessing."""
    what = f"{answer.rdtype} {answer.name}"
    return CheckResult(
        check_id,
        "fail",
        f"could not look up {what}: {answer.error or 'no answer'}" + (f" ({why})" if why else ""),
        "check that the nameserver asked is reachable and serves this zone (--nameserver, --authoritative), "
        "then run again; --wait SECONDS retries while changes propagate",
        lookup_error=True,
    )


def _soften(status: Status, required: bool) -> Status:
    """A problem on a path Postfix does not use is a warning, not a failure."""
    return status if required or status != "fail" else "warn"


# -- forward and reverse addresses -------------------------------------------------------------
def check_address(fqdn: str, expected_ip: str, answer: Answer) -> CheckResult:
    """The host name resolves to exactly the address the host sends from (A or AAAA)."""
    kind = "aaaa" if ":" in expected_ip else "a"
    check_id = f"{kind}:{fqdn}"
    if answer.failed:
        return lookup_error(check_id, answer)
    rr = kind.upper()
    fix = f"publish {fqdn}. {rr} {expected_ip} (and remove other {rr} records of that name)"
    if answer.empty:
        return CheckResult(check_id, "fail", f"{fqdn} has {answer.describe_empty()}; expected {expected_ip}", fix)
    found = {str(ipaddress.ip_address(v)) for v in answer.values}
    want = str(ipaddress.ip_address(expected_ip))
    if want not in found:
        return CheckResult(check_id, "fail", f"{fqdn} {rr} is {', '.join(sorted(found))}, expected {want}", fix)
    if len(found) > 1:
        others = ", ".join(sorted(found - {want}))
        return CheckResult(check_id, "warn", f"{fqdn} {rr} is {want} and also {others}", fix)
    return CheckResult(check_id, "pass", f"{fqdn} {rr} {want}")


def check_ptr(ip: str, answer: Answer, helo: str, required: bool) -> CheckResult:
    """The sending address has exactly one PTR name (receivers reject mail from addresses without)."""
    check_id = f"ptr:{ip}"
    reverse = ipaddress.ip_address(ip).reverse_pointer
    family = "IPv6" if ":" in ip else "IPv4"
    if answer.failed:
        return lookup_error(check_id, answer)
    if answer.empty:
        if required:
            detail = f"{ip} has no PTR record; strict receivers (Gmail: 550-5.7.25) reject mail from it"
            fix = f"publish {reverse}. PTR {helo}. in the reverse zone (or ask the address owner to)"
        else:
            detail = f"{ip} has no PTR; fine while Postfix does not send over {family}"
            fix = f"publish {reverse}. PTR {helo}. before enabling {family} sending in Postfix (inet_protocols)"
        return CheckResult(check_id, "fail" if required else "warn", detail, fix)
    names = sorted({_norm(v) for v in answer.values})
    if len(names) > 1:
        return CheckResult(
            check_id,
            _soften("fail", required),
            f"{ip} has {len(names)} PTR names ({', '.join(names)}); receivers pick one at random",
            f"keep only {reverse}. PTR {helo}.",
        )
    return CheckResult(check_id, "pass", f"{ip} PTR {names[0]}")


def check_fcrdns(ip: str, ptr_name: str, forward: Answer, required: bool) -> CheckResult:
    """The PTR name resolves back to the address (forward-confirmed reverse DNS)."""
    check_id = f"fcrdns:{ip}"
    rr = "AAAA" if ":" in ip else "A"
    if forward.failed:
        return lookup_error(check_id, forward)
    fix = f"publish {ptr_name}. {rr} {ip}, or point the PTR of {ip} at a name that resolves to it"
    if forward.empty:
        detail = f"PTR name {ptr_name} has {forward.describe_empty()}, so {ip} is not forward-confirmed"
        return CheckResult(check_id, _soften("fail", required), detail, fix)
    found = {str(ipaddress.ip_address(v)) for v in forward.values}
    if str(ipaddress.ip_address(ip)) not in found:
        detail = f"PTR name {ptr_name} resolves to {', '.join(sorted(found))}, not {ip}: not forward-confirmed"
        return CheckResult(check_id, _soften("fail", required), detail, fix)
    return CheckResult(check_id, "pass", f"{ip} → {ptr_name} → {ip}")


def check_helo(ip: str, ptr_name: str, helo: str, required: bool) -> CheckResult:
    """The PTR name is the name Postfix greets with (myhostname), as receivers compare them."""
    check_id = f"helo:{ip}"
    if _norm(ptr_name) == _norm(helo):
        return CheckResult(check_id, "pass", f"PTR of {ip} is the HELO name {helo}")
    return CheckResult(
        check_id,
        _soften("fail", required),
        f"PTR of {ip} is {ptr_name} but Postfix says HELO {helo}; receivers treat the mismatch as spam-like",
        f"set the PTR of {ip} to {helo}. (or set Postfix myhostname to {ptr_name} and redeploy)",
    )


# -- SPF ----------------------------------------------------------------------------------------
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_MECHANISMS = LOOKUP_MECHANISMS
_DOMAIN_SPEC = re.compile(r"^[A-Za-z0-9_.%{}+\-=,/|]+$")


@dataclass(frozen=True)
class SpfTerm:
    qualifier: str  # '+', '-', '~', '?' for mechanisms; '' for modifiers
    name: str  # mechanism or modifier name, lower-case
    value: str  # after ':' or '=' (may be empty)


@dataclass(frozen=True)
class SpfRecord:
    text: str
    terms: tuple[SpfTerm, ...] = ()
    errors: tuple[str, ...] = ()

    def mechanisms(self, *names: str) -> list[SpfTerm]:
        return [t for t in self.terms if t.qualifier and (not names or t.name in names)]

    def modifier(self, name: str) -> str | None:
        return next((t.value for t in self.terms if not t.qualifier and t.name == name), None)


def is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def parse_spf(text: str) -> SpfRecord:
    """Split an SPF record into terms, collecting every syntax error (RFC 7208 section 12)."""
    parts = text.split(" ")
    errors: list[str] = []
    terms: list[SpfTerm] = []
    if not parts or parts[0].lower() != "v=spf1":
        return SpfRecord(text, (), ("does not start with 'v=spf1 '",))
    for raw in parts[1:]:
        if not raw:
            continue
        modifier = re.match(r"^([A-Za-z][A-Za-z0-9_.\-]*)=(.*)$", raw)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp") and not _DOMAIN_SPEC.match(value or "!"):
                errors.append(f"'{raw}': {name}= needs a domain")
            if name in ("redirect", "exp") and any(t.name == name and not t.qualifier for t in terms):
                errors.append(f"'{raw}': {name}= given twice")
            terms.append(SpfTerm("", name, value))
            continue
        qualifier = raw[0] if raw[0] in "+-~?" else "+"
        body = raw[1:] if raw[0] in "+-~?" else raw
        match = re.match(r"^([A-Za-z0-9]+)(?:([:/])(.*))?$", body)
        name = match.group(1).lower() if match else ""
        if not match or name not in _MECHANISMS:
            errors.append(f"'{raw}' is not an SPF mechanism")
            continue
        sep, value = match.group(2) or "", match.group(3) or ""
        value = (sep + value) if sep == "/" else value
        error = _mechanism_error(name, sep, value)
        if error:
            errors.append(f"'{raw}': {error}")
        terms.append(SpfTerm(qualifier, name, value))
    return SpfRecord(text, tuple(terms), tuple(errors))


def _mechanism_error(name: str, sep: str, value: str) -> str:
    if name == "all":
        return "'all' takes no value" if sep else ""
    if name in ("ip4", "ip6"):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an {name} network"
        return "" if net.version == int(name[-1]) else f"{value!r} is not an {name} address"
    if name in ("include", "exists"):
        return "" if sep == ":" and _DOMAIN_SPEC.match(value or "!") else f"{name} needs ':domain'"
    domain, _, cidr = value.partition("/") if sep == ":" else ("", "", value.lstrip("/"))
    if sep == ":" and not _DOMAIN_SPEC.match(domain or "!"):
        return f"{domain!r} is not a domain"
    if cidr and not all(p.isdigit() for p in cidr.replace("//", "/").split("/") if p):
        return f"'/{cidr}' is not a prefix length"
    return ""


def spf_texts(answer: Answer) -> list[str]:
    return [v for v in answer.values if is_spf(v)]


def check_spf_count(domain: str, answer: Answer) -> CheckResult:
    """Exactly one v=spf1 TXT record: none means 'no policy', two is a permerror everywhere."""
    if answer.failed:
        return lookup_error("spf:count", answer)
    records = spf_texts(answer)
    if not records:
        return CheckResult(
            "spf:count",
            "fail",
            f"{domain} has no SPF record (TXT starting 'v=spf1'); receivers cannot tell your mail from forgeries",
            f"publish one TXT record at {domain}: v=spf1 ip4:YOUR-IP ~all (the program's SPF output)",
        )
    if len(records) > 1:
        return CheckResult(
            "spf:count",
            "fail",
            f"{domain} has {len(records)} SPF records; receivers answer permerror for all mail: "
            + " | ".join(records),
            "merge them into one v=spf1 record and delete the others",
        )
    return CheckResult("spf:count", "pass", f"one SPF record at {domain}")


def check_spf_syntax(domain: str, record: SpfRecord) -> CheckResult:
    if record.errors:
        return CheckResult(
            "spf:syntax",
            "fail",
            f"SPF record of {domain} does not parse: {'; '.join(record.errors)}",
            "correct the listed terms (RFC 7208 section 5); receivers answer permerror for the whole record",
        )
    return CheckResult("spf:syntax", "pass", f"SPF parses: {record.text}")


def check_spf_includes(domain: str, record: SpfRecord, wanted: Sequence[str]) -> CheckResult:
    """The user's own mechanisms (spfExtra) survived into the published record."""
    present = {f"{t.name}:{t.value}".lower() for t in record.mechanisms()} | {t.lower() for t in record.text.split()}
    missing = [w for w in wanted if w.lower().lstrip("+") not in present and w.lower() not in present]
    if missing:
        return CheckResult(
            "spf:includes",
            "warn",
            f"SPF of {domain} lacks {', '.join(missing)} from the stack's spfExtra",
            "run `pulumi up` again so the published SPF record includes them",
        )
    return CheckResult("spf:includes", "pass", f"SPF of {domain} has {', '.join(wanted)}")


def check_spf_split(domain: str, answer: Answer) -> CheckResult:
    """A record over 255 characters must be one TXT record of several strings, joined without spaces."""
    if answer.failed:
        return lookup_error("spf:split", answer)
    spf = [i for i, v in enumerate(answer.values) if is_spf(v)]
    fragments = [v for v in answer.values if not is_spf(v) and _looks_like_spf_fragment(v)]
    if spf and fragments:
        return CheckResult(
            "spf:split",
            "fail",
            f"SPF of {domain} is cut into separate TXT records ({len(fragments)} fragment(s) without 'v=spf1', "
            f"e.g. {fragments[0][:40]!r}); receivers read only the first part",
            "publish ONE TXT record made of several quoted strings of at most 255 characters "
            '(Route53: one value "part1" "part2", not a list of values)',
        )
    for i in spf:
        strings = answer.strings[i] if i < len(answer.strings) else (answer.values[i],)
        if len(strings) < 2:
            continue
        joined = "".join(strings)
        if parse_spf(joined).errors and not parse_spf(" ".join(strings)).errors:
            return CheckResult(
                "spf:split",
                "fail",
                f"SPF of {domain} is split at spaces that were dropped: receivers join the {len(strings)} strings "
                f"without spaces, giving {joined[:80]!r}…",
                "keep the space at the end of a string (or split inside a term): strings are concatenated as is",
            )
        detail = f"SPF of {domain} is {len(joined)} characters in {len(strings)} strings"
        return CheckResult("spf:split", "pass", detail)
    return CheckResult("spf:split", "pass", f"SPF of {domain} fits in one string")


def _looks_like_spf_fragment(text: str) -> bool:
    return bool(re.search(r"(^|\s)[+\-~?]?(ip4:|ip6:|include:|all$|mx\b|a\b|exists:|redirect=)", text))


def check_spf_eval(
    ip: str, domain: str, result: str, explanation: str, required: bool, identity: str = "MAIL FROM"
) -> CheckResult:
    """The real SPF evaluation (pyspf) of this sending address must say pass."""
    check_id = f"spf:eval:{ip}"
    if result == "pass":
        return CheckResult(check_id, "pass", f"SPF of {domain} for {ip}: pass")
    if result == "temperror":
        return CheckResult(
            check_id,
            "fail",
            f"SPF of {domain} for {ip}: temperror ({explanation})",
            "a DNS lookup during SPF evaluation failed; check the nameserver and run again",
            lookup_error=True,
        )
    fixes = {
        "fail": f"add ip{4 if '.' in ip else 6}:{ip} to the SPF record of {domain} (it currently rejects this host)",
        "softfail": f"add ip{4 if '.' in ip else 6}:{ip} to the SPF record of {domain} (~all marks its mail suspect)",
        "neutral": f"add ip{4 if '.' in ip else 6}:{ip} to the SPF record of {domain}",
        "none": f"publish an SPF record at {domain} that lists {ip}",
        "permerror": f"repair the SPF record of {domain}: {explanation}; receivers treat it as broken",
    }
    detail = f"SPF of {domain} for {ip} ({identity}): {result}" + (f" — {explanation}" if explanation else "")
    return CheckResult(check_id, _soften("fail", required), detail, fixes.get(result, "fix the SPF record"))


@dataclass(frozen=True)
class SpfCost:
    """DNS-lookup terms of an SPF record and everything it includes, and the lookups that come back empty
    (RFC 7208 4.6.4)."""

    total: int
    own: int
    includes: tuple[tuple[str, int], ...] = ()  # ('include:x' or 'redirect=x', its cost incl. own term)
    problems: tuple[str, ...] = field(default_factory=tuple)
    voids: tuple[tuple[str, int], ...] = ()  # (what came back empty, the family it costs: 4, 6, or 0 for both)

    def void_lookups(self, family: int) -> list[str]:
        """The void lookups a receiver evaluating a connection over IPv`family` may make (A for 4, AAAA for 6)."""
        return [what for what, hits in self.voids if hits in (0, family)]


# What each a/mx/exists term asks, and for which senders a void answer counts: 4 or 6 (A for IPv4
# connections, AAAA for IPv6), 0 for both.  An mx term then also asks its hosts' A/AAAA.
_TERM_QUESTIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "a": (("A", 4), ("AAAA", 6)), "mx": (("MX", 0),), "exists": (("A", 0),)}


def _term_names(domain: str, record: SpfRecord) -> list[tuple[SpfTerm, str]]:
    """Each a/mx/exists term with the name it asks about (its domain-spec, or the record's own domain);
    terms with macros are left out (their names exist only during an evaluation)."""
    named = [(term, _norm(term.value.split("/")[0] or domain)) for term in record.mechanisms(*_TERM_QUESTIONS)]
    return [(term, name) for term, name in named if "%" not in name]


def spf_term_lookups(domain: str, record: SpfRecord) -> list[tuple[str, str]]:
    """The (name, type) questions the a, mx and exists terms of a record ask (macros left out)."""
    asked: list[tuple[str, str]] = []
    for term, name in _term_names(domain, record):
        asked += [(name, kind) for kind, _ in _TERM_QUESTIONS[term.name] if (name, kind) not in asked]
    return asked


def mx_hosts(answer: Answer, limit: int = 10) -> list[str]:
    """The exchanges an SPF mx term looks up (RFC 7208 4.6.4: at most 10), lowest preference first."""
    ranked = sorted((int(v.split()[0]), v.split()[-1]) for v in answer.values if len(v.split()) == 2)
    return [host for _, host in ranked if host not in ("", ".")][:limit]


def _term_voids(domain: str, record: SpfRecord, answers: Mapping[tuple[str, str], Answer]) -> tuple[
        list[tuple[str, int]], list[str]]:
    """Void lookups of the record's own a/mx/exists terms, from the answers the walk fetched."""
    voids: list[tuple[str, int]] = []
    problems: list[str] = []

    def empty(name: str, kind: str, label: str) -> bool | None:
        answer = answers.get((name, kind))
        if answer is None:
            return None
        if answer.failed:
            problems.append(f"{label}: could not look up {kind} {name}")
            return None
        return answer.empty

    for term, name in _term_names(domain, record):
        label = f"{term.name}:{name}"
        found = [(f"{label} (no {kind})", family) for kind, family in _TERM_QUESTIONS[term.name]
                 if empty(name, kind, label)]
        voids += found
        if term.name == "mx" and not found:  # an MX answer: its hosts' addresses are asked as an a term's
            for host in mx_hosts(answers.get((name, "MX")) or Answer(name, "MX", "nodata")):
                voids += [(f"{label} → {host} (no {kind})", family) for kind, family in _TERM_QUESTIONS["a"]
                          if empty(host, kind, label)]
    return voids, problems


def spf_lookup_cost(domain: str, records: Mapping[str, Answer],
                    answers: Mapping[tuple[str, str], Answer] | None = None,
                    _seen: frozenset[str] = frozenset()) -> SpfCost:
    """Count lookup terms recursively through include: and redirect= using fetched TXT answers, and the
    void lookups on the way: include/redirect targets without TXT, and (from `answers`, keyed by name and
    type) a/mx/exists names without the records they ask for."""
    answer = records.get(_norm(domain))
    if answer is None:
        return SpfCost(0, 0, (), (f"{domain}: not fetched",))
    texts = spf_texts(answer)
    if len(texts) != 1:
        why = "no SPF record" if not texts else f"{len(texts)} SPF records"
        void = ((f"{_norm(domain)} (no TXT)", 0),) if _seen and answer.empty else ()
        return SpfCost(0, 0, (), (f"{domain}: {why} (permerror where included)",), void)
    record = parse_spf(texts[0])
    own = len(record.mechanisms(*_LOOKUP_MECHANISMS))
    includes: list[tuple[str, int]] = []
    voids, problems = _term_voids(domain, record, answers) if answers is not None else ([], [])
    targets = [(f"include:{t.value}", t.value) for t in record.mechanisms("include")]
    redirect = record.modifier("redirect")
    if redirect and not record.mechanisms("all"):
        own += 1
        targets.append((f"redirect={redirect}", redirect))
    total = own
    for label, target in targets:
        if "%" in target:
            problems.append(f"{label}: macro, cost not counted")
            continue
        if _norm(target) in _seen | {_norm(domain)}:
            problems.append(f"{label}: loop")
            continue
        sub = spf_lookup_cost(target, records, answers, _seen | {_norm(domain)})
        includes.append((label, sub.total + 1))
        total += sub.total
        problems.extend(sub.problems)
        voids.extend(sub.voids)
    return SpfCost(total, own, tuple(includes), tuple(problems), tuple(voids))


def check_spf_lookups(domain: str, cost: SpfCost) -> CheckResult:
    breakdown = ", ".join(f"{label} costs {n}" for label, n in cost.includes)
    detail = f"{cost.total} DNS lookups (limit {MAX_SPF_LOOKUPS})" + (f": {breakdown}" if breakdown else "")
    if cost.problems:
        detail += f"; {'; '.join(cost.problems)}"
    if cost.total > MAX_SPF_LOOKUPS:
        return CheckResult(
            "spf:lookups",
            "fail",
            f"SPF of {domain} needs {detail}; receivers answer permerror",
            "replace costly include:/a/mx terms by ip4:/ip6: ranges, or drop includes you no longer send through",
        )
    return CheckResult("spf:lookups", "pass", f"SPF of {domain} needs {detail}")


def check_spf_voids(domain: str, cost: SpfCost, families: Sequence[int] = (4, 6)) -> CheckResult:
    """At most 2 lookups of an evaluation may find nothing (NXDOMAIN or no answer): a third is a permerror
    at receivers that enforce RFC 7208 4.6.4.  Counted for each address family the hosts send over."""
    worst = max(families or (4,), key=lambda family: len(cost.void_lookups(family)))
    found = cost.void_lookups(worst)
    shown = f": {', '.join(found)}" if found else ""
    detail = f"{len(found)} void DNS lookups for IPv{worst} senders (limit {MAX_SPF_VOIDS}){shown}"
    if len(found) > MAX_SPF_VOIDS:
        return CheckResult(
            "spf:voids", "fail", f"SPF of {domain} makes {detail}; receivers that enforce the limit answer permerror",
            "remove the include:/a/mx/exists terms that name domains without those records (or publish the records)")
    return CheckResult("spf:voids", "pass", f"SPF of {domain} makes {detail}")


def check_spf_all(domain: str, record: SpfRecord) -> CheckResult:
    """How the record ends decides what forgeries get: +all and ?all protect nothing."""
    alls = record.mechanisms("all")
    if not alls:
        if record.modifier("redirect"):
            return CheckResult("spf:all", "pass", f"SPF of {domain} ends in redirect={record.modifier('redirect')}")
        return CheckResult(
            "spf:all",
            "warn",
            f"SPF of {domain} has no 'all' term, so other senders get neutral",
            "end the record with ~all (or -all once all senders are listed)",
        )
    qualifier = alls[-1].qualifier
    if qualifier == "+":
        return CheckResult(
            "spf:all",
            "fail",
            f"SPF of {domain} ends in +all: every host on the Internet may send as {domain}",
            "replace +all by ~all (or -all)",
        )
    if qualifier == "?":
        return CheckResult(
            "spf:all",
            "warn",
            f"SPF of {domain} ends in ?all: forgeries get neutral, the record protects nothing",
            "replace ?all by ~all (or -all)",
        )
    return CheckResult("spf:all", "pass", f"SPF of {domain} ends in {qualifier}all")


def _breadth(term: SpfTerm) -> int | None:
    """The shortest prefix a mechanism authorises (0 for all), or None when it names hosts, not ranges."""
    if term.name == "all":
        return 0
    lengths = [int(n) for n in re.findall(r"/([0-9]{1,3})", term.value)]
    if term.name in ("ip4", "ip6") and not lengths:
        return None
    return min(lengths) if lengths else None


def check_spf_breadth(domain: str, record: SpfRecord) -> CheckResult:
    """A passing term wider than a /8 (or a passing all anywhere) lets most of the Internet send as the domain."""
    terms = record.mechanisms()
    if terms and terms[-1].name == "all":
        terms = terms[:-1]  # the closing all is spf:all's to judge
    wide = [t for t in terms if t.qualifier in "+?" and (b := _breadth(t)) is not None and b < MIN_PREFIX]
    if wide:
        shown = ", ".join(f"{t.qualifier}{t.name}{':' if t.value and not t.value.startswith('/') else ''}{t.value}"
                          for t in wide)
        return CheckResult("spf:breadth", "fail", f"SPF of {domain} authorises more than a /{MIN_PREFIX}: {shown}",
                           "list only your senders' own networks (spfExtra) and end with ~all or -all")
    return CheckResult("spf:breadth", "pass", f"SPF of {domain} authorises no range wider than a /{MIN_PREFIX}")


def check_spf_helo(helo: str, answer: Answer, result: str | None, explanation: str = "") -> CheckResult:
    """Receivers also check SPF for the HELO name (RFC 7208 2.3); without it bounces are unprotected."""
    check_id = f"spf:helo:{helo}"
    if answer.failed:
        return lookup_error(check_id, answer)
    texts = spf_texts(answer)
    if not texts:
        return CheckResult(
            check_id,
            "warn",
            f"HELO name {helo} has no SPF record; receivers check it for bounces (empty MAIL FROM)",
            f'publish TXT at {helo}: "v=spf1 a -all"',
        )
    if result is None or result == "pass":
        return CheckResult(check_id, "pass", f"SPF of HELO name {helo}: {result or 'present'}")
    return CheckResult(
        check_id,
        "fail",
        f"SPF of HELO name {helo} gives {result} for the host's address" + (f" — {explanation}" if explanation else ""),
        f'publish TXT at {helo}: "v=spf1 a -all" (the name\'s own addresses)',
    )


# -- DKIM ---------------------------------------------------------------------------------------
def parse_tags(text: str) -> tuple[dict[str, str], list[str]]:
    """A DKIM tag=value list; returns tags (first wins) and syntax errors (DMARC has its own: mailhost.verify.dmarc)."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
            errors.append(f"'{part[:30]}' is not tag=value")
            continue
        if name in tags:
            errors.append(f"tag {name} given twice")
            continue
        tags[name] = re.sub(r"\s+", "", value) if name == "p" else value.strip()
    return tags, errors


def key_der(value: str) -> bytes | None:
    """Base64 (or PEM) public key → DER bytes; None when it does not decode."""
    body = re.sub(r"-----[A-Z ]+-----", "", value)
    body = re.sub(r"\s+", "", body)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _rsa_bits(der: bytes) -> int | None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(der)
    except ValueError:
        try:  # bare PKCS#1 RSAPublicKey, which some generators publish
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
            key = load_pem_public_key(pem)
        except ValueError:
            return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def check_dkim(selector: str, domain: str, answer: Answer, expected_key: str | None) -> CheckResult:
    """The selector's key record exists once, parses, is strong enough, and is the key Postfix signs with."""
    check_id = f"dkim:{selector}"
    name = f"{selector}._domainkey.{domain}"
    if answer.failed:
        return lookup_error(check_id, answer)
    publish = "publish the DKIM TXT record from the program's output (one record, several strings of ≤255 characters)"
    if answer.empty:
        return CheckResult(
            check_id,
            "fail",
            f"{name} has {answer.describe_empty()}: receivers cannot verify signatures (DKIM=fail/permerror)",
            publish,
        )
    texts = list(answer.values)
    dkim = [t for t in texts if t.lstrip().startswith("v=DKIM1") or "p=" in t]
    if len(texts) > 1:
        fragment = len(dkim) < len(texts) or any("v=DKIM1" not in t for t in texts)
        detail = f"{name} has {len(texts)} TXT records"
        if fragment:
            detail += " — the key is cut into separate records, receivers see a truncated key"
            fix = (
                "publish ONE TXT record whose value is several quoted strings of at most 255 characters "
                '(Route53: one value "v=DKIM1; k=rsa; p=MIIB…" "…rest", not a list)'
            )
        else:
            fix = f"delete all but the current key at {name}"
        return CheckResult(check_id, "fail", detail, fix)
    tags, errors = parse_tags(texts[0])
    if "v" in tags and (tags["v"] != "DKIM1" or not texts[0].lstrip().startswith("v=")):
        errors.append("v= must be 'DKIM1' and come first")
    if tags.get("k", "rsa") not in ("rsa", "ed25519"):
        errors.append(f"k={tags['k']} is not rsa or ed25519")
    if "p" not in tags:
        errors.append("no p= (public key) tag")
    if errors:
        return CheckResult(check_id, "fail", f"{name} does not parse: {'; '.join(errors)}", publish)
    if not tags["p"]:
        return CheckResult(check_id, "fail", f"{name} has an empty p=: the key is revoked", publish)
    der = key_der(tags["p"])
    if der is None:
        return CheckResult(check_id, "fail", f"{name}: p= is not valid base64", publish)
    size_note = ""
    status: Status = "pass"
    fix = ""
    if tags.get("k", "rsa") == "rsa":
        bits = _rsa_bits(der)
        if bits is None:
            return CheckResult(check_id, "fail", f"{name}: p= is not an RSA public key", publish)
        size_note = f", RSA {bits} bits"
        if bits < 1024:
            return CheckResult(
                check_id, "fail", f"{name}: RSA key of {bits} bits; receivers ignore keys under 1024", publish
            )
        if bits < 2048:
            status, fix = "warn", "rotate to a 2048-bit key (change dkimSelector and run `pulumi up`)"
    if expected_key:
        want = key_der(expected_key)
        if want != der:
            return CheckResult(
                check_id,
                "fail",
                f"{name} publishes a different key than the one Postfix signs with (stale or foreign record)",
                f"replace the TXT record at {name} with the program's DKIM record, then wait for the TTL",
            )
        size_note += ", matches the signing key"
    strings = len(answer.strings[0]) if answer.strings else 1
    return CheckResult(check_id, status, f"{name}: k={tags.get('k', 'rsa')}{size_note}, {strings} string(s)", fix)


def check_dkim_unknown() -> CheckResult:
    return CheckResult(
        "dkim",
        "warn",
        "no DKIM selector known, so DKIM was not checked",
        "pass --selector (and --dkim-public-key), or use --outputs with the stack's verification output",
    )


# -- MX, DNSBL (DMARC: mailhost.verify.dmarc) ---------------------------------------------------------
def check_mx(domain: str, answer: Answer, a: Answer | None = None, aaaa: Answer | None = None) -> CheckResult:
    """Bounces and replies to the sender domain need a mail server: its MX, or else its own A/AAAA (the
    implicit MX of RFC 5321 5.1).  A null MX (RFC 7505) says the domain takes no mail; receivers that check
    the sender domain reject its mail, as they reject a domain that resolves to nothing."""
    if answer.failed:
        return lookup_error("mx", answer)
    fix = f"publish an MX record for {domain} pointing at the mailbox provider, or use a From domain that has one"
    if answer.status == "nxdomain":
        return CheckResult("mx", "fail", f"{domain} does not exist (NXDOMAIN): receivers reject mail from it", fix)
    if not answer.empty:
        hosts = [v.split()[-1] for v in answer.values]
        if all(host in ("", ".") for host in hosts):
            return CheckResult(
                "mx", "fail",
                f"{domain} has a null MX (RFC 7505: it takes no mail): bounces to it are impossible and receivers "
                "reject mail from it (550 5.7.27)",
                f"remove the null MX ('0 .') and point an MX of {domain} at the mailbox that takes its bounces, "
                "or use a From domain that receives mail")
        return CheckResult("mx", "pass", f"{domain} MX {', '.join(sorted(answer.values))}")
    fallback = [x for x in (a, aaaa) if x is not None]
    failed = next((x for x in fallback if x.failed), None)
    if failed is not None:
        return lookup_error("mx", failed, "the implicit MX: the domain's own address")
    addresses = sorted(v for x in fallback for v in x.values)
    if addresses:
        return CheckResult("mx", "pass", f"{domain} has no MX; mail to it goes to its own address "
                           f"{', '.join(addresses)} (implicit MX, RFC 5321 5.1)")
    return CheckResult("mx", "fail", f"{domain} has no MX and no A/AAAA: bounces and replies cannot be delivered, "
                       "and receivers that check the sender domain reject its mail", fix)


def dnsbl_name(ip: str, zone: str) -> str:
    """The name to ask a DNS blocklist about an address (reversed nibbles/octets under the list)."""
    reverse = ipaddress.ip_address(ip).reverse_pointer
    return reverse.rsplit(".", 2)[0] + "." + _norm(zone)


def check_dnsbl(ip: str, zone: str, answer: Answer, reason: Answer | None) -> CheckResult:
    check_id = f"dnsbl:{_norm(zone)}:{ip}"
    if answer.failed:
        return lookup_error(check_id, answer)
    if answer.empty:
        return CheckResult(check_id, "pass", f"{ip} is not listed on {zone}")
    codes = ", ".join(sorted(answer.values))
    if not all(v.startswith("127.") for v in answer.values) or any(v.startswith("127.255.255.") for v in answer.values):
        # 127.255.255.x is how large lists (Spamhaus) say "query refused", e.g. via a public resolver
        return CheckResult(
            check_id,
            "warn",
            f"{zone} answered {codes} for {ip}, which is not a listing code (the list may refuse your resolver)",
            "query the list through a resolver it accepts, or drop it from --dnsbl",
        )
    why = " ".join(reason.values) if reason and not reason.empty and not reason.failed else ""
    return CheckResult(
        check_id,
        "fail",
        f"{ip} is listed on {zone} ({codes})" + (f": {why}" if why else ""),
        f"follow the delisting procedure of {zone} after fixing the cause (open relay, compromised account)",
    )
