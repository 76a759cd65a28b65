"""The collector's parts that need no host: the causes table, the log parser, the metrics text, the judgement.

The same code runs on hosts (tests/real/test_status_lab.py runs it there against real Postfix
logs and queues, and promtool checks its metrics); here each rule is pinned with log lines in
the formats Postfix writes (maillog_file / BSD syslog, and RFC 3339 syslog).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailhost.ops import status
from mailhost.publish import mailstats

NOW = dt.datetime(2026, 11, 27, 12, 0, 0).timestamp()  # local time, as BSD syslog stamps are


def line(ts: str, rest: str) -> str:
    return f"{ts} jira postfix/{rest}\n"


def delivery(qid: str, rcpt: str, dsn: str, state: str, text: str, pid: int = 100, ts: str = "Nov 27 11:50:00") -> str:
    return line(ts, f"smtp[{pid}]: {qid}: to=<{rcpt}>, relay=mx.example.net[198.51.100.20]:25, delay=0.2, "
                    f"delays=0.1/0/0.05/0.05, dsn={dsn}, status={state} ({text})")


REPLIES = [
    ("5.0.0", "host mx said: 550-5.7.25 [2001:db8::1] The IP address sending this message does not have a PTR", "ptr"),
    ("5.7.26", "host mx said: 550 5.7.26 Unauthenticated email from example.com is not accepted", "auth"),
    ("5.7.515", "host outlook said: 550 5.7.515 Access denied, sending domain does not meet the required "
                "authentication level", "auth"),
    ("4.7.28", "host gmail said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail", "rate_limit"),
    ("4.7.0", "host yahoo said: 421 4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume",
     "rate_limit"),
    # A capped receiver's refusal at the greeting (Postfix: "refused to talk to me"), and one after EHLO
    ("4.7.0", "host mx.example.net[198.51.100.20] refused to talk to me: 421 4.7.0 Too many concurrent SMTP "
              "connections from this IP address; try again later", "connection_cap"),
    ("4.7.0", "host mx said: 421 4.7.0 too many connections from your host, try again later", "connection_cap"),
    ("4.3.2", "host mx said: 421 4.3.2 Connection limit exceeded", "connection_cap"),
    ("5.1.1", "host mx said: 550 5.1.1 <gone@example.net>: user unknown", "user_unknown"),
    ("5.2.2", "host mx said: 552 5.2.2 mailbox full", "mailbox_full"),
    ("4.7.5", "Cannot start TLS: handshake failure", "tls"),
    ("5.7.1", "host mx said: 554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", "dnsbl"),
    ("5.7.1", "host mx said: 550 5.7.1 Message rejected as spam by policy", "policy"),
    ("4.4.1", "connect to mx.example.net[198.51.100.20]:25: Connection refused", "connect"),
    ("4.4.2", "host smtp.office365.com said: 421 4.4.2 Message submission rate for this client has exceeded the "
              "configured limit (in reply to end of DATA command)", "relay_rate"),
    ("4.4.2", "lost connection with mx.example.net[198.51.100.20] while sending RCPT TO", "connect"),
    ("4.4.2", "host relay said: 421 4.4.2 closing connection", "connect"),
    ("5.0.0", "host mx said: 550 something else", "other"),
    # Postfix's own words for a delivery.tlsPolicy 'encrypt' domain without STARTTLS; a receiver saying the
    # same after its code is only a TLS reply, never our policy (the words are anchored at the start).
    ("4.7.4", "TLS is required, but was not offered by host mx2.example.net[198.51.100.3]", "tls_required"),
    ("4.7.4", "TLS is required, but our TLS engine is unavailable", "tls_required"),
    ("4.7.4", "delivery temporarily suspended: TLS is required, but was not offered by host mx2.example.net["
              "198.51.100.3]", "tls_required"),  # qmgr's words for the destination's other messages
    # Postfix's own words when a certificate is not what DANE's TLSA records (or the relay's CA or pin) vouch
    # for; a receiver's reply of the same words is a TLS reply, never ours.
    ("4.7.5", "Server certificate not verified", "cert_unverified"),
    ("4.7.5", "delivery temporarily suspended: Server certificate not verified", "cert_unverified"),
    ("4.7.5", "host mx said: 454 4.7.5 Server certificate not verified", "tls"),
    ("4.7.5", "host mx said: 454 Server certificate not verified", "tls"),
    ("4.7.0", "host mx said: 451 4.7.0 delivery temporarily suspended: TLS is required, but no", "tls"),
    ("4.7.0", "host mx said: 454 4.7.0 TLS is required, but was not offered by host x", "tls"),
    ("4.7.4", "lost connection: TLS is required, but was not offered", "tls"),
]


@pytest.mark.parametrize(("dsn", "text", "cause"), REPLIES)
def test_each_reply_gets_its_cause(dsn: str, text: str, cause: str) -> None:
    assert mailstats.classify(mailstats.best_dsn(dsn, text), text).id == cause


@pytest.mark.parametrize(("dsn", "text", "cause"), [r for r in REPLIES if not r[1].startswith("delivery temp")])
def test_qmgr_suspending_a_destination_keeps_the_failures_cause_and_code(dsn: str, text: str, cause: str) -> None:
    """The destination's other messages carry the first failure's text after qmgr's prefix: the receiver's
    enhanced code is still read at its place, and the cause is the same."""
    suspended = "delivery temporarily suspended: " + text
    assert mailstats.reply_code(suspended) == mailstats.reply_code(text)
    assert mailstats.reply_words(suspended) == mailstats.reply_words(text)
    assert mailstats.classify(mailstats.best_dsn(dsn, suspended), suspended).id == cause


def test_the_suspension_prefix_is_taken_once_and_only_at_the_start() -> None:
    twice = "delivery temporarily suspended: delivery temporarily suspended: TLS is required, but was not offered"
    assert mailstats.classify("4.7.4", twice).id == "tls"  # not Postfix's own policy words at the start
    late = "host mx said: 450 4.2.0 delivery temporarily suspended: host x said: 550 5.7.26 no"
    assert mailstats.reply_code(late) == "4.2.0"
    assert mailstats.cause("tls_required").id == "tls_required" and mailstats.cause("other") is mailstats.OTHER
    with pytest.raises(KeyError):
        mailstats.cause("nonsense")


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
    ("2026-11-27T05:29:00-05:30", dt.datetime(2026, 11, 27, 10, 59, tzinfo=dt.UTC).timestamp()),
])
def test_log_times_in_both_syslog_formats(stamp: str, expected: float) -> None:
    assert mailstats.line_time(f"{stamp} jira postfix/smtp[1]: x", NOW) == expected


def test_the_window_and_the_clock_skew_edges() -> None:
    """A line stamped exactly at the window's start counts; a BSD stamp up to 5 minutes ahead is this year's."""
    ahead = dt.datetime.fromtimestamp(NOW + 300)
    stamp = f"{ahead:%b} {ahead.day:>2} {ahead:%H:%M:%S}"
    assert mailstats.line_time(f"{stamp} jira postfix/smtp[1]: x", NOW) == NOW + 300
    edge = dt.datetime.fromtimestamp(NOW - 3600)
    lines = [delivery("Q1", "a@b.org", "2.0.0", "sent", "250 ok", ts=f"{edge:%b} {edge.day:>2} {edge:%H:%M:%S}")]
    assert [d.qid for d in mailstats.parse_log(lines, NOW - 3600, NOW)[0]] == ["Q1"]
    assert mailstats.parse_log(lines, NOW - 3599, NOW)[0] == []


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
        delivery("Q6", "late@example.net", "4.4.1", "expired", "connect to b: Connection timed out", pid=9),
    ]
    deliveries, handshakes = mailstats.parse_log(lines, NOW - 3600, NOW)
    assert [d.qid for d in deliveries] == ["Q1", "Q2", "Q2", "Q3", "Q4", "Q5", "Q6"]
    assert deliveries[-1].status == "bounced", "expired after the queue lifetime: returned to the sender"
    deliveries.pop()
    assert [d.tls for d in deliveries[:4]] == [True, True, True, False]
    assert handshakes == 1
    summary = mailstats.summarize(deliveries, handshakes)
    assert summary["deliveries"] == {"sent": 4, "deferred": 1, "bounced": 1}
    assert summary["tls"] == {"sent_over_tls": 3, "ratio": 0.75, "handshakes": 1, "messages_per_handshake": 3.0,
                              "sent_by_trust": {"verified": 0, "trusted": 3, "untrusted": 0, "anonymous": 0,
                                                "unknown": 0, "none": 1}}
    assert summary["by_domain"]["example.net"] == {"sent": 3, "deferred": 1, "bounced": 1}
    assert [c["cause"] for c in summary["causes"]] == ["user_unknown", "rate_limit"], "a tie: bounced first"
    more = mailstats.summarize([*deliveries, deliveries[-2], deliveries[-2]], handshakes)
    assert [c["cause"] for c in more["causes"]] == ["rate_limit", "user_unknown"], "the most frequent first"
    causes = {c["cause"]: c for c in summary["causes"]}
    assert causes["rate_limit"]["status"] == "deferred" and causes["rate_limit"]["code_class"] == "4.7"
    assert causes["user_unknown"]["code"] == "5.1.1" and causes["user_unknown"]["fix"]


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "jira", "collected_at": int(NOW), "window_seconds": 3600,
        "services": {"postfix": True, "opendkim": True},
        "queue": {q: 0 for q in mailstats.QUEUES} | {"oldest_age_seconds": 0, "stuck": [], "more_stuck": 0,
                                                     "problem": None, "tls_held": 0,
                                                     "tls_held_oldest_age_seconds": 0},
        "config": {"pushed": True, "files": 9, "changed": [], "missing": [], "stack_changed": [], "stack_checked": 0},
        "log": {"path": "/var/log/mail.log", "problem": None},
        "deliveries": {"sent": 10, "deferred": 0, "bounced": 0}, "by_domain": {}, "causes": [],
        "tls": {"sent_over_tls": 10, "ratio": 1.0, "handshakes": 1, "messages_per_handshake": 10.0,
                "sent_by_trust": dict.fromkeys(mailstats.TRUST_LEVELS, 0) | {"trusted": 10}},
    }
    base.update(changes)
    return base


def cause(cause_id: str, state: str, code: str) -> dict[str, Any]:
    found = mailstats.cause(cause_id)
    return {"status": state, "cause": cause_id, "code": code, "code_class": mailstats.code_class(code), "count": 2,
            "domains": ["example.net"], "example": "said: ...", "requirement": found.requirement, "fix": found.fix}


@pytest.mark.parametrize(("changes", "level"), [
    ({}, status.OK),
    ({"services": {"postfix": False, "opendkim": True}}, status.CRITICAL),
    ({"services": {"postfix": True, "opendkim": None}}, status.OK),  # OpenDKIM not ours to watch
    ({"queue": report()["queue"] | {"deferred": 3, "oldest_age_seconds": 600}}, status.WARNING),
    ({"queue": report()["queue"] | {"deferred": 3, "oldest_age_seconds": 3600}}, status.CRITICAL),
    ({"config": report()["config"] | {"changed": ["/etc/postfix/main.cf"]}}, status.WARNING),
    ({"config": report()["config"] | {"missing": ["/etc/opendkim.conf"]}}, status.WARNING),
    ({"queue": report()["queue"] | {"hold": 1}}, status.WARNING),
    ({"config": report()["config"] | {"stack_changed": ["/etc/postfix/main.cf"], "stack_checked": 6}},
     status.WARNING),
    ({"config": report()["config"] | {"pushed": False}}, status.WARNING),
    ({"log": {"path": "/var/log/mail.log", "problem": "no mail log"}}, status.WARNING),
    ({"causes": [cause("ptr", "bounced", "5.7.25")]}, status.CRITICAL),
    ({"causes": [cause("auth", "bounced", "5.7.26")]}, status.CRITICAL),
    ({"causes": [cause("rate_limit", "deferred", "4.7.28")]}, status.WARNING),
    ({"causes": [cause("policy", "deferred", "5.7.1")]}, status.WARNING),  # soft_bounce: retried, not lost
    ({"causes": [cause("policy", "bounced", "5.7.1")]}, status.CRITICAL),
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
    assert status.exit_code([]) == status.OK
    texts = [f.what for f in status.assess(report(queue=report()["queue"] | {"hold": 2},
                                                  config=report()["config"] | {"missing": ["/etc/x"]}))]
    assert "2 message(s) on hold: Postfix will not send them" in texts
    assert "drift: /etc/x was removed from the host after the last push" in texts
    removed = next(f for f in status.assess(report(config=report()["config"] | {"missing": ["/etc/x"]})))
    assert removed.fix == status.REPUSH and "pushSerial" in removed.fix


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


def fake(tmp_path: Path, name: str, stdout: str, rc: int = 0, stderr: str = "") -> list[str]:
    """A stand-in command that prints `stdout` (a Postfix tool is not what these tests judge)."""
    script = tmp_path / name
    script.write_text(f"import sys\nsys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\nsys.exit({rc})\n")
    return [sys.executable, str(script)]


def test_the_queue_is_counted_aged_and_each_waiting_recipient_has_its_cause(tmp_path: Path) -> None:
    items = [
        {"queue_name": "deferred", "queue_id": "A1", "arrival_time": int(NOW) - 7200, "recipients": [
            {"address": "x@Gmail.com", "delay_reason": "host said: 421-4.7.28 unusual rate of mail"}]},
        {"queue_name": "active", "queue_id": "B2", "arrival_time": int(NOW) - 5,
         "recipients": [{"address": "y@a.org"}]},
        {"queue_name": "hold", "queue_id": "C3", "arrival_time": int(NOW) - 60, "recipients": []},
    ]
    items.append({"queue_name": "corrupt", "queue_id": "D4", "arrival_time": int(NOW), "recipients": []})
    lines = "\n".join(json.dumps(i) for i in items) + "\nnot json\n"
    queue = mailstats.read_queue(NOW, fake(tmp_path, "postqueue", lines))
    assert (queue["deferred"], queue["active"], queue["hold"], queue["incoming"]) == (1, 1, 1, 0)
    assert "corrupt" not in queue and queue["unreadable"] == 2, "a queue Postfix does not list is no new key"
    assert queue["oldest_age_seconds"] == 7200 and queue["problem"] is None
    assert queue["stuck"][0] == {"queue_id": "A1", "queue": "deferred", "age_seconds": 7200, "domain": "gmail.com",
                                 "cause": "rate_limit", "reason": "host said: 421-4.7.28 unusual rate of mail"}
    assert queue["stuck"][1]["cause"] == "waiting" and queue["more_stuck"] == 0
    broken = mailstats.read_queue(NOW, fake(tmp_path, "down", "", 1, "postqueue: fatal: Queue report unavailable"))
    assert broken["problem"] == "postqueue: fatal: Queue report unavailable" and broken["oldest_age_seconds"] == 0
    assert (queue["tls_held"], queue["tls_held_oldest_age_seconds"]) == (0, 0), "a rate limit is not a TLS hold"
    missing = mailstats.read_queue(NOW, ["/nonexistent/postqueue"])
    assert missing["problem"] and missing["stuck"] == [] and missing["more_stuck"] == 0
    assert (missing["tls_held"], missing["tls_held_oldest_age_seconds"], missing["unreadable"]) == (0, 0, 0)
    assert set(missing) == set(mailstats.read_queue(NOW, fake(tmp_path, "idle", ""))), "same keys, ran or not"


def test_many_waiting_recipients_are_listed_up_to_a_limit(tmp_path: Path) -> None:
    items = [{"queue_name": "deferred", "queue_id": f"Q{i}", "arrival_time": int(NOW) - i,
              "recipients": [{"address": f"u{i}@b.org", "delay_reason": "connect to b.org: Connection refused"}]}
             for i in range(mailstats.STUCK_SHOWN + 3)]
    queue = mailstats.read_queue(NOW, fake(tmp_path, "pq", "\n".join(json.dumps(i) for i in items)))
    assert len(queue["stuck"]) == mailstats.STUCK_SHOWN and queue["more_stuck"] == 3
    assert queue["stuck"][0]["queue_id"] == f"Q{mailstats.STUCK_SHOWN + 2}", "oldest first"
    assert {s["cause"] for s in queue["stuck"]} == {"connect"}


def test_postconf_values_and_their_absence(tmp_path: Path) -> None:
    assert mailstats._postconf_value("maillog_file", fake(tmp_path, "pc", "/var/log/postfix.log\n")) == \
        "/var/log/postfix.log"
    assert mailstats._postconf_value("maillog_file", fake(tmp_path, "empty", "\n")) is None
    assert mailstats._postconf_value("x", fake(tmp_path, "bad", "junk\n", 1)) is None
    assert mailstats._postconf_value("x", ["/nonexistent/postconf"]) is None
    # Postfix is asked for the one parameter's value alone (-h: no "name = " in front)
    strict = tmp_path / "strict.py"
    strict.write_text("import sys\nok = sys.argv[1:] == ['-h', 'maillog_file']\n"
                      "sys.stdout.write('/var/log/p.log\\n' if ok else 'maillog_file = /wrong\\n')\n")
    assert mailstats._postconf_value("maillog_file", [sys.executable, str(strict)]) == "/var/log/p.log"


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0 s"), (119.9, "119 s"), (120, "2 min"), (7199, "119 min"),
                                                (7200, "2.0 h"), (16200, "4.5 h")])
def test_ages_are_shown_in_the_unit_that_reads_best(seconds: float, shown: str) -> None:
    assert status._age(seconds) == shown


def test_main_reads_the_manifest_checks_drift_and_writes_both_outputs(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    live = tmp_path / "main.cf"
    live.write_text("myhostname = jira.example.com\n")
    digest = hashlib.sha256(live.read_bytes()).hexdigest()
    owner = mailstats._owner(str(live)).split()
    (tmp_path / mailstats.MANIFEST).write_text(f"{live} {owner[0]} {owner[1]} {owner[2]} 0 {digest}\n")
    log = tmp_path / "mail.log"
    log.write_text("")
    prom = tmp_path / "m.prom"
    assert mailstats.main(["--state", str(tmp_path), "--log", str(log), "--textfile", str(prom), "--json",
                           "--expect", f"{live}={'0' * 64}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == {"pushed": True, "files": 1, "changed": [], "missing": [],
                                "stack_changed": [str(live)], "stack_checked": 1}
    assert report["log"] == {"path": str(log), "problem": None, "skipped_lines": 0, "forged_lines": 0}
    assert report["window_seconds"] == 24 * 3600
    assert "jira_mailhost_config_digest_match 1" in prom.read_text()
    live.write_text("myhostname = edited\n")
    assert mailstats.main(["--state", str(tmp_path), "--log", str(tmp_path / "none.log"), "--hours", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["changed"] == [str(live)] and report["window_seconds"] == 7200
    assert "no mail log at" in report["log"]["problem"] and "maillogFile" in report["log"]["problem"]
    live.unlink()
    assert mailstats.main(["--state", str(tmp_path), "--log", str(log)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["missing"] == [str(live)]


@pytest.mark.parametrize("bad", ["main.cf=" + "0" * 64, "/etc/x=abc", "/etc/x"])
def test_expect_wants_an_absolute_path_and_a_sha256(bad: str) -> None:
    with pytest.raises(SystemExit, match="--expect wants PATH=SHA256"):
        mailstats.main(["--expect", bad])


def test_summary_lines_say_what_mail_does() -> None:
    lines = status.summary_lines("jira", report(
        queue=report()["queue"] | {"active": 3, "deferred": 2, "oldest_age_seconds": 5400, "stuck": [
            {"queue_id": "A1", "queue": "deferred", "age_seconds": 5400, "domain": "gmail.com", "cause": "rate_limit",
             "reason": "421 4.7.28 rate"}]},
        config=report()["config"] | {"stack_checked": 6, "stack_changed": ["/etc/postfix/main.cf"]},
        services={"postfix": True, "opendkim": False}))
    assert lines == [
        "jira (jira): opendkim STOPPED, postfix running",
        "  queue: 3 active, 2 deferred, 0 hold; oldest 90 min",
        "  config: as pushed (9 files); 1 of 6 differ from the stack",
        "  last 1 h: 10 sent, 0 deferred, 0 bounced",
        "  TLS: 100 % of sent mail, 10 messages per TLS handshake (10 trusted)",
        "  queued A1 to gmail.com for 90 min: 421 4.7.28 rate",
    ]
    drifted = status.summary_lines("j", report(config=report()["config"] | {"changed": ["/a"], "missing": ["/b"]},
                                              tls={"ratio": None, "messages_per_handshake": None}))
    assert drifted[2] == "  config: 2 file(s) changed since the last push" and len(drifted) == 4
    assert status.summary_lines("j", report(config=report()["config"] | {"pushed": False}))[2] == "  config: not pushed"
    mixed = report(tls=report()["tls"] | {"ratio": 0.75, "messages_per_handshake": None, "sent_by_trust": dict.fromkeys(
        mailstats.TRUST_LEVELS, 0) | {"verified": 2, "anonymous": 1, "none": 1}})
    assert status.summary_lines("j", mixed)[4] == "  TLS: 75 % of sent mail (2 verified, 1 anonymous, 1 in clear)"


METRICS_GOLDEN = """\
# HELP jira_mailhost_up 1 when the daemon runs, 0 when it does not (only daemons the push manages).
# TYPE jira_mailhost_up gauge
jira_mailhost_up{service="opendkim"} 0
jira_mailhost_up{service="postfix"} 1
# HELP jira_mailhost_queue_messages Messages in each Postfix queue.
# TYPE jira_mailhost_queue_messages gauge
jira_mailhost_queue_messages{queue="active"} 0
jira_mailhost_queue_messages{queue="deferred"} 4
jira_mailhost_queue_messages{queue="hold"} 0
jira_mailhost_queue_messages{queue="incoming"} 0
jira_mailhost_queue_messages{queue="maildrop"} 0
# HELP jira_mailhost_queue_oldest_age_seconds Age of the oldest queued message, 0 when the queue is empty.
# TYPE jira_mailhost_queue_oldest_age_seconds gauge
jira_mailhost_queue_oldest_age_seconds 4000
# HELP jira_mailhost_queue_tls_held_messages Queued messages waiting because their domain requires TLS and got none.
# TYPE jira_mailhost_queue_tls_held_messages gauge
jira_mailhost_queue_tls_held_messages 3
# HELP jira_mailhost_queue_tls_held_oldest_age_seconds Age of the oldest message waiting for TLS, 0 when none does.
# TYPE jira_mailhost_queue_tls_held_oldest_age_seconds gauge
jira_mailhost_queue_tls_held_oldest_age_seconds 3900
# HELP jira_mailhost_recent_deliveries Delivery attempts logged in the last window, by status and cause.
# TYPE jira_mailhost_recent_deliveries gauge
jira_mailhost_recent_deliveries{status="sent",cause="ok",code_class="2.0"} 10
jira_mailhost_recent_deliveries{status="bounced",cause="auth",code_class="5.7"} 4
jira_mailhost_recent_deliveries{status="deferred",cause="rate_limit",code_class="4.7"} 2
# HELP jira_mailhost_recent_window_seconds Length of the window the recent_* metrics count.
# TYPE jira_mailhost_recent_window_seconds gauge
jira_mailhost_recent_window_seconds 3600
# HELP jira_mailhost_log_readable 1 when the mail log was read, 0 when there is none (recent_* are then empty).
# TYPE jira_mailhost_log_readable gauge
jira_mailhost_log_readable 1
# HELP jira_mailhost_tls_delivery_ratio Share of sent deliveries that went over TLS in the window.
# TYPE jira_mailhost_tls_delivery_ratio gauge
jira_mailhost_tls_delivery_ratio 0.75
# HELP jira_mailhost_tls_messages_per_handshake Messages sent per TLS handshake in the window (connection reuse).
# TYPE jira_mailhost_tls_messages_per_handshake gauge
jira_mailhost_tls_messages_per_handshake 2.5
# HELP jira_mailhost_recent_sent_by_tls_trust Sent deliveries in the window by TLS trust (none: in clear).
# TYPE jira_mailhost_recent_sent_by_tls_trust gauge
jira_mailhost_recent_sent_by_tls_trust{trust="verified"} 1
jira_mailhost_recent_sent_by_tls_trust{trust="trusted"} 3
jira_mailhost_recent_sent_by_tls_trust{trust="untrusted"} 0
jira_mailhost_recent_sent_by_tls_trust{trust="anonymous"} 1
jira_mailhost_recent_sent_by_tls_trust{trust="unknown"} 0
jira_mailhost_recent_sent_by_tls_trust{trust="none"} 2
# HELP jira_mailhost_config_digest_match 1 when every file the last push installed is unchanged, 0 on drift.
# TYPE jira_mailhost_config_digest_match gauge
jira_mailhost_config_digest_match 1
# HELP jira_mailhost_config_files_changed Files changed or missing since the last push.
# TYPE jira_mailhost_config_files_changed gauge
jira_mailhost_config_files_changed 0
# HELP jira_mailhost_collector_last_run_timestamp_seconds When this file was written (Unix time).
# TYPE jira_mailhost_collector_last_run_timestamp_seconds gauge
jira_mailhost_collector_last_run_timestamp_seconds 1800000000
"""


def test_the_metrics_file_exactly() -> None:
    """Names, HELP texts, label order, value formatting: what node_exporter serves and the rules query."""
    two = [cause("auth", "bounced", "5.7.26"), cause("auth", "bounced", "5.7.26"),
           cause("rate_limit", "deferred", "4.7.28")]
    text = mailstats.metrics(report(
        services={"postfix": True, "opendkim": False, "other": None}, collected_at=1_800_000_000,
        queue=report()["queue"] | {"deferred": 4, "oldest_age_seconds": 4000, "tls_held": 3,
                                   "tls_held_oldest_age_seconds": 3900}, causes=two,
        tls={"sent_over_tls": 5, "ratio": 0.75, "handshakes": 2, "messages_per_handshake": 2.5,
             "sent_by_trust": {"verified": 1, "trusted": 3, "untrusted": 0, "anonymous": 1, "unknown": 0,
                               "none": 2}}))
    assert text == METRICS_GOLDEN


def test_metrics_of_an_idle_host_without_log_or_push() -> None:
    text = mailstats.metrics(report(log={"path": "/x", "problem": "no mail log"}, config=report()["config"] | {
        "pushed": False}, deliveries={"sent": 0, "deferred": 0, "bounced": 0},
        tls={"sent_over_tls": 0, "ratio": None, "handshakes": 0, "messages_per_handshake": None,
             "sent_by_trust": dict.fromkeys(mailstats.TRUST_LEVELS, 0)}))
    samples = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if not ln.startswith("#"))
    assert samples["jira_mailhost_log_readable"] == "0"
    assert samples["jira_mailhost_config_digest_match"] == "0", "never pushed is not a match"
    assert samples["jira_mailhost_tls_delivery_ratio"] == "1", "nothing sent: no plaintext delivery either"
    assert samples["jira_mailhost_tls_messages_per_handshake"] == "0"


def test_label_values_are_escaped() -> None:
    assert mailstats._labels(a='x"y\\z\nw') == '{a="x\\"y\\\\z\\nw"}'
    assert mailstats._labels() == ""


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "jira_mailhost.prom"
    mailstats.write_atomic(str(target), "a 1\n")
    mailstats.write_atomic(str(target), "a 2\n")
    assert target.read_text() == "a 2\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["jira_mailhost.prom"]
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):  # the target is a directory: the rename fails, the temp file goes
        mailstats.write_atomic(str(tmp_path / "dir"), "a 3\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "dir"]


def test_services_watch_opendkim_only_where_the_push_manages_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "opendkim.conf"
    pidfile = tmp_path / "odk.pid"
    conf.write_text(f"Syslog yes\nPidFile {tmp_path / 'old.pid'}\nPidFile {pidfile}\n")
    pidfile.write_text(f"{os.getpid()}\n")
    assert mailstats._conf_value(str(conf), "PidFile") == str(pidfile), "the last line wins, as in opendkim"
    assert mailstats._conf_value(str(conf), "UserID") is None
    spaced = tmp_path / "spaced.conf"
    spaced.write_text("PidFile   /run/open dkim/odk.pid  \n")
    assert mailstats._conf_value(str(spaced), "PidFile") == "/run/open dkim/odk.pid", "the value is the line's rest"
    assert mailstats._conf_value(str(tmp_path / "none"), "PidFile") is None
    monkeypatch.setattr(mailstats, "OPENDKIM_CONF", str(conf))
    monkeypatch.setattr(mailstats, "_postconf_value",
                        lambda name: str(tmp_path / "spool") if name == "queue_directory" else None)
    (tmp_path / "spool" / "pid").mkdir(parents=True)
    (tmp_path / "spool" / "pid" / "master.pid").write_text(f"{os.getpid()}\n")  # found in Postfix's queue_directory
    assert mailstats.services([str(conf), "/etc/postfix/main.cf"]) == {"postfix": True, "opendkim": True}
    (tmp_path / "spool" / "pid" / "master.pid").write_text("999999999\n")
    assert mailstats.services(["/etc/postfix/main.cf"]) == {"postfix": False, "opendkim": None}
    pidfile.write_text("not a pid\n")
    assert mailstats.services([])["opendkim"] is False


def test_the_log_is_postfixs_maillog_file_unless_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "postfix.log"
    log.write_text("")
    monkeypatch.setattr(mailstats, "_postconf_value", lambda name: str(log) if name == "maillog_file" else None)
    real_read_queue = mailstats.read_queue
    monkeypatch.setattr(mailstats, "read_queue", lambda now: real_read_queue(now, ["/nonexistent/postqueue"]))
    assert mailstats.collect(1, None, {}, state=str(tmp_path))["log"] == {"path": str(log), "problem": None,
                                                                         "skipped_lines": 0, "forged_lines": 0}
    assert mailstats.collect(1, str(tmp_path / "x.log"), {}, state=str(tmp_path))["log"]["path"] == \
        str(tmp_path / "x.log")


def test_the_collectors_options_say_what_they_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mailstats.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("window of the mail log to read", "PATH=SHA256 the stack would push", "print the report as JSON",
                  "write node_exporter textfile metrics here (atomically)", "else /var/log/mail.log"):
        assert words in text


def test_the_smaller_messages_and_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each text a user reads in a finding, and the edges of option parsing and counting."""
    assert mailstats._expected([f"/etc/a=b={'0' * 64}"]) == {"/etc/a=b": "0" * 64}, "the digest is after the last ="
    silent = mailstats.read_queue(NOW, fake(tmp_path, "silent", "", 1))
    assert silent["problem"] == "postqueue failed"
    both = report(config=report()["config"] | {"changed": ["/a"], "missing": ["/b"]})
    assert "jira_mailhost_config_files_changed 2" in mailstats.metrics(both)
    found = status.assess(report(queue=report()["queue"] | {"problem": "postqueue: fatal: no spool"},
                                 log={"path": "/x", "problem": "no mail log at /x"}))
    assert [(f.what, f.fix) for f in found] == [
        ("the queue could not be read: postqueue: fatal: no spool", "check that Postfix is installed and running"),
        ("no mail log at /x", "set maillogFile in the stack and run `pulumi up`")]
    with pytest.raises(ValueError, match="the host printed no report"):
        status.parse_report("sudo: something\n")
    with pytest.raises(ValueError, match="the host's report has no queue"):
        status.parse_report('{"host": "x"}\n')
    assert status.parse_report('noise\n{"queue": {}}\n') == {"queue": {}}
    with pytest.raises(SystemExit):
        mailstats.main(["--help"])
    assert "What happens to a host's outgoing mail" in capsys.readouterr().out


