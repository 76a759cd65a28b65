"""README: with `delivery.relay.maxPerDay`, `status` and the JiraMailRelayDailyCapNear alert watch the
recipients sent through the relay in the last 24 h: a warning from 80 % of the cap, critical at it.

The cap travels with the push (settings.env on the host), so status, the metrics timer and the stack agree
on one value; the collector reads it back with a full-match grammar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mailhost.ops import status
from mailhost.publish import mailstats, render
from mailhost.publish.stack import parse_settings
from tests.unit.test_config import SECRETS, base, existing
from tests.unit.test_mailstats import delivery, report

DAY = 86400
NOW = time.mktime(time.strptime("2026 Nov 27 12:00:00", "%Y %b %d %H:%M:%S"))
RELAY_BLOCK: dict[str, Any] = {"host": "smtp.relay.example.net", "username": "jira@example.com"}


def settings_env(cap: int | None) -> str:
    relay = {"mode": "relay", "relay": RELAY_BLOCK | ({"maxPerDay": cap} if cap else {})}
    settings = parse_settings(base(hosts=[existing()], delivery=relay), SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets("k", "s3cr3t-Relay-Pa55word"))
    return next(f.content for f in files if f.path == render.SETTINGS_ENV)


@pytest.mark.parametrize("cap", [1, 10_000, 10_000_000])
def test_the_pushed_cap_is_the_one_the_collector_reads(tmp_path: Path, cap: int) -> None:
    (tmp_path / "settings.env").write_text(settings_env(cap))
    assert mailstats.read_daily_cap(str(tmp_path)) == cap


def test_without_the_setting_no_cap_is_pushed_or_read(tmp_path: Path) -> None:
    (tmp_path / "settings.env").write_text(settings_env(None))
    assert "RELAY_MAX_PER_DAY" not in settings_env(None)
    assert mailstats.read_daily_cap(str(tmp_path)) is None
    assert mailstats.read_daily_cap(str(tmp_path / "none")) is None, "no push yet"


@pytest.mark.parametrize("text", [
    "RELAY_MAX_PER_DAY=0\n", "RELAY_MAX_PER_DAY=012\n", " RELAY_MAX_PER_DAY=5\n", "RELAY_MAX_PER_DAY=5 \n",
    "RELAY_MAX_PER_DAY=123456789\n", "RELAY_MAX_PER_DAY=5\nRELAY_MAX_PER_DAY=6\n", "RELAY_MAX_PER_DAY=\"5\"\n",
    "XRELAY_MAX_PER_DAY=5\n", "RELAY_MAX_PER_DAY=٥\n", "# RELAY_MAX_PER_DAY=5\n",
])
def test_anything_but_one_well_formed_line_is_no_cap(tmp_path: Path, text: str) -> None:
    (tmp_path / "settings.env").write_text("STACK=dev\n" + text)
    assert mailstats.read_daily_cap(str(tmp_path)) is None


def test_a_file_larger_than_a_push_writes_is_no_cap(tmp_path: Path) -> None:
    line = "\nRELAY_MAX_PER_DAY=12"
    (tmp_path / "settings.env").write_text("#" * (mailstats.SETTINGS_MAX - len(line)) + line)
    assert mailstats.read_daily_cap(str(tmp_path)) == 12, "exactly the bound: read whole"
    (tmp_path / "settings.env").write_text("#" * (mailstats.SETTINGS_MAX - len(line) + 1) + line)
    assert mailstats.read_daily_cap(str(tmp_path)) is None, "one more: refused, never read as a cut '=1'"
    assert mailstats.SETTINGS_MAX == 1 << 20


def stamp(seconds_ago: float) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(NOW - seconds_ago))


@pytest.fixture
def host_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mail log of sent, deferred and bounced deliveries over 30 hours, and a push with a cap of 10."""
    lines = [delivery(f"A{i}", f"u{i}@example.net", "2.0.0", "sent", "250 ok", ts=stamp(25 * 3600 + i)) for i in
             range(5)]  # older than a day: not counted
    lines += [delivery(f"B{i}", f"u{i}@example.net", "2.0.0", "sent", "250 ok", ts=stamp(20 * 3600 + i)) for i in
              range(4)]  # in the day, outside an hour's window
    lines += [delivery("E0", "edge@example.net", "2.0.0", "sent", "250 ok", ts=stamp(DAY))]  # exactly a day: counted
    lines += [delivery(f"C{i}", f"u{i}@example.net", "2.0.0", "sent", "250 ok", ts=stamp(600 + i)) for i in range(3)]
    lines += [delivery("D1", "x@example.net", "4.4.2", "deferred", "host r said: 421 4.4.2 rate", ts=stamp(500)),
              delivery("D2", "y@example.net", "5.1.1", "bounced", "host r said: 550 5.1.1 gone", ts=stamp(400))]
    log = tmp_path / "mail.log"
    log.write_text("".join(lines))
    (tmp_path / "settings.env").write_text("STACK=dev\nRELAY_MAX_PER_DAY=10\n")
    monkeypatch.setattr(mailstats, "read_queue", lambda now: report()["queue"])
    monkeypatch.setattr(mailstats, "services", lambda paths: {"postfix": True})
    return log


