"""`mailhost reports` against real receivers' answers in the lab: the MX judges the mail the deployed
Postfix sends, mails a real aggregate report (gzipped XML) to the report mailbox, Dovecot serves it over
IMAPS with a lab-CA certificate, and the command reads it with the password from a command.

- the report's counts per source equal the MX's own records, and the jira host is "ours";
- a message sent as the domain from another lab address is an unknown source, flagged (exit 1);
- once the domain's SPF authorizes that address through an include (resolved against Knot) it is
  "authorized" and no longer flagged;
- hostile report mails in the mailbox are refused one by one with their reasons, the rest is read and
  the database is unchanged by them;
- the mailbox password appears in no output, database, metrics file or log.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhost.lab import dmarcreport, dnsupdate, imapd, ops, zones
from mailhost.lab.lab import REPO, Lab
from mailhost.lab.secretscan import Secret, TreeScan, scan_text, scan_tree
from tests.real.conftest import lab_in_tmp, until

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("reports") as the_lab:
        the_lab.start_imap()
        yield the_lab


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


def reports(lab: Lab, work: Path, *extra: str, login: tuple[str, str] | None = None
            ) -> tuple[int, dict[str, Any], str]:
    """`mailhost reports --json` as an admin runs it against the report mailbox."""
    login = login or ("--password-command", shlex.join(["cat", str(lab.imap_password_file(imapd.REPORTS))]))
    done = subprocess.run(
        [sys.executable, "-m", "mailhost", "reports", "--outputs", str(lab.state_dir / "stack-outputs.json"),
         "--imap-host", lab.world.mx.v4, "--imap-user", imapd.REPORTS, *login,
         "--cafile", str(lab.ca_cert), "--nameserver", lab.world.dns.v4, "--db", str(work / "reports.sqlite"),
         "--metrics", str(work / "dmarc.prom"), "--json", *extra],
        capture_output=True, text=True, timeout=180, cwd=REPO)
    (work / "outputs.txt").open("a").write(done.stdout + done.stderr)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def mx_counts(lab: Lab, since: float) -> Counter[str]:
    """What the MX itself recorded about mail From the sender domain since `since`, per source."""
    found: Counter[str] = Counter()
    for record in ops.records(lab):
        if (record["time"] >= since and record["header_from"].endswith(f"@{zones.SENDER_DOMAIN}>")) or \
                (record["time"] >= since and record["header_from"].endswith(f"@{zones.SENDER_DOMAIN}")):
            found[record["ip"]] += 1
    return found


def send_from(lab: Lab, where: str, data: bytes, sender: str, rcpt: str) -> None:
    """SMTP straight to the MX from a lab namespace: "smarthost" is another lab address (not our host),
    "mx" is example.net's own mail system (its SPF lists the MX, so its mail passes DMARC)."""
    helo = f"{'smtp' if where == 'smarthost' else 'mx'}.{zones.RECIPIENT_DOMAIN}"
    code = ("import smtplib,sys; s=smtplib.SMTP(sys.argv[1],25,local_hostname=sys.argv[4],timeout=60);"
            "s.sendmail(sys.argv[2],[sys.argv[3]],sys.stdin.buffer.read()); s.quit()")
    done = subprocess.run(lab.host(where).argv([sys.executable, "-c", code, lab.world.mx.v4, sender, rcpt, helo]),
                          input=data, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def inbox(lab: Lab, address: str) -> list[Path]:
    return sorted((imapd.maildir(lab.maildirs, address) / "new").glob("*")) + \
        sorted((imapd.maildir(lab.maildirs, address) / "cur").glob("*"))


def test_report_counts_equal_the_mx_records_and_a_stranger_is_an_unknown_source(lab: Lab, work: Path) -> None:
    since = time.time()
    burst = ops.send(lab, 8, big_every=0)
    got, _ = ops.wait_delivered(lab, burst, timeout=90)
    assert len(got) == 8
    spoof = (f"From: Jira <jira@{zones.SENDER_DOMAIN}>\r\nTo: ann@{zones.RECIPIENT_DOMAIN}\r\n"
             "Subject: [JIRA] please pay this invoice\r\nMessage-ID: <spoof-1@stranger.example.org>\r\n\r\nx\r\n")
    send_from(lab, "smarthost", spoof.encode(), f"bounce@{zones.RECIPIENT_DOMAIN}", f"ann@{zones.RECIPIENT_DOMAIN}")
    stranger = lab.world.smarthost.v4
    until(lambda: mx_counts(lab, since)[stranger] == 1, 30, "the spoofed message at the MX")
    expected = mx_counts(lab, since)
    sent = ops.mail_dmarc_report(lab, since)
    assert Counter(sent["per_source"]) == expected, "the report counts what the MX recorded"
    until(lambda: inbox(lab, imapd.REPORTS), 30, "the report in the report mailbox's INBOX")

    code, data, err = reports(lab, work)
    assert data["intake"] == {"read": 1, "new": 1, "duplicate": 0, "refused": []}, err
    assert {ip: s["messages"] for ip, s in data["sources"].items()} == dict(expected)
    jira = lab.info().hosts["jira"]
    ours = {ip for ip in expected if ip in (jira["ipv4"], jira["ipv6"])}
    assert ours and all(data["sources"][ip]["class"] == "ours" for ip in ours)
    assert all(data["sources"][ip]["dmarc_pass"] == expected[ip] for ip in ours), "our mail passes DMARC"
    assert data["sources"][stranger]["class"] == "unknown" and data["sources"][stranger]["dmarc_pass"] == 0
    assert data["flagged"] == [{"source_ip": stranger, "class": "unknown", "messages": 1}]
    assert data["ramp"]["line"] == "DMARC ramp: dmarc.policy is reject, the end of the ramp"
    assert code == 1
    metrics = (work / "dmarc.prom").read_text()
    assert "jira_mailhost_dmarc_unknown_source_messages 1\n" in metrics

    code, again, _ = reports(lab, work)
    assert again["intake"]["read"] == 0, "a message already read is not fetched again"
    assert again["sources"] == data["sources"], "and nothing is counted twice"


def test_a_source_the_spf_include_authorizes_is_not_flagged(lab: Lab, work: Path) -> None:
    sh = lab.world.smarthost
    dnsupdate.create(lab.world.dns.v4, zones.RECIPIENT_DOMAIN, f"_spf.{zones.RECIPIENT_DOMAIN}", "TXT", 60,
                     [f'"v=spf1 ip4:{sh.v4} ip6:{sh.v6} -all"'])
    ops.up(lab, "direct", overrides={"spfExtra": [f"include:_spf.{zones.RECIPIENT_DOMAIN}"]})
    code, data, err = reports(lab, work)
    assert data["sources"][sh.v4]["class"] == "authorized", err
    assert data["flagged"] == []
    assert code == 0


REPORTER = f"noreply-dmarc@{zones.RECIPIENT_DOMAIN}"


def report_mail(xml: bytes, report_id: str) -> bytes:
    now = int(time.time())
    return dmarcreport.report_mail(xml, "hostile.example", REPORTER, imapd.REPORTS, zones.SENDER_DOMAIN, report_id,
                                   now - 3600, now)


def test_hostile_reports_in_the_mailbox_are_refused_and_the_rest_is_read(lab: Lab, work: Path) -> None:
    db = sqlite3.connect(work / "reports.sqlite")
    before = db.execute("SELECT org, report_id FROM report ORDER BY 1, 2").fetchall()
    now = int(time.time())
    good = dmarcreport.Judged(lab.info().hosts["jira"]["ipv4"], zones.SENDER_DOMAIN, zones.SENDER_DOMAIN, "pass",
                              "pass", zones.SENDER_DOMAIN, "jm1", "pass", "none")

    def xml(report_id: str, domain: str = zones.SENDER_DOMAIN) -> bytes:
        return dmarcreport.aggregate_xml("hostile.example", "dmarc@hostile.example", report_id, domain, "reject",
                                         now - 3600, now, {good: 3})

    doctype = xml("h-doctype").replace(b'<?xml version="1.0" encoding="UTF-8"?>',
                                       b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY a "aaaa">]>')
    bomb = b"\0" * (64 * 1024 * 1024)
    mails = [report_mail(doctype, "h-doctype"), report_mail(xml("h-other", "other.example"), "h-other"),
             report_mail(bomb, "h-bomb"), report_mail(xml("h-good"), "h-good")]
    count = len(inbox(lab, imapd.REPORTS))
    for mail in mails:
        send_from(lab, "mx", mail, REPORTER, imapd.REPORTS)
    until(lambda: len(inbox(lab, imapd.REPORTS)) == count + len(mails), 60, "the four mails in the mailbox")
    code, data, _ = reports(lab, work)
    assert data["intake"]["read"] == 4 and data["intake"]["new"] == 1, data["intake"]
    reasons = [r["why"] for r in data["intake"]["refused"]]
    assert len(reasons) == 3
    assert any("DOCTYPE" in r for r in reasons) and any("another domain (other.example)" in r for r in reasons)
    assert any("inflates" in r for r in reasons)
    after = db.execute("SELECT org, report_id FROM report ORDER BY 1, 2").fetchall()
    assert sorted(set(after) - set(before)) == [("hostile.example", "h-good")]
    assert code == 1


def test_an_oauth2_token_logs_in_with_xoauth2_and_a_wrong_one_is_refused(lab: Lab, work: Path) -> None:
    """Microsoft 365's only way into IMAP: the token from a command, sent with AUTHENTICATE XOAUTH2 (Dovecot's
    oauth2 passdb asks the lab's introspection endpoint who owns it)."""
    token = shlex.join(["cat", str(lab.imap_token_file(imapd.REPORTS))])
    code, data, err = reports(lab, work, login=("--token-command", token))
    assert code in (0, 1) and data["intake"]["refused"] == [], err
    code, data, err = reports(lab, work, login=("--token-command", "echo not-a-token"))
    assert code == 3 and data == {}
    assert err.strip() == (f"mailhost reports: {imapd.REPORTS}@{lab.world.mx.v4}:993: the server refused the "
                           "OAuth2 token")
    code, _, err = reports(lab, work, login=("--token-command", token.replace(".token", ".password")))
    assert code == 3 and "--token-command: the command exited 1" in err


def test_the_mailbox_password_is_nowhere_but_its_own_private_file(lab: Lab, work: Path) -> None:
    secret = Secret.of("report mailbox password", lab.imap_password_file(imapd.REPORTS).read_text(),
                       user=imapd.REPORTS)
    token = Secret.of("report mailbox token", lab.imap_token_file(imapd.REPORTS).read_text())
    assert scan_text("every output of mailhost reports", (work / "outputs.txt").read_bytes(), [secret, token]) == []
    found = scan_tree(work, [secret, token], TreeScan())
    assert found.findings == [], found.findings
    in_lab = scan_tree(lab.state_dir, [secret, token], TreeScan())
    assert in_lab.findings == []
    assert sorted(in_lab.private_with_secret) == sorted([
        f"{lab.imap_password_file(imapd.REPORTS)} (report mailbox password)",
        f"{lab.imap_token_file(imapd.REPORTS)} (report mailbox token)",
        f"{lab.state_dir / 'oauth-tokens'} (report mailbox token)"])
    assert scan_tree(lab.mail_root, [secret, token], TreeScan()).findings == [], "nor Dovecot's files and log"
    assert os.stat(lab.imap_password_file(imapd.REPORTS)).st_mode & 0o777 == 0o600
