"""What the stored reports say: per reporter and per source, by source class, and the policy ramp.

Pure: rows in, numbers and advice out.  Which sources are ours and which SPF authorizes is
decided by the caller (stack outputs and a live SPF evaluation) and passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mailhost.reports.store import Counted

OURS, AUTHORIZED, UNKNOWN = "ours", "authorized", "unknown"
CLASSES = (OURS, AUTHORIZED, UNKNOWN)
NEXT_POLICY = {"none": "quarantine", "quarantine": "reject"}

# The ramp's bar (README "Reading the ramp advice"): two weeks cover a weekly rhythm twice; two reporters
# keep one receiver's quirk from deciding; 99.5 % leaves room for the odd forwarded message; an unknown
# source sending more than this in the window is someone sending as the domain who would be cut off.
RAMP_DAYS = 14
RAMP_REPORTERS = 2
RAMP_PASS_RATIO = 0.995
RAMP_UNKNOWN_MESSAGES = 10


@dataclass
class Tally:
    """Messages and how many passed each check, with the receivers' dispositions."""

    messages: int = 0
    spf_aligned: int = 0
    dkim_aligned: int = 0
    dmarc_pass: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)

    def add(self, row: Counted) -> None:
        self.messages += row.count
        self.spf_aligned += row.count * row.spf_aligned
        self.dkim_aligned += row.count * row.dkim_aligned
        self.dmarc_pass += row.count * row.dmarc_pass
        self.dispositions[row.disposition] += row.count

    @property
    def pass_ratio(self) -> float | None:
        return self.dmarc_pass / self.messages if self.messages else None


@dataclass(frozen=True)
class Ramp:
    policy: str
    next_policy: str | None
    blockers: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.next_policy is not None and not self.blockers

    def line(self) -> str:
        if self.next_policy is None:
            return f"DMARC ramp: dmarc.policy is {self.policy}, the end of the ramp"
        step = f"dmarc.policy from {self.policy} to {self.next_policy}"
        if self.ready:
            return f"DMARC ramp: ready to move {step}"
        return f"DMARC ramp: not yet {step}: " + "; ".join(self.blockers)


@dataclass(frozen=True)
class Summary:
    since: float
    until: float
    reporters: dict[str, Tally]
    sources: dict[str, Tally]
    source_class: dict[str, str]
    classes: dict[str, Tally]
    days: int
    ramp: Ramp

    def flagged(self) -> list[tuple[str, str, int]]:
        """(source ip, class, messages) of unknown senders, and of our own hosts' failing messages."""
        out = []
        for ip, tally in self.sources.items():
            kind = self.source_class[ip]
            if kind == UNKNOWN:
                out.append((ip, kind, tally.messages))
            elif kind == OURS and tally.dmarc_pass < tally.messages:
                out.append((ip, kind, tally.messages - tally.dmarc_pass))
        return sorted(out, key=lambda item: (-item[2], item[0]))


def covered_days(rows: Iterable[Counted], since: float, until: float) -> int:
    """Distinct UTC days inside the window that some report's interval touches."""
    days: set[int] = set()
    for row in rows:
        first, last = int(max(row.begin, since)) // 86400, int(min(row.end, until)) // 86400
        days.update(range(first, last + 1))
    return len(days)


def ramp(policy: str, days: int, reporters: int, classes: dict[str, Tally],
         unknown: Sequence[tuple[str, int]]) -> Ramp:
    """Whether the stack may tighten dmarc.policy one step, and each reason it may not yet."""
    next_policy = NEXT_POLICY.get(policy)
    blockers = []
    if days < RAMP_DAYS:
        blockers.append(f"{days} of {RAMP_DAYS} days of reports")
    if reporters < RAMP_REPORTERS:
        blockers.append(f"{reporters} of {RAMP_REPORTERS} reporters")
    sending = Tally()
    for kind in (OURS, AUTHORIZED):
        tally = classes.get(kind, Tally())
        sending.messages += tally.messages
        sending.dmarc_pass += tally.dmarc_pass
    if not sending.messages:
        blockers.append("no reported messages from our hosts or the senders SPF authorizes")
    elif sending.dmarc_pass < RAMP_PASS_RATIO * sending.messages:
        blockers.append(f"{sending.dmarc_pass} of {sending.messages} messages from our hosts and authorized "
                        f"senders pass DMARC ({100 * sending.dmarc_pass / sending.messages:.2f} %, "
                        f"{100 * RAMP_PASS_RATIO:.1f} % needed)")
    loud = [(ip, n) for ip, n in unknown if n > RAMP_UNKNOWN_MESSAGES]
    if loud:
        blockers.append(f"{len(loud)} unknown source(s) sent more than {RAMP_UNKNOWN_MESSAGES} messages as the "
                        f"domain (largest {loud[0][0]}: {loud[0][1]}); authorize them in spfExtra or find out who "
                        "they are")
    return Ramp(policy, next_policy, tuple(blockers))


def summarize(rows: Iterable[Counted], since: float, until: float, policy: str,
              classify: Callable[[str], str]) -> Summary:
    """Tally the window's rows per reporter, per source and per class; then the ramp over them."""
    kept = [r for r in rows if r.end >= since and r.begin <= until]
    reporters: dict[str, Tally] = {}
    sources: dict[str, Tally] = {}
    source_class: dict[str, str] = {}
    classes: dict[str, Tally] = {kind: Tally() for kind in CLASSES}
    for row in kept:
        reporters.setdefault(row.org, Tally()).add(row)
        sources.setdefault(row.source_ip, Tally()).add(row)
        if row.source_ip not in source_class:
            source_class[row.source_ip] = classify(row.source_ip)
        classes[source_class[row.source_ip]].add(row)
    days = covered_days(kept, since, until)
    unknown = sorted(((ip, t.messages) for ip, t in sources.items() if source_class[ip] == UNKNOWN),
                     key=lambda item: (-item[1], item[0]))
    advice = ramp(policy, days, len(reporters), classes, unknown)
    return Summary(since, until, reporters, sources, source_class, classes, days, advice)


def classifier(ours: Iterable[str], authorized: Callable[[str], bool]) -> Callable[[str], str]:
    own = frozenset(ours)

    def classify(ip: str) -> str:
        if ip in own:
            return OURS
        return AUTHORIZED if authorized(ip) else UNKNOWN

    return classify