@pytest.mark.parametrize("hours", [1, 24, 48])
def test_the_day_counts_sent_recipients_of_the_last_24_hours_whatever_the_window(host_log: Path, hours: int) -> None:
    got = mailstats.collect(hours, str(host_log), {}, now=NOW, state=str(host_log.parent))
    assert got["relay_day"] == {"cap": 10, "sent": 8}
    assert got["deliveries"]["sent"] == {1: 3, 24: 8, 48: 13}[hours], "the window itself is unchanged"


@pytest.mark.parametrize(("hours", "reads"), [(1, 2), (23.9, 2), (24, 1), (48, 1)])
def test_the_log_is_read_a_second_time_only_when_the_window_is_shorter_than_a_day(
        host_log: Path, monkeypatch: pytest.MonkeyPatch, hours: float, reads: int) -> None:
    calls: list[float] = []
    real = mailstats.read_deliveries

    def counted(since: float, now: float, log_path: str | None) -> Any:
        calls.append(now - since)
        return real(since, now, log_path)
    monkeypatch.setattr(mailstats, "read_deliveries", counted)
    assert mailstats.collect(hours, str(host_log), {}, now=NOW, state=str(host_log.parent))["relay_day"]["sent"] == 8
    assert len(calls) == reads and calls[-1] == pytest.approx(DAY if reads == 2 else hours * 3600)


def test_without_a_cap_the_report_says_none(host_log: Path) -> None:
    (host_log.parent / "settings.env").write_text("STACK=dev\n")
    assert mailstats.collect(1, str(host_log), {}, now=NOW, state=str(host_log.parent))["relay_day"] is None


def samples(day: dict[str, int] | None) -> dict[str, str]:
    text = mailstats.metrics(report(relay_day=day))
    return dict(ln.rsplit(" ", 1) for ln in text.splitlines() if not ln.startswith("#"))


def test_the_metrics_carry_the_cap_and_the_day_only_when_a_cap_is_set() -> None:
    text = mailstats.metrics(report(relay_day={"cap": 10000, "sent": 8123}))
    assert ("# HELP jira_mailhost_relay_daily_cap delivery.relay.maxPerDay: recipients the relay takes in 24 h.\n"
            "# TYPE jira_mailhost_relay_daily_cap gauge\njira_mailhost_relay_daily_cap 10000\n"
            "# HELP jira_mailhost_relay_sent_last_day Recipients sent through the relay in the last 24 h.\n"
            "# TYPE jira_mailhost_relay_sent_last_day gauge\njira_mailhost_relay_sent_last_day 8123\n") in text
    got = samples({"cap": 10000, "sent": 8123})
    assert (got["jira_mailhost_relay_daily_cap"], got["jira_mailhost_relay_sent_last_day"]) == ("10000", "8123")
    assert not any("relay_" in name for name in samples(None)), "no cap: no series, so the alert cannot fire"
    assert not any("relay_" in name for name in samples({}))


@pytest.mark.parametrize(("sent", "cap", "level", "words"), [
    (7999, 10000, status.OK, None),
    (8000, 10000, status.WARNING, "8000 of the relay's 10000 recipients a day used in the last 24 h (80 %)"),
    (9999, 10000, status.WARNING, "(99 %)"),
    (10000, 10000, status.CRITICAL, "the relay's daily cap is reached: 10000 recipients in the last 24 h, "
                                    "delivery.relay.maxPerDay is 10000"),
    (0, 1, status.OK, None),
    (1, 1, status.CRITICAL, "daily cap is reached"),
    (12, 10, status.CRITICAL, "12 recipients"),
])
def test_status_warns_from_80_percent_and_is_critical_at_the_cap(sent: int, cap: int, level: int,
                                                                 words: str | None) -> None:
    findings = status.assess(report(relay_day={"cap": cap, "sent": sent}))
    assert status.level_of(findings) == level
    if words:
        [finding] = findings
        assert words in finding.what and "delivery.relay.maxPerDay" in finding.fix
    lines = status.summary_lines("jira", report(relay_day={"cap": cap, "sent": sent}))
    assert f"  relay: {sent} of {cap} recipients a day used (last 24 h)" in lines


def test_no_cap_no_finding_and_no_line() -> None:
    assert status.assess(report(relay_day=None)) == []
    assert not any("relay:" in line for line in status.summary_lines("jira", report(relay_day=None)))
    assert status.assess(report()) == [], "an older collector writes no relay_day at all"


@pytest.mark.parametrize("day", [
    {"cap": 0, "sent": 1}, {"cap": 10, "sent": -1}, {"cap": "10", "sent": 1}, {"cap": 10}, {"cap": 10.0, "sent": 1},
    {"cap": True, "sent": 1}, [10, 1], "10/1",
])
def test_a_malformed_day_from_the_host_is_refused(day: Any) -> None:
    with pytest.raises(ValueError, match="malformed relay_day"):
        status.assess(report(relay_day=day))


@pytest.mark.parametrize(("dsn", "text"), [
    ("5.0.0", "host smtp.office365.com said: 550 5.1.90 Your message can't be sent because you've reached your "
              "daily limit for message recipients. (in reply to RCPT TO command)"),
    ("5.0.0", "host smtp-relay.gmail.com said: 550 5.4.5 Daily user sending limit exceeded."),
    ("5.0.0", "host relay said: 550 Daily sending quota exceeded"),
])
def test_the_relays_daily_refusal_is_its_own_cause(dsn: str, text: str) -> None:
    found = mailstats.classify(mailstats.best_dsn(dsn, text), text)
    assert found.id == "relay_daily_cap" and "maxPerDay" in found.fix
