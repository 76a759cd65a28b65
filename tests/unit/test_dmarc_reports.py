"""`mailhost reports` core: every shape receivers send is read, every hostile report is refused with its
reason and leaves the database as it was, each report counts once, and the summary and the ramp advice
follow the numbers (the ramp flips exactly at its threshold)."""

from __future__ import annotations

import functools
import gzip
import io
import sqlite3
import time
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from mailhost.lab.dmarcreport import Judged, aggregate_xml, report_mail
from mailhost.reports import export, ingest, judge, mailbox, parse, store, unpack

DOMAIN = "jira.example.com"
NOW = 1_796_600_000
DAY = 86400
OURS = "203.0.113.10"
GOOD = Judged(OURS, DOMAIN, DOMAIN, "pass", "pass", DOMAIN, "jm1", "pass", "none")
SPOOF = Judged("198.51.100.99", DOMAIN, "evil.example", "fail", "none", None, None, "fail", "quarantine")


def xml(report_id: str = "r1", org: str = "lab.example", domain: str = DOMAIN, begin: int = NOW - DAY,
        end: int = NOW - 1, groups: dict[Judged, int] | None = None, schema: str = "7489") -> bytes:
    return aggregate_xml(org, f"dmarc@{org}", report_id, domain, "none", begin, end,
                         {GOOD: 5, SPOOF: 3} if groups is None else groups, schema)


def taken(db: sqlite3.Connection, data: bytes | None) -> ingest.Outcome:
    outcome = ingest.Outcome()
    ingest.take(db, "it", data, DOMAIN, NOW, outcome)
    return outcome


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "reports.sqlite")


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def rows(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return sorted(db.execute("SELECT * FROM row").fetchall())


# -- every shape a receiver sends ----------------------------------------------------------------
@pytest.mark.parametrize("schema", ["7489", "9990"])
@pytest.mark.parametrize("shape", ["xml", "gzip", "zip", "mail"])
def test_every_shape_and_schema_gives_the_same_rows(shape: str, schema: str) -> None:
    plain = xml(schema=schema)
    data = {"xml": plain, "gzip": gzip.compress(plain), "zip": zipped(("r.xml", plain)),
            "mail": report_mail(plain, "lab.example", "dmarc@lab.example", f"rua@{DOMAIN}", DOMAIN, "r1",
                                NOW - DAY, NOW - 1)}[shape]
    report = parse.parse(unpack.report_xml(data), DOMAIN, NOW)
    assert (report.org, report.report_id, report.domain, report.begin, report.end) == \
        ("lab.example", "r1", DOMAIN, NOW - DAY, NOW - 1)
    assert sorted(report.rows, key=lambda r: r.source_ip) == [
        parse.Row("198.51.100.99", 3, False, False, False, "quarantine"),
        parse.Row(OURS, 5, True, True, True, "none")]


def test_the_dates_are_the_reports_own_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        report = parse.parse(xml().decode(), DOMAIN, NOW)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert (report.begin, report.end) == (NOW - DAY, NOW - 1)


@pytest.mark.parametrize(("data", "mail"), [
    (b"From: dmarc@google.com\nSubject: Report\n\nbody", True),
    (b"\n  Received: from x\n", True),
    (b"Report of the day\nSubject: looks like a header\n\n", False),  # only the first line decides
    (b"<?xml version='1.0'?><feedback>a: b</feedback>", False),
    (b"\x1f\x8b\x08\x00 no colon on this line\nbut: here", False),
])
def test_a_whole_mail_is_told_by_a_header_on_its_first_line(data: bytes, mail: bool) -> None:
    assert unpack.looks_like_mail(data) is mail


def test_a_report_about_a_subdomain_counts_for_the_domain() -> None:
    assert parse.parse(xml(domain=f"eu.{DOMAIN}").decode(), DOMAIN, NOW).domain == f"eu.{DOMAIN}"


def test_alignment_comes_from_the_evaluated_policy_not_the_raw_results() -> None:
    """SPF passed for another domain (a forwarder's bounce address): not aligned, and DMARC rides on DKIM."""
    forwarded = Judged(OURS, DOMAIN, "lists.example.org", "pass", "pass", DOMAIN, "jm1", "pass", "none")
    (row,) = parse.parse(xml(groups={forwarded: 2}).decode(), DOMAIN, NOW).rows
    assert (row.spf_aligned, row.dkim_aligned, row.dmarc_pass) == (False, True, True)


# -- hostile reports: refused with the reason, the database untouched ----------------------------
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY a "aaaaaaaaaa">'
          + b"".join(b'<!ENTITY %s "%s">' % (bytes([98 + i]), (b"&" + bytes([97 + i]) + b";") * 10)
                     for i in range(8))
          + b"]><feedback><report_metadata><org_name>&i;</org_name></report_metadata></feedback>")
