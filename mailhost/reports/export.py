"""The summary as node_exporter textfile metrics and as JSON; labels are fixed words, never report text."""

from __future__ import annotations

import time
from typing import Any

from mailhost.publish.mailstats import METRIC_PREFIX, _labels, _number
from mailhost.reports.judge import CLASSES, Summary, Tally


def metrics(summary: Summary, refused: int, now: float | None = None) -> str:
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        full = f"{METRIC_PREFIX}_dmarc_{name}"
        out.extend([f"# HELP {full} {help_text}", f"# TYPE {full} gauge"])
        out.extend(f"{full}{_labels(**labels)} {_number(value)}" for labels, value in samples)

    classes = summary.classes
    family("messages", "Messages the DMARC reports of the window count, by source class.",
           [({"class": k}, float(classes[k].messages)) for k in CLASSES])
    family("pass_ratio", "Share of those messages that passed DMARC, by source class (1 when there were none).",
           [({"class": k}, _ratio(classes[k])) for k in CLASSES])
    unknown = sum(t.messages for ip, t in summary.sources.items() if summary.source_class[ip] == "unknown")
    family("unknown_source_messages", "Messages sent as the domain from sources neither ours nor in SPF.",
           [({}, float(unknown))])
    family("ramp_ready", "1 when the reports allow the next dmarc.policy step.", [({}, float(summary.ramp.ready))])
    family("reports_refused", "Reports this run refused (malformed, hostile or for another domain).",
           [({}, float(refused))])
    family("collector_last_run_timestamp_seconds", "When this file was written (Unix time).",
           [({}, float(int(time.time() if now is None else now)))])
    return "\n".join(out) + "\n"


def _ratio(tally: Tally) -> float:
    ratio = tally.pass_ratio
    return 1.0 if ratio is None else round(ratio, 6)


def _tally(tally: Tally) -> dict[str, Any]:
    return {"messages": tally.messages, "spf_aligned": tally.spf_aligned, "dkim_aligned": tally.dkim_aligned,
            "dmarc_pass": tally.dmarc_pass, "dispositions": dict(sorted(tally.dispositions.items()))}


def as_data(summary: Summary) -> dict[str, Any]:
    return {
        "since": int(summary.since), "until": int(summary.until), "days_with_reports": summary.days,
        "reporters": {org: _tally(t) for org, t in sorted(summary.reporters.items())},
        "sources": {ip: {"class": summary.source_class[ip], **_tally(t)} for ip, t in sorted(summary.sources.items())},
        "classes": {k: _tally(summary.classes[k]) for k in CLASSES},
        "flagged": [{"source_ip": ip, "class": kind, "messages": n} for ip, kind, n in summary.flagged()],
        "ramp": {"policy": summary.ramp.policy, "next": summary.ramp.next_policy, "ready": summary.ramp.ready,
                 "blockers": list(summary.ramp.blockers), "line": summary.ramp.line()},
    }