def test_a_waiting_recipients_domain_is_cut_at_the_longest_a_domain_can_be(tmp_path: Path) -> None:
    long_domain = ("a" * 60 + ".") * 5 + "org"  # 308 characters: no real domain, written by whoever submitted it
    item = {"queue_name": "deferred", "queue_id": "L1", "arrival_time": int(NOW) - 60,
            "recipients": [{"address": f"x@{long_domain}", "delay_reason": "connect to a.org: Connection refused"}]}
    [stuck] = mailstats.read_queue(NOW, fake(tmp_path, "postqueue", json.dumps(item) + "\n"))["stuck"]
    assert stuck["domain"] == long_domain[:253]


def test_a_host_without_a_push_is_told_to_run_one() -> None:
    data = report()
    data["config"] = {"pushed": False, "files": 0, "changed": [], "missing": [], "stack_changed": [],
                      "stack_checked": 0}
    [finding] = [f for f in status.assess(data) if "no push" in f.what]
    assert (finding.level, finding.what, finding.fix) == (
        status.WARNING, "no push of jira-mailhost is recorded on this host", "run `pulumi up` for this stack")


def test_each_domain_has_all_three_counts_zero_included() -> None:
    sent = mailstats.Delivery(NOW - 60, "Q1", "a.org", "sent", "2.0.0", "250 ok", True)
    bounced = mailstats.Delivery(NOW - 50, "Q2", "b.org", "bounced", "5.1.1", "550 5.1.1 no such user", True)
    summary = mailstats.summarize([sent, bounced, sent], 1)
    assert summary["by_domain"] == {"a.org": {"sent": 2, "deferred": 0, "bounced": 0},
                                    "b.org": {"sent": 0, "deferred": 0, "bounced": 1}}
    assert summary["deliveries"] == {"sent": 2, "deferred": 0, "bounced": 1}


