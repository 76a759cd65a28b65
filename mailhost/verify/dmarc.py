"""DMARC by RFC 9989 (DMARCbis): the record's grammar, the DNS Tree Walk, and what receivers make of them.

RFC 9989 replaces RFC 7489.  What changed for a sender: the organizational domain is found by
walking up the DNS (at most eight `_dmarc` queries, psd= marks where an organization ends)
instead of from a public-suffix list; pct, rf and ri are gone (t=y replaces pct for a test
phase); np= sets the policy of non-existent subdomains; reports are RFC 9990 (aggregate) and
RFC 9991 (failure).  Pure: the walk and the checks take answers mailhost.verify.run fetched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailhost.verify.checks import Answer, CheckResult, Status, lookup_error

POLICIES = ("none", "quarantine", "reject")
KNOWN_TAGS = ("v", "p", "sp", "np", "psd", "t", "adkim", "aspf", "fo", "rua", "ruf")
REMOVED_TAGS = ("pct", "rf", "ri")  # RFC 7489 tags RFC 9989 dropped
MAX_WALK = 8  # _dmarc queries of one tree walk (RFC 9989 4.10)
_SHORTCUT_LABELS = 7  # a name of 8 or more labels jumps straight to its last 7
_VERSION = re.compile(r"^[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")  # DMARC1 is case-sensitive, the tag name is not
_CASELESS = ("p", "sp", "np", "psd", "t", "adkim", "aspf", "fo")  # values that are ABNF literals
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}  # what t=y asks receivers to apply


def is_dmarc(text: str) -> bool:
    """A TXT value is a DMARC record only when it starts with v=DMARC1; others at _dmarc are ignored."""
    return bool(_VERSION.match(text))


@dataclass(frozen=True)
class DmarcRecord:
    """One record's tags (names lower-case, first one wins) and what is wrong with them."""

    text: str
    tags: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        return next((value for tag, value in self.tags if tag == name), default)

    @property
    def policy(self) -> str | None:
        """p= when it is a policy receivers apply; None when missing or invalid."""
        value = self.get("p")
        return value if value in POLICIES else None

    @property
    def testing(self) -> bool:
        return self.get("t") == "y"

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(f"{tag}={value}" for tag, value in self.tags if tag in REMOVED_TAGS)

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(tag for tag, _ in self.tags if tag not in KNOWN_TAGS and tag not in REMOVED_TAGS)

    def uris(self, tag: str) -> tuple[str, ...]:
        return tuple(u.strip() for u in (self.get(tag) or "").split(",") if u.strip())

    def report_domains(self) -> tuple[str, ...]:
        """The domains of the rua= mailto: addresses, each once, in order."""
        found: list[str] = []
        for uri in self.uris("rua"):
            address = uri.removeprefix("mailto:").split("!")[0]
            domain = address.rpartition("@")[2].rstrip(".").lower()
            if uri.startswith("mailto:") and "@" in address and domain and domain not in found:
                found.append(domain)
        return tuple(found)


def parse(text: str) -> DmarcRecord:
    """tag=value pairs of an RFC 9989 record, with every syntax error in words."""
    tags: list[tuple[str, str]] = []
    errors: list[str] = []
    if not is_dmarc(text):
        return DmarcRecord(text, (), ("does not start with v=DMARC1",))
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            errors.append(f"'{part[:30]}' is not tag=value")
            continue
        if any(tag == name for tag, _ in tags):
            errors.append(f"tag {name} given twice")
            continue
        tags.append((name, value.lower() if name in _CASELESS else value))
    record = DmarcRecord(text, tuple(tags))
    return DmarcRecord(text, record.tags, tuple(errors) + _value_errors(record))


