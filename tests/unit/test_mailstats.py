"""The collector's parts that need no host: the causes table, the log parser, the metrics text, the judgement.

The same code runs on hosts (tests/real/test_status_lab.py runs it there against real Postfix
logs and queues, and promtool checks its metrics); here each rule is pinned with log lines in
the formats Postfix writes (maillog_file / BSD syslog, and RFC 3339 syslog).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailhost import mailstats, status

NOW = dt.datetime(2026, 11, 27, 12, 0, 0).timestamp()  # local time, as BSD syslog stamps are


def line(ts: str, rest: str) -> str:
    return f"{ts} jira postfix/{rest}\n"


def delivery(qid: str, rcpt: str, dsn: str, state: str, text: str, pid: int = 100, ts: str = "Nov 27 11:50:00") -> str:
    return line(ts, f"smtp[{pid}]: {qid}: to=<{rcpt}>, relay=mx.example.net[198.51.100.20]:25, delay=0.2, "
                    f"delays=0.1/0/0.05/0.05, dsn={dsn}, status={state} ({text})")


@pytest.mark.parametrize(("dsn", "text", "cause"), [
    ("5.0.0", "host mx said: 550-5.7.25 [2001:db8::1] The IP address sending this message does not have a PTR", "ptr"),
    ("5.7.26", "host mx said: 550 5.7.26 Unauthenticated email from example.com is not accepted", "auth"),
    ("5.7.515", "host outlook said: 550 5.7.515 Access denied, sending domain does not meet the required "
                "authentication level", "auth"),
    ("4.7.28", "host gmail said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail", "rate_limit"),
    ("4.7.0", "host yahoo said: 421 4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume",
     "rate_limit"),
    ("5.1.1", "host mx said: 550 5.1.1 <gone@example.net>: user unknown", "user_unknown"),
    ("5.2.2", "host mx said: 552 5.2.2 mailbox full", "mailbox_full"),
    ("4.7.5", "Cannot start TLS: handshake failure", "tls"),
    ("5.7.1", "host mx said: 554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", "dnsbl"),
    ("5.7.1", "host mx said: 550 5.7.1 Message rejected as spam by policy", "policy"),
    ("4.4.1", "connect to mx.example.net[198.51.100.20]:25: Connection refused", "connect"),
    ("5.0.0", "host mx said: 550 something else", "other"),
])
def test_each_reply_gets_its_cause(dsn: str, text: str, cause: str) -> None:
    assert mailstats.classify(mailstats.best_dsn(dsn, text), text).id == cause


def test_every_cause_has_a_requirement_and_a_fix_and_unique_codes() -> None:
    seen: set[str] = set()
    for cause in mailstats.CAUSES:
        assert cause.requirement and cause.fix, cause.id
        assert not seen.intersection(cause.codes), f"{cause.id} repeats a code"
        seen.update(cause.codes)


def test_the_receivers_code_wins_over_postfixs_generic_dsn() -> None:
    text = "host mx said: 550-5.7.26 This mail is unauthenticated (in reply to end of DATA command)"
    assert mailstats.best_dsn("5.0.0", text) == "5.7.26"
    assert mailstats.best_dsn("4.4.1", "connect to mx: Connection refused") == "4.4.1"
    assert mailstats.code_class("5.7.26") == "5.7" and mailstats.code_class("") == "none"


@pytest.mark.parametrize(("stamp", "expected"), [
    ("Nov 27 11:59:00", NOW - 60),
    ("Nov 27 11:59:00.123456", NOW - 60),
    ("2026-11-27T10:59:00.123+00:00", dt.datetime(2026, 11, 27, 10, 59, tzinfo=dt.UTC).timestamp()),
    ("2026-11-27T10:59:00Z", dt.datetime(2026, 11, 27, 10, 59, tzinfo=dt.UTC).timestamp()),
    ("2026-11-27T12:59:00+0200", dt.datetime(2026, 11, 27, 10, 59, tzinfo=dt.UTC).timestamp()),
])
def test_log_times_in_both_syslog_formats(stamp: str, expected: float) -> None:
    assert mailstats.line_time(f"{stamp} jira postfix/smtp[1]: x", NOW) == pytest.approx(expected)


def test_a_december_line_read_in_january_is_last_year() -> None:
    january = dt.datetime(2027, 1, 1, 0, 5).timestamp()
    when = mailstats.line_time("Dec 31 23:59:00 jira postfix/smtp[1]: x", january)
    assert when == dt.datetime(2026, 12, 31, 23, 59).timestamp()
    assert mailstats.line_time("garbage", NOW) is None


def test_parse_log_counts_window_tls_and_reuse() -> None:
    lines = [
        delivery("OLD1", "a@example.net", "2.0.0", "sent", "250 ok", ts="Nov 26 09:00:00"),  # before the window
        line("Nov 27 11:50:00", "smtp[7]: Trusted TLS connection established to mx.example.net[198.51.100.20]:25: "
                                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        delivery("Q1", "a@example.net", "2.0.0", "sent", "250 2.0.0 OK", pid=7),
        line("Nov 27 11:50:01", "smtp[7]: Trusted TLS connection reused to mx.example.net[198.51.100.20]:25: "
                                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        delivery("Q2", "b@example.net", "2.0.0", "sent", "250 2.0.0 OK", pid=7),
        delivery("Q2", "c@example.net", "2.0.0", "sent", "250 2.0.0 OK", pid=7),  # second recipient, same session
        delivery("Q3", "d@plain.example", "2.0.0", "sent", "250 OK", pid=8),  # no TLS line: plaintext
        delivery("Q4", "e@example.net", "4.7.28", "deferred", "host said: 421 4.7.28 rate limited", pid=9),
        delivery("Q5", "gone@example.net", "5.1.1", "bounced", "host said: 550 5.1.1 user unknown", pid=9),
    ]
    deliveries, handshakes = mailstats.parse_log(lines, NOW - 3600, NOW)
    assert [d.qid for d in deliveries] == ["Q1", "Q2", "Q2", "Q3", "Q4", "Q5"]
    assert [d.tls for d in deliveries[:4]] == [True, True, True, False]
    assert handshakes == 1
    summary = mailstats.summarize(deliveries, handshakes)
    assert summary["deliveries"] == {"sent": 4, "deferred": 1, "bounced": 1}
    assert summary["tls"] == {"sent_over_tls": 3, "ratio": 0.75, "handshakes": 1, "messages_per_handshake": 3.0}
    assert summary["by_domain"]["example.net"] == {"sent": 3, "deferred": 1, "bounced": 1}
    causes = {c["cause"]: c for c in summary["causes"]}
    assert causes["rate_limit"]["status"] == "deferred" and causes["rate_limit"]["code_class"] == "4.7"
    assert causes["user_unknown"]["code"] == "5.1.1" and causes["user_unknown"]["fix"]


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "jira", "collected_at": int(NOW), "window_seconds": 3600,
        "services": {"postfix": True, "opendkim": True},
        "queue": {q: 0 for q in mailstats.QUEUES} | {"oldest_age_seconds": 0, "stuck": [], "more_stuck": 0,
                                                     "problem": None},
        "config": {"pushed": True, "files": 9, "changed": [], "missing": [], "stack_changed": [], "stack_checked": 0},
        "log": {"path": "/var/log/mail.log", "problem": None},
        "deliveries": {"sent": 10, "deferred": 0, "bounced": 0}, "by_domain": {}, "causes": [],
        "tls": {"sent_over_tls": 10, "ratio": 1.0, "handshakes": 1, "messages_per_handshake": 10.0},
    }
    base.update(changes)
    return base


def cause(cause_id: str, state: str, code: str) -> dict[str, Any]:
    found = next(c for c in mailstats.CAUSES if c.id == cause_id)
    return {"status": state, "cause": cause_id, "code": code, "code_class": mailstats.code_class(code), "count": 2,
            "domains": ["example.net"], "example": "said: ...", "requirement": found.requirement, "fix": found.fix}


@pytest.mark.parametrize(("changes", "level"), [
    ({}, status.OK),
    ({"services": {"postfix": False, "opendkim": True}}, status.CRITICAL),
    ({"services": {"postfix": True, "opendkim": None}}, status.OK),  # OpenDKIM not ours to watch
    ({"queue": report()["queue"] | {"deferred": 3, "oldest_age_seconds": 600}}, status.WARNING),
    ({"queue": report()["queue"] | {"deferred": 3, "oldest_age_seconds": 3600}}, status.CRITICAL),
    ({"config": report()["config"] | {"changed": ["/etc/postfix/main.cf"]}}, status.WARNING),
    ({"config": report()["config"] | {"stack_changed": ["/etc/postfix/main.cf"], "stack_checked": 6}},
     status.WARNING),
    ({"config": report()["config"] | {"pushed": False}}, status.WARNING),
    ({"log": {"path": "/var/log/mail.log", "problem": "no mail log"}}, status.WARNING),
    ({"causes": [cause("ptr", "bounced", "5.7.25")]}, status.CRITICAL),
    ({"causes": [cause("auth", "bounced", "5.7.26")]}, status.CRITICAL),
    ({"causes": [cause("rate_limit", "deferred", "4.7.28")]}, status.WARNING),
    ({"causes": [cause("user_unknown", "bounced", "5.1.1")]}, status.WARNING),
])
def test_levels(changes: dict[str, Any], level: int) -> None:
    assert status.level_of(status.assess(report(**changes))) == level


def test_findings_name_the_file_and_the_fix() -> None:
    found = status.assess(report(config=report()["config"] | {"changed": ["/etc/postfix/main.cf"]},
                                 causes=[cause("ptr", "bounced", "5.7.25")]))
    assert found[0].level == status.CRITICAL and "5.7.25" in found[0].what and "inet_protocols" in found[0].fix
    assert any("/etc/postfix/main.cf" in f.what and "pulumi up" in f.fix for f in found)
    assert status.exit_code([status.OK, status.UNREACHABLE, status.WARNING]) == status.UNREACHABLE


def test_metrics_text_follows_the_exposition_format() -> None:
    text = mailstats.metrics(report(causes=[cause("auth", "bounced", "5.7.26")],
                                    config=report()["config"] | {"changed": ["/etc/postfix/main.cf"]}))
    samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if not ln.startswith("#")}
    assert samples['jira_mailhost_recent_deliveries{status="bounced",cause="auth",code_class="5.7"}'] == 2
    assert samples['jira_mailhost_recent_deliveries{status="sent",cause="ok",code_class="2.0"}'] == 10
    assert samples["jira_mailhost_config_digest_match"] == 0
    assert samples["jira_mailhost_config_files_changed"] == 1
    assert samples['jira_mailhost_up{service="postfix"}'] == 1
    families = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(families) == len(set(families)) and all(f.startswith("jira_mailhost_") for f in families)


def test_the_collector_runs_alone_with_only_the_standard_library(tmp_path: Path) -> None:
    """As on a host: `python3 FILE`, no mailhost package, no third-party module; the state dir is empty."""
    log = tmp_path / "mail.log"
    stamp = dt.datetime.now()
    log.write_text(delivery("Q1", "a@example.net", "2.0.0", "sent", "250 OK",
                            ts=f"{stamp:%b} {stamp.day:>2} {stamp:%H:%M:%S}"))
    prom = tmp_path / "out" / "jira_mailhost.prom"
    done = subprocess.run([sys.executable, "-I", "-S", mailstats.__file__, "--log", str(log), "--state",
                           str(tmp_path), "--hours", "1", "--textfile", str(prom), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["deliveries"]["sent"] == 1 and data["config"]["pushed"] is False
    assert "jira_mailhost_collector_last_run_timestamp_seconds" in prom.read_text()
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
