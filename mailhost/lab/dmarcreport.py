"""The lab MX as a DMARC reporter: an aggregate report of what it judged, as receivers write them.

From the receiver's own records (one per accepted message, with its SPF, DKIM and DMARC verdicts)
to the XML of RFC 7489 appendix C or RFC 9990, and to the mail that carries it gzipped to the rua
address, named as RFC 7489 section 7.2.1.1 asks.  Tests also build hostile variants from these parts.
"""

from __future__ import annotations

import email.policy
import email.utils
import gzip
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from mailhost.lab.verdicts import domain_of, org_domain

NS_9990 = "urn:ietf:params:xml:ns:dmarc-2.0"


@dataclass(frozen=True)
class Judged:
    """One group of messages the reporter judged alike."""

    source_ip: str
    header_from: str
    envelope_from: str
    spf: str  # the raw SPF result for envelope_from
    dkim: str  # the raw DKIM result
    dkim_domain: str | None
    dkim_selector: str | None
    dmarc: str  # pass / fail
    disposition: str


def judged(records: Iterable[Mapping[str, Any]], domain: str, policy: str) -> Counter[Judged]:
    """Group the receiver's records about `domain` (or its subdomains) the way a report counts them."""
    out: Counter[Judged] = Counter()
    for record in records:
        _name, address = email.utils.parseaddr(str(record.get("header_from", "")))
        from_domain = domain_of(address)
        if from_domain != domain and not from_domain.endswith("." + domain):
            continue
        passed = record.get("dmarc") == "pass"
        out[Judged(record["ip"], from_domain, domain_of(record.get("mail_from") or "") or from_domain,
                   str(record.get("spf")), str(record.get("dkim")), record.get("dkim_domain"),
                   record.get("dkim_selector"), "pass" if passed else "fail",
                   "none" if passed else policy)] += 1
    return out


def _aligned(result: str, domain: str | None, header_from: str) -> str:
    return "pass" if result == "pass" and domain and org_domain(domain) == org_domain(header_from) else "fail"


def _text(parent: ET.Element, tag: str, value: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(value)
    return element


def aggregate_xml(org: str, org_email: str, report_id: str, domain: str, policy: str, begin: int, end: int,
                  groups: Mapping[Judged, int], schema: str = "7489") -> bytes:
    """The report's XML: RFC 7489 appendix C (version 1.0, no namespace) or RFC 9990 (dmarc-2.0)."""
    root = ET.Element("feedback", {"xmlns": NS_9990} if schema == "9990" else {})
    if schema == "7489":
        _text(root, "version", "1.0")
    meta = ET.SubElement(root, "report_metadata")
    _text(meta, "org_name", org)
    _text(meta, "email", org_email)
    _text(meta, "report_id", report_id)
    dates = ET.SubElement(meta, "date_range")
    _text(dates, "begin", begin)
    _text(dates, "end", end)
    published = ET.SubElement(root, "policy_published")
    _text(published, "domain", domain)
    _text(published, "adkim", "r")
    _text(published, "aspf", "r")
    _text(published, "p", policy)
    _text(published, "sp", policy)
    if schema == "7489":
        _text(published, "pct", 100)
    for group, count in sorted(groups.items(), key=lambda item: (item[0].source_ip, -item[1])):
        record = ET.SubElement(root, "record")
        row = ET.SubElement(record, "row")
        _text(row, "source_ip", group.source_ip)
        _text(row, "count", count)
        evaluated = ET.SubElement(row, "policy_evaluated")
        _text(evaluated, "disposition", group.disposition)
        _text(evaluated, "dkim", _aligned(group.dkim, group.dkim_domain, group.header_from))
        _text(evaluated, "spf", _aligned(group.spf, group.envelope_from, group.header_from))
        identifiers = ET.SubElement(record, "identifiers")
        _text(identifiers, "header_from", group.header_from)
        _text(identifiers, "envelope_from", group.envelope_from)
        results = ET.SubElement(record, "auth_results")
        if group.dkim_domain:
            dkim = ET.SubElement(results, "dkim")
            _text(dkim, "domain", group.dkim_domain)
            if group.dkim_selector:
                _text(dkim, "selector", group.dkim_selector)
            _text(dkim, "result", group.dkim)
        spf = ET.SubElement(results, "spf")
        _text(spf, "domain", group.envelope_from)
        _text(spf, "scope", "mfrom")
        _text(spf, "result", group.spf if group.spf in ("pass", "fail", "softfail", "neutral", "none",
                                                          "temperror", "permerror") else "none")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def report_mail(xml: bytes, org: str, sender: str, rua: str, domain: str, report_id: str, begin: int, end: int,
                ) -> bytes:
    """The mail a reporter sends: the gzipped XML as an attachment named org!domain!begin!end.xml.gz."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = rua
    message["Subject"] = f"Report Domain: {domain} Submitter: {org} Report-ID: <{report_id}>"
    message["Date"] = email.utils.formatdate(end)
    message["Message-ID"] = email.utils.make_msgid(domain=domain_of(sender) or None)
    message.set_content(f"DMARC aggregate report for {domain} from {org}.\n")
    message.add_attachment(gzip.compress(xml, mtime=0), maintype="application", subtype="gzip",
                           filename=f"{org}!{domain}!{begin}!{end}.xml.gz")
    return message.as_bytes(policy=email.policy.SMTP)  # CRLF: SMTP sends bytes as they are