EXTERNAL = xml().replace(b'<?xml version="1.0" encoding="UTF-8"?>\n',
                         b'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                         ).replace(b"<org_name>lab.example</org_name>", b"<org_name>&x;</org_name>")


NOT_DMARC = "not a DMARC aggregate report: "
PARTIAL = NOT_DMARC + "malformed XML (only part of it could be read)"
DOCTYPE = NOT_DMARC + "a DOCTYPE (entities are refused)"
BOMB = "inflates more than 200x (a decompression bomb)"
EARLY = "bad dates: the interval begins before 2012 or ends before it begins"
COUNT = "a row whose count is not a whole number of messages"
ELSEWHERE = "a report for another domain ({}), not jira.example.com"


@functools.cache
def hostile() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, the whole refusal): every word of it is what the admin reads, so all are compared."""
    gzip_bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    zip_bomb = zipped(("r.xml", b" " * (64 * 1024 * 1024)))
    ratio_bomb = gzip.compress(b"<feedback>" + b" " * (8 * 1024 * 1024) + b"</feedback>", compresslevel=9)
    gzip_head = gzip.compress(xml())[:10]
    return {
        "malformed XML": (xml()[:-40], PARTIAL),
        "not XML at all": (b"<feedback>\x00\x01", NOT_DMARC + "malformed XML"),
        "entity expansion": (LAUGHS, DOCTYPE),
        "external entity": (EXTERNAL, DOCTYPE),
        "gzip bomb": (gzip_bomb, BOMB),
        "zip bomb": (zip_bomb, BOMB),
        "ratio bomb under the size bound": (ratio_bomb, BOMB),
        "zip of two files": (zipped(("a.xml", xml()), ("b.xml", xml(report_id="r2"))),
                             "a zip with 2 files; a report zip holds exactly one"),
        "a zip that is not one": (b"PK\x03\x04" + b"\x00" * 200, "not a readable zip file (BadZipFile)"),
        "truncated gzip": (gzip.compress(xml())[:-30], "a truncated gzip file"),
        "a gzip whose data is no deflate": (gzip_head + b"\xff" * 64,
                                            "not a valid gzip file (Error -3 while decompressing data: "
                                            "invalid block type)"),
        "huge input": (b"<" + b" " * unpack.MAX_INPUT, "larger than 10 MiB"),
        "mail without a report": (b"From: a@b.example\nSubject: hi\n\nhello\n",
                                  "a mail without a report attachment (gzip, zip or XML)"),
        "another domain": (xml(domain="other.example"), ELSEWHERE.format("other.example")),
        "a lookalike domain": (xml(domain=f"evil{DOMAIN}"), ELSEWHERE.format(f"evil{DOMAIN}")),
        "no domain published": (xml().replace(f"<domain>{DOMAIN}</domain>".encode(), b"<domain>-</domain>"),
                                "policy_published has no domain name"),
        "dates before DMARC": (xml(begin=1_000_000_000, end=1_000_080_000), EARLY),
        "dates in the future": (xml(begin=NOW + 5 * DAY, end=NOW + 6 * DAY),
                                "bad dates: the interval ends in the future"),
        "end before begin": (xml(begin=NOW - DAY, end=NOW - 2 * DAY), EARLY),
        "a month in one report": (xml(begin=NOW - 30 * DAY, end=NOW - 1),
                                  "bad dates: the interval is longer than a week"),
        "dates that are no numbers": (xml().replace(f"<begin>{NOW - DAY}</begin>".encode(), b"<begin>x</begin>"),
                                      NOT_DMARC + "malformed XML"),
        "C0 controls (not even XML)": (xml(org="lab\x1b[31m.example"), PARTIAL),
        "a bidi override in org_name": (xml(org="lab\u202eelpmaxe"),
                                        "the reporter's org_name is missing or not plain text"),
        "a C1 CSI in report_id": (xml(report_id="r1\u009b2J"), "the report_id is missing or not plain text"),
        "not an IP": (xml().replace(b"<source_ip>198.51.100.99</source_ip>", b"<source_ip>-oProxy</source_ip>"),
                      "1 of its 2 rows cannot be read (a source_ip that is not an IP address, or a count that "
                      "is no number)"),
        "negative count": (xml().replace(b"<count>3</count>", b"<count>-3</count>"), COUNT),
        "absurd count": (xml().replace(b"<count>3</count>", b"<count>99999999999</count>"), COUNT),
        "unknown disposition": (xml().replace(b"<disposition>quarantine</disposition>",
                                              b"<disposition>drop</disposition>"), "a row with an unknown disposition"),
        "not UTF-8": (xml().replace(b"lab.example</org_name>", b"lab\xff.example</org_name>"), "not UTF-8 XML"),
    }


def test_a_report_that_ends_just_within_the_slack_is_read_and_a_second_later_refused() -> None:
    """Receivers' clocks run a little ahead: an interval may end up to FUTURE_SLACK after now, not later."""
    edge = NOW + parse.FUTURE_SLACK
    assert parse.parse(xml(begin=edge - DAY, end=edge).decode(), DOMAIN, NOW).end == edge
    with pytest.raises(unpack.Refused, match="ends in the future"):
        parse.parse(xml(begin=edge - DAY + 1, end=edge + 1).decode(), DOMAIN, NOW)