def _value_errors(record: DmarcRecord) -> tuple[str, ...]:
    errors = []
    if record.get("p") is None:
        errors.append("no p= policy")
    for tag in ("p", "sp", "np"):
        value = record.get(tag)
        if value is not None and value not in POLICIES:
            errors.append(f"{tag}={value} is not none, quarantine or reject")
    for tag, allowed in (("adkim", ("r", "s")), ("aspf", ("r", "s")), ("t", ("y", "n")), ("psd", ("y", "n", "u"))):
        value = record.get(tag)
        if value is not None and value not in allowed:
            errors.append(f"{tag}={value} is not {' or '.join(allowed)}")
    fo = record.get("fo")
    if fo is not None and not re.fullmatch(r"[01ds](:[01ds])*", fo):
        errors.append(f"fo={fo} is not a list of 0, 1, d, s")
    for tag in ("rua", "ruf"):
        for uri in record.uris(tag):
            if not uri.startswith("mailto:") or "@" not in uri:
                errors.append(f"{tag}: {uri!r} is not a mailto: address")
    return tuple(errors)


# -- the DNS Tree Walk (RFC 9989 4.10) ------------------------------------------------------------
def walk_names(domain: str) -> list[str]:
    """The domains whose _dmarc records a walk from `domain` asks, in order: itself, then its parents
    up to the top-level label; a name of 8 or more labels jumps straight to its last 7 (≤ 8 in all)."""
    labels = domain.strip().rstrip(".").lower().split(".")
    names: list[str] = []
    while labels and len(names) < MAX_WALK:
        names.append(".".join(labels))
        labels = labels[-_SHORTCUT_LABELS:] if len(labels) > _SHORTCUT_LABELS else labels[1:]
    return names


@dataclass(frozen=True)
class Found:
    domain: str
    record: DmarcRecord


@dataclass(frozen=True)
class TreeWalk:
    """The answers for _dmarc.<name> of every name of walk_names(start), in walk order."""

    start: str
    levels: tuple[tuple[str, Answer], ...]

    def _records(self) -> tuple[list[Found], Answer | None]:
        """The records walking up (one valid-version record per name, a set of several counts as none),
        stopping after the first with psd=y or psd=n; and the answer that cut the walk short, if any."""
        found: list[Found] = []
        for domain, answer in self.levels:
            if answer.failed:
                return found, answer
            texts = [v for v in answer.values if is_dmarc(v)]
            if len(texts) == 1:
                found.append(Found(domain, parse(texts[0])))
                if found[-1].record.get("psd") in ("y", "n"):
                    break
        return found, None

    @property
    def error(self) -> Answer | None:
        """A lookup that failed before the walk could end (its records above it are unknown)."""
        return self._records()[1]

    @property
    def org_domain(self) -> str | None:
        """RFC 9989 4.10.2: psd=n marks it, psd=y marks the name one label below, else the record
        with the fewest labels, else the start itself; None when a failed lookup leaves it open."""
        found, error = self._records()
        if error is not None:
            return None
        for item in found:
            if item.record.get("psd") == "n":
                return item.domain
            if item.record.get("psd") == "y":  # at the start itself this is the start: nothing is below it
                keep = len(item.domain.split(".")) + 1
                return ".".join(self.start.split(".")[-keep:])
        return found[-1].domain if found else self.start

    @property
    def policy(self) -> Found | None:
        """RFC 9989 4.10.1: the start's own record; else the organizational domain's; else a PSD's (psd=y)."""
        found, _ = self._records()
        if found and found[0].domain == self.start:
            return found[0]
        org = self.org_domain
        for item in found:
            if item.domain == org:
                return item
        return found[-1] if found and found[-1].record.get("psd") == "y" else None

    @property
    def asked(self) -> str:
        return ", ".join(f"_dmarc.{domain}" for domain, _ in self.levels)


def same_organization(policy_walk: TreeWalk, other_walk: TreeWalk) -> bool:
    """Whether two domains share an organizational domain; when a walk could not finish, only a name
    at or below the other counts as the same (a report address there never needs authorization)."""
    ours, theirs = policy_walk.org_domain, other_walk.org_domain
    if ours is not None and theirs is not None:
        return ours == theirs
    a, b = policy_walk.start, other_walk.start
    return a == b or b.endswith("." + a) or a.endswith("." + b)


