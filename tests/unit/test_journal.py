"""The collector's journal reader (mailstats.read_journal): hosts with no syslog daemon writing a mail log.

Entries are journald's JSON export as `journalctl -o json` prints it; the real journald and journalctl run in
tests/real/test_status_lab.py. Every field is hostile: any local user can log as "postfix/smtp"."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from mailhost.ops import status
from mailhost.publish import mailstats
from tests.unit.test_mailstats import fake

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.UTC).timestamp()
TRUSTED = frozenset({"0", "107"})
SENT = ("Q1: to=<ann@example.net>, relay=mx.example.net[198.51.100.20]:25, delay=0.2, delays=0.1/0/0.05/0.05, "
        "dsn=2.0.0, status=sent (250 2.0.0 OK)")


def entry(message: Any = SENT, ident: Any = "postfix/smtp", uid: Any = "107", pid: Any = "4242",
          at: float = NOW - 600, **extra: Any) -> dict[str, Any]:
    out = {"__REALTIME_TIMESTAMP": str(int(at * 1e6)), "_UID": uid, "_PID": pid, "SYSLOG_IDENTIFIER": ident,
           "SYSLOG_FACILITY": "2", "MESSAGE": message, **extra}
    return {k: v for k, v in out.items() if v is not None}


def journal(tmp_path: Path, *entries: dict[str, Any] | str, rc: int = 0, stderr: str = "") -> mailstats.Journal:
    text = "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries)
    return mailstats.read_journal(NOW - 3600, NOW, TRUSTED, fake(tmp_path, "journalctl", text, rc, stderr))


def deliveries(found: mailstats.Journal) -> list[mailstats.Delivery]:
    assert found.lines is not None
    got, _, skipped = mailstats.read_log(found.lines, NOW - 3600, NOW)
    assert skipped == 0
    return got


def test_a_postfix_delivery_from_the_journal_is_read_at_its_journal_time(tmp_path: Path) -> None:
    found = journal(tmp_path, entry(at=NOW - 600))
    [got] = deliveries(found)
    assert (got.qid, got.domain, got.status, got.dsn) == ("Q1", "example.net", "sent", "2.0.0")
    assert got.time == pytest.approx(NOW - 600, abs=1)
    assert (found.skipped, found.forged, found.problem) == (0, 0, None)


def test_tls_lines_from_the_journal_mark_the_delivery_as_over_tls(tmp_path: Path) -> None:
    tls = entry("Verified TLS connection established to mx.example.net[198.51.100.20]:25: TLSv1.3", at=NOW - 601)
    [got] = deliveries(journal(tmp_path, tls, entry()))
    assert got.tls


def test_a_delivery_agents_name_from_another_users_process_is_forged_not_counted(tmp_path: Path) -> None:
    found = journal(tmp_path, entry(uid="1000"), entry(uid=None), entry(uid=0))
    assert deliveries(found) == [] and found.forged == 3


def test_other_programs_of_the_mail_facility_are_ignored(tmp_path: Path) -> None:
    """OpenDKIM, and postdrop run as the submitting user (Jira), log to the mail facility too."""
    found = journal(tmp_path, entry("ABC: DKIM-Signature field added", ident="opendkim", uid="110"),
                    entry("warning: uid=1001: File too large", ident="postfix/postdrop", uid="1001"),
                    entry(SENT, ident="postfix/smtpd-evil", uid="1000"), entry(SENT, ident=["postfix/smtp"]))
    assert deliveries(found) == [] and (found.skipped, found.forged) == (0, 0)


def test_a_message_journald_stored_as_bytes_is_read(tmp_path: Path) -> None:
    raw = list(SENT.replace("250 2.0.0 OK", "250 2.0.0 OK \xff").encode("latin-1"))
    [got] = deliveries(journal(tmp_path, entry(raw)))
    assert got.text.endswith("OK \ufffd")


def test_a_newline_in_a_message_cannot_add_a_delivery(tmp_path: Path) -> None:
    forged = SENT.replace("(250 2.0.0 OK)", "(250 ok)\n2026-11-27T11:55:00Z jira postfix/smtp[1]: ") + SENT
    got = deliveries(journal(tmp_path, entry(forged)))
    assert len(got) == 1


@pytest.mark.parametrize("bad", [
    "{not json", "[1, 2]", "null",
    json.dumps(entry(pid="12; rm -rf /")), json.dumps(entry(pid=12)), json.dumps(entry(at=1e13)),
    json.dumps(entry(message=[300, 1])), json.dumps(entry(message=None)), json.dumps(entry(message={"a": 1})),
    json.dumps({**entry(), "__REALTIME_TIMESTAMP": "-5"}), json.dumps({**entry(), "__REALTIME_TIMESTAMP": 5}),
    json.dumps(entry(message=SENT + "x" * mailstats.MAX_JOURNAL_ENTRY)),
])
def test_an_entry_that_cannot_be_read_is_skipped_and_counted(tmp_path: Path, bad: str) -> None:
    found = journal(tmp_path, bad, entry())
    assert len(deliveries(found)) == 1 and found.skipped == 1 and found.forged == 0


def test_a_failing_journalctl_is_a_problem_with_its_last_words(tmp_path: Path) -> None:
    found = journal(tmp_path, rc=1, stderr="Failed to open journal\nNo journal files were found.\n")
    assert found.lines is None and found.problem == "journalctl: No journal files were found."
    missing = mailstats.read_journal(NOW - 60, NOW, TRUSTED, [str(tmp_path / "no-such-journalctl")])
    assert missing.lines is None and missing.problem is not None and missing.problem.startswith("journalctl: ")


def test_the_trusted_users_are_root_and_postfixs_mail_owner() -> None:
    assert mailstats.trusted_uids("no-such-user-here") == frozenset({"0"})
    assert mailstats.trusted_uids("root") == frozenset({"0"})
    assert mailstats.trusted_uids("nobody") == frozenset({"0", "65534"})


def test_status_names_forged_entries_with_where_to_look() -> None:
    report = {"services": {}, "queue": {"problem": None, **dict.fromkeys(mailstats.QUEUES, 0), "stuck": [],
                                        "oldest_age_seconds": 0, "more_stuck": 0, "unreadable": 0, "tls_held": 0,
                                        "tls_held_oldest_age_seconds": 0},
              "config": {"pushed": True, "changed": [], "missing": [], "stack_changed": []},
              "log": {"path": "journald", "problem": None, "skipped_lines": 0, "forged_lines": 2}, "causes": [],
              "deliveries": {"sent": 0, "deferred": 0, "bounced": 0}, "tls": {"ratio": None}}
    [finding] = [f for f in status.assess(report) if "journal" in f.what]
    assert finding.what.startswith("2 journal entr(ies) name a Postfix delivery agent")
    assert "_UID" in finding.fix


def test_collect_reads_the_journal_only_when_no_log_file_is_set_or_present(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    recent = entry(at=dt.datetime.now().timestamp() - 60)
    monkeypatch.setattr(mailstats, "JOURNALCTL", tuple(fake(tmp_path, "journalctl", json.dumps(recent) + "\n")))
    monkeypatch.setattr(mailstats, "trusted_uids", lambda owner: TRUSTED)
    real_read_queue = mailstats.read_queue
    monkeypatch.setattr(mailstats, "read_queue", lambda now: real_read_queue(now, ["/nonexistent/postqueue"]))
    monkeypatch.setattr(mailstats, "DEFAULT_LOG", str(tmp_path / "no-mail.log"))
    monkeypatch.setattr(mailstats, "_postconf_value", lambda name: None)
    report = mailstats.collect(1, None, {}, state=str(tmp_path))
    assert report["log"] == {"path": "journald", "problem": None, "skipped_lines": 0, "forged_lines": 0}
    assert report["deliveries"]["sent"] == 1
    given = mailstats.collect(1, str(tmp_path / "postfix.log"), {}, state=str(tmp_path))
    assert given["deliveries"]["sent"] == 0 and given["log"]["problem"].startswith("no mail log at "), \
        "a maillogFile that is missing is a problem to fix, not a reason to read elsewhere"
    (tmp_path / "no-mail.log").write_text("")
    assert mailstats.collect(1, None, {}, state=str(tmp_path))["log"]["path"] == str(tmp_path / "no-mail.log")
    monkeypatch.setattr(mailstats, "JOURNALCTL", ("/nonexistent/journalctl",))
    (tmp_path / "no-mail.log").unlink()
    log = mailstats.collect(1, None, {}, state=str(tmp_path))["log"]
    assert log["problem"].startswith(f"no mail log at {tmp_path / 'no-mail.log'} and journalctl: ")
    assert log["problem"].endswith(": set maillogFile (e.g. /var/log/postfix.log) so deliveries can be counted")
    assert log == {"path": str(tmp_path / "no-mail.log"), "problem": log["problem"], "skipped_lines": 0,
                   "forged_lines": 0}


def test_the_journal_time_is_read_as_utc_whatever_the_hosts_zone(tmp_path: Path) -> None:
    """journald stamps in microseconds since the epoch; the line written for read_log says Z, so it must be
    UTC even on a host whose local zone is not (a POSIX TZ string: no tzdata needed)."""
    import os
    import time

    before = os.environ.get("TZ")
    os.environ["TZ"] = "EST+5"
    time.tzset()
    try:
        [got] = deliveries(journal(tmp_path, entry(at=NOW - 600)))
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert got.time == pytest.approx(NOW - 600, abs=1)


def test_the_real_journalctl_takes_every_option_the_collector_gives_it(tmp_path: Path) -> None:
    """The options are journalctl's own (systemd's, installed by setup.sh): run against an empty journal
    directory, it must accept all of them and find nothing; a misspelt option is a problem, not an empty log."""
    import shutil

    real = shutil.which("journalctl")
    assert real, "journalctl is missing: apt-get install systemd (setup.sh does)"
    empty = tmp_path / "journal"
    empty.mkdir()
    assert mailstats.read_journal(NOW - 3600, NOW, TRUSTED, [real, f"--directory={empty}"]) == mailstats.Journal([])
    wrong = mailstats.read_journal(NOW - 3600, NOW, TRUSTED, [real, f"--directory={empty}", "--no-such-option"])
    assert wrong == mailstats.Journal(None, problem=f"journalctl: {real}: unrecognized option '--no-such-option'")


def test_a_journalctl_that_hangs_is_a_problem_in_the_report_within_the_timeout(tmp_path: Path) -> None:
    import sys
    import time

    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(30)\n")
    started = time.monotonic()
    found = mailstats.read_journal(NOW - 3600, NOW, TRUSTED, [sys.executable, str(hang)], timeout=0.5)
    assert time.monotonic() - started < 10
    assert found.lines is None and found.problem is not None
    assert found.problem.startswith("journalctl: Command ") and found.problem.endswith("timed out after 0.5 seconds")
    assert mailstats.JOURNAL_TIMEOUT == 120
