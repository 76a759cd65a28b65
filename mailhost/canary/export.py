"""A canary run as text, JSON and node_exporter metrics (labels: the stack's own host and mailbox names)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mailhost.canary import causes
from mailhost.canary.run import Result
from mailhost.publish.mailstats import METRIC_PREFIX, _labels, _number

PLACEMENTS = (causes.INBOX, causes.JUNK, causes.MISSING)
PREFIX = f"{METRIC_PREFIX}_canary"
LAST_SUCCESS = re.compile(rf'{PREFIX}_last_success_timestamp_seconds\{{host="([a-z0-9-]{{1,63}})",'
                          r'mailbox="([A-Za-z0-9_+=.@-]{1,320})"\} ([0-9]{1,12})')


def _verdict_text(result: Result) -> str:
    v = result.verdicts
    if v is None:
        return ""
    parts = []
    for method in ("spf", "dkim", "dmarc", "arc"):
        if method in v.results:
            selector = f", s={v.dkim_selector}" if v.dkim_selector else ""  # Microsoft names no selector
            extra = f" ({v.dkim_domain}{selector})" if method == "dkim" and v.dkim_domain else ""
            parts.append(f"{method}={v.results[method]}{extra}")
    tls = {True: "TLS", False: "no TLS", None: "TLS unknown"}[v.tls]
    return "; " + " ".join(parts) + f"; {tls}" if parts else f"; no Authentication-Results; {tls}"


def text_lines(results: list[Result], domain: str, late_after: float) -> list[str]:
    lines = []
    for r in results:
        head = f"{r.host} → {r.mailbox}: "
        if r.problem:
            lines.append(head + f"unreachable: {r.problem}")
            continue
        when = f" after {r.delay:.0f} s" + (" (late)" if r.delay > late_after else "") if r.delay is not None else ""
        where = f"{r.placement} ({r.folder})" if r.folder and r.placement == causes.JUNK else r.placement
        lines.append(head + where + when + _verdict_text(r))
        for cause in causes.causes(r.placement, r.verdicts, domain):
            lines.append(f"  cause: {cause.what}")
            lines.append(f"  fix:   {cause.fix}")
    return lines


def as_data(results: list[Result], domain: str, late_after: float) -> dict[str, Any]:
    return {"results": [{
        "host": r.host, "mailbox": r.mailbox, "placement": None if r.problem else r.placement, "folder": r.folder,
        "delay_seconds": None if r.delay is None else round(r.delay, 1), "queue_id": r.queue_id,
        "verdicts": None if r.verdicts is None else {
            **r.verdicts.results, "dkim_domain": r.verdicts.dkim_domain, "dkim_selector": r.verdicts.dkim_selector,
            "tls": r.verdicts.tls},
        "causes": [] if r.problem else [{"what": c.what, "fix": c.fix}
                                        for c in causes.causes(r.placement, r.verdicts, domain)],
        "unreachable": r.problem, "deleted": r.deleted, "exit": r.code(late_after),
    } for r in results]}


def previous_successes(path: Path) -> dict[tuple[str, str], int]:
    try:
        text = path.read_text()[:1_000_000]
    except OSError:
        return {}
    return {(m.group(1), m.group(2)): int(m.group(3)) for line in text.splitlines()
            if (m := LAST_SUCCESS.fullmatch(line))}


def metrics(results: list[Result], late_after: float, now: float, previous: dict[tuple[str, str], int]) -> str:
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.extend([f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} gauge"])
        out.extend(f"{PREFIX}_{name}{_labels(**labels)} {_number(value)}" for labels, value in samples)

    reached = [r for r in results if not r.problem]
    family("reachable", "1 when the host took the probe and the mailbox could be read.",
           [({"host": r.host, "mailbox": r.mailbox}, float(not r.problem)) for r in results])
    family("placement", "1 for where the last probe landed: inbox, junk or missing.",
           [({"host": r.host, "mailbox": r.mailbox, "folder": p}, float(r.placement == p))
            for r in reached for p in PLACEMENTS])
    family("delay_seconds", "Seconds from submission on the host to arrival in the mailbox.",
           [({"host": r.host, "mailbox": r.mailbox}, round(r.delay, 1)) for r in reached if r.delay is not None])
    family("auth_failures", "Verdicts other than pass in the receiver's Authentication-Results.",
           [({"host": r.host, "mailbox": r.mailbox},
             float(sum(v != "pass" for m, v in r.verdicts.results.items() if m != "arc") if r.verdicts else 0))
            for r in reached])
    successes = dict(previous)
    for r in results:
        if r.code(late_after) in (causes.OK, causes.LATE):
            successes[(r.host, r.mailbox)] = int(now)
    family("last_success_timestamp_seconds", "When a probe last reached the inbox with every verdict passing.",
           [({"host": h, "mailbox": m}, float(t)) for (h, m), t in sorted(successes.items())])
    family("last_run_timestamp_seconds", "When the canary last ran (Unix time).", [({}, float(int(now)))])
    return "\n".join(out) + "\n"