def test_a_file_the_stack_would_push_differently_is_not_live_yet_with_the_up_as_its_fix() -> None:
    """The live file is as pushed, but the stack says otherwise now: the push has not run yet."""
    findings = status.assess(report(config=report()["config"] | {"stack_checked": 6,
                                                                  "stack_changed": ["/etc/postfix/main.cf"]}))
    assert [(f.level, f.what, f.fix) for f in findings] == [
        (status.WARNING, "not live yet: the stack would push a different /etc/postfix/main.cf",
         "run `pulumi up` for this stack")]
    hand_edit = status.assess(report(config=report()["config"] | {"changed": ["/etc/postfix/main.cf"],
                                                                   "stack_changed": ["/etc/postfix/main.cf"]}))
    assert not any(f.what.startswith("not live yet") for f in hand_edit), "a hand edit is drift, said once"
    unchecked = {k: v for k, v in report()["config"].items() if k != "stack_changed"}
    assert status.assess(report(config=unchecked)) == [], "no stack to compare with: nothing is 'not live yet'"


def test_each_sent_delivery_carries_the_trust_of_its_own_session() -> None:
    """Per smtp process: the trust word of the TLS line before the delivery, kept for the same message's other
    recipients, and never lent to the next message of that process when it went in clear."""
    lines = [
        line("Nov 27 11:50:00", "smtp[7]: Verified TLS connection established to mx.a.example[198.51.100.20]:25: "
                                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        delivery("V1", "a@a.example", "2.0.0", "sent", "250 ok", pid=7),
        delivery("V1", "b@a.example", "2.0.0", "sent", "250 ok", pid=7),
        delivery("P1", "c@a.example", "2.0.0", "sent", "250 ok", pid=7),  # its next message, no TLS line: clear
        delivery("V1", "g@a.example", "2.0.0", "sent", "250 ok", pid=7),  # V1 again after P1, still no TLS line
        line("Nov 27 11:50:02", "smtp[8]: Anonymous TLS connection established to mx.b.example[198.51.100.21]:25: "
                                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        delivery("A1", "d@b.example", "2.0.0", "sent", "250 ok", pid=8),
        line("Nov 27 11:50:03", "smtp[9]: Untrusted TLS connection established to mx.c.example[198.51.100.22]:25: "
                                "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"),
        delivery("U1", "e@c.example", "4.7.0", "deferred", "host said: 451 4.7.0 try later", pid=9),
        line("Nov 27 11:50:04", "smtp[10]: TLS connection established to mx.d.example[198.51.100.23]:25: TLSv1.3"),
        delivery("K1", "f@d.example", "2.0.0", "sent", "250 ok", pid=10),
    ]
    deliveries, _ = mailstats.parse_log(lines, NOW - 3600, NOW)
    assert [(d.qid, d.trust, d.tls) for d in deliveries] == [
        ("V1", "verified", True), ("V1", "verified", True), ("P1", "none", False), ("V1", "none", False),
        ("A1", "anonymous", True),
        ("U1", "untrusted", True), ("K1", "unknown", True)]
    by_trust = mailstats.summarize(deliveries, 4)["tls"]["sent_by_trust"]
    assert by_trust == {"verified": 2, "trusted": 0, "untrusted": 0, "anonymous": 1, "unknown": 1, "none": 2}, \
        "sent deliveries only"


def test_status_names_mail_held_for_tls_with_the_count_the_age_and_the_fix() -> None:
    held = report(queue=report()["queue"] | {"deferred": 3, "tls_held": 3, "tls_held_oldest_age_seconds": 1800})
    [finding] = [f for f in status.assess(held) if "requires TLS" in f.what]
    assert finding.level == status.WARNING
    assert finding.what == ("3 message(s) wait because their domain requires TLS (delivery.tlsPolicy: encrypt) and "
                            "its MX offered none; the oldest for 30 min. Nothing was sent in clear")
    assert finding.fix == mailstats.cause("tls_required").fix
    assert not [f for f in status.assess(report()) if "requires TLS" in f.what]


def test_messages_held_for_a_tls_policy_are_counted_with_the_oldest_age(tmp_path: Path) -> None:
    """The alert 'held for TLS over an hour' reads these: each message once, however many of its recipients
    wait, and only for Postfix's own 'TLS is required' (a receiver's TLS complaint is another cause)."""
    tls = "TLS is required, but was not offered by host mx2.example.net[198.51.100.3]"
    items = [
        {"queue_name": "deferred", "queue_id": "A1", "arrival_time": int(NOW) - 5400, "recipients": [
            {"address": "a@partner.example", "delay_reason": tls}, {"address": "b@partner.example",
                                                                     "delay_reason": tls}]},
        {"queue_name": "deferred", "queue_id": "B2", "arrival_time": int(NOW) - 600, "recipients": [
            {"address": "c@partner.example", "delay_reason": "delivery temporarily suspended: " + tls}]},
        {"queue_name": "deferred", "queue_id": "C3", "arrival_time": int(NOW) - 9000, "recipients": [
            {"address": "d@other.example", "delay_reason": "host mx said: 454 4.7.0 TLS not available"}]},
    ]
    queue = mailstats.read_queue(NOW, fake(tmp_path, "postqueue", "\n".join(json.dumps(i) for i in items) + "\n"))
    assert (queue["tls_held"], queue["tls_held_oldest_age_seconds"], queue["oldest_age_seconds"]) == (2, 5400, 9000)
    text = mailstats.metrics(report(queue=report()["queue"] | {"tls_held": 2, "tls_held_oldest_age_seconds": 5400}))
    assert "jira_mailhost_queue_tls_held_messages 2\n" in text
    assert "jira_mailhost_queue_tls_held_oldest_age_seconds 5400\n" in text


def test_the_collectors_help_says_what_each_option_takes(capsys: pytest.CaptureFixture[str]) -> None:
    """An admin on the host runs `python3 mailstats.py --help`: each option with its own words, exactly."""
    with pytest.raises(SystemExit):
        mailstats.main(["--help"])
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    for option in ("--hours HOURS window of the mail log to read",
                   "--expect EXPECT PATH=SHA256 the stack would push",
                   "--json print the report as JSON",
                   "--textfile TEXTFILE write node_exporter textfile metrics here (atomically)"):
        assert option in lines, lines
