"""One aggregate report's XML → a checked `Report`, or `Refused` with a reason.

parsedmarc reads the XML (RFC 7489 appendix C and RFC 9990 schemas, the reporters' quirks, DMARC
alignment per row) offline: no DNS, no geolocation, no download.  It already refuses a DOCTYPE, which
rules out entity expansion and external entities.  What it returns is still the sender's words, so each
field used here passes a full-match check before it reaches the database, a terminal or a metric label.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from mailhost.reports.unpack import Refused

# parsedmarc logs pieces of what it reads; hostile text must not reach the terminal through its loggers
for _name in ("parsedmarc", "parsedmarc.log"):
    logging.getLogger(_name).disabled = True

ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,&()'_-]{0,99}")
REPORT_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,200}")
DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
DISPOSITIONS = frozenset({"none", "quarantine", "reject"})
MAX_COUNT = 10**9  # messages in one row; more is no report a receiver sent
MAX_ROWS = 100_000
EARLIEST = 1_325_376_000  # 2012-01-01: DMARC's first reports
MAX_SPAN = 7 * 86400  # RFC 7489 asks for daily reports; a week covers the slow reporters
FUTURE_SLACK = 86400


@dataclass(frozen=True)
class Row:
    """One source IP's verdicts, as the reporter counted them."""

    source_ip: str
    count: int
    spf_aligned: bool
    dkim_aligned: bool
    dmarc_pass: bool
    disposition: str


@dataclass(frozen=True)
class Report:
    org: str
    report_id: str
    domain: str
    begin: int
    end: int
    rows: tuple[Row, ...]


def _outline(xml: str) -> tuple[int, int, int]:
    """The report's interval as Unix times (parsedmarc gives them as text in the local zone) and how
    many records it holds (parsedmarc skips a record it cannot read, which would undercount).  Called
    after parsedmarc accepted the XML, so it has no DOCTYPE: expat's own parser is safe and fast here."""
    try:
        root = ElementTree.fromstring(xml)
        local = {child.tag.rpartition("}")[2]: child for child in root}
        dates = {e.tag.rpartition("}")[2]: e for e in local["report_metadata"].iter()}
        begin, end = int((dates["begin"].text or "").strip()), int((dates["end"].text or "").strip())
    except (ElementTree.ParseError, KeyError, ValueError):
        raise Refused("bad dates: no numeric date_range begin and end") from None
    return begin, end, sum(1 for child in root if child.tag.rpartition("}")[2] == "record")


def _checked_dates(begin: int, end: int, now: float) -> tuple[int, int]:
    if not EARLIEST <= begin <= end:
        raise Refused("bad dates: the interval begins before 2012 or ends before it begins")
    if end > now + FUTURE_SLACK:
        raise Refused("bad dates: the interval ends in the future")
    if end - begin > MAX_SPAN:
        raise Refused("bad dates: the interval is longer than a week")
    return begin, end


def _row(record: dict[str, Any]) -> Row:
    try:
        ip = str(ipaddress.ip_address(str(record["source"]["ip_address"])))
    except ValueError:
        raise Refused("a row whose source_ip is not an IP address") from None
    count = record.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
        raise Refused("a row whose count is not a whole number of messages")
    alignment = record.get("alignment") or {}
    disposition = str((record.get("policy_evaluated") or {}).get("disposition") or "none").lower()
    if disposition not in DISPOSITIONS:
        raise Refused("a row with an unknown disposition")
    return Row(ip, count, alignment.get("spf") is True, alignment.get("dkim") is True,
               alignment.get("dmarc") is True, disposition)


def parse(xml: str, domain: str, now: float | None = None) -> Report:
    """Refused unless the whole report is readable and about `domain` (a subdomain's report counts)."""
    import parsedmarc  # ~0.1 s to import: only commands that read reports pay it

    now = time.time() if now is None else now
    try:
        raw = parsedmarc.parse_aggregate_report_xml(xml, offline=True, always_use_local_files=True)
    except parsedmarc.InvalidAggregateReport as error:
        reason = "a DOCTYPE (entities are refused)" if "doctype" in str(error).lower() else "malformed XML"
        raise Refused(f"not a DMARC aggregate report: {reason}") from None
    except Exception as error:
        raise Refused(f"not a DMARC aggregate report ({type(error).__name__})") from None
    meta, published = raw["report_metadata"], raw["policy_published"]
    if any(str(e).startswith("Invalid XML") for e in meta.get("errors") or []):
        # parsedmarc recovers what it can of broken XML: a truncated report would count only part of its rows
        raise Refused("not a DMARC aggregate report: malformed XML (only part of it could be read)")
    org, report_id = str(meta.get("org_name") or ""), str(meta.get("report_id") or "")
    if not ORG.fullmatch(org):
        raise Refused("the reporter's org_name is missing or not plain text")
    if not REPORT_ID.fullmatch(report_id):
        raise Refused("the report_id is missing or not plain text")
    about = str(published.get("domain") or "").lower().rstrip(".")
    if not DOMAIN.fullmatch(about):
        raise Refused("policy_published has no domain name")
    if about != domain and not about.endswith("." + domain):
        raise Refused(f"a report for another domain ({about}), not {domain}")
    begin, end, written = _outline(xml)
    begin, end = _checked_dates(begin, end, now)
    records = raw.get("records") or []
    if len(records) != written:
        raise Refused(f"{written - len(records)} of its {written} rows cannot be read (a source_ip that is not an "
                      "IP address, or a count that is no number)")
    if len(records) > MAX_ROWS:
        raise Refused(f"more than {MAX_ROWS} rows")
    return Report(org, report_id, about, begin, end, tuple(_row(r) for r in records))
