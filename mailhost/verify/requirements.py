"""What Gmail, Yahoo and Microsoft (Outlook.com) require of senders, judged from the verify checks.

Each requirement is marked pass or fail from the checks it rests on, "not checkable from DNS" when
DNS cannot show it (complaint rate, unsubscribe headers, TLS in transit, message format), or
"not checked" when its checks did not run or DNS did not answer.  The sources, by name and URL,
are in the README ("The `mailhost` command").  The From domain, the DKIM d= domain and the MAIL
FROM domain are all the sender domain (the settings refuse a From address outside it), so DMARC
alignment holds exactly when SPF or DKIM passes for it and a DMARC record applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mailhost.verify.checks import CheckResult

Mark = Literal["pass", "fail", "not checkable from DNS", "not checked"]
Tier = Literal["all", "bulk"]  # all senders; bulk: 5,000+ messages a day (Yahoo names no number)
PROVIDERS = ("Gmail", "Yahoo", "Microsoft")
TIERS: tuple[Tier, ...] = ("all", "bulk")
NOT_CHECKABLE: Mark = "not checkable from DNS"
NOT_CHECKED: Mark = "not checked"

Verdict = tuple[Mark, tuple[str, ...]]  # the mark, and the ids of the checks it was derived from


def _family(checks: Sequence[CheckResult], *prefixes: str) -> list[CheckResult]:
    return [c for c in checks if c.id.startswith(prefixes)]


def _judge(relevant: list[CheckResult]) -> Verdict:
    """fail if any fails; not checked if none ran or DNS did not answer; else pass (warnings pass)."""
    ids = tuple(c.id for c in relevant)
    if any(c.status == "fail" and not c.lookup_error for c in relevant):
        return "fail", ids
    if not relevant or any(c.lookup_error for c in relevant):
        return NOT_CHECKED, ids
    return "pass", ids


def spf_passes(checks: Sequence[CheckResult]) -> Verdict:
    """Every sending address passes SPF, and the record stays within the lookup and void limits."""
    evals = _family(checks, "spf:eval:")
    if not evals:
        return NOT_CHECKED, ()
    return _judge(evals + _family(checks, "spf:count", "spf:syntax", "spf:lookups", "spf:voids"))


def dkim_passes(checks: Sequence[CheckResult]) -> Verdict:
    """Every signing key is published, parses, is strong enough and is the one Postfix signs with."""
    keys = [c for c in checks if c.id.startswith("dkim:")]
    return _judge(keys) if keys else (NOT_CHECKED, tuple(c.id for c in checks if c.id == "dkim"))


def spf_or_dkim(checks: Sequence[CheckResult]) -> Verdict:
    return _either(spf_passes(checks), dkim_passes(checks))


def spf_and_dkim(checks: Sequence[CheckResult]) -> Verdict:
    return _both(spf_passes(checks), dkim_passes(checks))


def reverse_dns(checks: Sequence[CheckResult]) -> Verdict:
    """Each sending address has a PTR that resolves back to it (addresses Postfix does not send from only warn)."""
    return _judge(_family(checks, "ptr:", "fcrdns:"))


def dmarc_published(checks: Sequence[CheckResult]) -> Verdict:
    """A DMARC record applies to the sender domain and parses; p=none is enough."""
    return _judge([c for c in checks if c.id == "dmarc"])


def dmarc_aligned(checks: Sequence[CheckResult]) -> Verdict:
    """DMARC passes for the From domain: a record applies, and SPF or DKIM passes for the sender domain."""
    return _both(dmarc_published(checks), spf_or_dkim(checks))


def _either(a: Verdict, b: Verdict) -> Verdict:
    """One passing is enough; both must fail for a fail (one not checked might have passed)."""
    marks, ids = (a[0], b[0]), a[1] + b[1]
    return ("pass" if "pass" in marks else NOT_CHECKED if NOT_CHECKED in marks else "fail"), ids


def _both(a: Verdict, b: Verdict) -> Verdict:
    """One failing is a fail; both must pass for a pass."""
    marks, ids = (a[0], b[0]), a[1] + b[1]
    return ("fail" if "fail" in marks else NOT_CHECKED if NOT_CHECKED in marks else "pass"), ids


@dataclass(frozen=True)
class Requirement:
    text: str
    tiers: dict[str, Tier]  # provider → the tier that must meet it ("all" covers bulk senders too)
    judge: Callable[[Sequence[CheckResult]], Verdict] | None  # None: not checkable from DNS


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("SPF or DKIM passes", {"Gmail": "all", "Yahoo": "all"}, spf_or_dkim),
    Requirement("SPF passes", {"Gmail": "bulk", "Yahoo": "bulk", "Microsoft": "bulk"}, spf_passes),
    Requirement("DKIM passes", {"Gmail": "bulk", "Yahoo": "bulk", "Microsoft": "bulk"}, dkim_passes),
    Requirement("PTR for each sending IP, forward-confirmed", {"Gmail": "all"}, reverse_dns),
    Requirement("DMARC published (p=none or stricter)", {"Gmail": "bulk", "Yahoo": "bulk", "Microsoft": "bulk"},
                dmarc_published),
    Requirement("From domain aligned with SPF or DKIM (DMARC passes)",
                {"Gmail": "bulk", "Yahoo": "bulk", "Microsoft": "bulk"}, dmarc_aligned),
    Requirement("TLS in transit", {"Gmail": "all"}, None),
    Requirement("spam complaint rate under 0.3%", {"Gmail": "all", "Yahoo": "all"}, None),
    Requirement("RFC 5322 message format", {"Gmail": "all"}, None),
    Requirement("one-click unsubscribe (RFC 8058) on marketing mail", {"Gmail": "bulk", "Yahoo": "bulk"}, None),
)


@dataclass(frozen=True)
class Judged:
    requirement: Requirement
    mark: Mark
    checks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"requirement": self.requirement.text, "status": self.mark,
                "required_by": {p.lower(): self.requirement.tiers.get(p) for p in PROVIDERS},
                "checks": list(dict.fromkeys(self.checks))}


def evaluate(checks: Sequence[CheckResult]) -> list[Judged]:
    out = []
    for requirement in REQUIREMENTS:
        mark, ids = requirement.judge(checks) if requirement.judge else (NOT_CHECKABLE, ())
        out.append(Judged(requirement, mark, ids))
    return out


@dataclass(frozen=True)
class Receiver:
    """One provider's tier: fail if a requirement fails, not checked if one could not be, else pass;
    `uncheckable` lists what DNS cannot show and the sender must see to."""

    provider: str
    tier: Tier
    mark: Mark
    uncheckable: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider.lower(), "tier": self.tier, "status": self.mark,
                "not_checkable_from_dns": list(self.uncheckable)}


def receivers(judged: Sequence[Judged]) -> list[Receiver]:
    """Each provider's all-senders and bulk tier (a bulk sender must meet the all-senders rules too);
    a tier the provider publishes no requirement for is left out (Microsoft below 5,000 a day)."""
    out = []
    for provider in PROVIDERS:
        for tier in TIERS:
            applies = [j for j in judged if j.requirement.tiers.get(provider) in ("all", tier)]
            if not applies:
                continue
            marks = {j.mark for j in applies}
            mark: Mark = "fail" if "fail" in marks else NOT_CHECKED if NOT_CHECKED in marks else "pass"
            out.append(Receiver(provider, tier, mark,
                                tuple(j.requirement.text for j in applies if j.mark == NOT_CHECKABLE)))
    return out
