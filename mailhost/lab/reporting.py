"""The lab MX mails a DMARC aggregate report of what it judged, as Gmail or Outlook.com do daily.

Runs inside the MX's namespace: reads the receiver's records since a time, groups those about the
policy domain (dmarcreport.py), and sends the report gzipped to the rua mailbox over SMTP from the
MX's own address (which example.net's SPF lists, so the report passes DMARC and lands in INBOX).
"""

from __future__ import annotations

import argparse
import json
import secrets
import smtplib
import time
from pathlib import Path

from mailhost.lab import dmarcreport, imapd, receiver, zones

ORG = zones.RECIPIENT_DOMAIN
SENDER = f"noreply-dmarc@{zones.RECIPIENT_DOMAIN}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", required=True, help="the receiver's records (JSON lines)")
    parser.add_argument("--mx", required=True, help="the MX address to hand the report to")
    parser.add_argument("--domain", default=zones.SENDER_DOMAIN)
    parser.add_argument("--policy", default="reject", help="p= the domain publishes")
    parser.add_argument("--rua", default=imapd.REPORTS)
    parser.add_argument("--since", type=float, default=0.0, help="records from this Unix time on")
    parser.add_argument("--schema", choices=("7489", "9990"), default="7489")
    args = parser.parse_args(argv)
    now = int(time.time())
    records = [r for r in receiver.read_records(Path(args.log)) if r["time"] >= args.since]
    groups = dmarcreport.judged(records, args.domain, args.policy)
    begin = int(args.since) if args.since else now - 86400
    report_id = f"lab-{now}-{secrets.token_hex(4)}"
    xml = dmarcreport.aggregate_xml(ORG, SENDER, report_id, args.domain, args.policy, begin, now, groups, args.schema)
    mail = dmarcreport.report_mail(xml, ORG, SENDER, args.rua, args.domain, report_id, begin, now)
    with smtplib.SMTP(args.mx, 25, local_hostname=f"mx.{zones.RECIPIENT_DOMAIN}", timeout=60) as smtp:
        smtp.sendmail(SENDER, [args.rua], mail)
    per_source: dict[str, int] = {}
    for group, count in groups.items():
        per_source[group.source_ip] = per_source.get(group.source_ip, 0) + count
    print(json.dumps({"report_id": report_id, "begin": begin, "end": now, "per_source": per_source}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