class FakeImap:
    """The IMAP calls mailbox.uids and mailbox.fetch make, over a dict of UID → message."""

    def __init__(self, messages: dict[int, bytes], validity: int) -> None:
        self.messages, self.validity, self.selected = messages, validity, ""

    def select(self, folder: str, readonly: bool = False) -> tuple[str, list[bytes]]:
        assert readonly, "reading reports never changes the mailbox"
        self.selected = folder
        return "OK", [str(len(self.messages)).encode()]

    def response(self, code: str) -> tuple[str, list[bytes]]:
        return code, [str(self.validity).encode()]

    def uid(self, command: str, *args: str) -> tuple[str, list[object]]:
        if command == "SEARCH":
            return "OK", [" ".join(map(str, sorted(self.messages))).encode()]
        data = self.messages[int(args[0])]
        if args[1] == "(UID RFC822.SIZE)":
            return "OK", [f"{args[0]} (UID {args[0]} RFC822.SIZE {len(data)})".encode()]
        return "OK", [(f"{args[0]} (BODY[] {{{len(data)}}}".encode(), data), b")"]


def test_a_mailbox_is_read_once_per_uid_and_again_when_its_uidvalidity_changes(db: sqlite3.Connection) -> None:
    mail = report_mail(xml(), "lab.example", "dmarc@lab.example", f"dmarc@{DOMAIN}", DOMAIN, "r1", NOW - DAY, NOW - 1)
    imap = FakeImap({7: mail, 9: b"From: a@b.example\nSubject: hi\n\nno report\n"}, validity=41)
    account = mailbox.Account("imap.example.org", 993, "reports", "DMARC")
    first = ingest.from_mailbox(db, imap, account, DOMAIN, NOW)  # type: ignore[arg-type]
    assert imap.selected == '"DMARC"'
    assert (first.read, first.new, first.duplicate, [w for w, _ in first.refused]) == (2, 1, 0, ["message UID 9"])
    again = ingest.from_mailbox(db, imap, account, DOMAIN, NOW)  # type: ignore[arg-type]
    assert (again.read, again.new, again.refused) == (0, 0, []), "each UID is read once"
    imap.validity = 42  # the folder was rebuilt: its UIDs mean other messages now
    rebuilt = ingest.from_mailbox(db, imap, account, DOMAIN, NOW)  # type: ignore[arg-type]
    assert (rebuilt.read, rebuilt.new, rebuilt.duplicate) == (2, 0, 1), "read again; the report counts once"