def report_name(policy_domain: str, report_domain: str) -> str:
    """Where a report destination outside the organization says yes (RFC 9990: external destinations)."""
    return f"{policy_domain}._report._dmarc.{report_domain}"


# -- verdicts -------------------------------------------------------------------------------------
def _publish(domain: str) -> str:
    return f'publish one TXT record at _dmarc.{domain}: "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}"'


def _org_note(walk: TreeWalk) -> str:
    org, error = walk.org_domain, walk.error
    if org is not None:
        return f"organizational domain {org} (DNS tree walk: {walk.asked})"
    why = f"{error.name}: {error.error or 'no answer'}" if error else "unknown"
    return f"organizational domain not determined ({why})"


def check_dmarc(domain: str, walk: TreeWalk, production: bool, expected_policy: str | None = None) -> CheckResult:
    """One valid record applies to the sender domain (its own, or inherited up the tree walk); p=none in
    production, a policy other than the stack's, or a record only a parent publishes is a warning."""
    name = f"_dmarc.{domain}"
    start = walk.levels[0][1]
    if start.failed:
        return lookup_error("dmarc", start)
    own = [v for v in start.values if is_dmarc(v)]
    if len(own) > 1:
        return CheckResult("dmarc", "fail",
                           f"{name} has {len(own)} DMARC records; receivers then use none of them (RFC 9989 4.10)",
                           f"delete all but one DMARC record at {name}")
    found = walk.policy
    if found is None:
        if walk.error is not None:
            return lookup_error("dmarc", walk.error, "while walking up the DNS tree for a parent's DMARC record")
        return CheckResult("dmarc", "fail",
                           f"{name} has no DMARC record, and no parent has one ({walk.asked}); Gmail, Yahoo and "
                           "Microsoft require one from bulk senders", _publish(domain))
    record, where = found.record, f"_dmarc.{found.domain}"
    if record.errors:
        asks = any(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", uri) for uri in record.uris("rua"))
        outcome = "receivers treat it as p=none (it asks for reports)" if asks else "receivers ignore it"
        fix = _publish(domain) if found.domain == domain else f"repair the record at {where}, or " + _publish(domain)
        return CheckResult("dmarc", "fail", f"{where} does not parse ({'; '.join(record.errors)}): {outcome}", fix)
    policy = record.policy or "none"
    if found.domain != domain:
        policy = record.get("sp") or policy
    summary = f"{where}: p={policy}" + (f" (sp= of the parent, for {domain})" if found.domain != domain else "")
    if record.testing:
        summary += f", t=y (testing: receivers apply {_MILDER[policy]})"
    summary += f", reports to {record.get('rua')}" if record.get("rua") else ", no rua reports"
    summary += f"; {_org_note(walk)}"
    if found.domain != domain and expected_policy:
        return CheckResult("dmarc", "warn", f"{name} has no record of its own; receivers use {summary}",
                           f"run `pulumi up` to publish the stack's record at {name}")
    if expected_policy and policy != expected_policy:
        return CheckResult("dmarc", "warn", f"{summary}; the stack says p={expected_policy}",
                           "run `pulumi up` to publish the policy")
    if policy == "none" and production:
        return CheckResult(
            "dmarc", "warn", f"{summary}: monitoring only, forgeries of {domain} are still delivered",
            "after reading the rua reports for a while, set dmarc.policy to quarantine with dmarc.testing: true "
            "(t=y) for a test phase, then set dmarc.testing to false (then move on to reject)")
    return CheckResult("dmarc", "pass", summary)


def check_dmarc_tags(domain: str, walk: TreeWalk, production: bool,
                     expected_testing: bool | None = None) -> CheckResult | None:
    """Tags RFC 9989 removed (pct, rf, ri) or does not know, obsolete size limits, and t=y against the stack.

    None when no parsing record applies (check_dmarc already fails then)."""
    found = walk.policy
    if found is None or found.record.errors:
        return None
    record, where = found.record, f"_dmarc.{found.domain}"
    problems: list[str] = []
    fixes: list[str] = []
    if record.removed:
        one = len(record.removed) == 1
        problems.append(f"{', '.join(record.removed)} {'was' if one else 'were'} removed by RFC 9989: its receivers "
                        f"ignore {'it' if one else 'them'}, older ones may still act on {'it' if one else 'them'}")
        fix = f"remove {', '.join(t.split('=')[0] for t in record.removed)}"
        if record.get("pct") not in (None, "100"):
            fix += "; for a test phase publish t=y instead of pct (dmarc.testing: true)"
        fixes.append(fix)
    if record.unknown:
        problems.append(f"unknown tag(s) {', '.join(record.unknown)}: receivers ignore them")
        fixes.append("correct or remove them (a typo of adkim, aspf, sp, np?)")
    sized = [u for tag in ("rua", "ruf") for u in record.uris(tag) if "!" in u]
    if sized:
        problems.append(f"size limits on report addresses ({', '.join(sized)}) are obsolete and ignored")
        fixes.append("drop the !size suffix")
    if expected_testing is not None and record.testing != expected_testing:
        problems.append("the record has t=y but the stack's dmarc.testing is false" if record.testing
                        else "the stack says dmarc.testing: true but the record has no t=y")
        fixes.append("run `pulumi up` to publish the stack's record")
    elif expected_testing is None and record.testing and production:
        policy = record.policy or "none"
        problems.append(f"t=y: receivers apply {_MILDER[policy]} instead of p={policy} while you test")
        fixes.append("remove t=y when the test phase is over")
    if problems:
        return CheckResult("dmarc:tags", "warn", f"{where}: {'; '.join(problems)}", "; ".join(fixes))
    note = ", t=y as the stack says (a test phase)" if record.testing else ""
    return CheckResult("dmarc:tags", "pass", f"{where} uses only RFC 9989 tags{note}")


@dataclass(frozen=True)
class Destination:
    """One rua= domain: inside the policy's organization, or outside with its authorization answer."""

    domain: str
    external: bool
    authorization: Answer | None = None  # TXT at report_name(policy domain, domain), asked when external


def check_dmarc_rua(policy_domain: str, destinations: Sequence[Destination]) -> CheckResult:
    """Receivers send aggregate reports outside the organization only where the destination agreed."""
    inside = [d.domain for d in destinations if not d.external]
    agreed: list[str] = []
    refused: list[str] = []
    for dest in (d for d in destinations if d.external):
        name = report_name(policy_domain, dest.domain)
        answer = dest.authorization or Answer(name, "TXT", "error", error="not asked")
        if answer.failed:
            return lookup_error("dmarc:rua", answer)
        (agreed if any(is_dmarc(v) for v in answer.values) else refused).append(dest.domain)
    parts = []
    if inside:
        parts.append(f"{', '.join(inside)} in the organization of {policy_domain}")
    if agreed:
        parts.append(f"{', '.join(agreed)} agreed ({', '.join(report_name(policy_domain, d) for d in agreed)})")
    status: Status = "pass"
    fix = ""
    if refused:
        status = "warn"
        names = ", ".join(report_name(policy_domain, d) for d in refused)
        parts.append(f"{', '.join(refused)} did not agree (no v=DMARC1 TXT at {names}): receivers send "
                     f"{'it' if len(refused) == 1 else 'them'} no reports")
        fix = (f"have the owner of {', '.join(refused)} publish TXT \"v=DMARC1\" at {names}, or send rua to an "
               f"address in {policy_domain}")
    return CheckResult("dmarc:rua", status, f"report destinations of _dmarc.{policy_domain}: {'; '.join(parts)}", fix)