@pytest.mark.parametrize("name", list(hostile()))
def test_a_hostile_report_is_refused_with_its_reason_and_the_database_stays_as_it_was(
        db: sqlite3.Connection, name: str) -> None:
    assert taken(db, xml(report_id="kept")).new == 1
    before = (store.report_count(db), rows(db))
    data, reason = hostile()[name]
    tracemalloc.start()
    try:
        outcome = taken(db, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.new == outcome.duplicate == 0 and len(outcome.refused) == 1, outcome
    assert outcome.refused[0][1] == reason, outcome.refused
    assert all(c.isprintable() for c in outcome.refused[0][1]), "the reason is safe to print"
    assert (store.report_count(db), rows(db)) == before
    assert peak < 3 * unpack.MAX_XML + 2 * len(data), f"{peak} bytes: bounded by the limits, not the bomb"


def test_a_bomb_stops_within_the_bound_not_at_its_end() -> None:
    bomb = gzip.compress(b"\0" * (512 * 1024 * 1024), compresslevel=9)
    tracemalloc.start()
    try:
        with pytest.raises(unpack.Refused, match=r"^inflates beyond 32 MiB \(a decompression bomb or not a report\)$"):
            unpack.report_xml(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * unpack.MAX_XML, peak


def test_a_report_just_under_the_bounds_is_read() -> None:
    """The bounds refuse bombs, not big reports: 5,000 sources in one report (about 3 MB) are read."""
    many = {Judged(f"198.51.{n // 250}.{n % 250 + 1}", DOMAIN, DOMAIN, "pass", "pass", DOMAIN, "jm1", "pass",
                   "none"): 1 for n in range(5000)}
    report = parse.parse(unpack.report_xml(gzip.compress(xml(groups=many))), DOMAIN, NOW)
    assert len(report.rows) == 5000


def test_a_refused_report_does_not_stop_the_others(db: sqlite3.Connection, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1-good.xml").write_bytes(xml(report_id="a"))
    (folder / "2-bomb.gz").write_bytes(hostile()["gzip bomb"][0])
    (folder / "3-good.xml.gz").write_bytes(gzip.compress(xml(report_id="b", org="other.example")))
    (folder / "4-\x1b[2J.xml").write_bytes(b"<x")
    (folder / "5-link.xml").symlink_to(folder / "1-good.xml")
    outcome = ingest.from_directory(db, folder, DOMAIN, NOW)
    assert (outcome.read, outcome.new, outcome.duplicate) == (4, 2, 0)
    assert [what for what, _ in outcome.refused] == ["2-bomb.gz", "4-\\x1b[2J.xml"]
    assert store.report_count(db) == 2


# -- each report once --------------------------------------------------------------------------
def test_a_report_read_twice_counts_once_and_another_reporters_same_id_counts_too(db: sqlite3.Connection) -> None:
    assert taken(db, xml()).new == 1
    assert taken(db, gzip.compress(xml())).duplicate == 1
    assert taken(db, xml(org="other.example")).new == 1
    assert store.report_count(db) == 2
    counted = list(store.rows_since(db, 0))
    assert sum(r.count for r in counted) == 2 * 8


def test_the_database_is_its_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "state" / "reports.sqlite"
    store.connect(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_the_default_database_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert store.default_db() == tmp_path / "jira-mailhost" / "dmarc-reports.sqlite"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.default_db() == tmp_path / "home" / ".local" / "state" / "jira-mailhost" / "dmarc-reports.sqlite"


# -- summary, classes, ramp -------------------------------------------------------------------
def history(db: sqlite3.Connection, days: int, reporters: tuple[str, ...], ours_pass: int, ours_fail: int,
            unknown: int = 0, authorized: int = 0) -> None:
    """Daily reports from each reporter; the counts are spread over the days, remainders on the last."""
    for org in reporters:
        for day in range(days):
            groups: Counter[Judged] = Counter()

            def share(total: int, last: bool = day == days - 1) -> int:
                return total // days + (total % days if last else 0)

            groups[GOOD] = share(ours_pass)
            groups[Judged(OURS, DOMAIN, DOMAIN, "fail", "fail", DOMAIN, "jm1", "fail", "none")] = share(ours_fail)
            groups[SPOOF] = share(unknown)
            groups[Judged("203.0.113.200", DOMAIN, DOMAIN, "pass", "pass", DOMAIN, "s1", "pass", "none")] = \
                share(authorized)
            begin = (NOW // DAY - days + day) * DAY
            report = xml(report_id=f"{org}-{day}", org=org, begin=begin, end=begin + DAY - 1,
                         groups={g: n for g, n in groups.items() if n})
            assert taken(db, report).new == 1


def summary(db: sqlite3.Connection, policy: str = "none", days: float = 14) -> judge.Summary:
    classify = judge.classifier([OURS], {"203.0.113.200"}.__contains__)
    return judge.summarize(store.rows_since(db, NOW - days * DAY), NOW - days * DAY, NOW, policy, classify)


def test_the_most_failing_source_is_flagged_first_whatever_its_address(db: sqlite3.Connection) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=700, ours_fail=40, unknown=6)
    assert summary(db).flagged() == [(OURS, "ours", 80), ("198.51.100.99", "unknown", 12)]


def test_the_summary_counts_per_reporter_source_and_class(db: sqlite3.Connection) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=700, ours_fail=7, unknown=28, authorized=14)
    s = summary(db)
    assert s.days == 14
    assert {org: t.messages for org, t in s.reporters.items()} == {"google.com": 749, "outlook.com": 749}
    assert s.source_class == {OURS: "ours", "198.51.100.99": "unknown", "203.0.113.200": "authorized"}
    assert (s.classes["ours"].messages, s.classes["ours"].dmarc_pass) == (1414, 1400)
    assert (s.classes["ours"].spf_aligned, s.classes["ours"].dkim_aligned) == (1400, 1400)
    assert s.classes["unknown"].dispositions == Counter({"quarantine": 56})
    assert s.flagged() == [("198.51.100.99", "unknown", 56), (OURS, "ours", 14)]
    data = export.as_data(s)  # what `mailhost reports --json` says, class by class
    assert list(data["classes"]) == list(judge.CLASSES)
    assert data["classes"]["ours"] == {"messages": 1414, "spf_aligned": 1400, "dkim_aligned": 1400,
                                       "dmarc_pass": 1400, "dispositions": s.classes["ours"].dispositions}
    assert data["classes"]["unknown"]["dispositions"] == {"quarantine": 56}


@pytest.mark.parametrize(("passing", "ready"), [(995, True), (994, False)])
def test_the_ramp_flips_as_the_pass_ratio_crosses_its_threshold(db: sqlite3.Connection, passing: int,
                                                               ready: bool) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=passing // 2 * 1, ours_fail=(1000 - passing) // 2)
    s = summary(db)
    sending = s.classes["ours"]
    assert sending.messages == 2 * (passing // 2 + (1000 - passing) // 2)
    assert s.ramp.ready is (sending.dmarc_pass >= judge.RAMP_PASS_RATIO * sending.messages)
    assert s.ramp.ready is ready, s.ramp.line()
    if not ready:
        assert "pass DMARC" in s.ramp.line() and "99.5 % needed" in s.ramp.line()
    else:
        assert s.ramp.line() == "DMARC ramp: ready to move dmarc.policy from none to quarantine"


def test_the_ramp_waits_for_two_weeks_and_two_reporters(db: sqlite3.Connection) -> None:
    history(db, 13, ("google.com",), ours_pass=500, ours_fail=0)
    advice = summary(db).ramp
    assert not advice.ready
    assert advice.blockers == ("13 of 14 days of reports", "1 of 2 reporters")
    ramp = export.as_data(summary(db))["ramp"]  # what `mailhost reports --json` says
    assert ramp == {"policy": "none", "next": advice.next_policy, "ready": False,
                    "blockers": ["13 of 14 days of reports", "1 of 2 reporters"], "line": advice.line()}


def test_an_unknown_sender_above_the_allowance_blocks_the_ramp(db: sqlite3.Connection) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=1000, ours_fail=0, unknown=14 * 11 // 2)
    s = summary(db)
    assert s.classes["unknown"].messages > judge.RAMP_UNKNOWN_MESSAGES
    assert not s.ramp.ready and "198.51.100.99" in s.ramp.blockers[0]


def test_an_authorized_sender_that_fails_counts_against_the_ramp(db: sqlite3.Connection) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=1000, ours_fail=0)
    bad_relay = Judged("203.0.113.200", DOMAIN, "relay.example", "pass", "fail", None, None, "fail", "none")
    taken(db, xml(report_id="relay", org="google.com", groups={bad_relay: 50}))
    assert not summary(db).ramp.ready


@pytest.mark.parametrize(("policy", "next_policy"), [("none", "quarantine"), ("quarantine", "reject"),
                                                     ("reject", None)])
def test_the_ramp_names_the_next_step(db: sqlite3.Connection, policy: str, next_policy: str | None) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=1000, ours_fail=0)
    advice = summary(db, policy).ramp
    assert advice.next_policy == next_policy and advice.ready is (next_policy is not None)
    if next_policy is None:
        assert advice.line() == "DMARC ramp: dmarc.policy is reject, the end of the ramp"


def test_reports_before_the_window_are_left_out(db: sqlite3.Connection) -> None:
    history(db, 20, ("google.com",), ours_pass=2000, ours_fail=0)
    s = summary(db, days=7)
    assert s.days == 7
    assert s.classes["ours"].messages == 7 * 100


def test_metrics_carry_the_class_ratios_and_the_unknown_volume(db: sqlite3.Connection) -> None:
    history(db, 14, ("google.com", "outlook.com"), ours_pass=700, ours_fail=7, unknown=28)
    text = export.metrics(summary(db), refused=2, now=NOW)
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert samples['jira_mailhost_dmarc_pass_ratio{class="ours"}'] == repr(round(1400 / 1414, 6))
    assert samples['jira_mailhost_dmarc_pass_ratio{class="authorized"}'] == "1"
    assert samples['jira_mailhost_dmarc_messages{class="unknown"}'] == "56"
    assert samples["jira_mailhost_dmarc_unknown_source_messages"] == "56"
    assert samples["jira_mailhost_dmarc_ramp_ready"] == "0"
    assert samples["jira_mailhost_dmarc_reports_refused"] == "2"
    assert samples["jira_mailhost_dmarc_collector_last_run_timestamp_seconds"] == str(NOW)


def test_a_report_that_fails_half_way_leaves_no_half_and_the_run_commits_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    db = store.connect(path)
    assert store.add(db, parse.parse(xml(report_id="a").decode(), DOMAIN, NOW))
    store.commit(db)

    class Broken(sqlite3.Connection):
        def executemany(self, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            raise sqlite3.OperationalError("disk full")

    report = parse.parse(xml(report_id="b").decode(), DOMAIN, NOW)
    broken = sqlite3.connect(path, factory=Broken, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="disk full"):
        store.add(broken, report)
    assert broken.execute("SELECT count(*) FROM report WHERE report_id = 'b'").fetchone() == (0,), \
        "the report without its rows is rolled back with them"
    broken.close()
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(ingest.BATCH + 5):
        (folder / f"{n:04d}.xml").write_bytes(xml(report_id=f"n{n}"))
    ingest.from_directory(db, folder, DOMAIN, NOW)
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM report").fetchone() == (1 + ingest.BATCH + 5,), \
        "another reader sees every report: the run committed its last batch too"


def test_a_large_folder_is_committed_every_batch_of_reports(db: sqlite3.Connection, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash loses at most one batch: the store commits after each BATCH reports read, and at the end."""
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(5):
        (folder / f"{n}.xml").write_bytes(xml(report_id=f"r{n}"))
    commits: list[int] = []
    real_commit = store.commit
    monkeypatch.setattr(ingest, "BATCH", 2)

    def counted(conn: sqlite3.Connection) -> None:
        commits.append(store.report_count(conn))
        real_commit(conn)
    monkeypatch.setattr(store, "commit", counted)
    assert ingest.from_directory(db, folder, DOMAIN, NOW).read == 5
    assert commits == [2, 4, 5], "after reports 2 and 4, then the rest"


def test_a_report_with_more_rows_than_the_bound_and_a_mail_too_big_to_fetch_are_refused_in_words(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_ROWS", 1)
    assert taken(db, xml()).refused == [("it", "more than 1 rows")]
    assert taken(db, None).refused == [("it", "larger than 10 MiB or unreadable")]
    assert store.report_count(db) == 0


def test_a_report_nested_past_pythons_recursion_limit_is_refused_not_raised(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """No input found here makes parsedmarc recurse that deep (50,000 nested elements do not); whatever
    does is one refused report with its reason, never the end of the run."""
    def too_deep(*args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(parse, "parse", too_deep)
    outcome = taken(db, xml())
    assert (outcome.read, outcome.new, outcome.refused) == (1, 0, [("it", "nested too deeply to be a report")])


def test_the_window_keeps_reports_that_touch_either_end_and_drops_those_outside() -> None:
    """A report counts when its interval meets the window, its ends included: one that begins the second the
    window ends, or ends the second it begins, is in; a second further out is not."""
    since, until = NOW - 14 * DAY, NOW

    def row(org: str, begin: float, end: float) -> store.Counted:
        return store.Counted("198.51.100.7", 1, True, True, True, "none", org, int(begin), int(end))

    rows = [row("starts-at-end", until, until + DAY), row("ends-at-start", since - DAY, since),
            row("starts-after", until + 1, until + DAY), row("ends-before", since - DAY, since - 1)]
    summary = judge.summarize(rows, since, until, "none", lambda ip: "ours")
    assert sorted(summary.reporters) == ["ends-at-start", "starts-at-end"]
    assert summary.sources["198.51.100.7"].messages == 2


def test_a_report_is_judged_against_the_time_the_ingest_is_given_not_the_clock(db: sqlite3.Connection) -> None:
    """`mailhost reports` hands one time to every report of a run: ten years on, a report of the day before is
    no report from the future (the clock of the machine running the test says otherwise)."""
    later = NOW + 3650 * DAY
    outcome = ingest.Outcome()
    ingest.take(db, "it", xml(begin=later - DAY, end=later - 1), DOMAIN, later, outcome)
    assert outcome.refused == [] and store.report_count(db) == 1
